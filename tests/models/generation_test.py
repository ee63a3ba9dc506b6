"""Cached generation against greedy decoding without a cache, samplers,
tracing and input checks."""

import keras_hub
import numpy as np
import pytest

from keras_attn import models
from tests.test_case import to_numpy

TINY = dict(num_layers=2, hidden_dim=16, num_heads=4, intermediate_dim=32,
            dropout=0.0)
PROMPT = np.array([[3, 4, 5, 6], [7, 8, 0, 0], [9, 0, 0, 0]], "int32")


def _uncached_greedy_lm(model, prompt, steps, length):
    """Recompute the full window for every new token."""
    out = []
    for row in prompt:
        seq = [int(t) for t in row if t]
        for _ in range(steps):
            ids = np.zeros((1, length), "int32")
            ids[0, :len(seq)] = seq
            logits = to_numpy(model(ids))[0, len(seq) - 1]
            seq.append(int(np.argmax(logits[1:])) + 1)  # 0 is padding
        out.append(seq[-steps:])
    return np.array(out)


@pytest.mark.parametrize(
    "kwargs",
    [dict(), dict(position="rotary", num_key_value_heads=1),
     dict(position="sinusoidal", normalize_first=False, tie_weights=False),
     dict(sliding_window=3),
     dict(position="rotary", num_key_value_heads=2, sliding_window=2)],
)
def test_cached_greedy_equals_uncached_greedy_lm(kwargs):
    model = models.decoder_lm(40, 16, **TINY, **kwargs)
    got = models.generate(model, PROMPT, max_new_tokens=8)
    np.testing.assert_array_equal(
        got, _uncached_greedy_lm(model, PROMPT, 8, 16))


def test_cached_greedy_equals_uncached_greedy_seq2seq():
    model = models.seq2seq(30, 40, 6, 10, **TINY)
    source = np.array([[5, 6, 7, 8, 0, 0], [9, 10, 0, 0, 0, 0]], "int32")
    got = models.generate(model, [[1], [1]], 7, encoder_token_ids=source)
    for row in range(2):
        seq = [1]
        for _ in range(7):
            dec = np.zeros((1, 10), "int32")
            dec[0, :len(seq)] = seq
            logits = to_numpy(model({"encoder_token_ids": source[row:row + 1],
                                     "decoder_token_ids": dec}))
            seq.append(int(np.argmax(logits[0, len(seq) - 1, 1:])) + 1)
        np.testing.assert_array_equal(got[row], seq[1:])


def test_top_k_never_leaves_the_k_best():
    model = models.decoder_lm(40, 16, **TINY)
    prompt = np.array([[3, 4, 5]], "int32")
    got = models.generate(model, prompt, 6, sampler="top_k", top_k=3, seed=4)
    seq = [3, 4, 5]
    for token in got[0]:
        ids = np.zeros((1, 16), "int32")
        ids[0, :len(seq)] = seq
        logits = to_numpy(model(ids))[0, len(seq) - 1]
        assert token in np.argsort(logits[1:])[-3:] + 1
        seq.append(int(token))


@pytest.mark.parametrize("sampler", ["top_k", "top_p", "random"])
def test_temperature_zero_is_greedy(sampler):
    model = models.decoder_lm(40, 16, **TINY)
    greedy = models.generate(model, PROMPT, 5)
    cold = models.generate(model, PROMPT, 5, sampler=sampler, temperature=0)
    np.testing.assert_array_equal(cold, greedy)


def test_sampling_is_seeded_and_varies():
    model = models.decoder_lm(40, 16, **TINY)
    a = models.generate(model, PROMPT, 8, sampler="random", seed=3)
    b = models.generate(models.decoder_lm(40, 16, **TINY), PROMPT, 8,
                        sampler="random", seed=3)
    assert a.shape == b.shape == (3, 8)
    assert ((a > 0) & (a < 40)).all()
    c = models.generate(model, PROMPT, 8, sampler="random", seed=3)
    assert not np.array_equal(a, c)  # the seed advances between calls


def test_one_trace_for_repeated_same_shape_calls():
    model = models.decoder_lm(40, 16, **TINY)
    models.generate(model, PROMPT, 5)
    other = np.array([[1, 2, 0, 0], [3, 4, 5, 6], [7, 8, 9, 0]], "int32")
    models.generate(model, other, 5)
    models.generate(model, PROMPT, 5)
    assert models.trace_count(model) == 1
    models.generate(model, PROMPT[:2], 5)  # a new batch size traces again
    assert models.trace_count(model) == 2


def test_stop_token_pads_the_rest():
    model = models.decoder_lm(40, 16, **TINY)
    free = models.generate(model, PROMPT, 8)
    stop = int(free[0, 2])
    got = models.generate(model, PROMPT, 8, stop_token_id=stop)
    for row in range(3):
        hits = np.flatnonzero(free[row] == stop)
        if hits.size:
            end = hits[0] + 1
            np.testing.assert_array_equal(got[row, :end], free[row, :end])
            assert (got[row, end:] == 0).all()
        else:
            np.testing.assert_array_equal(got[row], free[row])


def test_accepts_a_keras_hub_sampler_and_ragged_lists():
    model = models.decoder_lm(40, 16, **TINY)
    got = models.generate(model, [[3, 4, 5, 6], [7, 8], [9]], 4,
                          sampler=keras_hub.samplers.GreedySampler())
    np.testing.assert_array_equal(got, models.generate(model, PROMPT, 4))


@pytest.mark.parametrize(
    "prompt, kwargs, error, match",
    [
        (np.array([[0, 3]]), {}, ValueError, "right-padded"),
        (np.array([[0, 0]]), {}, ValueError, "at least one token"),
        (np.array([[3, 99]]), {}, ValueError, "outside"),
        (np.array([[3.0]]), {}, TypeError, "integer"),
        (PROMPT, dict(max_new_tokens=0), ValueError, "max_new_tokens=0"),
        (PROMPT, dict(max_new_tokens=20), ValueError, "sequence_length=16"),
        (PROMPT, dict(sampler="beam"), ValueError, "sampler='beam'"),
        (PROMPT, dict(sampler="top_k", top_k=0), ValueError, "top_k=0"),
        (PROMPT, dict(temperature=-1), ValueError, "temperature=-1"),
        (PROMPT, dict(encoder_token_ids=PROMPT), ValueError, "only for"),
    ],
)
def test_bad_inputs(prompt, kwargs, error, match):
    model = models.decoder_lm(40, 16, **TINY)
    kwargs = {"max_new_tokens": 4, **kwargs}
    with pytest.raises(error, match=match):
        models.generate(model, prompt, **kwargs)


def test_needs_a_model_from_the_builders():
    import keras

    plain = keras.Sequential([keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="no TransformerDecoder layers"):
        models.generate(plain, PROMPT, 3)
    with pytest.raises(ValueError, match="encoder_token_ids"):
        models.generate(models.seq2seq(20, 20, 4, 6, **TINY), [[1]], 3)
