"""Rotary position embeddings (RoPE).

Shape legend: B batch, L sequence length, F features (rotated, even).
"""

import keras
from keras import ops

from keras_attn.layers.validation import positive_number


@keras.saving.register_keras_serializable(package="keras_attn")
class RotaryEmbedding(keras.layers.Layer):
    """Rotates feature pairs by an angle proportional to the position.

    Feature `f < F/2` is paired with feature `f + F/2` (the "rotate half"
    layout of GPT-NeoX, LLaMA and keras-hub's `RotaryEmbedding`); the pair at
    position `p` turns by `p / max_wavelength ** (2f / F)`. Dot products of
    rotated queries and keys then depend only on their distance.
    Positions start at `start_index`, so a decode step at position `t` gives
    the same result as the full pass at `t`. The layer has no weights; the
    angles are computed in float32.

    Masking: the input's Keras mask passes through unchanged.

    Args:
        max_wavelength: float. Longest wavelength. Defaults to `10000`.
        scaling_factor: float. Positions are divided by it (linear position
            interpolation for longer contexts). Defaults to `1.0`.

    Call arguments:
        inputs: tensor `(B, L, ..., F)`: axis 1 is the sequence, the last axis
            the features.
        start_index: int or int tensor. Position of the first element.
            Defaults to `0`.

    Returns:
        A tensor of the same shape and dtype as `inputs`.

    Example:

    ```python
    import numpy as np
    import keras_attn
    q = np.random.rand(2, 6, 4, 8).astype("float32")  # (B, L, N, H)
    full = keras_attn.layers.RotaryEmbedding()(q)
    step = keras_attn.layers.RotaryEmbedding()(q[:, 5:], start_index=5)
    np.testing.assert_allclose(full[:, 5:], step, atol=1e-6)
    ```

    References:
        Su et al., "RoFormer", 2021, https://arxiv.org/abs/2104.09864
    """

    def __init__(self, max_wavelength=10000, scaling_factor=1.0, **kwargs):
        super().__init__(**kwargs)
        positive_number(max_wavelength, "max_wavelength")
        positive_number(scaling_factor, "scaling_factor")
        self.max_wavelength = max_wavelength
        self.scaling_factor = scaling_factor
        self.supports_masking = True
        self.built = True

    def call(self, inputs, start_index=0):
        features = inputs.shape[-1]
        if features is None or features % 2:
            raise ValueError(
                "The last axis of `inputs` must have an even, static size. "
                f"Received: inputs.shape={inputs.shape}"
            )
        length = ops.shape(inputs)[1]
        positions = ops.arange(length, dtype="float32") + ops.cast(
            start_index, "float32"
        )
        positions = positions / self.scaling_factor  # (L,)
        exponents = ops.arange(0, features, 2, dtype="float32") / features
        inverse_freq = 1.0 / ops.power(
            float(self.max_wavelength), exponents
        )  # (F/2,)
        angles = ops.einsum("l,f->lf", positions, inverse_freq)  # (L, F/2)
        angles = ops.concatenate([angles, angles], axis=-1)  # (L, F)
        # Broadcast over the batch axis and any axes between L and F.
        angles = ops.reshape(
            angles, (1, length) + (1,) * (len(inputs.shape) - 3) + (features,)
        )
        x = ops.cast(inputs, "float32")
        x1, x2 = ops.split(x, 2, axis=-1)
        rotated = ops.concatenate([-x2, x1], axis=-1)
        out = x * ops.cos(angles) + rotated * ops.sin(angles)
        return ops.cast(out, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "max_wavelength": self.max_wavelength,
                "scaling_factor": self.scaling_factor,
            }
        )
        return config
