"""Next-token choice: the samplers draw from the distributions they
promise, and the logit processing follows its definition (checked
against loops written here from the definitions)."""

import numpy as np
import pytest

from keras_attn_runtime import samplers
from keras_attn_runtime.samplers import make_sampler
from keras_attn_runtime.samplers import process_logits
from tests.references import softmax
from tests.runtime.helpers import banned
from tests.runtime.helpers import penalized


def test_sampler_keeps_the_k_best_and_the_top_p_mass():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=50).astype("float32")
    logits[0] = 100.0  # padding is never picked, however likely
    ranked = np.argsort(-logits[1:]) + 1
    probabilities = softmax(logits[1:].astype("float64") / 0.7)
    pick = make_sampler("top_k", temperature=0.7, top_k=5, seed=1)
    draws = np.array([pick(logits) for _ in range(4000)])
    assert set(draws) <= set(ranked[:5])
    kept = probabilities[ranked[:5] - 1] / probabilities[ranked[:5] - 1].sum()
    frequencies = np.array([(draws == i).mean() for i in ranked[:5]])
    np.testing.assert_allclose(frequencies, kept, atol=0.03)

    pick = make_sampler("top_p", temperature=0.7, top_p=0.6, seed=1)
    draws = {pick(logits) for _ in range(4000)}
    cumulative = np.cumsum(probabilities[ranked - 1])
    nucleus = ranked[:np.searchsorted(cumulative, 0.6) + 1]
    assert cumulative[len(nucleus) - 1] >= 0.6
    assert draws == set(nucleus)  # every kept token shows up

    for pick in (make_sampler("greedy"),
                 make_sampler("top_p", temperature=0)):
        assert {pick(logits) for _ in range(20)} == {ranked[0]}


def test_random_sampler_draws_from_the_whole_softmax():
    logits = np.array([50.0, 1.0, 0.0, -1.0, 2.0])
    expected = softmax(logits[1:] / 1.5)
    pick = make_sampler("random", temperature=1.5, seed=3)
    draws = np.array([pick(logits) for _ in range(20000)])
    frequencies = np.array([(draws == i).mean() for i in range(1, 5)])
    np.testing.assert_allclose(frequencies, expected, atol=0.015)
    assert 0 not in draws


def test_banned_tokens_are_never_drawn():
    logits = np.array([0.0, 3.0, 2.0, 1.0, -np.inf, -np.inf])
    for name in samplers.SAMPLERS:
        pick = make_sampler(name, top_k=10, top_p=1.0, seed=0)
        assert {pick(logits) for _ in range(300)} <= {1, 2, 3}


@pytest.mark.parametrize("seed", range(5))
def test_process_logits_follows_the_definitions(seed):
    rng = np.random.default_rng(seed)
    size = 12
    logits = rng.normal(size=size) * 3
    sequence = rng.integers(1, size, size=rng.integers(1, 30)).tolist()
    for penalty in (1.0, 1.3, 0.7):
        for n in (0, 1, 2, 3):
            got = process_logits(logits, sequence, penalty, n)
            expected = np.array(penalized(logits, sequence, penalty))
            ban = banned(sequence, n)
            if ban and not set(range(1, size)) <= ban:
                expected[list(ban)] = -np.inf
            np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert process_logits(logits, sequence).tolist() == logits.tolist()


def test_process_logits_examples():
    logits = np.array([0.0, 2.0, -1.0, 0.5])
    assert process_logits(logits, [1, 2], 2.0).tolist() == [0, 1, -2, 0.5]
    assert process_logits(logits, [1, 3, 1], no_repeat_ngram_size=2
                          ).tolist() == [0, 2, -1, -np.inf]
    # A ban of every token is lifted: something must come next.
    assert process_logits(logits, [1, 2, 3], no_repeat_ngram_size=1
                          ).tolist() == logits.tolist()
    # The input is not modified.
    assert logits.tolist() == [0.0, 2.0, -1.0, 0.5]


def test_generation_config_checks():
    config = {"sampler": "top_p", "temperature": 0.8, "top_k": 5,
              "top_p": 0.9, "repetition_penalty": 1.2,
              "no_repeat_ngram_size": 3, "start_token": "[BOS]",
              "stop_token": "[EOS]"}
    assert samplers.check_generation_config(config) == config
    cases = [
        ({"sampler": "beam"}, "sampler='beam'"),
        ({"temperature": -1}, "temperature=-1"),
        ({"top_k": 0}, "top_k=0"),
        ({"top_k": 3.0}, "top_k=3.0"),
        ({"top_p": 0}, "top_p=0"),
        ({"repetition_penalty": 0}, "repetition_penalty=0"),
        ({"no_repeat_ngram_size": -1}, "no_repeat_ngram_size=-1"),
        ({"stop_token": ""}, "stop_token=''"),
        ({"beam_width": 4}, "unknown keys: \\['beam_width'\\]"),
    ]
    for config, message in cases:
        with pytest.raises(ValueError, match=message):
            samplers.check_generation_config(config)
    with pytest.raises(TypeError, match="generation_config"):
        samplers.check_generation_config([("sampler", "greedy")])


def test_make_sampler_bad_arguments():
    with pytest.raises(ValueError, match="sampler='beam'"):
        make_sampler("beam")
    with pytest.raises(ValueError, match="temperature=inf"):
        make_sampler("top_k", temperature=float("inf"))
    with pytest.raises(ValueError, match="top_k=2.0"):
        make_sampler("top_k", top_k=2.0)
    with pytest.raises(ValueError, match="top_p=1.5"):
        make_sampler("top_p", top_p=1.5)
    with pytest.raises(TypeError, match="seed='x'"):
        make_sampler("top_p", seed="x")
    with pytest.raises(ValueError, match="seed=-1"):
        make_sampler("top_p", seed=-1)
