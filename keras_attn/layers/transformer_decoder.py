"""Transformer decoder block: masked self-attention, optional cross-attention,
then a feed-forward network; with KV caches for fast generation.

Shape legend: B batch, T decoder length, S self-attention key length (T, or
the cache length), E encoder length, D model width, N heads, K key/value
heads, H head size.
"""

import keras
from keras import ops

from keras_attn.layers.masking import get_keras_mask
from keras_attn.layers.masking import merge_masks
from keras_attn.layers.transformer_block import TransformerBlock


@keras.saving.register_keras_serializable(package="keras_attn")
class TransformerDecoder(TransformerBlock):
    """A Transformer decoder block, weight-compatible with keras-hub's.

    Same arguments and variables (names, order, shapes) as
    `keras_hub.layers.TransformerDecoder`, post-LN or pre-LN, so weights
    copied from a keras-hub block of the same configuration give the same
    outputs. Calling it with an `encoder_sequence` the first time builds the
    cross-attention (encoder-decoder); without one it is a decoder-only
    block. Adds grouped-query attention, optional rotary positions in the
    self-attention, and `return_attention_scores` on every path.

    Masking: self-attention is causal unless `use_causal_mask=False`. The
    decoder padding mask (the Keras mask of `decoder_sequence` AND
    `decoder_padding_mask`) hides padded tokens without a cache; with a cache
    it marks only which new queries are real, and cached positions are hidden
    through `decoder_attention_mask` `(B, T, S)`. Encoder padding (Keras mask
    of `encoder_sequence` AND `encoder_padding_mask`) hides padded encoder
    tokens from the cross-attention.

    Caches: `self_attention_cache` `(B, 2, S, K, H)` with
    `self_attention_cache_update_index` (where the T new tokens go; they sit
    at positions `index + i`), and `cross_attention_cache` `(B, 2, E, K, H)`
    holding the projected encoder keys/values (with
    `cross_attention_cache_update_index=None` it is used as is).

    Args:
        intermediate_dim, num_heads, dropout, activation, layer_norm_epsilon,
        kernel_initializer, bias_initializer, normalize_first,
        num_key_value_heads, rotary_max_wavelength: as in
        `keras_attn.layers.TransformerEncoder`.

    Call arguments:
        decoder_sequence: tensor `(B, T, D)`.
        encoder_sequence: optional tensor `(B, E, D_enc)`.
        decoder_padding_mask, encoder_padding_mask: optional boolean masks
            `(B, T)` and `(B, E)`, True = real token.
        decoder_attention_mask, encoder_attention_mask: optional boolean masks
            `(B, T, S)` and `(B, T, E)`, True = may attend.
        self_attention_cache, self_attention_cache_update_index,
        cross_attention_cache, cross_attention_cache_update_index: see above.
        use_causal_mask: bool. Defaults to `True`.
        training: bool. Enables dropout.
        return_attention_scores: bool. Also return a dict of weights:
            `"self_attention"` `(B, N, T, S)` and, with cross-attention,
            `"cross_attention"` `(B, N, T, E)`.

    Returns:
        The output `(B, T, D)`; followed, in this order and only when
        requested or given, by the scores dict, the updated self-attention
        cache and the cross-attention cache (keras-hub's order for caches).

    Example:

    ```python
    import numpy as np
    import keras_attn
    decoder = keras_attn.layers.TransformerDecoder(intermediate_dim=32,
                                                   num_heads=4)
    x = np.random.rand(2, 5, 16).astype("float32")
    y = decoder(x)  # causal self-attention only
    cache = np.zeros((2, 2, 8, 4, 4), "float32")  # (B, 2, S, K, H)
    step, cache = decoder(x[:, :1], self_attention_cache=cache,
                          self_attention_cache_update_index=0)
    np.testing.assert_allclose(step, y[:, :1], atol=1e-5)
    ```

    References:
        Vaswani et al., 2017, https://arxiv.org/abs/1706.03762
    """

    def build(self, decoder_sequence_shape, encoder_sequence_shape=None):
        shape = tuple(decoder_sequence_shape)
        hidden_dim = shape[-1]
        self._self_attention_layer = self._attention(
            hidden_dim, "self_attention"
        )
        self._self_attention_layer.build(shape, shape)
        self._self_attention_layer_norm = self._layer_norm(
            "self_attention_layer_norm", shape
        )
        self._self_attention_dropout = self._dropout("self_attention_dropout")
        self._cross_attention_layer = None
        if encoder_sequence_shape is not None:
            self._cross_attention_layer = self._attention(
                hidden_dim, "cross_attention", rotary=False
            )
            self._cross_attention_layer.build(
                shape, tuple(encoder_sequence_shape)
            )
            self._cross_attention_layer_norm = self._layer_norm(
                "cross_attention_layer_norm", shape
            )
            self._cross_attention_dropout = self._dropout(
                "cross_attention_dropout"
            )
        self._build_feedforward(shape)
        self._feedforward_layer_norm = self._layer_norm(
            "feedforward_layer_norm", shape
        )
        self.built = True

    def compute_cross_attention_cache(self, encoder_sequence):
        """Projects the encoder outputs once into the cross-attention cache.

        Args:
            encoder_sequence: tensor `(B, E, D_enc)`.

        Returns:
            The `cross_attention_cache` `(B, 2, E, K, H)`: keys at index 0,
            values at index 1.
        """
        if self._cross_attention_layer is None:
            raise ValueError(
                "This TransformerDecoder has no cross-attention (it was "
                "built without an encoder_sequence)."
            )
        attention = self._cross_attention_layer
        return ops.stack(
            [
                attention.key_dense(encoder_sequence),  # (B, E, K, H)
                attention.value_dense(encoder_sequence),  # (B, E, K, H)
            ],
            axis=1,
        )

    def _check_call(self, encoder_sequence, self_cache, cross_cache):
        has_cross = self._cross_attention_layer is not None
        if has_cross != (encoder_sequence is not None):
            built = "with" if has_cross else "without"
            raise ValueError(
                f"This TransformerDecoder was built {built} cross-attention; "
                "call it the same way every time: `layer(decoder_sequence, "
                "encoder_sequence)` for an encoder-decoder, "
                "`layer(decoder_sequence)` for a decoder-only block. "
                "Received: encoder_sequence="
                f"{'None' if encoder_sequence is None else 'a tensor'}"
            )
        if has_cross and (self_cache is None) != (cross_cache is None):
            raise ValueError(
                "With cross-attention, `self_attention_cache` and "
                "`cross_attention_cache` must both be given or both be None."
                f" Received: self_attention_cache is None: "
                f"{self_cache is None}, cross_attention_cache is None: "
                f"{cross_cache is None}"
            )

    def call(
        self,
        decoder_sequence,
        encoder_sequence=None,
        decoder_padding_mask=None,
        decoder_attention_mask=None,
        encoder_padding_mask=None,
        encoder_attention_mask=None,
        self_attention_cache=None,
        self_attention_cache_update_index=None,
        cross_attention_cache=None,
        cross_attention_cache_update_index=None,
        use_causal_mask=True,
        training=None,
        return_attention_scores=False,
    ):
        self._check_call(
            encoder_sequence, self_attention_cache, cross_attention_cache
        )
        decoder_padding = merge_masks(
            get_keras_mask(decoder_sequence), decoder_padding_mask
        )  # (B, T)
        scores = {}
        caches = []

        def attention_body(layer, value, padding, mask, cache, index, key):
            def body(x):
                out = layer(
                    query=x,
                    value=x if value is None else value,
                    query_mask=decoder_padding,
                    value_mask=padding,
                    attention_mask=mask,
                    use_causal_mask=use_causal_mask and value is None,
                    cache=cache,
                    cache_update_index=index,
                    return_attention_scores=return_attention_scores,
                    training=training,
                )
                if not isinstance(out, tuple):
                    return (out,)
                out, *rest = out
                if return_attention_scores:
                    scores[key] = rest.pop(0)
                caches.extend(rest)
                return (out,)

            return body

        (x,) = self._sublayer(
            decoder_sequence,
            self._self_attention_layer_norm,
            self._self_attention_dropout,
            attention_body(
                self._self_attention_layer,
                None,
                decoder_padding,
                decoder_attention_mask,
                self_attention_cache,
                self_attention_cache_update_index,
                "self_attention",
            ),
            training,
        )
        if self._cross_attention_layer is not None:
            encoder_padding = merge_masks(
                get_keras_mask(encoder_sequence), encoder_padding_mask
            )  # (B, E)
            (x,) = self._sublayer(
                x,
                self._cross_attention_layer_norm,
                self._cross_attention_dropout,
                attention_body(
                    self._cross_attention_layer,
                    encoder_sequence,
                    encoder_padding,
                    encoder_attention_mask,
                    cross_attention_cache,
                    cross_attention_cache_update_index,
                    "cross_attention",
                ),
                training,
            )
        x = self._feedforward(x, training)
        outputs = (x,)
        if return_attention_scores:
            outputs += (scores,)
        outputs += tuple(caches)
        return outputs[0] if len(outputs) == 1 else outputs
