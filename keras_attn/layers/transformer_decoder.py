"""Transformer decoder block: masked self-attention, optional cross-attention,
then a feed-forward network; with KV caches for fast generation.

Shape legend: B batch, T decoder length, S self-attention key length (T, or
the cache length), E encoder length, D model width, N heads, K key/value
heads, H head size.
"""

import keras
from keras import ops

from keras_attn.layers.kv_cache import KVCache
from keras_attn.layers.kv_cache import cache_length
from keras_attn.layers.masking import get_keras_mask
from keras_attn.layers.masking import merge_masks
from keras_attn.layers.transformer_block import TransformerBlock
from keras_attn.layers.transformer_block import split_attention_outputs


@keras.saving.register_keras_serializable(package="keras_attn")
class TransformerDecoder(TransformerBlock):
    """A Transformer decoder block, a drop-in for keras-hub's.

    Same arguments, call arguments, return values and variables (names,
    order, shapes) as `keras_hub.layers.TransformerDecoder`, post-LN or
    pre-LN, so weights copy across both ways and give the same outputs at
    real tokens. Calling it with an `encoder_sequence` the first time builds
    the cross-attention (encoder-decoder); without one it is a decoder-only
    block. Adds grouped-query attention, optional rotary positions in the
    self-attention, and `return_attention_scores` on every path.

    Masking: self-attention is causal unless `use_causal_mask=False`. The
    decoder padding mask (the Keras mask of `decoder_sequence` AND
    `decoder_padding_mask`) hides padded tokens without a cache; with a cache
    it marks only which new queries are real, and cached positions are hidden
    through `decoder_attention_mask` `(B, T, S)`. Encoder padding (Keras mask
    of `encoder_sequence` AND `encoder_padding_mask`) hides padded encoder
    tokens from the cross-attention.

    Caches: `self_attention_cache` with `self_attention_cache_update_index`
    (where the T new tokens go; they sit at positions `index + i`), and
    `cross_attention_cache` holding the projected encoder keys/values (with
    `cross_attention_cache_update_index=None` it is used as is, e.g. from
    `compute_cross_attention_cache`). Each is a
    `keras_attn.layers.KVCache` (keys and values `(B, K, S, H)`, heads
    first; `(B, K, E, H)` for cross-attention), or keras-hub's stacked
    tensor `(B, 2, S, K, H)`, and comes back updated in the form given.

    Args:
        intermediate_dim, num_heads, dropout, activation, layer_norm_epsilon,
        kernel_initializer, bias_initializer, normalize_first,
        num_key_value_heads, rotary_max_wavelength, sliding_window: as in
        `keras_attn.layers.TransformerEncoder` (the window limits the
        causal self-attention to the `sliding_window - 1` tokens before
        each token, cached decoding included; the cross-attention sees
        the whole encoder sequence).
        decoder_sequence_shape, encoder_sequence_shape: optional shapes, as
            in a keras-hub config; if given, the layer is built from them.
            Defaults to `None`.

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
        cache and the cross-attention cache. Without scores this is
        keras-hub's convention: `outputs`, `(outputs, self_attention_cache)`
        or `(outputs, self_attention_cache, cross_attention_cache)`.

    Where it differs from keras-hub, on purpose: as for
    `keras_attn.layers.TransformerEncoder` (padded queries, masks combined,
    float32 softmax), plus the scores; and `get_config` holds no build
    shapes (keras-hub's `decoder_sequence_shape` and `encoder_sequence_shape`
    are accepted, so its configs load, and build the layer as there). None
    of keras-hub's own tests of the layer notices a difference.

    Example:

    ```python
    import numpy as np
    import keras_attn
    decoder = keras_attn.layers.TransformerDecoder(intermediate_dim=32,
                                                   num_heads=4)
    x = np.random.rand(2, 5, 16).astype("float32")
    y = decoder(x)  # causal self-attention only
    cache = keras_attn.layers.KVCache.zeros(2, 4, 8, 4)  # (B, K, S, H)
    step, cache = decoder(x[:, :1], self_attention_cache=cache,
                          self_attention_cache_update_index=0)
    np.testing.assert_allclose(step, y[:, :1], atol=1e-5)
    ```

    References:
        Vaswani et al., 2017, https://arxiv.org/abs/1706.03762
    """

    def __init__(
        self,
        intermediate_dim,
        num_heads,
        decoder_sequence_shape=None,
        encoder_sequence_shape=None,
        **kwargs,
    ):
        super().__init__(intermediate_dim, num_heads, **kwargs)
        if decoder_sequence_shape is not None:
            # A keras-hub config: it builds the layer from these shapes.
            self.build(decoder_sequence_shape, encoder_sequence_shape)

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
                hidden_dim, "cross_attention", self_attention=False
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
            The `cross_attention_cache`, a `keras_attn.layers.KVCache` of
            keys and values `(B, K, E, H)`.
        """
        if self._cross_attention_layer is None:
            raise ValueError(
                "This TransformerDecoder has no cross-attention (it was "
                "built without an encoder_sequence)."
            )
        attention = self._cross_attention_layer
        return KVCache(
            ops.transpose(attention.key_dense(encoder_sequence),
                          (0, 2, 1, 3)),  # (B, K, E, H)
            ops.transpose(attention.value_dense(encoder_sequence),
                          (0, 2, 1, 3)),  # (B, K, E, H)
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
        x = decoder_sequence

        # Causal self-attention, through the KV cache when one is given:
        # x = x + attention(norm(x)) (pre-LN), or x = norm(x + attention(x)).
        h = self._pre_norm(self._self_attention_layer_norm, x)
        attended = self._self_attention_layer(
            query=h,
            value=h,
            query_mask=decoder_padding,
            value_mask=decoder_padding,
            attention_mask=decoder_attention_mask,
            use_causal_mask=use_causal_mask,
            cache=self_attention_cache,
            cache_update_index=self_attention_cache_update_index,
            return_attention_scores=return_attention_scores,
            training=training,
        )
        h, self_scores, self_attention_cache = split_attention_outputs(
            attended, return_attention_scores, self_attention_cache is not None
        )  # (B, T, D), (B, N, T, S), the cache
        x = self._add_residual(
            x, h, self._self_attention_dropout,
            self._self_attention_layer_norm, training,
        )
        scores = {"self_attention": self_scores}

        # Cross-attention to the encoder outputs (encoder-decoder blocks).
        if self._cross_attention_layer is not None:
            encoder_padding = merge_masks(
                get_keras_mask(encoder_sequence), encoder_padding_mask
            )  # (B, E)
            # Encoder padding as an attention mask, so that it also holds
            # when the call fills the cross-attention cache (a cache update
            # ignores `value_mask`, which describes only new tokens).
            cross_mask = merge_masks(
                encoder_attention_mask,
                None if encoder_padding is None else encoder_padding[:, None],
            )  # (B, T or 1, E)
            h = self._pre_norm(self._cross_attention_layer_norm, x)
            attended = self._cross_attention_layer(
                query=h,
                value=encoder_sequence,
                query_mask=decoder_padding,
                attention_mask=cross_mask,
                cache=cross_attention_cache,
                cache_update_index=cross_attention_cache_update_index,
                return_attention_scores=return_attention_scores,
                training=training,
            )
            h, cross_scores, cross_attention_cache = split_attention_outputs(
                attended,
                return_attention_scores,
                cross_attention_cache is not None,
            )  # (B, T, D), (B, N, T, E), the cache
            x = self._add_residual(
                x, h, self._cross_attention_dropout,
                self._cross_attention_layer_norm, training,
            )
            scores["cross_attention"] = cross_scores

        x = self._feedforward(x, training)
        return self._outputs(
            x,
            scores if return_attention_scores else None,
            self_attention_cache,
            cross_attention_cache,
        )

    def _outputs(self, x, scores, self_cache, cross_cache):
        """The documented return structure (see Returns): `x`, then the
        scores dict if requested, then the caches that were given."""
        outputs = (x,)
        if scores is not None:
            outputs += (scores,)
        if self_cache is not None:
            outputs += (self_cache,)
        if cross_cache is not None:
            outputs += (cross_cache,)
        return outputs[0] if len(outputs) == 1 else outputs

    def compute_output_shape(self, decoder_sequence_shape):
        return tuple(decoder_sequence_shape)

    def compute_output_spec(
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
        # Explicit, so that `compute_output_spec` called directly with
        # float32 inputs on a `mixed_float16` layer (keras-hub's precision
        # test) answers float16 instead of tracing a float16 + float32 add.
        if self.built:
            self._check_call(
                encoder_sequence, self_attention_cache, cross_attention_cache
            )

        def spec(shape):
            return keras.KerasTensor(shape, dtype=self.compute_dtype)

        def like(cache):
            if cache is None:
                return None
            return keras.tree.map_structure(lambda t: spec(t.shape), cache)

        batch, length = decoder_sequence.shape[0], decoder_sequence.shape[1]
        scores = None
        if return_attention_scores:
            scores = {
                "self_attention": spec(
                    (batch, self.num_heads, length,
                     _length(self_attention_cache, length))
                )
            }
            if encoder_sequence is not None:
                scores["cross_attention"] = spec(
                    (batch, self.num_heads, length,
                     _length(cross_attention_cache,
                             encoder_sequence.shape[1]))
                )
        return self._outputs(
            spec(self.compute_output_shape(decoder_sequence.shape)),
            scores,
            like(self_attention_cache),
            like(cross_attention_cache),
        )


def _length(cache, default):
    """Key length of a cache in either form, or `default` without one."""
    return default if cache is None else cache_length(cache)
