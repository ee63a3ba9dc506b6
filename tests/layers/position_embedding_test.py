"""PositionEmbedding against keras-hub's with the same weights."""

import keras_hub
import numpy as np
import pytest

from keras_attn.layers import PositionEmbedding
from tests.test_case import assert_allclose
from tests.test_case import run_layer_test
from tests.test_case import to_numpy


def test_layer_behaviors(tmp_path):
    run_layer_test(
        PositionEmbedding,
        dict(sequence_length=10),
        dict(inputs=np.random.rand(2, 6, 8).astype("float32")),
        expected_output_shapes=[(2, 6, 8)],
        expected_num_trainable_weights=1,
        tmp_path=tmp_path,
    )


@pytest.mark.parametrize("start", [0, 3])
def test_same_weights_same_outputs_as_keras_hub(start):
    x = np.zeros((2, 5, 4), "float32")
    ours = PositionEmbedding(sequence_length=8)
    theirs = keras_hub.layers.PositionEmbedding(sequence_length=8)
    ours(x)
    theirs(x)
    ours.set_weights(theirs.get_weights())
    assert_allclose(
        ours(x, start_index=start), theirs(x, start_index=start), atol=0
    )
    table = to_numpy(ours.embeddings)
    assert_allclose(ours(x, start_index=start)[1], table[start:start + 5])


def test_bad_arguments():
    with pytest.raises(ValueError, match="sequence_length=0"):
        PositionEmbedding(sequence_length=0)
    layer = PositionEmbedding(sequence_length=4)
    with pytest.raises(ValueError, match="exceeds `sequence_length`=4"):
        layer(np.zeros((1, 6, 2), "float32"))
