"""SinusoidalPositionEncoding against the paper's formula in float64 and
keras-hub's SinePositionEncoding."""

import keras
import keras_hub
import numpy as np
import pytest

from keras_attn import layers
from keras_attn.layers import SinusoidalPositionEncoding
from tests import references
from tests.test_case import assert_allclose
from tests.test_case import run_layer_test
from tests.test_case import to_numpy

POSITIONS = np.array([[3, 0, 0, 1, 17, 2], [0, 1, 2, 3, 4, 5]], "int32")


@pytest.mark.parametrize("with_positions", [False, True])
def test_layer_behaviors(with_positions, tmp_path):
    inputs = dict(inputs=np.zeros((2, 6, 8), "float32"))
    if with_positions:
        inputs["positions"] = POSITIONS
    run_layer_test(
        SinusoidalPositionEncoding,
        dict(max_wavelength=10000),
        inputs,
        expected_output_shapes=[(2, 6, 8)],
        expected_num_trainable_weights=0,
        tmp_path=tmp_path,
    )


@pytest.mark.parametrize("width", [1, 7, 16])
@pytest.mark.parametrize("start", [0, 5])
def test_matches_formula_for_any_width_and_start(width, start):
    x = np.zeros((2, 9, width), "float32")
    out = SinusoidalPositionEncoding()(x, start_index=start)
    ref = references.sinusoidal(9, width, start=start)
    assert_allclose(out[0], ref, atol=2e-6)
    assert_allclose(out[1], ref, atol=2e-6)


def test_long_sequences():
    """Positions beyond any training length are still exact."""
    out = SinusoidalPositionEncoding()(np.zeros((1, 3, 4), "float32"),
                                       start_index=5000)
    assert_allclose(out[0], references.sinusoidal(3, 4, start=5000),
                    atol=2e-3)


def test_matches_keras_hub():
    x = np.zeros((2, 12, 10), "float32")
    ours = SinusoidalPositionEncoding()
    theirs = keras_hub.layers.SinePositionEncoding()
    assert_allclose(ours(x), theirs(x), atol=1e-6)
    assert_allclose(ours(x, start_index=4), theirs(x, start_index=4),
                    atol=1e-6)
    positions = np.concatenate([POSITIONS, POSITIONS], axis=1)
    assert_allclose(ours(x, positions=positions),
                    theirs(x, positions=positions), atol=1e-6)


@pytest.mark.parametrize("positions", [POSITIONS, POSITIONS[0]])
def test_positions_follow_the_formula(positions):
    out = to_numpy(SinusoidalPositionEncoding()(
        np.zeros((2, 6, 7), "float32"), start_index=3, positions=positions))
    table = references.sinusoidal(18, 7)  # rows 0..17
    assert_allclose(out, np.broadcast_to(table[positions], out.shape),
                    atol=2e-6)


def test_batched_positions_apply_per_example_for_4d_inputs():
    out = to_numpy(SinusoidalPositionEncoding()(
        np.zeros((2, 3, 6, 4), "float32"), positions=POSITIONS))
    table = references.sinusoidal(18, 4)
    for b in range(2):
        assert_allclose(out[b], np.broadcast_to(table[POSITIONS[b]],
                                                (3, 6, 4)), atol=2e-6)


def test_mixed_float16_stays_accurate_at_long_positions():
    """The angles are float32 whatever the policy: only the result is
    rounded to float16 (keras-hub's float16 angles are off by up to 0.78
    at 2048 positions)."""
    x = np.zeros((1, 2048, 64), "float32")
    out = SinusoidalPositionEncoding(dtype="mixed_float16")(x)
    assert keras.backend.standardize_dtype(out.dtype) == "float16"
    assert_allclose(to_numpy(out).astype("float64")[0],
                    references.sinusoidal(2048, 64), atol=5e-4)


def test_keras_hub_name_is_the_same_class():
    assert layers.SinePositionEncoding is SinusoidalPositionEncoding
    theirs = keras_hub.layers.SinePositionEncoding(max_wavelength=500)
    ours = layers.SinePositionEncoding.from_config(theirs.get_config())
    assert ours.max_wavelength == 500


def test_bad_arguments():
    with pytest.raises(ValueError, match="max_wavelength=0"):
        SinusoidalPositionEncoding(max_wavelength=0)
    with pytest.raises(ValueError, match="positions.shape=\\(5,\\)"):
        SinusoidalPositionEncoding()(np.zeros((1, 3, 4), "float32"),
                                     positions=np.arange(5))
