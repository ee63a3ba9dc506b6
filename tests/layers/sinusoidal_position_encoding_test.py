"""SinusoidalPositionEncoding against the paper's formula in float64."""

import keras_hub
import numpy as np
import pytest

from keras_attn.layers import SinusoidalPositionEncoding
from tests import references
from tests.test_case import assert_allclose
from tests.test_case import run_layer_test


def test_layer_behaviors(tmp_path):
    run_layer_test(
        SinusoidalPositionEncoding,
        dict(max_wavelength=10000),
        dict(inputs=np.zeros((2, 6, 8), "float32")),
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
    x = np.zeros((1, 12, 10), "float32")
    ours = SinusoidalPositionEncoding()(x)
    theirs = keras_hub.layers.SinePositionEncoding()(x)
    assert_allclose(ours, theirs, atol=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="max_wavelength=0"):
        SinusoidalPositionEncoding(max_wavelength=0)
