"""PositionEmbedding against keras-hub's with the same weights, and explicit
`positions` against NumPy indexing of the table."""

import keras_hub
import numpy as np
import pytest

from keras_attn.layers import PositionEmbedding
from tests.test_case import assert_allclose
from tests.test_case import run_layer_test
from tests.test_case import to_numpy

POSITIONS = np.array([[0, 0, 1, 2, 3, 9], [5, 4, 3, 2, 1, 0]], "int32")


@pytest.mark.parametrize("with_positions", [False, True])
def test_layer_behaviors(with_positions, tmp_path):
    inputs = dict(inputs=np.random.rand(2, 6, 8).astype("float32"))
    if with_positions:
        inputs["positions"] = POSITIONS
    run_layer_test(
        PositionEmbedding,
        dict(sequence_length=10),
        inputs,
        expected_output_shapes=[(2, 6, 8)],
        expected_num_trainable_weights=1,
        tmp_path=tmp_path,
    )


def _pair(sequence_length, x):
    ours = PositionEmbedding(sequence_length=sequence_length)
    theirs = keras_hub.layers.PositionEmbedding(
        sequence_length=sequence_length
    )
    ours(x)
    theirs(x)
    return ours, theirs


@pytest.mark.parametrize("start", [0, 3])
def test_same_weights_same_outputs_as_keras_hub(start):
    x = np.zeros((2, 5, 4), "float32")
    ours, theirs = _pair(8, x)
    ours.set_weights(theirs.get_weights())
    assert_allclose(
        ours(x, start_index=start), theirs(x, start_index=start), atol=0
    )
    table = to_numpy(ours.position_embeddings)
    assert_allclose(ours(x, start_index=start)[1], table[start:start + 5])


@pytest.mark.parametrize("positions", [POSITIONS[1], POSITIONS])
def test_positions_index_the_table_like_keras_hub(positions):
    x = np.zeros((2, 6, 4), "float32")
    ours, theirs = _pair(10, x)
    theirs.set_weights(ours.get_weights())  # the other direction
    out = to_numpy(ours(x, start_index=7, positions=positions))
    table = to_numpy(ours.position_embeddings)
    assert_allclose(out, np.broadcast_to(table[positions], out.shape),
                    atol=0)
    assert_allclose(out, theirs(x, positions=positions), atol=0)


def test_batched_positions_apply_per_example_for_4d_inputs():
    """Row b of `positions` applies to example b across the middle axis."""
    layer = PositionEmbedding(sequence_length=10)
    x = np.zeros((2, 3, 6, 4), "float32")  # (B, X, L, D)
    out = to_numpy(layer(x, positions=POSITIONS))
    table = to_numpy(layer.position_embeddings)
    for b in range(2):
        for i in range(3):
            assert_allclose(out[b, i], table[POSITIONS[b]], atol=0)


def test_one_variable_under_both_names_and_keras_hub_config_loads():
    theirs = keras_hub.layers.PositionEmbedding(sequence_length=7)
    layer = PositionEmbedding.from_config(theirs.get_config())
    layer(np.zeros((1, 3, 5), "float32"))
    assert layer.embeddings is layer.position_embeddings
    assert len(layer.weights) == 1
    assert layer.position_embeddings.path.endswith("/embeddings")


def test_bad_arguments():
    with pytest.raises(ValueError, match="sequence_length=0"):
        PositionEmbedding(sequence_length=0)
    layer = PositionEmbedding(sequence_length=4)
    with pytest.raises(ValueError, match="exceeds `sequence_length`=4"):
        layer(np.zeros((1, 6, 2), "float32"))
    x = np.zeros((2, 3, 2), "float32")
    with pytest.raises(ValueError, match="positions.shape=\\(2, 2\\)"):
        layer(x, positions=np.zeros((2, 2), "int32"))
    with pytest.raises(ValueError, match="positions.shape=\\(1, 2, 3\\)"):
        layer(x, positions=np.zeros((1, 2, 3), "int32"))
    with pytest.raises(TypeError, match="integer positions"):
        layer(x, positions=np.zeros((3,), "float32"))
