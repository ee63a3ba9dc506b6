"""Multi-head attention, a drop-in for `keras.layers.MultiHeadAttention`.

Shape legend: B batch, T query length, S key length, N query heads,
K key/value heads, H key head size, V value head size, D model width.
"""

import keras
from keras import ops

from keras_attn.layers.masking import check_mask_shape
from keras_attn.layers.masking import merge_masks
from keras_attn.layers.rotary_embedding import RotaryEmbedding
from keras_attn.layers.validation import positive_int
from keras_attn.layers.validation import positive_number
from keras_attn.layers.validation import rate
from keras_attn.ops.attention import causal_mask
from keras_attn.ops.attention import scaled_dot_product_attention
from keras_attn.ops.attention import select_implementation


@keras.saving.register_keras_serializable(package="keras_attn")
class MultiHeadAttention(keras.layers.Layer):
    """Multi-head attention with grouped-query heads and a KV cache.

    Same constructor, call arguments and variables (names, order and shapes)
    as `keras.layers.MultiHeadAttention` for 3D inputs, so
    `ours.set_weights(keras_mha.get_weights())` reproduces its outputs.
    On top of it: `num_key_value_heads` (grouped-query attention; 1 is
    multi-query), rotary position embeddings on queries and keys, and a KV
    cache for fast autoregressive decoding.

    Masking: the Keras masks of `query`, `value` and `key` (or the
    `query_mask`, `value_mask`, `key_mask` arguments) are combined by logical
    AND with `attention_mask` and, with `use_causal_mask=True`, a causal mask.
    Padded query rows attend to nothing and their attention output is zero.
    The causal mask is aligned bottom-right: the last query sees every key
    (identical to Keras's for self-attention, where T == S). With a `cache`
    and `cache_update_index`, the new tokens sit at positions
    `cache_update_index + i`, and the Keras masks of `value`/`key` (which
    describe only the new tokens) are not used: pass `attention_mask` of shape
    `(B, T, S)` to hide cached positions. The output carries the query's mask.

    Args:
        num_heads: int. Number of query heads `N`.
        key_dim: int. Size `H` of each query and key head.
        value_dim: int. Size `V` of each value head. Defaults to `key_dim`.
        dropout: float. Dropout rate on the attention weights. Defaults to 0.
        use_bias: bool. Whether the projections use biases. Defaults to True.
        output_shape: int, tuple or `None`. Output feature shape. Defaults to
            the query's last dimension.
        kernel_initializer, bias_initializer: initializers of the projections.
        kernel_regularizer, bias_regularizer, activity_regularizer: optional
            regularizers of the projections.
        kernel_constraint, bias_constraint: optional constraints.
        seed: int or `None`. Seed of the attention dropout.
        num_key_value_heads: int or `None`. Number of key/value heads `K`;
            must divide `num_heads`. Defaults to `num_heads`.
        rotary_max_wavelength: float or `None`. If set, rotary position
            embeddings with this maximum wavelength rotate queries and keys
            (self-attention). Defaults to `None`: no rotary embeddings.

    Call arguments:
        query: tensor `(B, T, D_q)`.
        value: tensor `(B, S, D_v)`.
        key: optional tensor `(B, S, D_k)`. Defaults to `value`.
        query_mask, value_mask, key_mask: optional boolean `(B, T)` / `(B, S)`
            padding masks; filled in from Keras masks when not given.
        attention_mask: optional boolean tensor `(B, T, S)`, True = attend.
        return_attention_scores: bool. Also return the weights `(B, N, T, S)`.
        training: bool. Enables dropout.
        use_causal_mask: bool. Whether to add a causal mask.
        cache: optional tensor `(B, 2, S, K, H)` of cached keys (index 0) and
            values (index 1), or a pair `(keys (B, S, K, H), values
            (B, S, K, H))`, returned updated in the same form (the pair
            avoids stacking copies, e.g. in TFLite); needs
            `key_dim == value_dim`.
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
    layer = keras_attn.layers.MultiHeadAttention(num_heads=4, key_dim=8,
                                                 num_key_value_heads=2)
    x = np.random.rand(2, 5, 16).astype("float32")
    y, scores = layer(x, x, use_causal_mask=True, return_attention_scores=True)
    assert y.shape == (2, 5, 16) and scores.shape == (2, 4, 5, 5)
    ```

    References:
        Vaswani et al., 2017, https://arxiv.org/abs/1706.03762;
        Ainslie et al., "GQA", 2023, https://arxiv.org/abs/2305.13245.
    """

    def __init__(
        self,
        num_heads,
        key_dim,
        value_dim=None,
        dropout=0.0,
        use_bias=True,
        output_shape=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        seed=None,
        num_key_value_heads=None,
        rotary_max_wavelength=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.supports_masking = True
        self.num_heads = positive_int(num_heads, "num_heads")
        self.key_dim = positive_int(key_dim, "key_dim")
        self.value_dim = positive_int(value_dim, "value_dim", allow_none=True)
        self.dropout = rate(dropout, "dropout")
        self.use_bias = bool(use_bias)
        if isinstance(output_shape, int):
            output_shape = (output_shape,)
        if output_shape is not None:
            output_shape = tuple(output_shape)
            for dim in output_shape:
                positive_int(dim, "output_shape")
        self.output_shape = output_shape
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.projection_activity_regularizer = keras.regularizers.get(
            activity_regularizer
        )
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
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
        if rotary_max_wavelength is not None:
            if self.key_dim % 2:
                raise ValueError(
                    "Rotary embeddings need an even `key_dim`. Received: "
                    f"key_dim={key_dim}"
                )
        self.rotary_max_wavelength = rotary_max_wavelength
        self.seed_generator = (
            keras.random.SeedGenerator(seed) if self.dropout > 0 else None
        )
        # Which path the last call took: "fused" or "explicit".
        self.last_attention_path = None

    @property
    def _kv_heads(self):
        return self.num_key_value_heads or self.num_heads

    @property
    def _value_dim(self):
        return self.value_dim or self.key_dim

    def _projection(self, equation, output_shape, bias_axes, name):
        def clone(initializer):
            return initializer.__class__.from_config(initializer.get_config())

        dense = keras.layers.EinsumDense(
            equation,
            output_shape=output_shape,
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

    def build(self, query_shape, value_shape, key_shape=None):
        key_shape = value_shape if key_shape is None else key_shape
        for name, shape in (
            ("query", query_shape),
            ("value", value_shape),
            ("key", key_shape),
        ):
            if len(shape) != 3:
                raise ValueError(
                    f"`{name}` must have rank 3 (batch, length, features). "
                    f"Received: {name}_shape={tuple(shape)}"
                )
        if value_shape[1] is not None and key_shape[1] is not None and (
            value_shape[1] != key_shape[1]
        ):
            raise ValueError(
                "`value` and `key` must have the same length. Received: "
                f"value_shape={value_shape}, key_shape={key_shape}"
            )
        self._query_dense = self._projection(
            "abc,cde->abde", (None, self.num_heads, self.key_dim), "de",
            "query",
        )
        self._query_dense.build(query_shape)
        self._key_dense = self._projection(
            "abc,cde->abde", (None, self._kv_heads, self.key_dim), "de", "key"
        )
        self._key_dense.build(key_shape)
        self._value_dense = self._projection(
            "abc,cde->abde", (None, self._kv_heads, self._value_dim), "de",
            "value",
        )
        self._value_dense.build(value_shape)
        out_shape = self.output_shape or (query_shape[-1],)
        letters = "efghij"[: len(out_shape)]
        self._output_dense = self._projection(
            f"abcd,cd{letters}->ab{letters}",
            (None,) + tuple(out_shape),
            letters,
            "attention_output",
        )
        self._output_dense.build(
            (query_shape[0], query_shape[1], self.num_heads, self._value_dim)
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

    def _check_cache(self, cache):
        if self.key_dim != self._value_dim:
            raise ValueError(
                "A KV cache needs `key_dim == value_dim`. Received: "
                f"key_dim={self.key_dim}, value_dim={self._value_dim}"
            )
        if isinstance(cache, (tuple, list)):
            if len(cache) != 2:
                raise ValueError(
                    "A `cache` given as a tuple must be `(key_cache, "
                    "value_cache)`. Received: a tuple of length "
                    f"{len(cache)}"
                )
            for part, name in zip(cache, ("key_cache", "value_cache")):
                check_mask_shape(
                    part, f"cache {name}",
                    (None, None, self._kv_heads, self.key_dim),
                )
            return
        check_mask_shape(
            cache, "cache", (None, 2, None, self._kv_heads, self.key_dim)
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
        position = 0 if cache_update_index is None else cache_update_index
        q = self._query_dense(query)  # (B, T, N, H)
        key_padding = merge_masks(value_mask, key_mask)  # (B, S)
        if cache is not None:
            self._check_cache(cache)
            stacked = not isinstance(cache, (tuple, list))
            if stacked:
                # unstack, not cache[:, 0]: on TFLite a rank-5 STRIDED_SLICE
                # copies element by element, UNPACK copies contiguous blocks.
                key_cache, value_cache = ops.unstack(cache, 2, axis=1)
            else:
                key_cache, value_cache = cache
            if cache_update_index is None:
                k, v = key_cache, value_cache  # (B, S, K, H)
            else:
                k_new = self._key_dense(key)  # (B, T, K, H)
                if self._rotary is not None:
                    k_new = self._rotary(k_new, start_index=position)
                v_new = self._value_dense(value)  # (B, T, K, V)
                start = [0, cache_update_index, 0, 0]
                k = ops.slice_update(key_cache, start, k_new)
                v = ops.slice_update(value_cache, start, v_new)
                if stacked:
                    cache = ops.stack((k, v), axis=1)  # (B, 2, S, K, H)
                else:
                    cache = (k, v)
                key_padding = None
        else:
            if cache_update_index is not None:
                raise ValueError(
                    "`cache_update_index` should only be set with a `cache`."
                    f" Received: cache=None, cache_update_index="
                    f"{cache_update_index}"
                )
            k = self._key_dense(key)  # (B, S, K, H)
            if self._rotary is not None:
                k = self._rotary(k)
            v = self._value_dense(value)  # (B, S, K, V)
        if self._rotary is not None:
            q = self._rotary(q, start_index=position)

        query_length, key_length = ops.shape(q)[1], ops.shape(k)[1]
        static_t, static_s = q.shape[1], k.shape[1]
        check_mask_shape(
            attention_mask, "attention_mask", (None, static_t, static_s)
        )
        check_mask_shape(query_mask, "query_mask", (None, static_t))
        check_mask_shape(key_padding, "value_mask", (None, static_s))
        causal = None
        if use_causal_mask:
            offset = None if cache_update_index is None else position
            causal = causal_mask(query_length, key_length, offset)[None]
        # Padded queries are not folded into the (B, T, S) mask: their rows
        # are zeroed after the attention instead (the same outputs and
        # weights as fully masked rows), so a padding-only mask stays
        # (B, 1, S) and is never broadcast to every query.
        mask = merge_masks(
            attention_mask,
            None if key_padding is None else key_padding[:, None, :],
            causal,
        )  # (B, T|1, S)

        self.last_attention_path = select_implementation(
            q.dtype,
            return_attention_scores,
            self.dropout,
            training,
            key_head_dim=self.key_dim,
            value_head_dim=self._value_dim,
        )
        attended = scaled_dot_product_attention(
            q,
            k,
            v,
            mask=mask,
            dropout_rate=self.dropout,
            training=training,
            seed=self.seed_generator,
            return_weights=return_attention_scores,
            implementation=self.last_attention_path,
        )
        if return_attention_scores:
            attended, scores = attended
        if query_mask is not None:
            keep = ops.cast(query_mask, attended.dtype)  # (B, T)
            attended = attended * keep[:, :, None, None]  # (B, T, N, V)
            if return_attention_scores:
                scores = scores * ops.cast(query_mask, scores.dtype)[
                    :, None, :, None
                ]  # (B, N, T, S)
        output = self._output_dense(attended)  # (B, T, D)
        outputs = (output,)
        if return_attention_scores:
            outputs += (scores,)
        if cache is not None:
            outputs += (cache,)
        return outputs[0] if len(outputs) == 1 else outputs

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "key_dim": self.key_dim,
                "value_dim": self.value_dim,
                "dropout": self.dropout,
                "use_bias": self.use_bias,
                "output_shape": self.output_shape,
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
                "seed": self.seed,
                "num_key_value_heads": self.num_key_value_heads,
                "rotary_max_wavelength": self.rotary_max_wavelength,
            }
        )
        return config
