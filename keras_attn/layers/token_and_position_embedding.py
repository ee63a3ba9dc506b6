"""Token embedding plus position embedding, keeping the padding mask.

Shape legend: B batch, L sequence length, V vocabulary, D model width.
"""

import keras
from keras import ops

from keras_attn.layers.position_embedding import PositionEmbedding
from keras_attn.layers.quantization import serialized_dtype
from keras_attn.layers.sinusoidal_position_encoding import (
    SinusoidalPositionEncoding,
)
from keras_attn.layers.validation import positive_int

POSITIONS = ("learned", "sinusoidal")


@keras.saving.register_keras_serializable(package="keras_attn")
class TokenAndPositionEmbedding(keras.layers.Layer):
    """Sums a token embedding and a learned or sinusoidal position embedding.

    A drop-in for `keras_hub.layers.TokenAndPositionEmbedding`: the same
    arguments, call arguments and, with `position="learned"`, the same
    variables (token `embeddings` `(V, D)`, then position `embeddings`
    `(sequence_length, D)`), so weights copy across both ways. The token
    embedding is a `keras.layers.ReversibleEmbedding`: call
    `layer(hidden, reverse=True)` for tied output logits. After
    `Model.quantize("int8")` (or `"int4"`) the token embedding is quantized
    and the layer saves and loads that way.

    Masking: with `mask_zero=True`, token id 0 is padding; the output carries
    the mask `inputs != 0` for downstream layers (no "destroys the mask"
    warning, unlike keras-hub's layer, keras-team/keras#20455).

    Args:
        vocabulary_size: int. Number of token ids `V`.
        sequence_length: int. Maximum sequence length (learned positions).
        embedding_dim: int. Width `D`.
        tie_weights: bool. Whether reverse projection reuses the token
            embedding matrix. Defaults to `True`.
        embeddings_initializer: initializer of the embeddings. Defaults to
            `"uniform"`.
        mask_zero: bool. Whether token id 0 is padding. Defaults to `False`.
        position: `"learned"` or `"sinusoidal"`. Defaults to `"learned"`.
        quantization_config: `keras.quantizers.QuantizationConfig` or
            `None`. The token embedding's; `quantize` sets it, and
            `get_config` saves it so that a quantized layer reloads with the
            same quantizers (without it Keras 3.15 rebuilds an int4
            `ReversibleEmbedding` with int8 activation quantization in the
            reverse projection, which `Int4QuantizationConfig` does not
            use). Defaults to `None`.

    Call arguments:
        inputs: int tensor `(B, L)` of token ids.
        start_index: int or int tensor. Position of the first token (for
            cached decoding). Defaults to `0`.
        positions: optional int tensor `(L,)` or `(B, L)` of explicit
            positions; overrides `start_index`. Defaults to `None`.
        reverse: bool. If True, `inputs` are hidden states `(B, L, D)` and
            the call returns token logits `(B, L, V)` through the (tied or
            separate) reverse projection. Defaults to `False`.

    Returns:
        A tensor `(B, L, D)`, or `(B, L, V)` logits with `reverse=True`.

    Example:

    ```python
    import numpy as np
    import keras_attn
    layer = keras_attn.layers.TokenAndPositionEmbedding(
        vocabulary_size=100, sequence_length=16, embedding_dim=8,
        mask_zero=True)
    ids = np.array([[5, 7, 0, 0]])
    out = layer(ids)
    assert out.shape == (1, 4, 8)
    mask = np.asarray(layer.compute_mask(ids))
    assert mask.tolist() == [[True, True, False, False]]
    ```
    """

    def __init__(
        self,
        vocabulary_size,
        sequence_length,
        embedding_dim,
        tie_weights=True,
        embeddings_initializer="uniform",
        mask_zero=False,
        position="learned",
        quantization_config=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        positive_int(vocabulary_size, "vocabulary_size")
        positive_int(sequence_length, "sequence_length")
        positive_int(embedding_dim, "embedding_dim")
        if position not in POSITIONS:
            raise ValueError(
                "Received an invalid value for argument `position`, expected "
                f"one of {POSITIONS}. Received: position={position!r}"
            )
        self.vocabulary_size = vocabulary_size
        self.sequence_length = sequence_length
        self.embedding_dim = embedding_dim
        self.tie_weights = bool(tie_weights)
        self.embeddings_initializer = keras.initializers.get(
            embeddings_initializer
        )
        self.mask_zero = bool(mask_zero)
        self.position = position
        self.supports_masking = self.mask_zero
        self.token_embedding = keras.layers.ReversibleEmbedding(
            vocabulary_size,
            embedding_dim,
            tie_weights=tie_weights,
            embeddings_initializer=self._clone_initializer(),
            mask_zero=mask_zero,
            quantization_config=quantization_config,
            dtype=self.dtype_policy,
            name="token_embedding",
        )
        if position == "learned":
            self.position_embedding = PositionEmbedding(
                sequence_length,
                initializer=self._clone_initializer(),
                dtype=self.dtype_policy,
                name="position_embedding",
            )
        else:
            self.position_embedding = SinusoidalPositionEncoding(
                dtype=self.dtype_policy, name="position_embedding"
            )

    def _clone_initializer(self):
        init = self.embeddings_initializer
        return init.__class__.from_config(init.get_config())

    def build(self, inputs_shape):
        inputs_shape = tuple(inputs_shape)
        self.token_embedding.build(inputs_shape)
        self.position_embedding.build(inputs_shape + (self.embedding_dim,))
        self.built = True

    def call(self, inputs, start_index=0, positions=None, reverse=False):
        if reverse:
            # (B, L, D) hidden states -> (B, L, V) logits, for tied outputs.
            return self.token_embedding(inputs, reverse=True)
        if not keras.backend.is_int_dtype(
            keras.backend.standardize_dtype(inputs.dtype)
        ):
            raise TypeError(
                "`inputs` must be integer token ids. Received: "
                f"inputs.dtype={inputs.dtype}"
            )
        tokens = self.token_embedding(inputs)  # (B, L, D)
        return tokens + self.position_embedding(
            tokens, start_index=start_index, positions=positions
        )

    def compute_mask(self, inputs, mask=None):
        if keras.backend.is_float_dtype(
            keras.backend.standardize_dtype(inputs.dtype)
        ):
            return mask  # reverse call: logits keep the hidden states' mask
        if not self.mask_zero:
            return None
        return ops.not_equal(inputs, 0)

    def compute_output_shape(self, inputs_shape):
        return tuple(inputs_shape) + (self.embedding_dim,)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "dtype": serialized_dtype(self),
                "vocabulary_size": self.vocabulary_size,
                "sequence_length": self.sequence_length,
                "embedding_dim": self.embedding_dim,
                "tie_weights": self.tie_weights,
                "embeddings_initializer": keras.initializers.serialize(
                    self.embeddings_initializer
                ),
                "mask_zero": self.mask_zero,
                "position": self.position,
                "quantization_config": keras.saving.serialize_keras_object(
                    self.token_embedding.quantization_config
                ),
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["quantization_config"] = keras.saving.deserialize_keras_object(
            config.get("quantization_config")
        )
        return super().from_config(config)
