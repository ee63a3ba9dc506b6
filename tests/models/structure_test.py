"""Finding a generating model's parts by structure: the builders' models
whatever their layer names, and clear errors for models laid out
otherwise."""

import itertools

import keras
import numpy as np
import pytest

from keras_attn import layers
from keras_attn import models
from keras_attn.models.structure import UnsupportedDecoderError
from keras_attn.models.structure import decoder_structure
from tests.test_case import recompute_greedy

TINY = dict(num_layers=2, hidden_dim=16, num_heads=4, intermediate_dim=32,
            dropout=0.0)


def _renamed(model):
    """A copy of `model` (same weights) whose layers have other names."""
    count = itertools.count()

    def rename(layer):
        config = dict(layer.get_config(), name=f"part_{next(count)}")
        return layer.__class__.from_config(config)

    clone = keras.models.clone_model(model, clone_function=rename)
    clone.set_weights(model.get_weights())
    return clone


def test_builders_parts_are_found_in_order():
    model = models.seq2seq(30, 40, 6, 10, normalize_first=True, **TINY)
    found = decoder_structure(model)
    by_name = model.get_layer
    assert found.embedding is by_name("decoder_embedding")
    assert found.layers == [by_name("decoder_layer_0"),
                            by_name("decoder_layer_1")]
    assert found.final_norm is by_name("decoder_final_layer_norm")
    assert found.token_input is model.input["decoder_token_ids"]
    assert found.encoder_embedding is by_name("encoder_embedding")
    assert found.encoder_layers == [by_name("encoder_layer_0"),
                                    by_name("encoder_layer_1")]
    assert found.encoder_final_norm is by_name("encoder_final_layer_norm")
    assert found.encoder_token_input is model.input["encoder_token_ids"]
    lm = decoder_structure(models.decoder_lm(40, 16, normalize_first=False,
                                             **TINY))
    assert lm.final_norm is None and lm.encoder_embedding is None
    assert lm.encoder_layers == []


@pytest.mark.parametrize("position", ["learned", "rotary"])
def test_decoder_lm_with_renamed_layers_generates(position):
    model = _renamed(models.decoder_lm(40, 16, position=position, **TINY))
    assert not any(layer.name.startswith("decoder") for layer in model.layers)
    got = models.generate(model, [[3, 4, 5]], max_new_tokens=6)
    assert got[0].tolist() == recompute_greedy(model, [3, 4, 5], 6)


def test_seq2seq_with_renamed_layers_generates():
    model = _renamed(models.seq2seq(30, 40, 6, 10, **TINY))
    source = [5, 6, 7, 0, 0, 0]
    got = models.generate(model, [[1]], 5,
                          encoder_token_ids=np.array([source]))
    assert got[0].tolist() == recompute_greedy(model, [1], 5, source)


def _lm_of_its_own(head=None, **decoder_kwargs):
    """Embedding -> TransformerDecoder -> logits, built by hand."""
    ids = keras.Input((8,), dtype="int32", name="ids")
    embedding = keras.layers.ReversibleEmbedding(20, 8, name="tokens")
    x = layers.TransformerDecoder(16, 2, name="block")(
        embedding(ids), **decoder_kwargs)
    logits = embedding(x, reverse=True) if head is None else head(x)
    return keras.Model(ids, logits)


def test_a_model_laid_out_like_decoder_lm_generates():
    model = _lm_of_its_own()
    got = models.generate(model, [[3, 4]], max_new_tokens=4)
    assert got[0].tolist() == recompute_greedy(model, [3, 4], 4)


@pytest.mark.parametrize(
    "model, match",
    [
        (lambda: models.encoder_classifier(30, 8, **TINY),
         "has no TransformerDecoder layers"),
        (lambda: _lm_of_its_own(keras.layers.Dense(20, name="head")),
         "after the last TransformerDecoder comes Dense 'head'"),
        (lambda: _lm_of_its_own(use_causal_mask=False),
         r"TransformerDecoder 'block' is called with \['use_causal_mask'\]"),
        (lambda: keras.Sequential([
            keras.Input((8,), dtype="int32"),
            keras.layers.ReversibleEmbedding(20, 8),
            layers.TransformerDecoder(16, 2)]),
         "needs a functional keras.Model"),
    ],
)
def test_models_laid_out_otherwise_get_a_clear_error(model, match):
    with pytest.raises(UnsupportedDecoderError, match=match):
        models.CachedDecoder(model())


def test_own_embedding_without_offset_is_refused():
    ids = keras.Input((8,), dtype="int32")
    x = keras.layers.Embedding(20, 8, name="tokens")(ids)
    x = layers.TransformerDecoder(16, 2)(x)
    model = keras.Model(ids, keras.layers.Dense(20)(x))
    with pytest.raises(ValueError, match="read by Embedding 'tokens'"):
        models.generate(model, [[3]], 2)
