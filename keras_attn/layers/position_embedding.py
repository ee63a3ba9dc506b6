"""Learned position embedding.

Shape legend: B batch, L sequence length, D model width.
"""

import keras
from keras import ops

from keras_attn.layers.validation import positive_int
from keras_attn.ops.attention import static_size


@keras.saving.register_keras_serializable(package="keras_attn")
class PositionEmbedding(keras.layers.Layer):
    """A trainable vector per position, up to `sequence_length` positions.

    Holds one variable, `embeddings` of shape `(sequence_length, D)` (the
    same as keras-hub's `PositionEmbedding`, so weights copy across). Returns
    the embeddings of positions `start_index .. start_index + L - 1`,
    broadcast to the input's shape; add them to the token embeddings.

    Masking: the input's Keras mask passes through unchanged.

    Args:
        sequence_length: int. Maximum number of positions.
        initializer: initializer of the embeddings. Defaults to
            `"glorot_uniform"`.

    Call arguments:
        inputs: tensor `(B, L, D)`; only its shape is used.
        start_index: int or int tensor. Position of the first element.
            Defaults to `0`.

    Returns:
        The position embeddings, broadcast to the shape of `inputs`.

    Example:

    ```python
    import numpy as np
    import keras_attn
    layer = keras_attn.layers.PositionEmbedding(sequence_length=32)
    out = layer(np.zeros((2, 10, 16), "float32"))
    assert out.shape == (2, 10, 16)
    ```
    """

    def __init__(
        self, sequence_length, initializer="glorot_uniform", **kwargs
    ):
        super().__init__(**kwargs)
        positive_int(sequence_length, "sequence_length")
        self.sequence_length = sequence_length
        self.initializer = keras.initializers.get(initializer)
        self.supports_masking = True

    def build(self, inputs_shape):
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.sequence_length, inputs_shape[-1]),
            initializer=self.initializer,
            trainable=True,
        )
        self.built = True

    def call(self, inputs, start_index=0):
        shape = ops.shape(inputs)
        length = shape[-2]
        static_length = static_size(inputs.shape[-2])
        if static_length is not None and static_length > self.sequence_length:
            raise ValueError(
                f"The input length {static_length} exceeds `sequence_length`="
                f"{self.sequence_length}. Received: inputs.shape="
                f"{inputs.shape}"
            )
        embeddings = ops.convert_to_tensor(self.embeddings)
        positions = ops.slice(
            embeddings, (start_index, 0), (length, shape[-1])
        )  # (L, D)
        return ops.broadcast_to(
            ops.cast(positions, self.compute_dtype), shape
        )

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "sequence_length": self.sequence_length,
                "initializer": keras.initializers.serialize(self.initializer),
            }
        )
        return config
