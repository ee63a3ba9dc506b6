"""The KV cache of the attention layers, heads first.

Shape legend: B batch, K key/value heads, S cache length (M in the
generation modules), T new positions, H key head size, V value head size.

The layout, defined here and nowhere else: a `KVCache` holds `keys`
`(B, K, S, H)` and `values` `(B, K, S, V)`, heads before positions. Each
head's keys are then one contiguous `(S, H)` matrix, so attention reads
the cache in place (a batched matmul over `B * K`, no transpose of the
cache in XLA or TFLite), and writing `T` new positions is one
`slice_update` per tensor (TFLite's DYNAMIC_UPDATE_SLICE) of `T` rows.
It is also LiteRT-LM's layout, so its signatures take our caches as they
are.

The forms of `cache` that `MultiHeadAttention`, `GroupQueryAttention` and
`TransformerDecoder` accept, told apart by one rule (`as_kv_cache`):
    - a `KVCache`: the native form;
    - any other tuple or list: an error (a `KVCache` is a tuple; a plain
      pair would be ambiguous about its layout);
    - anything else: a tensor in keras-hub's stacked layout
      `(B, 2, S, K, H)` (keys at index 0, values at index 1), as
      `keras_hub.layers.CachedMultiHeadAttention` and keras-hub's
      `TransformerDecoder` take it.
The layers return the cache in the form they received it.
"""

import typing

import numpy as np
from keras import ops

from keras_attn.layers.masking import check_mask_shape
from keras_attn.ops.attention import static_size
from keras_attn_runtime import checks
from keras_attn_runtime.checks import is_int


class KVCache(typing.NamedTuple):
    """Cached keys and values of one attention layer, heads first.

    The layout is `keys` `(B, K, S, H)` and `values` `(B, K, S, V)`:
    batch, key/value heads, cache positions, head size (see the module
    docstring for why). A named tuple, so it passes as one structure
    through `tf.function`, `jax.jit`, `keras.ops.while_loop` and
    `tf.nest`/`keras.tree`; it is immutable: `update` returns a new one.

    Pass it as `cache` to `keras_attn.layers.MultiHeadAttention` (or as
    `self_attention_cache`/`cross_attention_cache` to
    `keras_attn.layers.TransformerDecoder`): the layer writes the new keys
    and values at `cache_update_index` and returns the updated `KVCache`.

    Attributes:
        keys: tensor `(B, K, S, H)`.
        values: tensor `(B, K, S, V)`.

    Example:

    ```python
    import numpy as np
    import keras_attn
    layer = keras_attn.layers.MultiHeadAttention(num_heads=4, key_dim=8,
                                                 num_key_value_heads=2)
    x = np.random.rand(1, 5, 16).astype("float32")
    full = layer(x, x, use_causal_mask=True)
    cache = keras_attn.layers.KVCache.zeros(1, 2, 5, 8)  # (B, K, S, H)
    for i in range(5):
        step, cache = layer(x[:, i:i + 1], x[:, i:i + 1], cache=cache,
                            cache_update_index=i, use_causal_mask=True)
    np.testing.assert_allclose(step, full[:, 4:], atol=1e-5)
    ```
    """

    keys: typing.Any
    values: typing.Any

    @classmethod
    def zeros(cls, batch_size, num_heads, length, head_dim, dtype="float32",
              value_head_dim=None):
        """An empty cache: zeros `(B, K, S, H)` and `(B, K, S, V)`.

        Args:
            batch_size: int or scalar tensor. `B`.
            num_heads: int. Key/value heads `K`.
            length: int or scalar tensor. Cache length `S`.
            head_dim: int. Key head size `H`.
            dtype: the cache's dtype (the layer's compute dtype). Defaults
                to `"float32"`.
            value_head_dim: int or `None`. Value head size `V`. Defaults to
                `head_dim`.
        """
        num_heads = checks.positive_int(num_heads, "num_heads")
        head_dim = checks.positive_int(head_dim, "head_dim")
        value_head_dim = head_dim if value_head_dim is None else (
            checks.positive_int(value_head_dim, "value_head_dim"))
        for name, size in (("batch_size", batch_size), ("length", length)):
            if is_int(size):
                checks.positive_int(size, name)
        return cls(
            ops.zeros((batch_size, num_heads, length, head_dim), dtype),
            ops.zeros((batch_size, num_heads, length, value_head_dim), dtype),
        )

    @property
    def length(self):
        """The cache length `S` as an int, or `None` when not static."""
        return static_size(self.keys.shape[2])

    def update(self, index, keys, values):
        """Writes `T` new positions at `index`, `index + 1`, ...

        Args:
            index: int or int scalar tensor. The position of the first new
                key.
            keys: tensor `(B, T, K, H)`, as the key projection gives them.
            values: tensor `(B, T, K, V)`.

        Returns:
            The updated `KVCache`.

        Raises:
            ValueError: for an index known when the call is traced (a
                Python or NumPy int) that is negative or leaves too little
                room for the `T` new positions. A tensor index is not
                checked: XLA and TFLite (DYNAMIC_UPDATE_SLICE) clamp it so
                that the update fits, which overwrites the last positions;
                `keras_attn.models.generate` never passes one past the end.
        """
        for name, new, cache in (("keys", keys, self.keys),
                                 ("values", values, self.values)):
            want = (static_size(cache.shape[1]), static_size(cache.shape[3]))
            got = (static_size(new.shape[2]), static_size(new.shape[3]))
            if len(new.shape) != 4 or any(
                    g is not None and w is not None and g != w
                    for g, w in zip(got, want)):
                raise ValueError(
                    f"Received an invalid value for argument `{name}`, "
                    f"expected (batch, new positions, {want[0]} heads, "
                    f"{want[1]}) to fit the cache. Received: "
                    f"{name}.shape={tuple(new.shape)}")
        _check_index(index, static_size(keys.shape[1]), self.length)
        start = [0, 0, index, 0]
        return KVCache(
            ops.slice_update(
                self.keys, start, ops.transpose(keys, (0, 2, 1, 3))
            ),  # (B, K, S, H)
            ops.slice_update(
                self.values, start, ops.transpose(values, (0, 2, 1, 3))
            ),  # (B, K, S, V)
        )

    @classmethod
    def from_stacked(cls, cache):
        """A `KVCache` from keras-hub's stacked `(B, 2, S, K, H)` cache."""
        # unstack, not cache[:, 0]: on TFLite a rank-5 STRIDED_SLICE copies
        # element by element, UNPACK copies contiguous blocks.
        keys, values = ops.unstack(cache, 2, axis=1)  # (B, S, K, H)
        return cls(ops.transpose(keys, (0, 2, 1, 3)),
                   ops.transpose(values, (0, 2, 1, 3)))

    def to_stacked(self):
        """keras-hub's stacked `(B, 2, S, K, H)` form (needs `H == V`)."""
        return ops.stack(
            [ops.transpose(self.keys, (0, 2, 1, 3)),
             ops.transpose(self.values, (0, 2, 1, 3))],
            axis=1,
        )


def as_kv_cache(cache):
    """`(KVCache, stacked)`: `cache` in the native form, and whether it came
    in keras-hub's stacked form (the rule of the module docstring).

    Raises:
        TypeError: for a tuple or list that is not a `KVCache`.
    """
    if isinstance(cache, KVCache):
        return cache, False
    if isinstance(cache, (tuple, list, dict)):
        raise TypeError(
            "Received an invalid value for argument `cache`, expected a "
            "keras_attn.layers.KVCache(keys (B, K, S, H), values "
            "(B, K, S, V)) or keras-hub's stacked tensor (B, 2, S, K, H). "
            f"Received: a {type(cache).__name__} of length {len(cache)}"
        )
    return KVCache.from_stacked(cache), True


def restore_form(cache, stacked):
    """`cache` (a `KVCache`) in the form `as_kv_cache` received it."""
    return cache.to_stacked() if stacked else cache


def check_cache(cache, num_heads, key_dim, value_dim, name="cache"):
    """Raises a ValueError if `cache` (either form) does not fit a layer
    with `num_heads` key/value heads of sizes `key_dim` and `value_dim`."""
    if isinstance(cache, KVCache):
        check_mask_shape(cache.keys, f"{name}.keys",
                         (None, num_heads, None, key_dim))
        check_mask_shape(cache.values, f"{name}.values",
                         (None, num_heads, cache.keys.shape[2], value_dim))
        return
    if key_dim != value_dim:
        raise ValueError(
            f"keras-hub's stacked `{name}` (B, 2, S, K, H) needs "
            f"`key_dim == value_dim`; a KVCache does not. Received: "
            f"key_dim={key_dim}, value_dim={value_dim}"
        )
    if isinstance(cache, (tuple, list, dict)):
        as_kv_cache(cache)  # raises the TypeError
    check_mask_shape(cache, name, (None, 2, None, num_heads, key_dim))


def cache_length(cache):
    """`S`, the static length of a cache in either form (or `None`)."""
    if isinstance(cache, KVCache):
        return cache.length
    return static_size(cache.shape[2])  # (B, 2, S, K, H)


def _check_index(index, new_positions, length):
    """The static part of `KVCache.update`'s index check."""
    if isinstance(index, np.ndarray) and index.ndim == 0:
        index = index[()]
    if not is_int(index):
        return  # a tensor: known only when the program runs
    room = None
    if new_positions is not None and length is not None:
        room = length - new_positions
    if room is not None and room < 0:
        raise ValueError(
            f"The {new_positions} new positions do not fit in the cache of "
            f"length {length}. Received: cache_update_index={index}"
        )
    if index < 0 or (room is not None and index > room):
        where = ("0 or more" if room is None
                 else f"in [0, {room}], so that the {new_positions} new "
                      f"positions fit in the cache of length {length}")
        raise ValueError(
            "Received an invalid value for the cache update index, "
            f"expected an integer {where}. Received: "
            f"cache_update_index={index}"
        )
