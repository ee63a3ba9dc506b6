"""The three builders: build, fit one step under XLA, save/load equal, and
the masking behaviour each use of attention needs."""

import os

import keras
import numpy as np
import pytest

from keras_attn import models
from tests.test_case import assert_allclose
from tests.test_case import to_numpy

TINY = dict(num_layers=1, hidden_dim=16, num_heads=4, intermediate_dim=32)


def _ids(rng, batch, length, vocab, min_len=2):
    ids = np.zeros((batch, length), "int32")
    for row in ids:
        n = rng.integers(min_len, length + 1)
        row[:n] = rng.integers(1, vocab, size=n)
    return ids


def _build(kind, **kwargs):
    rng = np.random.default_rng(0)
    if kind == "classifier":
        model = models.encoder_classifier(30, 8, num_classes=3, **TINY,
                                          **kwargs)
        x = _ids(rng, 8, 8, 30)
        y = rng.integers(0, 3, size=8)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    elif kind == "lm":
        model = models.decoder_lm(30, 8, **TINY, **kwargs)
        x = _ids(rng, 8, 8, 30)
        y = np.roll(x, -1, axis=1)
        loss = keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, ignore_class=0)
    else:
        model = models.seq2seq(30, 25, 7, 6, **TINY, **kwargs)
        x = {"encoder_token_ids": _ids(rng, 8, 7, 30),
             "decoder_token_ids": _ids(rng, 8, 6, 25)}
        y = np.roll(x["decoder_token_ids"], -1, axis=1)
        loss = keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, ignore_class=0)
    return model, x, y, loss


@pytest.mark.parametrize("kind", ["classifier", "lm", "seq2seq"])
@pytest.mark.parametrize(
    "kwargs",
    [dict(), dict(position="rotary", num_key_value_heads=2,
                  normalize_first=True, tie_weights=False)],
)
def test_builds_fits_under_xla_and_reloads(kind, kwargs, tmp_path):
    if kind == "classifier":
        kwargs = {k: v for k, v in kwargs.items() if k != "tie_weights"}
    model, x, y, loss = _build(kind, **kwargs)
    model.compile(optimizer="adam", loss=loss, jit_compile=True)
    before = [to_numpy(w).copy() for w in model.trainable_weights]
    history = model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert any(not np.allclose(b, to_numpy(a))
               for b, a in zip(before, model.trainable_weights))
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert_allclose(loaded(x), model(x), atol=0, rtol=0)
    assert to_numpy(model(x)).dtype == np.float32


def test_classifier_ignores_padded_tokens():
    model, x, _, _ = _build("classifier")
    other = x.copy()
    # Change only what sits after the padding starts (ids stay 0 = padding
    # everywhere else): the logits must not change.
    lengths = (x != 0).sum(1)
    for row, n in enumerate(lengths):
        other[row, n:] = 0
    assert_allclose(model(x), model(other), atol=0)
    longer = x.copy()
    longer[:, -1] = np.where(x[:, -1] == 0, 5, x[:, -1])
    changed = ~np.isclose(to_numpy(model(x)), to_numpy(model(longer))).all(1)
    assert changed[lengths < 8].all()


@pytest.mark.parametrize("position", ["learned", "sinusoidal", "rotary"])
def test_lm_is_causal(position):
    model = models.decoder_lm(30, 8, position=position, **TINY)
    x = np.arange(1, 9, dtype="int32")[None]
    y = x.copy()
    y[0, 5:] = [9, 9, 9]
    a, b = to_numpy(model(x)), to_numpy(model(y))
    assert_allclose(a[:, :5], b[:, :5], atol=1e-5)
    assert not np.allclose(a[:, 5:], b[:, 5:])


def test_lm_tied_weights_share_the_embedding():
    tied = models.decoder_lm(30, 8, **TINY)
    untied = models.decoder_lm(30, 8, tie_weights=False, **TINY)
    assert len(untied.trainable_weights) == len(tied.trainable_weights) + 1
    reverse = untied.get_layer("decoder_embedding").token_embedding
    assert tuple(reverse.reverse_embeddings.shape) == (16, 30)


def test_seq2seq_ignores_padded_source_tokens():
    model, x, _, _ = _build("seq2seq")
    src = x["encoder_token_ids"].copy()
    src[0, -2:] = 0
    out = to_numpy(model({**x, "encoder_token_ids": src}))
    src2 = src.copy()
    src2[0, -1] = 0  # still padding: same output
    out2 = to_numpy(model({**x, "encoder_token_ids": src2}))
    assert_allclose(out[0], out2[0], atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(vocabulary_size=0, sequence_length=8), "vocabulary_size=0"),
        (dict(vocabulary_size=10, sequence_length=8, hidden_dim=10,
              num_heads=4), "divisible"),
        (dict(vocabulary_size=10, sequence_length=8, position="alibi"),
         "position='alibi'"),
        (dict(vocabulary_size=10, sequence_length=8, num_classes=0),
         "num_classes=0"),
        (dict(vocabulary_size=10, sequence_length=8, dropout=2.0),
         "dropout=2.0"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        models.encoder_classifier(**kwargs)
