"""Grouped-query attention, a drop-in for `keras.layers.GroupQueryAttention`.

Shape legend: B batch, T query length, S key length, N query heads,
K key/value heads, H head size, D model width.
"""

import keras

from keras_attn.layers.multi_head_attention import MultiHeadAttention
from keras_attn.layers.validation import positive_int


@keras.saving.register_keras_serializable(package="keras_attn")
class GroupQueryAttention(MultiHeadAttention):
    """Grouped-query attention: `num_key_value_heads` key/value heads shared
    by groups of `num_query_heads // num_key_value_heads` query heads.

    Same constructor, call arguments, attributes and variables (`query`,
    `key`, optional `gate`, `value`, `attention_output`, in that order and
    with the same kernel shapes) as `keras.layers.GroupQueryAttention`
    (Keras 3.15), so `ours.set_weights(keras_gqa.get_weights())` reproduces
    its outputs. It is our `MultiHeadAttention` with `key_dim = value_dim =
    head_dim`, so it also takes the KV cache (`cache`,
    `cache_update_index`) and rotary embeddings (`rotary_max_wavelength`),
    computes logits and softmax in float32, and never copies keys and
    values per query head (Keras repeats them).

    Masking: as `keras_attn.layers.MultiHeadAttention`: Keras masks,
    `attention_mask` `(B, T, S)`, the causal mask and the sliding window
    combine by logical AND; a query row with no key to attend to gives
    zeros (Keras: a uniform average).

    Differences from Keras, all deliberate: those of `MultiHeadAttention`
    (zeros for fully masked rows, float32 logits, `_compute_attention`
    receives `num_key_value_heads` key/value heads, not repeated ones), and
    inputs of rank > 3 are accepted (attention over every axis between
    batch and features).

    Args:
        head_dim: int. Size `H` of each attention head.
        num_query_heads: int. Number of query heads `N`.
        num_key_value_heads: int. Number of key/value heads `K`; must
            divide `num_query_heads` (1: multi-query attention).
        dropout: float. Dropout rate on the attention weights. Defaults to 0.
        use_bias: bool. Whether the projections use biases. Defaults to True.
        sliding_window: int or `None`. If set, a query attends only to keys
            less than `sliding_window` positions away. Defaults to `None`.
        flash_attention: `None`, `True` or `False`; see
            `MultiHeadAttention`. Defaults to `None`.
        kernel_initializer, bias_initializer: initializers of the projections.
        kernel_regularizer, bias_regularizer, activity_regularizer: optional
            regularizers of the projections.
        kernel_constraint, bias_constraint: optional constraints.
        use_gate: bool. Sigmoid gate on the attention output, projected from
            the query. Defaults to False.
        seed: int or `None`. Seed of the attention dropout.
        rotary_max_wavelength: float or `None`. If set, rotary position
            embeddings rotate queries and keys. Defaults to `None`.

    Call arguments:
        query: tensor `(B, T, D)`.
        value: tensor `(B, S, D_v)`.
        key: optional tensor `(B, S, D_k)`. Defaults to `value`.
        query_mask, value_mask, key_mask: optional padding masks; filled in
            from Keras masks when not given.
        attention_mask: optional boolean tensor `(B, T, S)`, True = attend.
        return_attention_scores: bool. Also return the weights `(B, N, T, S)`.
        training: bool. Enables dropout.
        use_causal_mask: bool. Whether to add a causal mask.
        cache, cache_update_index: the KV cache, as in `MultiHeadAttention`
            (a `keras_attn.layers.KVCache`, or keras-hub's stacked
            `(B, 2, S, K, H)`).

    Returns:
        The output `(B, T, D)`; followed, when requested or given, by the
        attention weights `(B, N, T, S)` and the updated cache.

    Example:

    ```python
    import numpy as np
    import keras_attn
    layer = keras_attn.layers.GroupQueryAttention(
        head_dim=8, num_query_heads=4, num_key_value_heads=2)
    x = np.random.rand(2, 5, 16).astype("float32")
    y, scores = layer(x, x, use_causal_mask=True, return_attention_scores=True)
    assert y.shape == (2, 5, 16) and scores.shape == (2, 4, 5, 5)
    assert tuple(layer.key_dense.kernel.shape) == (16, 2, 8)
    ```

    References:
        Ainslie et al., "GQA: Training Generalized Multi-Query Transformer
        Models from Multi-Head Checkpoints", 2023,
        https://arxiv.org/abs/2305.13245.
    """

    def __init__(
        self,
        head_dim,
        num_query_heads,
        num_key_value_heads,
        dropout=0.0,
        use_bias=True,
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
        rotary_max_wavelength=None,
        **kwargs,
    ):
        self.head_dim = positive_int(head_dim, "head_dim")
        self.num_query_heads = positive_int(num_query_heads, "num_query_heads")
        positive_int(num_key_value_heads, "num_key_value_heads")
        if num_query_heads % num_key_value_heads:
            raise ValueError(
                "`num_query_heads` must be divisible by "
                "`num_key_value_heads`. Received: "
                f"num_query_heads={num_query_heads}, "
                f"num_key_value_heads={num_key_value_heads}"
            )
        super().__init__(
            num_heads=num_query_heads,
            key_dim=head_dim,
            dropout=dropout,
            use_bias=use_bias,
            sliding_window=sliding_window,
            flash_attention=flash_attention,
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            bias_regularizer=bias_regularizer,
            activity_regularizer=activity_regularizer,
            kernel_constraint=kernel_constraint,
            bias_constraint=bias_constraint,
            use_gate=use_gate,
            seed=seed,
            num_key_value_heads=num_key_value_heads,
            rotary_max_wavelength=rotary_max_wavelength,
            **kwargs,
        )
        self.num_repeats = self.num_query_heads // self.num_key_value_heads
        # Keras's name for the scores flag `_compute_attention` reads.
        self._return_attention_scores = False

    def build(self, query_shape, value_shape, key_shape=None):
        self.feature_dim = query_shape[-1]
        super().build(query_shape, value_shape, key_shape)

    def _compute_attention(
        self,
        query,
        key,
        value,
        attention_mask=None,
        training=None,
        use_causal_mask=False,
    ):
        """Keras's override point (its signature): attention of projected
        heads, returning `(output, scores or None)`; whether scores are
        computed is `self._return_attention_scores`."""
        return super()._compute_attention(
            query,
            key,
            value,
            attention_mask=attention_mask,
            training=training,
            return_attention_scores=self._return_attention_scores,
            use_causal_mask=use_causal_mask,
        )

    def _attend(self, q, k, v, mask, training, return_attention_scores):
        self._return_attention_scores = return_attention_scores
        return self._compute_attention(
            q, k, v, attention_mask=mask, training=training
        )

    def compute_output_shape(self, query_shape, value_shape, key_shape=None):
        if query_shape[-1] != value_shape[-1]:
            raise ValueError(
                "The last dimension of `query_shape` and `value_shape` "
                f"must be equal, but are {query_shape[-1]}, "
                f"{value_shape[-1]}. Received: query_shape={query_shape}, "
                f"value_shape={value_shape}"
            )
        return super().compute_output_shape(query_shape, value_shape,
                                            key_shape)

    def get_config(self):
        config = super().get_config()
        for name in ("num_heads", "key_dim", "value_dim", "output_shape",
                     "attention_axes"):
            del config[name]
        config.update(
            {
                "head_dim": self.head_dim,
                "num_query_heads": self.num_query_heads,
                "num_key_value_heads": self.num_key_value_heads,
            }
        )
        return config
