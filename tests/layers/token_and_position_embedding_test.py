"""TokenAndPositionEmbedding against keras-hub's with the same weights."""

import warnings

import keras
import keras_hub
import numpy as np
import pytest

from keras_attn.layers import TokenAndPositionEmbedding
from keras_attn.layers import TransformerEncoder
from tests import references
from tests.test_case import assert_allclose
from tests.test_case import run_layer_test
from tests.test_case import to_numpy

IDS = np.array([[5, 7, 9, 0, 0], [1, 2, 3, 4, 5]], "int32")


@pytest.mark.parametrize("position", ["learned", "sinusoidal"])
def test_layer_behaviors(position, tmp_path):
    run_layer_test(
        TokenAndPositionEmbedding,
        dict(vocabulary_size=12, sequence_length=8, embedding_dim=6,
             mask_zero=True, position=position),
        dict(inputs=IDS),
        expected_output_shapes=[(2, 5, 6)],
        expected_num_trainable_weights=2 if position == "learned" else 1,
        tmp_path=tmp_path,
    )


@pytest.mark.parametrize("tie_weights", [True, False])
def test_same_weights_same_outputs_as_keras_hub(tie_weights):
    kwargs = dict(vocabulary_size=12, sequence_length=8, embedding_dim=6,
                  tie_weights=tie_weights)
    ours = TokenAndPositionEmbedding(**kwargs)
    theirs = keras_hub.layers.TokenAndPositionEmbedding(**kwargs)
    ours(IDS)
    theirs(IDS)
    assert [w.shape for w in ours.weights] == [w.shape for w in theirs.weights]
    ours.set_weights(theirs.get_weights())
    assert_allclose(ours(IDS), theirs(IDS), atol=0)
    assert_allclose(ours(IDS[:, :2], start_index=3),
                    theirs(IDS[:, :2], start_index=3), atol=0)
    positions = np.array([[0, 0, 1, 2, 7], [3, 2, 1, 0, 4]], "int32")
    assert_allclose(ours(IDS, positions=positions),
                    theirs(IDS, positions=positions), atol=0)
    theirs.set_weights([w * 2 for w in ours.get_weights()])  # both ways
    ours.set_weights(theirs.get_weights())
    assert_allclose(ours(IDS), theirs(IDS), atol=0)


@pytest.mark.parametrize("position", ["learned", "sinusoidal"])
def test_positions_replace_the_running_index(position):
    layer = TokenAndPositionEmbedding(12, 8, 6, position=position)
    positions = np.array([4, 4, 0, 1, 2], "int32")
    out = to_numpy(layer(IDS, start_index=2, positions=positions))
    tokens = to_numpy(layer.token_embedding.embeddings)[IDS]
    if position == "learned":
        table = to_numpy(layer.position_embedding.position_embeddings)
    else:
        table = references.sinusoidal(8, 6)
    assert_allclose(out - tokens, np.broadcast_to(table[positions],
                                                  out.shape), atol=1e-6)


def test_keras_hub_config_loads():
    theirs = keras_hub.layers.TokenAndPositionEmbedding(
        12, 8, 6, tie_weights=False, mask_zero=True)
    ours = TokenAndPositionEmbedding.from_config(theirs.get_config())
    assert (ours.tie_weights, ours.mask_zero, ours.position) == (
        False, True, "learned")


def test_reverse_gives_tied_logits_and_keeps_the_mask():
    layer = TokenAndPositionEmbedding(12, 8, 6, mask_zero=True)
    hidden = layer(IDS)
    logits = layer(hidden, reverse=True)
    table = to_numpy(layer.token_embedding.embeddings)
    assert_allclose(logits, to_numpy(hidden) @ table.T, atol=1e-5)
    np.testing.assert_array_equal(to_numpy(logits._keras_mask), IDS != 0)


def test_sinusoidal_positions_follow_the_formula():
    layer = TokenAndPositionEmbedding(12, 8, 6, position="sinusoidal")
    out = to_numpy(layer(IDS))
    tokens = to_numpy(layer.token_embedding.embeddings)[IDS]
    assert_allclose(out - tokens, np.broadcast_to(
        references.sinusoidal(5, 6), out.shape), atol=1e-6)


def test_keeps_padding_mask_without_warning():
    ids = keras.Input((5,), dtype="int32")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x = TokenAndPositionEmbedding(12, 8, 8, mask_zero=True)(ids)
        y = TransformerEncoder(16, 2)(x)
    model = keras.Model(ids, y)
    layer = model.layers[1]
    np.testing.assert_array_equal(to_numpy(layer.compute_mask(IDS)),
                                  IDS != 0)
    assert to_numpy(model(IDS)).shape == (2, 5, 8)


def test_bad_arguments():
    with pytest.raises(ValueError, match="vocabulary_size=0"):
        TokenAndPositionEmbedding(0, 8, 6)
    with pytest.raises(ValueError, match="position='rotary'"):
        TokenAndPositionEmbedding(12, 8, 6, position="rotary")
    with pytest.raises(TypeError, match="integer token ids"):
        TokenAndPositionEmbedding(12, 8, 6)(np.zeros((1, 3), "float32"))
