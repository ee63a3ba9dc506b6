"""RotaryEmbedding against a float64 rotation and keras-hub's layer."""

import keras_hub
import numpy as np
import pytest

from keras_attn.layers import RotaryEmbedding
from tests import references
from tests.test_case import assert_allclose
from tests.test_case import run_layer_test


def _x(*shape):
    return np.random.default_rng(0).normal(size=shape).astype("float32")


def test_layer_behaviors(tmp_path):
    run_layer_test(
        RotaryEmbedding,
        dict(max_wavelength=500),
        dict(inputs=_x(2, 6, 3, 8)),
        expected_output_shapes=[(2, 6, 3, 8)],
        expected_num_trainable_weights=0,
        tmp_path=tmp_path,
    )


@pytest.mark.parametrize("shape", [(2, 7, 8), (2, 7, 3, 8)])
def test_matches_float64_rotation(shape):
    x = _x(*shape)
    assert_allclose(RotaryEmbedding()(x), references.rotary(x), atol=1e-5)


def test_matches_keras_hub():
    x = _x(2, 9, 4, 16)
    assert_allclose(
        RotaryEmbedding()(x, start_index=3),
        keras_hub.layers.RotaryEmbedding()(x, start_index=3),
        atol=1e-5,
    )


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


def test_bad_arguments():
    with pytest.raises(ValueError, match="max_wavelength=-1"):
        RotaryEmbedding(max_wavelength=-1)
    with pytest.raises(ValueError, match="even"):
        RotaryEmbedding()(_x(1, 3, 5))
