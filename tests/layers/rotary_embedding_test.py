"""RotaryEmbedding against a float64 rotation and keras-hub's layer: every
rope type, explicit positions, and permuted axes."""

import math

import keras_hub
import numpy as np
import pytest

from keras_attn.layers import RotaryEmbedding
from tests import references
from tests.test_case import assert_allclose
from tests.test_case import run_layer_test
from tests.test_case import to_numpy


def _x(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


POSITIONS = np.array([[4, 0, 7, 7, 1, 30], [0, 1, 2, 3, 4, 5]], "int32")


@pytest.mark.parametrize(
    "init, inputs, shape",
    [
        (dict(max_wavelength=500), dict(inputs=_x(2, 6, 3, 8)),
         (2, 6, 3, 8)),
        (dict(max_wavelength=1000, scaling_factor=4.0, rope_type="yarn",
              original_max_position_embeddings=16, sequence_axis=2),
         dict(inputs=_x(2, 3, 6, 8), positions=POSITIONS), (2, 3, 6, 8)),
    ],
)
def test_layer_behaviors(init, inputs, shape, tmp_path):
    run_layer_test(
        RotaryEmbedding,
        init,
        inputs,
        expected_output_shapes=[shape],
        expected_num_trainable_weights=0,
        tmp_path=tmp_path,
    )


def _speeds(features, base=10000.0, scaling_factor=1.0, rope_type="linear",
            beta_fast=32.0, beta_slow=1.0,
            original_max_position_embeddings=4096, truncate=True,
            denominator_dim=None):
    """Float64 angular speeds of the F/2 pairs and the output factor, from
    the published definitions (linear: Chen et al. 2023; YaRN: Peng et al.
    2023 with the correction-dimension ramp of its reference code)."""
    f = np.arange(features // 2, dtype=np.float64)
    if rope_type == "yarn":
        theta = base ** (-2 * f / features)

        def dim_of(rotations):  # where the wavelength fits `rotations` times
            return (features * np.log(original_max_position_embeddings
                                      / (rotations * 2 * np.pi))
                    / (2 * np.log(base)))

        low, high = dim_of(beta_fast), dim_of(beta_slow)
        if truncate:
            low, high = np.floor(low), np.ceil(high)
        low, high = max(low, 0), min(high, features - 1)
        ramp = np.clip((f - low) / max(high - low, 0.001), 0, 1)
        speeds = theta * (1 - ramp) + theta / scaling_factor * ramp
        return speeds, 0.1 * np.log(scaling_factor) + 1
    theta = base ** (-2 * f / (denominator_dim or features))
    if rope_type == "dynamic":
        return theta / scaling_factor ** (features / (features - 2)), 1.0
    return theta / scaling_factor, 1.0


def _rope(x, positions, speeds, factor=1.0):
    """Rotate-half RoPE in float64 on (B, L, ..., F) with positions (B, L)."""
    x = np.asarray(x, np.float64)
    angles = np.asarray(positions, np.float64)[..., None] * speeds
    angles = angles.reshape(angles.shape[:2] + (1,) * (x.ndim - 3)
                            + angles.shape[-1:])
    half = x.shape[-1] // 2
    a, b = x[..., :half], x[..., half:]
    cos, sin = np.cos(angles) * factor, np.sin(angles) * factor
    return np.concatenate([a * cos - b * sin, b * cos + a * sin], axis=-1)


@pytest.mark.parametrize("shape", [(2, 7, 8), (2, 7, 3, 8)])
def test_matches_float64_rotation(shape):
    x = _x(*shape)
    assert_allclose(RotaryEmbedding()(x), references.rotary(x), atol=1e-5)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(),
        dict(scaling_factor=3.0),
        dict(max_wavelength=500, denominator_dim=32),
        dict(rope_type="dynamic", scaling_factor=2.0),
        dict(rope_type="yarn", scaling_factor=8.0,
             original_max_position_embeddings=64),
        dict(rope_type="yarn", scaling_factor=4.0, truncate=False,
             beta_fast=16.0, beta_slow=2.0,
             original_max_position_embeddings=128),
    ],
)
def test_every_rope_type_matches_float64_and_keras_hub(kwargs):
    x = _x(2, 6, 3, 16)
    base = kwargs.get("max_wavelength", 10000.0)
    ref_kwargs = {k: v for k, v in kwargs.items() if k != "max_wavelength"}
    speeds, factor = _speeds(16, base, **ref_kwargs)
    theirs = keras_hub.layers.RotaryEmbedding(**kwargs)
    for positions in (POSITIONS, POSITIONS[0]):
        out = RotaryEmbedding(**kwargs)(x, positions=positions)
        batched = np.broadcast_to(positions, (2, 6))
        assert_allclose(out, _rope(x, batched, speeds, factor), atol=2e-5)
        assert_allclose(out, theirs(x, positions=positions), atol=2e-5)
    out = RotaryEmbedding(**kwargs)(x, start_index=5)
    assert_allclose(out, theirs(x, start_index=5), atol=1e-5)
    assert_allclose(out, _rope(x, np.arange(5, 11)[None], speeds, factor),
                    atol=1e-5)


def test_positions_override_start_index():
    x = _x(2, 6, 8)
    layer = RotaryEmbedding()
    assert_allclose(layer(x, start_index=9, positions=np.arange(6)),
                    layer(x), atol=0)


@pytest.mark.parametrize(
    "rank, axes", [(3, (-1, -2)), (4, (2, -1)), (4, (2, 1)), (4, (-2, 0))]
)
def test_permuted_axes_equal_the_default_layout(rank, axes):
    """The same rotation wherever the sequence and feature axes sit."""
    base = _x(2, 6, 8) if rank == 3 else _x(2, 6, 3, 8)  # (B, L, ..., F)
    moved = np.moveaxis(base, (1, -1), axes)
    layer = RotaryEmbedding(sequence_axis=axes[0], feature_axis=axes[1])
    ref = to_numpy(RotaryEmbedding()(base, start_index=2))
    out = to_numpy(layer(moved, start_index=2))
    assert_allclose(out, np.moveaxis(ref, (1, -1), axes), atol=1e-6)
    theirs = keras_hub.layers.RotaryEmbedding(
        sequence_axis=axes[0], feature_axis=axes[1])
    assert_allclose(out, theirs(moved, start_index=2), atol=1e-5)


def test_decode_step_at_t_equals_full_pass_at_t():
    x = _x(1, 10, 2, 8)
    full = RotaryEmbedding()(x)
    for t in (0, 4, 9):
        step = RotaryEmbedding()(x[:, t:t + 1], start_index=t)
        assert_allclose(step, full[:, t:t + 1], atol=1e-6)


def test_dot_products_depend_only_on_distance():
    rng = np.random.default_rng(1)
    q = np.repeat(rng.normal(size=(1, 1, 8)), 12, axis=1).astype("float32")
    k = np.repeat(rng.normal(size=(1, 1, 8)), 12, axis=1).astype("float32")
    rq, rk = RotaryEmbedding()(q), RotaryEmbedding()(k)
    dots = np.einsum("bif,bjf->ij", np.asarray(rq), np.asarray(rk))
    assert np.allclose(dots[2, 0], dots[7, 5], atol=1e-5)
    assert np.allclose(dots[9, 3], dots[10, 4], atol=1e-5)


def test_keras_hub_config_loads():
    theirs = keras_hub.layers.RotaryEmbedding(
        max_wavelength=500, scaling_factor=2.0, rope_type="yarn",
        sequence_axis=2, feature_axis=-1, denominator_dim=12)
    ours = RotaryEmbedding.from_config(theirs.get_config())
    assert ours.get_config() == {**theirs.get_config(),
                                 "name": ours.name}
    assert math.isclose(ours.scaling_factor, 2.0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(max_wavelength=-1), "max_wavelength=-1"),
        (dict(rope_type="ntk"), "rope_type='ntk'"),
        (dict(sequence_axis=1.5), "sequence_axis=1.5"),
        (dict(original_max_position_embeddings=0),
         "original_max_position_embeddings=0"),
        (dict(denominator_dim=-4), "denominator_dim=-4"),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RotaryEmbedding(**kwargs)


def test_bad_call_arguments():
    with pytest.raises(ValueError, match="even"):
        RotaryEmbedding()(_x(1, 3, 5))
    with pytest.raises(ValueError, match="rank 3 or more"):
        RotaryEmbedding()(_x(3, 4))
    with pytest.raises(ValueError, match="must be different"):
        RotaryEmbedding(sequence_axis=2)(_x(1, 3, 4))
    with pytest.raises(ValueError, match="out of range"):
        RotaryEmbedding(sequence_axis=3)(_x(1, 3, 4))
    with pytest.raises(ValueError, match="positions.shape=\\(4,\\)"):
        RotaryEmbedding()(_x(1, 3, 4), positions=np.arange(4))
