"""Transformer encoder block: self-attention then a feed-forward network.

Shape legend: B batch, L sequence length, D model width, N heads.
"""

import keras

from keras_attn.layers.masking import get_keras_mask
from keras_attn.layers.masking import merge_masks
from keras_attn.layers.transformer_block import TransformerBlock
from keras_attn.layers.transformer_block import split_attention_outputs


@keras.saving.register_keras_serializable(package="keras_attn")
class TransformerEncoder(TransformerBlock):
    """A Transformer encoder block, a drop-in for keras-hub's.

    Same arguments, call arguments and variables (names, order, shapes) as
    `keras_hub.layers.TransformerEncoder`, post-LN (`normalize_first=False`,
    the original Transformer) or pre-LN, so weights copy across both ways and
    give the same outputs at real tokens. Adds grouped-query attention
    (`num_key_value_heads`), optional rotary positions in the attention
    (`rotary_max_wavelength`), and float16-safe attention.

    Masking: the padding mask is the AND of the input's Keras mask and
    `padding_mask`; padded tokens are hidden from every query, and padded
    query positions receive no attention output. `attention_mask` (B, L, L)
    combines with it. The output carries the input's Keras mask.

    Where it differs from keras-hub, on purpose: padded query positions get
    a zero attention update (keras-hub lets them attend; its outputs there
    are meaningless anyway); an explicit `padding_mask` is combined with the
    Keras mask instead of replacing it; the softmax runs in float32, so
    `mixed_float16` stays finite where keras-hub's overflows (inputs of scale
    100); and the output spec includes the scores when
    `return_attention_scores=True` (keras-hub's symbolic call drops them).
    None of keras-hub's own tests of the layer notices a difference.

    Args:
        intermediate_dim: int. Width of the feed-forward hidden layer.
        num_heads: int. Number of attention heads; must divide `D`.
        dropout: float. Dropout rate. Defaults to `0.0`.
        activation: activation of the feed-forward layer. Defaults to
            `"relu"`.
        layer_norm_epsilon: float. Defaults to `1e-05`.
        kernel_initializer, bias_initializer: initializers of the dense and
            attention layers. Default to `"glorot_uniform"`, `"zeros"`.
        normalize_first: bool. Pre-LN if True. Defaults to `False`.
        num_key_value_heads: int or `None`. Key/value heads (grouped-query
            attention). Defaults to `num_heads`.
        rotary_max_wavelength: float or `None`. Rotary positions in the
            self-attention if set. Defaults to `None`.
        sliding_window: int or `None`. If set, a token attends only to
            tokens less than `sliding_window` positions away
            (`keras_attn.layers.MultiHeadAttention`'s band). Defaults to
            `None`: the whole sequence.

    Call arguments:
        inputs: tensor `(B, L, D)`.
        padding_mask: optional boolean `(B, L)`, True = real token.
        attention_mask: optional boolean `(B, L, L)`, True = may attend.
        training: bool. Enables dropout.
        return_attention_scores: bool. Also return the self-attention weights
            `(B, N, L, L)`.

    Returns:
        A tensor `(B, L, D)`, or `(outputs, scores)` with
        `return_attention_scores=True`.

    Example:

    ```python
    import numpy as np
    import keras_attn
    encoder = keras_attn.layers.TransformerEncoder(intermediate_dim=32,
                                                   num_heads=4)
    x = np.random.rand(2, 6, 16).astype("float32")
    y, scores = encoder(x, padding_mask=np.array([[1] * 6, [1] * 4 + [0] * 2]),
                        return_attention_scores=True)
    assert y.shape == (2, 6, 16) and scores.shape == (2, 4, 6, 6)
    ```

    References:
        Vaswani et al., 2017, https://arxiv.org/abs/1706.03762
    """

    def build(self, inputs_shape):
        inputs_shape = tuple(inputs_shape)
        hidden_dim = inputs_shape[-1]
        self._self_attention_layer = self._attention(
            hidden_dim, "self_attention_layer"
        )
        self._self_attention_layer.build(inputs_shape, inputs_shape)
        self._self_attention_layer_norm = self._layer_norm(
            "self_attention_layer_norm", inputs_shape
        )
        self._self_attention_dropout = self._dropout("self_attention_dropout")
        self._feedforward_layer_norm = self._layer_norm(
            "feedforward_layer_norm", inputs_shape
        )
        self._build_feedforward(inputs_shape)
        self.built = True

    def call(
        self,
        inputs,
        padding_mask=None,
        attention_mask=None,
        training=None,
        return_attention_scores=False,
    ):
        padding = merge_masks(get_keras_mask(inputs), padding_mask)  # (B, L)
        x = inputs
        # Self-attention: x = x + attention(norm(x)) (pre-LN), or
        # x = norm(x + attention(x)) (post-LN).
        h = self._pre_norm(self._self_attention_layer_norm, x)
        h, scores, _ = split_attention_outputs(
            self._self_attention_layer(
                query=h,
                value=h,
                query_mask=padding,
                value_mask=padding,
                attention_mask=attention_mask,
                return_attention_scores=return_attention_scores,
                training=training,
            ),
            return_attention_scores,
            has_cache=False,
        )  # (B, L, D), (B, N, L, L)
        x = self._add_residual(
            x, h, self._self_attention_dropout,
            self._self_attention_layer_norm, training,
        )
        x = self._feedforward(x, training)
        return (x, scores) if return_attention_scores else x

    def compute_output_spec(
        self,
        inputs,
        padding_mask=None,
        attention_mask=None,
        training=None,
        return_attention_scores=False,
    ):
        # Explicit, so that `compute_output_spec` called directly with
        # float32 inputs on a `mixed_float16` layer (keras-hub's precision
        # test) answers float16 instead of tracing a float16 + float32 add.
        outputs = keras.KerasTensor(
            self.compute_output_shape(inputs.shape), dtype=self.compute_dtype
        )
        if not return_attention_scores:
            return outputs
        batch, length = inputs.shape[0], inputs.shape[1]
        scores = keras.KerasTensor(
            (batch, self.num_heads, length, length), dtype=self.compute_dtype
        )
        return outputs, scores
