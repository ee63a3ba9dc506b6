"""Rotary position embeddings (RoPE), with linear, dynamic and YaRN scaling.

Shape legend: B batch, L sequence length, F features (rotated, even).
Inside `call` the input is viewed as `(B, L, ..., F)`: the sequence and
feature axes are moved to positions 1 and -1, and moved back at the end.
"""

import math

import keras
from keras import ops

from keras_attn.layers.positions import check_positions
from keras_attn.layers.validation import positive_int
from keras_attn.layers.validation import positive_number

ROPE_TYPES = ("linear", "dynamic", "yarn")


def _axis(value, name):
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(
            f"Received an invalid value for argument `{name}`, expected an "
            f"integer axis. Received: {name}={value!r}"
        )
    return value


@keras.saving.register_keras_serializable(package="keras_attn")
class RotaryEmbedding(keras.layers.Layer):
    """Rotates feature pairs by an angle proportional to the position.

    A drop-in for `keras_hub.layers.RotaryEmbedding` (same arguments, call
    arguments and results). Feature `f < F/2` is paired with feature
    `f + F/2` (the "rotate half" layout of GPT-NeoX, LLaMA and keras-hub);
    the pair at position `p` turns by `p * w_f`, with `w_f = max_wavelength
    ** (-2f / F)` before scaling. Dot products of rotated queries and keys
    then depend only on their distance. Positions start at `start_index`, so
    a decode step at position `t` gives the same result as the full pass at
    `t`, or come from `positions`.

    Scaling (`rope_type`, for contexts longer than the training length):
    `"linear"` divides every `w_f` by `scaling_factor` (position
    interpolation); `"dynamic"` divides them by `scaling_factor ** (F / (F -
    2))`, keras-hub's definition; `"yarn"` blends interpolated and original
    frequencies with a linear ramp between the correction dimensions of
    `beta_fast` and `beta_slow` for `original_max_position_embeddings`
    positions, and multiplies the result by `0.1 * ln(scaling_factor) + 1`
    (YaRN). With `scaling_factor=1` all three are plain RoPE.

    Differences from keras-hub, all on purpose: the frequencies are computed
    once in double precision and the rotation in float32 (keras-hub rotates
    in the compute dtype; under `mixed_float16` the float16 result rounding
    dominates either way: max error 1.8e-3 here, 2.4e-3 there, at 64
    positions), and an unknown `rope_type` is an error (keras-hub silently
    applies no scaling). The layer has no weights.

    Masking: the input's Keras mask passes through unchanged.

    Args:
        max_wavelength: float. Base of the wavelengths. Defaults to `10000`.
        scaling_factor: float. Context extension factor. Defaults to `1.0`.
        rope_type: `"linear"`, `"dynamic"` or `"yarn"`. Defaults to
            `"linear"`.
        beta_fast: float. YaRN only: fast rotation count bounding the ramp.
            Defaults to `32.0`.
        beta_slow: float. YaRN only: slow rotation count bounding the ramp.
            Defaults to `1.0`.
        original_max_position_embeddings: int. YaRN only: the training
            context length. Defaults to `4096`.
        truncate: bool. YaRN only: round the ramp's ends to whole
            dimensions (floor and ceil). Defaults to `True`.
        sequence_axis: int. Axis of the sequence. Defaults to `1`.
        feature_axis: int. Axis of the features. Defaults to `-1`.
        denominator_dim: int or `None`. Replaces `F` in the exponent `2f / F`
            (models that rotate only part of the head but keep the full head
            size there); ignored by `"yarn"`, as in keras-hub. Defaults to
            `None`.

    Call arguments:
        inputs: tensor of rank 3 or more with a sequence axis and an even,
            static feature axis (`(B, L, F)`, `(B, L, N, F)`, ...).
        start_index: int or int tensor. Position of the first element.
            Defaults to `0`.
        positions: optional tensor `(L,)` or `(B, L)` of positions (any real
            dtype); overrides `start_index`. Defaults to `None`.

    Returns:
        A tensor of the same shape as `inputs`, in the compute dtype.

    Example:

    ```python
    import numpy as np
    import keras_attn
    q = np.random.rand(2, 6, 4, 8).astype("float32")  # (B, L, N, H)
    full = keras_attn.layers.RotaryEmbedding()(q)
    step = keras_attn.layers.RotaryEmbedding()(q[:, 5:], start_index=5)
    np.testing.assert_allclose(full[:, 5:], step, atol=1e-6)
    heads_first = q.transpose(0, 2, 1, 3)  # (B, N, L, H)
    out = keras_attn.layers.RotaryEmbedding(sequence_axis=2)(heads_first)
    np.testing.assert_allclose(out, np.asarray(full).transpose(0, 2, 1, 3),
                               atol=1e-6)
    ```

    References:
        Su et al., "RoFormer", 2021, https://arxiv.org/abs/2104.09864;
        Chen et al., "Extending Context Window ... via Positional
        Interpolation", 2023, https://arxiv.org/abs/2306.15595;
        Peng et al., "YaRN", 2023, https://arxiv.org/abs/2309.00071
    """

    def __init__(
        self,
        max_wavelength=10000,
        scaling_factor=1.0,
        rope_type="linear",
        beta_fast=32.0,
        beta_slow=1.0,
        original_max_position_embeddings=4096,
        truncate=True,
        sequence_axis=1,
        feature_axis=-1,
        denominator_dim=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        positive_number(max_wavelength, "max_wavelength")
        positive_number(scaling_factor, "scaling_factor")
        if rope_type not in ROPE_TYPES:
            raise ValueError(
                "Received an invalid value for argument `rope_type`, expected "
                f"one of {ROPE_TYPES}. Received: rope_type={rope_type!r}"
            )
        positive_number(beta_fast, "beta_fast")
        positive_number(beta_slow, "beta_slow")
        positive_int(
            original_max_position_embeddings,
            "original_max_position_embeddings",
        )
        positive_int(denominator_dim, "denominator_dim", allow_none=True)
        self.max_wavelength = max_wavelength
        self.scaling_factor = scaling_factor
        self.rope_type = rope_type
        self.beta_fast = beta_fast
        self.beta_slow = beta_slow
        self.original_max_position_embeddings = (
            original_max_position_embeddings
        )
        self.truncate = bool(truncate)
        self.sequence_axis = _axis(sequence_axis, "sequence_axis")
        self.feature_axis = _axis(feature_axis, "feature_axis")
        self.denominator_dim = denominator_dim
        self.supports_masking = True
        self.built = True

    def _axes(self, rank):
        """The (sequence, feature) axes as non-negative ints for `rank`."""
        axes = []
        for value, name in (
            (self.sequence_axis, "sequence_axis"),
            (self.feature_axis, "feature_axis"),
        ):
            axis = value + rank if value < 0 else value
            if not 0 <= axis < rank:
                raise ValueError(
                    f"`{name}`={value} is out of range for an input of rank "
                    f"{rank}."
                )
            axes.append(axis)
        if axes[0] == axes[1]:
            raise ValueError(
                "`sequence_axis` and `feature_axis` must be different axes. "
                f"Received: sequence_axis={self.sequence_axis}, "
                f"feature_axis={self.feature_axis} for rank {rank}"
            )
        return tuple(axes)

    def _frequencies(self, features):
        """Angular speeds `w_f` of the `F/2` feature pairs, as Python floats
        (double precision; they depend only on the configuration)."""
        base = float(self.max_wavelength)
        scale = float(self.scaling_factor)
        half = features // 2
        if self.rope_type == "yarn":
            return self._yarn_frequencies(features, base, scale)
        denominator = float(self.denominator_dim or features)
        speeds = [base ** (-2.0 * f / denominator) for f in range(half)]
        if self.rope_type == "dynamic":
            scale = scale ** (features / max(1, features - 2))
        return [speed / scale for speed in speeds]

    def _yarn_frequencies(self, features, base, scale):
        def correction_dim(rotations):
            # The dimension whose wavelength fits `rotations` times into the
            # original context.
            context = float(self.original_max_position_embeddings)
            return (
                features * math.log(context / (rotations * 2 * math.pi))
                / (2 * math.log(base))
            )

        low, high = correction_dim(self.beta_fast), correction_dim(
            self.beta_slow
        )
        if self.truncate:
            low, high = math.floor(low), math.ceil(high)
        low, high = max(low, 0.0), min(high, features - 1.0)
        span = max(high - low, 0.001)
        speeds = []
        for f in range(features // 2):
            speed = base ** (-2.0 * f / features)
            # 0: keep the original speed (high frequencies), 1: interpolate.
            ramp = min(max((f - low) / span, 0.0), 1.0)
            speeds.append(speed / scale * ramp + speed * (1.0 - ramp))
        return speeds

    def call(self, inputs, start_index=0, positions=None):
        rank = len(inputs.shape)
        if rank < 3:
            raise ValueError(
                "`inputs` must have rank 3 or more (batch, sequence, ..., "
                f"features). Received: inputs.shape={inputs.shape}"
            )
        sequence_axis, feature_axis = self._axes(rank)
        features = inputs.shape[feature_axis]
        if features is None or features % 2:
            raise ValueError(
                "The feature axis of `inputs` must have an even, static size."
                f" Received: inputs.shape={inputs.shape}, feature_axis="
                f"{self.feature_axis}"
            )
        x = ops.moveaxis(
            inputs, (sequence_axis, feature_axis), (1, rank - 1)
        )  # (B, L, ..., F)
        if positions is None:
            positions = ops.arange(ops.shape(x)[1], dtype="float32")
            positions = positions + ops.cast(start_index, "float32")  # (L,)
        else:
            positions = check_positions(positions, x.shape[1])
            positions = ops.cast(positions, "float32")  # (L,) or (B, L)
        speeds = ops.convert_to_tensor(
            self._frequencies(features), dtype="float32"
        )  # (F/2,)
        angles = positions[..., None] * speeds  # (L|B L, F/2)
        angles = ops.concatenate([angles, angles], axis=-1)  # (L|B L, F)
        if len(angles.shape) == 2:
            angles = angles[None]  # (1, L, F)
        for _ in range(rank - 3):
            angles = ops.expand_dims(angles, axis=-2)  # (B|1, L, 1.., F)
        cos, sin = ops.cos(angles), ops.sin(angles)
        if self.rope_type == "yarn":
            # YaRN's attention temperature, folded into the rotation.
            factor = 0.1 * math.log(self.scaling_factor) + 1.0
            cos, sin = cos * factor, sin * factor
        x = ops.cast(x, "float32")
        x1, x2 = ops.split(x, 2, axis=-1)
        rotated = ops.concatenate([-x2, x1], axis=-1)
        out = x * cos + rotated * sin
        out = ops.moveaxis(out, (1, rank - 1), (sequence_axis, feature_axis))
        return ops.cast(out, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "max_wavelength": self.max_wavelength,
                "scaling_factor": self.scaling_factor,
                "rope_type": self.rope_type,
                "beta_fast": self.beta_fast,
                "beta_slow": self.beta_slow,
                "original_max_position_embeddings": (
                    self.original_max_position_embeddings
                ),
                "truncate": self.truncate,
                "sequence_axis": self.sequence_axis,
                "feature_axis": self.feature_axis,
                "denominator_dim": self.denominator_dim,
            }
        )
        return config
