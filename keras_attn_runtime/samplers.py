"""Picking the next token from logits: logit processing and samplers.

Pure NumPy, in float64, so that any runtime (this one, Keras's
`generate`, a port to Kotlin) can mirror it exactly. Id 0 (`[PAD]`) is
never picked.

A step takes the logits `(V,)` and the sequence so far (the prompt with
`[BOS]`, then the generated ids):
1. `process_logits`: the repetition penalty (CTRL, Keskar et al. 2019:
   each token already in the sequence has its logit divided by the
   penalty if positive, multiplied if negative), then the no-repeat
   n-gram ban (a token that would complete an n-gram already in the
   sequence gets `-inf`).
2. A sampler from `make_sampler`: `"greedy"` (argmax), `"random"` (draw
   from `softmax(logits / temperature)`), `"top_k"` (the same among the
   k best) or `"top_p"` (the same among the fewest best tokens whose
   probability reaches p).
"""

import math

import numpy as np

from keras_attn_runtime import checks

SAMPLERS = ("greedy", "random", "top_k", "top_p")

# Built-in generation defaults by model type, used where neither the
# caller nor the model's embedded generation config says otherwise.
# Language models sample (top-p at temperature 0.8, a mild repetition
# penalty): greedy decoding of a small LM repeats one phrase. Translators
# decode greedily: one source, one most likely translation.
GENERATION_DEFAULTS = {
    "decoder_lm": dict(sampler="top_p", temperature=0.8, top_k=40,
                       top_p=0.9, repetition_penalty=1.2,
                       no_repeat_ngram_size=0),
    "seq2seq": dict(sampler="greedy", temperature=1.0, top_k=40, top_p=0.9,
                    repetition_penalty=1.0, no_repeat_ngram_size=0),
}
GENERATION_KEYS = ("sampler", "temperature", "top_k", "top_p",
                   "repetition_penalty", "no_repeat_ngram_size",
                   "start_token", "stop_token")


def check_generation_config(config):
    """Returns a checked copy of a generation config dict.

    Keys (all optional): `sampler`, `temperature`, `top_k`, `top_p`,
    `repetition_penalty`, `no_repeat_ngram_size`, `start_token`,
    `stop_token` (token strings). Unknown keys are errors.

    Raises:
        TypeError: if `config` is not a dict.
        ValueError: for an unknown key or a bad value.
    """
    if not isinstance(config, dict):
        raise TypeError(
            "Received an invalid value for argument `generation_config`, "
            "expected a dict. Received: generation_config of type "
            f"{type(config).__name__}"
        )
    unknown = sorted(set(config) - set(GENERATION_KEYS))
    if unknown:
        raise ValueError(
            "Received an invalid value for argument `generation_config`, "
            f"expected keys among {list(GENERATION_KEYS)}. Received "
            f"unknown keys: {unknown}"
        )
    config = dict(config)
    if "sampler" in config:
        checks.one_of(config["sampler"], "sampler", SAMPLERS)
    if "temperature" in config:
        config["temperature"] = check_temperature(config["temperature"])
    if "top_k" in config:
        config["top_k"] = checks.positive_int(config["top_k"], "top_k")
    if "top_p" in config:
        config["top_p"] = check_top_p(config["top_p"])
    if "repetition_penalty" in config:
        config["repetition_penalty"] = check_repetition_penalty(
            config["repetition_penalty"])
    if "no_repeat_ngram_size" in config:
        config["no_repeat_ngram_size"] = checks.non_negative_int(
            config["no_repeat_ngram_size"], "no_repeat_ngram_size")
    for key in ("start_token", "stop_token"):
        if key in config and not (isinstance(config[key], str)
                                  and config[key]):
            raise checks.invalid(key, "a token (a non-empty str)",
                                 config[key])
    return config


def check_temperature(value):
    return checks.number_in(value, "temperature", 0, math.inf,
                            high_open=True)


def check_top_p(value):
    return checks.number_in(value, "top_p", 0, 1, low_open=True)


def check_repetition_penalty(value):
    return checks.number_in(value, "repetition_penalty", 0, math.inf,
                            low_open=True, high_open=True)


def process_logits(logits, sequence, repetition_penalty=1.0,
                   no_repeat_ngram_size=0):
    """The logits after the repetition penalty and the n-gram ban.

    Args:
        logits: float array `(V,)`.
        sequence: 1-D sequence of int, the ids so far (prompt included).
        repetition_penalty: float > 0. 1 changes nothing; above 1 makes
            tokens already in `sequence` less likely. Defaults to `1.0`.
        no_repeat_ngram_size: int >= 0. With n > 0, a token that would
            repeat an n-gram of `sequence` is banned (`-inf`). If that bans
            every token, the ban is lifted for this step. 0 turns it off.
            Defaults to `0`.

    Returns:
        float64 array `(V,)` (a new array).

    Example:

    ```python
    import numpy as np
    from keras_attn_runtime.samplers import process_logits
    logits = np.array([0.0, 2.0, -1.0, 0.5])
    process_logits(logits, [1, 2], repetition_penalty=2.0)
    # array([ 0. ,  1. , -2. ,  0.5])
    process_logits(logits, [1, 3, 1], no_repeat_ngram_size=2)
    # array([ 0. ,  2. , -1. , -inf]): "1 3" was seen, so 3 may not follow 1
    ```
    """
    logits = np.array(logits, np.float64)  # a copy
    sequence = [int(i) for i in sequence]
    if repetition_penalty != 1.0 and sequence:
        seen = np.unique(sequence)
        values = logits[seen]
        logits[seen] = np.where(values > 0, values / repetition_penalty,
                                values * repetition_penalty)
    n = no_repeat_ngram_size
    if n and len(sequence) >= n - 1:
        banned = _ngram_completions(sequence, n)
        if banned:
            candidates = np.ones(len(logits), bool)
            candidates[0] = False  # padding never counts
            candidates[list(banned)] = False
            if candidates.any():
                logits[list(banned)] = -np.inf
    return logits


def _ngram_completions(sequence, n):
    """Tokens that would complete an n-gram already in `sequence`."""
    if n == 1:
        return set(sequence)
    prefix = tuple(sequence[len(sequence) - n + 1:])
    return {
        sequence[i + n - 1]
        for i in range(len(sequence) - n + 1)
        if tuple(sequence[i:i + n - 1]) == prefix
    }


def make_sampler(sampler="greedy", temperature=1.0, top_k=10, top_p=0.9,
                 seed=None):
    """A function from logits `(V,)` to the next token id, never 0.

    Sampling runs in float64: `softmax(logits / temperature)` over the
    kept tokens (id 0, padding, is never kept; `-inf` logits never win).

    Args:
        sampler: `"greedy"` (the most likely token), `"random"` (sample
            among all tokens), `"top_k"` (sample among the `top_k` most
            likely) or `"top_p"` (sample among the fewest most likely
            tokens whose probability reaches `top_p`).
        temperature: float >= 0. 0 is greedy whatever `sampler` says.
        top_k: int. Tokens kept by `"top_k"`.
        top_p: float in (0, 1]. Probability mass kept by `"top_p"`.
        seed: int, `numpy.random.Generator` or `None`. An int seed makes
            the draws of a new sampler reproducible.

    Returns:
        A function `pick(logits) -> int`.

    Example:

    ```python
    import numpy as np
    from keras_attn_runtime import make_sampler
    pick = make_sampler("top_k", temperature=0.8, top_k=5, seed=0)
    next_id = pick(np.array([0.0, 1.0, 3.0, 2.0]))   # 1, 2 or 3, never 0
    ```
    """
    checks.one_of(sampler, "sampler", SAMPLERS)
    temperature = check_temperature(temperature)
    if sampler == "top_k":
        top_k = checks.positive_int(top_k, "top_k")
    if sampler == "top_p":
        top_p = check_top_p(top_p)
    rng = make_rng(seed)

    def greedy(logits):
        return int(np.argmax(logits[1:])) + 1  # id 0 is padding

    if sampler == "greedy" or temperature == 0:
        return greedy

    def sample(logits):
        logits = np.asarray(logits[1:], np.float64) / temperature
        order = np.argsort(-logits, kind="stable")  # best first
        finite = np.isfinite(logits[order])
        if not finite.all() and finite.any():
            order = order[finite]  # banned tokens (-inf) are never drawn
        if sampler == "top_k":
            order = order[:top_k]
        probabilities = softmax(logits[order])
        if sampler == "top_p":
            # The fewest best tokens whose mass reaches top_p.
            kept = np.searchsorted(np.cumsum(probabilities), top_p) + 1
            kept = min(int(kept), len(order))
            order, probabilities = order[:kept], probabilities[:kept]
        cumulative = np.cumsum(probabilities)
        choice = np.searchsorted(cumulative, rng.random() * cumulative[-1],
                                 side="right")
        return int(order[min(int(choice), len(order) - 1)]) + 1

    return sample


def make_rng(seed):
    """A `numpy.random.Generator` from a seed (int >= 0, a Generator or
    `None`), with Keras-style errors."""
    if seed is None or isinstance(seed, np.random.Generator):
        return np.random.default_rng(seed)
    if not checks.is_int(seed):
        raise TypeError(
            "Expected `seed` to be an integer, a numpy.random.Generator "
            f"or None. Received: seed={seed!r}"
        )
    if seed < 0:
        raise checks.invalid("seed", "an integer >= 0", seed)
    return np.random.default_rng(int(seed))


def softmax(logits):
    """Softmax over the last axis, in float64."""
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)

