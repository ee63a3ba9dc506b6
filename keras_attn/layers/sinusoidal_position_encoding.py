"""Fixed sinusoidal position encoding of "Attention Is All You Need".

Shape legend: B batch, L sequence length, D model width.
"""

import keras
from keras import ops

from keras_attn.layers.positions import broadcastable
from keras_attn.layers.positions import check_positions
from keras_attn.layers.validation import positive_number


@keras.saving.register_keras_serializable(package="keras_attn")
class SinusoidalPositionEncoding(keras.layers.Layer):
    """PE(pos, 2i) = sin(pos / 10000^(2i/D)), PE(pos, 2i+1) = cos(same).

    Sines and cosines are interleaved exactly as the paper writes them, for
    any sequence length and any width `D` (odd included), starting at
    position `start_index` or at the explicit `positions`. The layer has no
    weights and returns only the encoding; add it to the embeddings yourself
    (or use `TokenAndPositionEmbedding(position="sinusoidal")`).

    A drop-in for `keras_hub.layers.SinePositionEncoding`, also exported
    under that name (`keras_attn.layers.SinePositionEncoding` is this class,
    so configs and `.keras` files written through either name load with
    both): the same arguments, call arguments and formula. One difference,
    on purpose: the angles are computed in float32 and only the result is
    cast to the compute dtype, where keras-hub computes them in the compute
    dtype. Under `mixed_float16` (width 64) keras-hub's encoding is off by
    0.2 at 512 positions and 0.78 at 2048; this layer stays within 4e-4
    (the float16 rounding of the result). In float32 both agree to 2e-6 up
    to 64 positions.

    Masking: the input's Keras mask passes through unchanged.

    Args:
        max_wavelength: float. The base, 10000 in the paper.
            Defaults to `10000`.

    Call arguments:
        inputs: tensor `(B, ..., L, D)` (or `(L, D)`); only its shape is
            used.
        start_index: int or int tensor. Position of the first element.
            Defaults to `0`.
        positions: optional tensor `(L,)` or `(B, L)` of positions (int or
            float); overrides `start_index`. Defaults to `None`.

    Returns:
        The encoding, broadcast to the shape of `inputs`.

    Example:

    ```python
    import numpy as np
    import keras_attn
    x = np.zeros((2, 10, 16), "float32")
    pe = keras_attn.layers.SinusoidalPositionEncoding()(x)
    assert np.allclose(pe[0, 3, 0], np.sin(3.0))
    assert np.allclose(pe[0, 3, 1], np.cos(3.0))
    ```

    References:
        Vaswani et al., 2017, section 3.5, https://arxiv.org/abs/1706.03762
    """

    def __init__(self, max_wavelength=10000, **kwargs):
        super().__init__(**kwargs)
        positive_number(max_wavelength, "max_wavelength")
        self.max_wavelength = max_wavelength
        self.supports_masking = True
        self.built = True

    def call(self, inputs, start_index=0, positions=None):
        width = inputs.shape[-1]
        if width is None:
            raise ValueError(
                "The last axis of `inputs` must have a static size. "
                f"Received: inputs.shape={inputs.shape}"
            )
        shape = ops.shape(inputs)
        if positions is None:
            positions = ops.arange(shape[-2], dtype="float32") + ops.cast(
                start_index, "float32"
            )  # (L,)
        else:
            positions = check_positions(positions, inputs.shape[-2])
            positions = ops.cast(positions, "float32")  # (L,) or (B, L)
        dims = ops.arange(width, dtype="int32")
        pair = ops.cast(dims // 2 * 2, "float32") / width  # 2i / D
        inverse_freq = 1.0 / ops.power(float(self.max_wavelength), pair)
        angles = positions[..., None] * inverse_freq  # (L|B L, D)
        is_even = ops.equal(dims % 2, 0)
        encoding = ops.where(is_even, ops.sin(angles), ops.cos(angles))
        encoding = broadcastable(
            ops.cast(encoding, self.compute_dtype), len(inputs.shape)
        )
        return ops.broadcast_to(encoding, shape)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"max_wavelength": self.max_wavelength})
        return config
