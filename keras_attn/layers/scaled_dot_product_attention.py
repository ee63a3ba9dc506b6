"""Scaled dot-product attention as a layer, for teaching and heatmaps.

Shape legend: B batch, T query length, S key length, N heads, H head size,
V value head size.
"""

import math

import keras

from keras_attn.layers.validation import rate
from keras_attn.ops.attention import scaled_dot_product_attention
from keras_attn.ops.attention import select_implementation
from keras_attn_runtime.checks import number_in


@keras.saving.register_keras_serializable(package="keras_attn")
class ScaledDotProductAttention(keras.layers.Layer):
    """softmax(Q K^T / sqrt(d_k)) V over per-head tensors; no weights.

    The layer form of `keras_attn.ops.scaled_dot_product_attention`: it
    adds attention dropout with a seeded generator and reports the path it
    took in `last_attention_path` (`"fused"` or `"explicit"`).

    Masking: `mask` is boolean, True = may attend, broadcastable to
    `(B, N, T, S)` (rank 2 `(T, S)` and 3 `(B, T, S)` accepted);
    `is_causal=True` adds a bottom-right-aligned causal mask. Fully masked
    query rows return zeros.

    Args:
        dropout: float in [0, 1). Dropout on the weights during training.
            Defaults to `0.0`.
        scale: positive finite float or `None`. Logit scale. Defaults to
            `1/sqrt(H)`.
        seed: int or `None`. Dropout seed.

    Call arguments:
        query: `(B, T, N, H)`. key: `(B, S, K, H)`. value: `(B, S, K, V)`.
        mask: optional boolean mask. bias: optional additive bias.
        is_causal: bool. return_weights: bool. training: bool.

    Returns:
        The output `(B, T, N, V)`, or `(output, weights)` with weights
        `(B, N, T, S)` when `return_weights=True`.

    Example:

    ```python
    import numpy as np
    import keras_attn
    q = np.random.rand(1, 3, 2, 4).astype("float32")
    out, w = keras_attn.layers.ScaledDotProductAttention()(
        q, q, q, is_causal=True, return_weights=True)
    assert np.allclose(w[0, 0, 0], [1.0, 0.0, 0.0])
    ```

    References:
        Vaswani et al., 2017, https://arxiv.org/abs/1706.03762
    """

    def __init__(self, dropout=0.0, scale=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        rate(dropout, "dropout")
        if scale is not None:
            number_in(scale, "scale", 0.0, math.inf, low_open=True,
                      high_open=True)
        self.dropout = float(dropout)
        self.scale = scale
        self.seed = seed
        self.seed_generator = (
            keras.random.SeedGenerator(seed) if self.dropout > 0 else None
        )
        self.last_attention_path = None
        self.built = True

    def call(
        self,
        query,
        key,
        value,
        mask=None,
        bias=None,
        is_causal=False,
        return_weights=False,
        training=None,
    ):
        self.last_attention_path = select_implementation(
            query.dtype,
            return_weights,
            self.dropout,
            training,
            key_head_dim=query.shape[-1],
            value_head_dim=value.shape[-1],
        )
        return scaled_dot_product_attention(
            query,
            key,
            value,
            mask=mask,
            bias=bias,
            is_causal=is_causal,
            scale=self.scale,
            dropout_rate=self.dropout,
            training=training,
            seed=self.seed_generator,
            return_weights=return_weights,
            implementation=self.last_attention_path,
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {"dropout": self.dropout, "scale": self.scale, "seed": self.seed}
        )
        return config
