"""Learned position embedding.

Shape legend: B batch, L sequence length, D model width.
"""

import keras
from keras import ops

from keras_attn.layers.positions import broadcastable
from keras_attn.layers.positions import check_positions
from keras_attn.layers.validation import positive_int
from keras_attn.ops.attention import static_size


@keras.saving.register_keras_serializable(package="keras_attn")
class PositionEmbedding(keras.layers.Layer):
    """A trainable vector per position, up to `sequence_length` positions.

    A drop-in for `keras_hub.layers.PositionEmbedding`: the same arguments,
    call arguments and variable (`position_embeddings`, named
    `"embeddings"`, shape `(sequence_length, D)`), so weights copy across
    both ways and weight converters that read `layer.position_embeddings`
    work unchanged. Returns the embeddings of positions `start_index ..
    start_index + L - 1`, or of the explicit `positions`, broadcast to the
    input's shape; add them to the token embeddings. The sequence is the
    second-to-last axis of the input, the features the last.

    Masking: the input's Keras mask passes through unchanged (keras-hub's
    layer does not support masking).

    Args:
        sequence_length: int. Maximum number of positions.
        initializer: initializer of the embeddings. Defaults to
            `"glorot_uniform"`.

    Call arguments:
        inputs: tensor `(B, ..., L, D)`; only its shape is used.
        start_index: int or int tensor. Position of the first element.
            Defaults to `0`.
        positions: optional int tensor `(L,)` or `(B, L)` of positions in
            `[0, sequence_length)`; overrides `start_index` (e.g. packed
            sequences, or left-padded prompts). Row `b` of a `(B, L)` tensor
            applies to example `b`. Defaults to `None`.

    Returns:
        The position embeddings, broadcast to the shape of `inputs`.

    Example:

    ```python
    import numpy as np
    import keras_attn
    layer = keras_attn.layers.PositionEmbedding(sequence_length=32)
    out = layer(np.zeros((2, 10, 16), "float32"))
    assert out.shape == (2, 10, 16)
    table = np.asarray(layer.position_embeddings)  # (32, 16)
    packed = layer(np.zeros((1, 4, 16), "float32"), positions=[0, 1, 0, 1])
    np.testing.assert_allclose(packed[0], table[[0, 1, 0, 1]])
    ```

    References:
        Devlin et al., "BERT", 2019, https://arxiv.org/abs/1810.04805
    """

    def __init__(
        self, sequence_length, initializer="glorot_uniform", **kwargs
    ):
        super().__init__(**kwargs)
        positive_int(sequence_length, "sequence_length")
        self.sequence_length = int(sequence_length)
        self.initializer = keras.initializers.get(initializer)
        self.supports_masking = True

    def build(self, inputs_shape):
        # keras-hub's attribute name, and its variable name ("embeddings").
        self.position_embeddings = self.add_weight(
            name="embeddings",
            shape=(self.sequence_length, inputs_shape[-1]),
            initializer=self.initializer,
            trainable=True,
        )
        self.built = True

    @property
    def embeddings(self):
        """The same variable as `position_embeddings` (our earlier name)."""
        return self.position_embeddings

    def call(self, inputs, start_index=0, positions=None):
        shape = ops.shape(inputs)
        table = ops.convert_to_tensor(self.position_embeddings)  # (P, D)
        if positions is not None:
            positions = check_positions(positions, inputs.shape[-2])
            if not keras.backend.is_int_dtype(
                keras.backend.standardize_dtype(positions.dtype)
            ):
                raise TypeError(
                    "`positions` must hold integer positions. Received: "
                    f"positions.dtype={positions.dtype}"
                )
            vectors = ops.take(table, positions, axis=0)  # (L|B L, D)
            vectors = broadcastable(vectors, len(inputs.shape))
        else:
            length = static_size(inputs.shape[-2])
            if length is not None and length > self.sequence_length:
                raise ValueError(
                    f"The input length {length} exceeds `sequence_length`="
                    f"{self.sequence_length}. Received: inputs.shape="
                    f"{inputs.shape}"
                )
            vectors = ops.slice(
                table, (start_index, 0), (shape[-2], shape[-1])
            )  # (L, D)
        return ops.broadcast_to(ops.cast(vectors, self.compute_dtype), shape)

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
