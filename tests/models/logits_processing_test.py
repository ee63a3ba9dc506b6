"""`generate(..., repetition_penalty=..., no_repeat_ngram_size=...)` against
a reference: greedy decoding by re-running the whole Keras model (no cache)
with the rules written out in plain Python, float64."""

import numpy as np
import pytest

from keras_attn import models
from keras_attn.models.generation import process_logits


def reference_processing(logits, sequence, penalty, n):
    """The rules as the docs state them, one token at a time."""
    logits = np.array(logits, np.float64)
    for token in set(sequence) - {0}:  # padding never counts
        if logits[token] > 0:
            logits[token] /= penalty
        else:
            logits[token] *= penalty
    if n and len(sequence) >= n - 1:
        tail = tuple(sequence[len(sequence) - n + 1:]) if n > 1 else ()
        banned = {sequence[i + n - 1] for i in range(len(sequence) - n + 1)
                  if tuple(sequence[i:i + n - 1]) == tail}
        banned.discard(0)
        if set(range(1, len(logits))) - banned:
            for token in banned:
                logits[token] = -np.inf
    return logits


def reference_greedy(model, prompts, new_tokens, penalty, n):
    outputs = []
    for prompt in prompts:
        sequence = list(prompt)
        for _ in range(new_tokens):
            ids = np.zeros((1, model.input_shape[1]), "int32")
            ids[0, :len(sequence)] = sequence
            logits = np.asarray(model(ids))[0, len(sequence) - 1]
            logits = logits.astype(np.float64)
            logits[0] = -np.inf  # padding is never generated
            logits = reference_processing(logits, sequence, penalty, n)
            sequence.append(int(np.argmax(logits)))
        outputs.append(sequence[len(prompt):])
    return np.array(outputs)


@pytest.fixture(scope="module")
def lm():
    # A small vocabulary and a short context make repeats likely, so the
    # rules change the greedy tokens.
    return models.decoder_lm(vocabulary_size=12, sequence_length=24,
                             num_layers=1, hidden_dim=16, num_heads=2,
                             position="rotary")


PROMPTS = [[3, 4, 3, 4, 3], [5, 6]]  # ragged: right-padded inside


@pytest.mark.parametrize("penalty, n", [(1.0, 0), (1.8, 0), (1.0, 2),
                                        (1.0, 1), (1.5, 3)])
def test_greedy_equals_reference_with_the_rules(lm, penalty, n):
    got = models.generate(lm, PROMPTS, max_new_tokens=8,
                          repetition_penalty=penalty,
                          no_repeat_ngram_size=n)
    want = reference_greedy(lm, PROMPTS, 8, penalty, n)
    np.testing.assert_array_equal(got, want)


def test_the_rules_change_greedy_output(lm):
    plain = models.generate(lm, PROMPTS, max_new_tokens=8)
    banned = models.generate(lm, PROMPTS, max_new_tokens=8,
                             no_repeat_ngram_size=2)
    assert not np.array_equal(plain, banned)
    for prompt, row in zip(PROMPTS, banned):
        sequence = prompt + row.tolist()
        pairs = list(zip(sequence, sequence[1:]))
        generated_pairs = pairs[len(prompt) - 1:]
        # Each generated bigram is new (10 candidates always remain).
        for k, pair in enumerate(generated_pairs):
            assert pair not in pairs[:len(prompt) - 1 + k], (sequence, pair)


def test_process_logits_matches_reference_on_a_batch():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 9)).astype("float32")
    tokens = np.array([[1, 2, 1, 2, 7, 7], [4, 4, 4, 0, 0, 0],
                       [8, 3, 8, 3, 8, 5]], "int32")
    for index in (1, 2, 3, 5):
        for penalty, n in [(2.0, 0), (1.0, 2), (1.3, 3), (1.0, 1)]:
            got = np.asarray(process_logits(logits, tokens, np.int32(index),
                                            penalty, n))
            for row in range(3):
                want = reference_processing(
                    logits[row], tokens[row, :index].tolist(), penalty, n)
                want = np.where(np.isinf(want), -1e9, want)
                np.testing.assert_allclose(got[row], want, rtol=1e-6,
                                           err_msg=(index, penalty, n, row))


@pytest.mark.parametrize("kwargs, message", [
    (dict(repetition_penalty=0), "repetition_penalty"),
    (dict(repetition_penalty="2"), "repetition_penalty"),
    (dict(no_repeat_ngram_size=-1), "no_repeat_ngram_size"),
    (dict(no_repeat_ngram_size=2.0), "no_repeat_ngram_size"),
])
def test_bad_settings_name_the_argument(lm, kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        models.generate(lm, [[3, 4]], max_new_tokens=2, **kwargs)
