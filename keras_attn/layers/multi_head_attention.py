"""Multi-head attention, a drop-in for `keras.layers.MultiHeadAttention`.

Shape legend: B batch, T query length, S key length, N query heads,
K key/value heads, H key head size, V value head size, D model width.
For inputs of rank > 3: A the axes between batch and features that
attention does not run over (folded into the batch), Tq and Sk the query
and key attention axes (flattened into T and S).
"""

import math
import string

import keras
from keras import ops

from keras_attn.layers.kv_cache import as_kv_cache
from keras_attn.layers.kv_cache import cache_length
from keras_attn.layers.kv_cache import check_cache
from keras_attn.layers.kv_cache import restore_form
from keras_attn.layers.masking import check_mask_shape
from keras_attn.layers.masking import expand_to_scores_rank
from keras_attn.layers.masking import merge_masks
from keras_attn.layers.quantization import serialized_dtype
from keras_attn.layers.rotary_embedding import RotaryEmbedding
from keras_attn.layers.validation import int_tuple
from keras_attn.layers.validation import optional_bool
from keras_attn.layers.validation import positive_int
from keras_attn.layers.validation import positive_number
from keras_attn.layers.validation import rate
from keras_attn.ops.attention import causal_mask
from keras_attn.ops.attention import scaled_dot_product_attention
from keras_attn.ops.attention import select_implementation
from keras_attn.ops.attention import sliding_window_mask


def _projection_equation(free_dims, bound_dims, output_dims):
    """An EinsumDense equation keeping `free_dims` leading axes, contracting
    `bound_dims` axes and adding `output_dims` axes, with its bias axes:
    `(2, 1, 2)` gives `("abc,cde->abde", "de")`."""
    letters = string.ascii_lowercase
    free = letters[:free_dims]
    bound = letters[free_dims:free_dims + bound_dims]
    out = letters[free_dims + bound_dims:free_dims + bound_dims + output_dims]
    return f"{free}{bound},{bound}{out}->{free}{out}", out


def _same_dims(a, b):
    """Equal shapes, where an unknown (None) size matches any size."""
    return len(a) == len(b) and all(
        x is None or y is None or x == y for x, y in zip(a, b)
    )


def _resolve_axes(attention_axes, rank):
    """Keras's attention axes for inputs of `rank`, as positive indices
    into the input (and the projected tensors): `None` means every axis
    between batch and features; a negative axis counts from the input's
    end."""
    if attention_axes is None:
        return tuple(range(1, rank - 1))
    axes = tuple(a + rank if a < 0 else a for a in attention_axes)
    if len(set(axes)) != len(axes) or not all(0 < a < rank - 1 for a in axes):
        raise ValueError(
            "Received an invalid value for argument `attention_axes`, "
            f"expected distinct axes between 1 and {rank - 2} (or -{rank - 1}"
            f" to -2) for inputs of rank {rank}. "
            f"Received: attention_axes={attention_axes}"
        )
    return axes


@keras.saving.register_keras_serializable(package="keras_attn")
class MultiHeadAttention(keras.layers.Layer):
    """Multi-head attention with grouped-query heads and a KV cache.

    Same constructor, call arguments, public attributes and variables
    (names, order and shapes) as `keras.layers.MultiHeadAttention` (Keras
    3.15), so `ours.set_weights(keras_mha.get_weights())` reproduces its
    outputs, for inputs of any rank (`attention_axes`), with `use_gate`,
    `sliding_window`, `output_shape` and `value_dim`. On top of it:
    `num_key_value_heads` (grouped-query attention; 1 is multi-query),
    rotary position embeddings, a KV cache for fast autoregressive decoding,
    logits and softmax in float32 whatever the compute dtype, and query rows
    that may attend to nothing give zeros.

    Masking: the Keras masks of `query`, `value` and `key` (or the
    `query_mask`, `value_mask`, `key_mask` arguments), `attention_mask`,
    and, when asked for, a causal mask and a sliding window are combined by
    logical AND. `attention_mask` is `(B, T, S)`, or `(T, S)` or
    `(B, N, T, S)`, broadcasting as in Keras (for higher-rank inputs:
    `(B, *A, *Tq, *Sk)` and the like). The causal mask and the window use
    positions: query `i` sits at `i`, key `j` at `j` (Keras's top-left
    alignment); with a `cache` and `cache_update_index`, the new tokens sit
    at `cache_update_index + i`, so cached decoding with a window equals
    the full pass with it. For inputs of rank > 3 both run over the
    attention axes flattened in order. With a cache, the Keras masks of
    `value`/`key` (which describe only the new tokens) are not used: pass
    `attention_mask` `(B, T, S)` to hide cached positions. Padded query rows
    attend to nothing; their attention output is zero. The output carries
    the query's Keras mask.

    Differences from Keras, all deliberate: a query row with no key to
    attend to gives zeros where Keras gives a uniform average (or NaN on
    some fused kernels); float16 logits never overflow (Keras's do for
    large inputs); `flash_attention=False` means "pass `False` to
    `keras.ops.dot_product_attention`", not "never fuse"; `_compute_attention`
    (Keras's override point, same signature) receives keys and values with
    `num_key_value_heads` heads, not repeated, and is not called with a
    `cache` (the heads-first cache is attended in place); and `get_config`
    also holds `flash_attention`, `num_key_value_heads` and
    `rotary_max_wavelength`.

    Args:
        num_heads: int. Number of query heads `N`.
        key_dim: int. Size `H` of each query and key head.
        value_dim: int or `None`. Size `V` of each value head. Defaults to
            `key_dim`; the attribute holds the resolved size, as Keras's.
        dropout: float. Dropout rate on the attention weights. Defaults to 0.
        use_bias: bool. Whether the projections use biases. Defaults to True.
        output_shape: int, tuple or `None`. Output feature shape. Defaults to
            the query's last dimension.
        attention_axes: int, tuple of ints or `None`. The axes of `query`
            and `value` that attention runs over; the others between batch
            and features are independent, as batch. Defaults to `None`:
            every axis but batch and features.
        sliding_window: int or `None`. If set, a query attends only to keys
            less than `sliding_window` positions away (a symmetric band;
            with `use_causal_mask=True`, itself and the `sliding_window - 1`
            keys before it). Defaults to `None`: no window.
        flash_attention: `None`, `True` or `False`. `True` forces Keras's
            fused `dot_product_attention` with flash kernels (raising, as
            Keras does, with dropout, with `return_attention_scores=True`,
            or on backends without them); `None` follows
            `keras.config.is_flash_attention_enabled()`. Defaults to `None`.
        kernel_initializer, bias_initializer: initializers of the projections.
        kernel_regularizer, bias_regularizer, activity_regularizer: optional
            regularizers of the projections.
        kernel_constraint, bias_constraint: optional constraints.
        use_gate: bool. If True, the attention output is multiplied by a
            sigmoid gate projected from the query (Qiu et al., 2025), before
            the output projection. Defaults to False.
        seed: int or `None`. Seed of the attention dropout.
        num_key_value_heads: int or `None`. Number of key/value heads `K`;
            must divide `num_heads`. Defaults to `num_heads`.
        rotary_max_wavelength: float or `None`. If set, rotary position
            embeddings with this maximum wavelength rotate queries and keys
            (rank-3 inputs). Defaults to `None`: no rotary embeddings.

    Call arguments:
        query: tensor `(B, T, D_q)`, or `(B, ..., D_q)` with `attention_axes`.
        value: tensor `(B, S, D_v)` (same rank as `query`).
        key: optional tensor `(B, S, D_k)`. Defaults to `value`.
        query_mask, value_mask, key_mask: optional boolean `(B, T)` / `(B, S)`
            padding masks; filled in from Keras masks when not given.
        attention_mask: optional boolean tensor `(B, T, S)`, True = attend;
            `(T, S)` and `(B, N, T, S)` broadcast.
        return_attention_scores: bool. Also return the weights `(B, N, T, S)`
            (`(B, *A, N, *Tq, *Sk)` for higher ranks).
        training: bool. Enables dropout.
        use_causal_mask: bool. Whether to add a causal mask.
        cache: optional `keras_attn.layers.KVCache` (keys `(B, K, S, H)`
            and values `(B, K, S, V)`, heads first), or keras-hub's stacked
            tensor `(B, 2, S, K, H)` (keys at index 0, values at index 1;
            needs `key_dim == value_dim`); returned updated in the same
            form. Needs rank-3 inputs. The forms and the layout are
            defined in `keras_attn.layers.kv_cache`.
        cache_update_index: optional int or int tensor. Where the new keys and
            values are written into `cache`. `None` with a cache uses the
            cache as is (precomputed cross-attention keys).

    Returns:
        The output `(B, T, *output_shape)`; followed, in this order and only
        when requested or given, by the attention weights `(B, N, T, S)` and
        the updated cache. (Keras's and keras-hub's convention.)

    Example:

    ```python
    import numpy as np
    import keras_attn
    layer = keras_attn.layers.MultiHeadAttention(
        num_heads=4, key_dim=8, num_key_value_heads=2, sliding_window=3)
    x = np.random.rand(2, 5, 16).astype("float32")
    y, scores = layer(x, x, use_causal_mask=True, return_attention_scores=True)
    assert y.shape == (2, 5, 16) and scores.shape == (2, 4, 5, 5)
    assert np.asarray(scores)[0, 0, 4, :2].sum() == 0.0  # outside the window
    ```

    References:
        Vaswani et al., 2017, https://arxiv.org/abs/1706.03762;
        Ainslie et al., "GQA", 2023, https://arxiv.org/abs/2305.13245;
        Beltagy et al., "Longformer" (sliding window), 2020,
        https://arxiv.org/abs/2004.05150;
        Qiu et al., "Gated Attention for Large Language Models", 2025,
        https://arxiv.org/abs/2505.06708.
    """

    def __init__(
        self,
        num_heads,
        key_dim,
        value_dim=None,
        dropout=0.0,
        use_bias=True,
        output_shape=None,
        attention_axes=None,
        sliding_window=None,
        flash_attention=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        use_gate=False,
        seed=None,
        num_key_value_heads=None,
        rotary_max_wavelength=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.supports_masking = True
        self.num_heads = positive_int(num_heads, "num_heads")
        self.key_dim = positive_int(key_dim, "key_dim")
        self.value_dim = (
            positive_int(value_dim, "value_dim", allow_none=True)
            or self.key_dim
        )
        self.dropout = rate(dropout, "dropout")
        self.use_bias = bool(use_bias)
        self.output_shape = self._check_output_shape(output_shape)
        self.attention_axes = int_tuple(
            attention_axes, "attention_axes", allow_none=True
        )
        self.sliding_window = positive_int(
            sliding_window, "sliding_window", allow_none=True
        )
        self.flash_attention = optional_bool(flash_attention,
                                             "flash_attention")
        # Resolved once, as Keras does: the argument, else the global
        # `keras.config` setting (None: the backend decides).
        self._flash_attention = (
            flash_attention or keras.config.is_flash_attention_enabled()
        )
        if self._flash_attention and self.dropout > 0.0:
            raise ValueError(
                "Dropout is not supported when flash attention is enabled. "
                "Please set dropout to 0.0 to use flash attention. Received: "
                f"dropout={dropout}, flash_attention={flash_attention}"
            )
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        # Applies to the projections, as in Keras; this layer's own
        # `activity_regularizer` stays unset.
        self.projection_activity_regularizer = keras.regularizers.get(
            activity_regularizer
        )
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        self.use_gate = bool(use_gate)
        self.seed = seed
        self.num_key_value_heads = positive_int(
            num_key_value_heads, "num_key_value_heads", allow_none=True
        )
        if self.num_heads % self._kv_heads != 0:
            raise ValueError(
                "Received an invalid value for argument `num_key_value_heads`"
                f", expected a divisor of num_heads={num_heads}. Received: "
                f"num_key_value_heads={num_key_value_heads}"
            )
        positive_number(
            rotary_max_wavelength, "rotary_max_wavelength", allow_none=True
        )
        if rotary_max_wavelength is not None and self.key_dim % 2:
            raise ValueError(
                "Rotary embeddings need an even `key_dim`. Received: "
                f"key_dim={key_dim}"
            )
        self.rotary_max_wavelength = rotary_max_wavelength
        # Holds the dropout seed, under Keras's attribute name: `.weights.h5`
        # files key objects by attribute name, so ours and Keras's match.
        self._dropout_layer = keras.layers.Dropout(
            rate=self.dropout, seed=seed, dtype=self.dtype_policy
        )
        # Which path the last call took: "fused" or "explicit".
        self.last_attention_path = None

    @staticmethod
    def _check_output_shape(output_shape):
        if output_shape is None:
            return None
        dims = (output_shape,) if isinstance(output_shape, int) else (
            output_shape
        )
        if not (
            isinstance(dims, (tuple, list))
            and dims
            and all(isinstance(d, int) and not isinstance(d, bool) and d > 0
                    for d in dims)
        ):
            raise ValueError(
                f"Invalid `output_shape`: {output_shape!r}. Expected a "
                "positive int, or a tuple or list of positive ints. "
                f"Received: output_shape={output_shape!r}"
            )
        return tuple(dims)

    @property
    def _kv_heads(self):
        return self.num_key_value_heads or self.num_heads

    @property
    def _sliding_window(self):
        # Keras's private name, read by code written against it.
        return self.sliding_window

    def _projection(self, equation, output_shape, bias_axes, name,
                    activation=None):
        def clone(initializer):
            return initializer.__class__.from_config(initializer.get_config())

        dense = keras.layers.EinsumDense(
            equation,
            output_shape=output_shape,
            activation=activation,
            bias_axes=bias_axes if self.use_bias else None,
            kernel_initializer=clone(self.kernel_initializer),
            bias_initializer=clone(self.bias_initializer),
            kernel_regularizer=self.kernel_regularizer,
            bias_regularizer=self.bias_regularizer,
            activity_regularizer=self.projection_activity_regularizer,
            kernel_constraint=self.kernel_constraint,
            bias_constraint=self.bias_constraint,
            dtype=self.dtype_policy,
            name=name,
        )
        # The projections pass the Keras mask through (their output is not
        # masked by it); without this Keras warns that they destroy it.
        dense.supports_masking = True
        return dense

    def _heads_projection(self, rank, heads, head_dim, name, **kwargs):
        """(B, ..., D) -> (B, ..., heads, head_dim)."""
        equation, bias_axes = _projection_equation(rank - 1, 1, 2)
        shape = (None,) * (rank - 2) + (heads, head_dim)
        return self._projection(equation, shape, bias_axes, name, **kwargs)

    @staticmethod
    def _check_input_shapes(query_shape, value_shape, key_shape):
        if not _same_dims(value_shape[1:-1], key_shape[1:-1]):
            raise ValueError(
                "All dimensions of `value` and `key`, except the last one, "
                f"must be equal. Received: value_shape={value_shape} and "
                f"key_shape={key_shape}"
            )
        if len(query_shape) < 3:
            raise ValueError(
                "`query` must have rank 3 or more (batch, ..., features). "
                f"Received: query_shape={query_shape}"
            )
        if len(value_shape) != len(query_shape):
            raise ValueError(
                "`query`, `value` and `key` must have the same rank. "
                f"Received: query_shape={query_shape}, "
                f"value_shape={value_shape}"
            )

    def build(self, query_shape, value_shape, key_shape=None):
        query_shape = tuple(query_shape)
        value_shape = tuple(value_shape)
        key_shape = value_shape if key_shape is None else tuple(key_shape)
        self._check_input_shapes(query_shape, value_shape, key_shape)
        rank = len(query_shape)
        self._attention_axes = _resolve_axes(self.attention_axes, rank)
        if rank != 3 and self.rotary_max_wavelength is not None:
            raise ValueError(
                "Rotary embeddings need rank-3 inputs (batch, length, "
                f"features). Received: query_shape={query_shape}"
            )
        # Keras's order of creation, hence of `weights`: query, key, gate,
        # value, attention_output.
        self._query_dense = self._heads_projection(
            rank, self.num_heads, self.key_dim, "query"
        )
        self._query_dense.build(query_shape)
        self._key_dense = self._heads_projection(
            rank, self._kv_heads, self.key_dim, "key"
        )
        self._key_dense.build(key_shape)
        # Attribute names are Keras's (`_gate_dense` has no public twin):
        # `.weights.h5` files key objects by attribute name.
        self._gate_dense = None
        if self.use_gate:
            self._gate_dense = self._heads_projection(
                rank, self.num_heads, self.value_dim, "gate",
                activation="sigmoid",
            )
            self._gate_dense.build(query_shape)
        self._value_dense = self._heads_projection(
            rank, self._kv_heads, self.value_dim, "value"
        )
        self._value_dense.build(value_shape)
        out_shape = self.output_shape or (query_shape[-1],)
        equation, bias_axes = _projection_equation(
            rank - 1, 2, len(out_shape)
        )
        self._output_dense = self._projection(
            equation,
            (None,) * (rank - 2) + tuple(out_shape),
            bias_axes,
            "attention_output",
        )
        self._output_dense.build(
            query_shape[:-1] + (self.num_heads, self.value_dim)
        )
        self._rotary = None
        if self.rotary_max_wavelength is not None:
            self._rotary = RotaryEmbedding(
                max_wavelength=self.rotary_max_wavelength,
                dtype=self.dtype_policy,
                name="rotary_embedding",
            )
        self.built = True

    @property
    def query_dense(self):
        return self._query_dense

    @property
    def key_dense(self):
        return self._key_dense

    @property
    def value_dense(self):
        return self._value_dense

    @property
    def output_dense(self):
        return self._output_dense

    def enable_lora(
        self,
        rank,
        lora_alpha=None,
        a_initializer="he_uniform",
        b_initializer="zeros",
        target_layer_names=("query", "value"),
    ):
        """Enables LoRA on projections: `EinsumDense.enable_lora` on each.

        Their kernels become non-trainable and a trainable low-rank update
        of rank `rank` is added; saved weights hold the merged kernels, so
        they load into a layer without LoRA.

        Args:
            rank: int. Rank of the update.
            lora_alpha: float or `None`. Scale of the update is
                `lora_alpha / rank`. Defaults to `rank`.
            a_initializer, b_initializer: initializers of the two factors.
            target_layer_names: names among `"query"`, `"key"`, `"value"`,
                `"gate"`, `"attention_output"`. Defaults to query and value
                (as keras-hub's `Backbone.enable_lora` and the LoRA paper).
        """
        if not self.built:
            raise ValueError(
                "Cannot enable lora on a layer that isn't yet built."
            )
        projections = {
            "query": self._query_dense,
            "key": self._key_dense,
            "value": self._value_dense,
            "gate": self._gate_dense,
            "attention_output": self._output_dense,
        }
        for name in target_layer_names:
            if projections.get(name) is None:
                raise ValueError(
                    "Received an invalid value for argument "
                    "`target_layer_names`, expected names among "
                    f"{sorted(k for k, v in projections.items() if v)}. "
                    f"Received: target_layer_names={target_layer_names!r}"
                )
        for name in target_layer_names:
            projections[name].enable_lora(
                rank,
                lora_alpha=lora_alpha,
                a_initializer=a_initializer,
                b_initializer=b_initializer,
            )

    # Keys, values and the KV cache -------------------------------------------

    def _project_keys_and_values(self, key, value, position):
        """`(k (B, S, K, H), v (B, S, K, V))` for the tokens of `key` and
        `value`, which sit at `position`, `position + 1`, ..."""
        k = self._key_dense(key)  # (B, S, K, H)
        if self._rotary is not None:
            k = self._rotary(k, start_index=position)
        v = self._value_dense(value)  # (B, S, K, V)
        return k, v

    def _cached_keys_and_values(self, key, value, cache, cache_update_index):
        """The cache as a `KVCache` `(B, K, S, H)`, with the new keys and
        values written at `cache_update_index` (`None`: used as is), and
        whether it came in keras-hub's stacked form. The cache's forms and
        layout are `keras_attn.layers.kv_cache`'s."""
        if len(key.shape) != 3:
            raise ValueError(
                "A `cache` needs rank-3 inputs (batch, length, features). "
                f"Received: key.shape={tuple(key.shape)}"
            )
        check_cache(cache, self._kv_heads, self.key_dim, self.value_dim)
        cache, stacked = as_kv_cache(cache)
        if cache_update_index is not None:
            k, v = self._project_keys_and_values(
                key, value, cache_update_index
            )  # (B, T, K, H), (B, T, K, V)
            cache = cache.update(cache_update_index, k, v)
        return cache, stacked

    # Masks and attention -----------------------------------------------------

    def _layout(self, projected_rank):
        """`(non-attention axes, attention axes)` of projected tensors."""
        axes = getattr(self, "_attention_axes", None)
        if axes is None:
            axes = _resolve_axes(self.attention_axes, projected_rank - 1)
        others = tuple(a for a in range(1, projected_rank - 2)
                       if a not in axes)
        return others, axes

    def _padding_to_scores(self, mask, projected_rank, is_query):
        """A padding mask `(B, ...)` over the query's (or key's) axes, laid
        out as the scores `(B, *A, 1, *Tq, *1)` (or `(B, *A, 1, *1, *Sk)`).
        """
        others, axes = self._layout(projected_rank)
        mask = ops.cast(mask, "bool")
        order = (0,) + others + axes
        if order != tuple(range(len(order))):
            mask = ops.transpose(mask, order)  # (B, *A, *attention axes)
        new_axes = [1 + len(others)]  # heads
        extra = range(len(axes))
        if is_query:  # (B, *A, 1, *Tq, *1)
            new_axes += [2 + len(others) + len(axes) + i for i in extra]
        else:  # (B, *A, 1, *1, *Sk)
            new_axes += [2 + len(others) + i for i in extra]
        for axis in new_axes:
            mask = ops.expand_dims(mask, axis)
        return mask

    def _position_mask(self, q, key_shape, causal, window, offset):
        """Causal and/or sliding-window mask over the flattened attention
        positions, laid out as the scores `(1, *1, 1, *Tq, *Sk)`.
        `key_shape` is `ops.shape` of the keys laid out as the query."""
        others, axes = self._layout(len(q.shape))
        q_dims = [ops.shape(q)[a] for a in axes]
        k_dims = [key_shape[a] for a in axes]
        query_length, key_length = math.prod(q_dims), math.prod(k_dims)
        mask = None
        if causal:
            mask = causal_mask(query_length, key_length, offset)
        if window is not None:
            band = sliding_window_mask(query_length, key_length, window,
                                       offset)
            mask = merge_masks(mask, band)  # (T, S)
        if len(axes) > 1:
            mask = ops.reshape(mask, q_dims + k_dims)  # (*Tq, *Sk)
        for _ in range(2 + len(others)):
            mask = mask[None]
        return mask

    def _attention_mask(self, q, key_shape, query_mask, key_padding,
                        attention_mask, use_causal_mask, offset):
        """Every mask, combined, laid out as the scores, or `None`.
        `key_shape` is `ops.shape` of the keys laid out as the query,
        `(B, ..., K, H)`."""
        rank = len(q.shape)
        others, axes = self._layout(rank)
        scores_rank = 2 + len(others) + 2 * len(axes)
        if attention_mask is not None:
            attention_mask = expand_to_scores_rank(
                attention_mask, scores_rank, len(axes), "attention_mask"
            )
            check_mask_shape(
                attention_mask, "attention_mask",
                (None,) * (scores_rank - 2 * len(axes))
                + tuple(q.shape[a] for a in axes)
                + tuple(key_shape[a] for a in axes),
            )
        if query_mask is not None:
            check_mask_shape(query_mask, "query_mask", q.shape[:-2])
            query_mask = self._padding_to_scores(
                query_mask, rank, is_query=True
            )
        if key_padding is not None:
            check_mask_shape(key_padding, "value_mask", key_shape[:-2])
            key_padding = self._padding_to_scores(
                key_padding, rank, is_query=False
            )
        positions = None
        if use_causal_mask or self.sliding_window is not None:
            positions = self._position_mask(
                q, key_shape, use_causal_mask, self.sliding_window, offset
            )
        return merge_masks(attention_mask, query_mask, key_padding,
                           positions)

    @staticmethod
    def _fold(x, others, axes):
        """(B, *dims, heads, H) -> (B * prod(A), prod(attention axes),
        heads, H), with what `_unfold` needs to undo it."""
        rank = len(x.shape)
        order = (0,) + others + axes + (rank - 2, rank - 1)
        if order != tuple(range(rank)):
            x = ops.transpose(x, order)  # (B, *A, *Tq, heads, H)
        shape = ops.shape(x)
        if rank > 4:
            length = math.prod(shape[1 + len(others):rank - 2])
            x = ops.reshape(x, (-1, length) + tuple(shape[-2:]))
        return x, (order, shape)

    @staticmethod
    def _unfold(x, fold):
        """Inverse of `_fold` for the attention output (B', T, N, V)."""
        order, shape = fold
        if len(shape) > 4:
            x = ops.reshape(x, tuple(shape[:-1]) + (ops.shape(x)[-1],))
        if order != tuple(range(len(order))):
            x = ops.transpose(x, [order.index(i) for i in range(len(order))])
        return x

    def _compute_attention(
        self,
        query,
        key,
        value,
        attention_mask=None,
        training=None,
        return_attention_scores=False,
        use_causal_mask=False,
    ):
        """Attention of projected heads, Keras's override point.

        Args:
            query: `(B, T, N, H)` (or `(B, *dims, N, H)`).
            key: `(B, S, K, H)`.
            value: `(B, S, K, V)`.
            attention_mask: boolean mask broadcasting against the scores
                (Keras's rules, see the class docstring), or `None`.
            training: bool. Enables dropout.
            return_attention_scores: bool. Whether to return the weights.
            use_causal_mask: bool. Adds a causal mask (top-left aligned).

        Returns:
            `(output (B, T, N, V), scores (B, N, T, S) or None)`.
        """
        if self._flash_attention and return_attention_scores:
            raise ValueError(
                "Returning attention scores is not supported when flash "
                "attention is enabled. Please disable flash attention to "
                "access attention scores."
            )
        rank = len(query.shape)
        others, axes = self._layout(rank)
        scores_rank = 2 + len(others) + 2 * len(axes)
        if attention_mask is not None:
            attention_mask = expand_to_scores_rank(
                attention_mask, scores_rank, len(axes), "attention_mask"
            )
        if use_causal_mask:
            attention_mask = merge_masks(
                attention_mask,
                self._position_mask(query, ops.shape(key), True, None, 0),
            )
        q, fold = self._fold(query, others, axes)  # (B', T, N, H)
        k, _ = self._fold(key, others, axes)  # (B', S, K, H)
        v, _ = self._fold(value, others, axes)  # (B', S, K, V)
        mask = attention_mask
        if mask is not None and scores_rank > 4:
            shape = ops.shape(query)
            batch_shape = (shape[0],) + tuple(shape[a] for a in others)
            head_dim = mask.shape[1 + len(others)]
            q_dims = [shape[a] for a in axes]
            k_dims = [ops.shape(key)[a] for a in axes]
            mask = ops.broadcast_to(
                mask, batch_shape + (head_dim,) + tuple(q_dims)
                + tuple(k_dims)
            )  # (B, *A, N|1, *Tq, *Sk)
            mask = ops.reshape(
                mask, (-1, head_dim, math.prod(q_dims), math.prod(k_dims))
            )  # (B', N|1, T, S)
        attended, scores = self._attention(
            q, k, v, mask, training, return_attention_scores
        )  # (B', T, N, V), (B', N, T, S) or None
        if return_attention_scores and scores_rank > 4:
            shape = ops.shape(query)
            scores = ops.reshape(
                scores,
                (shape[0],) + tuple(shape[a] for a in others)
                + (self.num_heads,)
                + tuple(shape[a] for a in axes)
                + tuple(ops.shape(key)[a] for a in axes),
            )  # (B, *A, N, *Tq, *Sk)
        return self._unfold(attended, fold), scores

    def _attention(self, q, k, v, mask, training, return_attention_scores,
                   kv_layout="BSKH"):
        """`keras_attn.ops.scaled_dot_product_attention` of projected rank-4
        heads, on the path `select_implementation` picks (recorded in
        `last_attention_path`).

        Args:
            q: `(B, T, N, H)`.
            k, v: `(B, S, K, H)`, `(B, S, K, V)`; heads first,
                `(B, K, S, H)`, with `kv_layout="BKSH"` (a `KVCache`).
            mask: boolean, broadcasting to `(B, N, T, S)`, or `None`.

        Returns:
            `(output (B, T, N, V), scores (B, N, T, S) or None)`.
        """
        self.last_attention_path = select_implementation(
            q.dtype,
            return_attention_scores,
            self.dropout,
            training,
            key_head_dim=self.key_dim,
            value_head_dim=self.value_dim,
            flash_attention=self._flash_attention,
            kv_layout=kv_layout,
        )
        attended = scaled_dot_product_attention(
            q,
            k,
            v,
            mask=mask,
            dropout_rate=self.dropout,
            training=training,
            seed=getattr(self._dropout_layer, "seed_generator", None),
            return_weights=return_attention_scores,
            implementation=self.last_attention_path,
            flash_attention=self._flash_attention,
            kv_layout=kv_layout,
        )
        if return_attention_scores:
            return attended
        return attended, None

    def _attend(self, q, k, v, mask, training, return_attention_scores):
        """Calls `_compute_attention`; subclasses adapt its signature."""
        return self._compute_attention(
            q, k, v, mask, training, return_attention_scores
        )

    def call(
        self,
        query,
        value,
        key=None,
        query_mask=None,
        value_mask=None,
        key_mask=None,
        attention_mask=None,
        return_attention_scores=False,
        training=None,
        use_causal_mask=False,
        cache=None,
        cache_update_index=None,
    ):
        if key is None:
            key = value
        gate = None
        if self._gate_dense is not None:
            gate = self._gate_dense(query)  # (B, T, N, V)
        if cache is None and cache_update_index is not None:
            raise ValueError(
                "`cache_update_index` should only be set with a `cache`. "
                f"Received: cache=None, cache_update_index="
                f"{cache_update_index}"
            )
        position = 0 if cache_update_index is None else cache_update_index
        q = self._query_dense(query)  # (B, T, N, H)
        if self._rotary is not None:
            q = self._rotary(q, start_index=position)
        # `value_mask`/`key_mask` describe `value`/`key`: all the keys
        # unless they are new tokens written into a cache.
        key_padding = None
        if cache_update_index is None:
            key_padding = merge_masks(value_mask, key_mask)  # (B, S)
        if cache is None:
            k, v = self._project_keys_and_values(key, value, 0)
            key_shape = ops.shape(k)  # (B, S, K, H)
        else:
            kv_cache, stacked = self._cached_keys_and_values(
                key, value, cache, cache_update_index
            )
            shape = ops.shape(kv_cache.keys)  # (B, K, S, H)
            key_shape = (shape[0], shape[2], shape[1], shape[3])
        zero_queries = None
        if query_mask is not None and len(q.shape) == 4:
            # Padded queries are not folded into the (B, T, S) mask: their
            # rows are zeroed after the attention instead (the same outputs
            # and weights as fully masked rows), so a padding-only mask stays
            # (B, 1, S) and is never broadcast to every query (on TFLite
            # 2% faster, and a (B, T, S) mask costs XLA training 8%).
            check_mask_shape(query_mask, "query_mask", q.shape[:-2])
            zero_queries, query_mask = query_mask, None
        mask = self._attention_mask(
            q, key_shape, query_mask, key_padding, attention_mask,
            use_causal_mask, position,
        )  # (B, N|1, T, S) or None
        if cache is None:
            attended, scores = self._attend(
                q, k, v, mask, training, return_attention_scores
            )  # (B, T, N, V)
        else:
            # The cache is attended in place (heads first), not through
            # `_compute_attention`, whose keys are `(B, S, K, H)`.
            attended, scores = self._attention(
                q, kv_cache.keys, kv_cache.values, mask, training,
                return_attention_scores, kv_layout="BKSH",
            )  # (B, T, N, V)
            cache = restore_form(kv_cache, stacked)
        if zero_queries is not None:
            keep = ops.cast(zero_queries, attended.dtype)  # (B, T)
            attended = attended * keep[:, :, None, None]  # (B, T, N, V)
            if return_attention_scores:
                scores = scores * ops.cast(zero_queries, scores.dtype)[
                    :, None, :, None
                ]  # (B, N, T, S)
        if gate is not None:
            attended = ops.multiply(attended, gate)
        output = self._output_dense(attended)  # (B, T, D)
        outputs = (output,)
        if return_attention_scores:
            outputs += (scores,)
        if cache is not None:
            outputs += (cache,)
        return outputs[0] if len(outputs) == 1 else outputs

    def compute_output_shape(self, query_shape, value_shape, key_shape=None):
        query_shape = tuple(query_shape)
        value_shape = tuple(value_shape)
        key_shape = value_shape if key_shape is None else tuple(key_shape)
        self._check_input_shapes(query_shape, value_shape, key_shape)
        return query_shape[:-1] + (self.output_shape or query_shape[-1:])

    def _scores_shape(self, query_shape, key_shape):
        others, axes = self._layout(len(query_shape) + 1)
        return (
            (query_shape[0],)
            + tuple(query_shape[a] for a in others)
            + (self.num_heads,)
            + tuple(query_shape[a] for a in axes)
            + tuple(key_shape[a] for a in axes)
        )

    def compute_output_spec(
        self,
        query,
        value,
        key=None,
        query_mask=None,
        value_mask=None,
        key_mask=None,
        attention_mask=None,
        return_attention_scores=False,
        training=None,
        use_causal_mask=False,
        cache=None,
        cache_update_index=None,
    ):
        key_shape = value.shape if key is None else key.shape
        output = keras.KerasTensor(
            self.compute_output_shape(query.shape, value.shape, key_shape),
            dtype=self.compute_dtype,
        )
        outputs = (output,)
        if return_attention_scores:
            if cache is not None:  # S is the cache's length
                key_shape = (key_shape[0], cache_length(cache))
            outputs += (keras.KerasTensor(
                self._scores_shape(tuple(query.shape), tuple(key_shape)),
                dtype=self.compute_dtype,
            ),)
        if cache is not None:
            outputs += (keras.tree.map_structure(
                lambda c: keras.KerasTensor(c.shape, dtype=c.dtype), cache
            ),)
        return outputs[0] if len(outputs) == 1 else outputs

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                # Records quantized projections, so a quantized layer loads.
                "dtype": serialized_dtype(self),
                "num_heads": self.num_heads,
                "key_dim": self.key_dim,
                "value_dim": self.value_dim,
                "dropout": self.dropout,
                "use_bias": self.use_bias,
                "output_shape": self.output_shape,
                "attention_axes": self.attention_axes,
                "sliding_window": self.sliding_window,
                "flash_attention": self.flash_attention,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
                "bias_initializer": keras.initializers.serialize(
                    self.bias_initializer
                ),
                "kernel_regularizer": keras.regularizers.serialize(
                    self.kernel_regularizer
                ),
                "bias_regularizer": keras.regularizers.serialize(
                    self.bias_regularizer
                ),
                "activity_regularizer": keras.regularizers.serialize(
                    self.projection_activity_regularizer
                ),
                "kernel_constraint": keras.constraints.serialize(
                    self.kernel_constraint
                ),
                "bias_constraint": keras.constraints.serialize(
                    self.bias_constraint
                ),
                "use_gate": self.use_gate,
                "seed": self.seed,
                "num_key_value_heads": self.num_key_value_heads,
                "rotary_max_wavelength": self.rotary_max_wavelength,
            }
        )
        return config
