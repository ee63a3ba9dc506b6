"""`Generator` runs export_generator_tflite files with LiteRT and NumPy and
gives the tokens of the Keras model: greedy, sampled, with the logit
processing, for a language model and a translator, both cache forms."""

import numpy as np
import pytest

from keras_attn import models
from keras_attn.export import export_generator_tflite
from keras_attn_runtime import Generator
from keras_attn_runtime import make_sampler
from keras_attn_runtime.samplers import GENERATION_DEFAULTS
from tests.runtime.helpers import MAX_LENGTH
from tests.runtime.helpers import SOURCE_LENGTH
from tests.runtime.helpers import TRANSLATOR_LENGTH
from tests.runtime.helpers import banned
from tests.runtime.helpers import keras_hub_ids
from tests.runtime.helpers import needs_tensorflow
from tests.runtime.helpers import penalized
from tests.test_case import to_numpy

pytestmark = needs_tensorflow

PROMPT = "Self-driving cars!"
NEW_TOKENS = 32


@pytest.fixture(scope="module")
def generator(exported):
    return Generator(exported["lm_path"], exported["vocabulary"])


def prompt_ids(vocabulary):
    return [vocabulary.index("[BOS]")] + keras_hub_ids(vocabulary,
                                                        [PROMPT])[0]


def test_greedy_tokens_equal_keras(generator, exported, vocabulary):
    keras_tokens = models.generate(exported["lm"], [prompt_ids(vocabulary)],
                                   NEW_TOKENS)
    assert generator.generate(PROMPT, NEW_TOKENS) == keras_tokens[0].tolist()
    assert generator.prompt_ids(PROMPT) == prompt_ids(vocabulary)
    timings = generator.last_timings
    assert timings["encode"] is None and timings["prefill"] > 0
    assert len(timings["decode"]) == NEW_TOKENS - 1
    assert generator.last_prompt_length == len(prompt_ids(vocabulary))


def processed_greedy(model, prompt, new_tokens, penalty, ngram):
    """Greedy decoding over the whole window with the Keras model, the
    logits processed as defined (reference loop, no cache)."""
    buffer = np.zeros((1, MAX_LENGTH), "int32")
    buffer[0, :len(prompt)] = prompt
    sequence = list(prompt)
    for index in range(len(prompt), len(prompt) + new_tokens):
        logits = to_numpy(model(buffer, training=False))[0, index - 1]
        logits = np.array(penalized(logits.astype("float64"), sequence,
                                    penalty))
        ban = banned(sequence, ngram)
        if ban and not set(range(1, len(logits))) <= ban:
            logits[list(ban)] = -np.inf
        sequence.append(int(np.argmax(logits[1:])) + 1)
        buffer[0, index] = sequence[-1]
    return sequence[len(prompt):]


def repeated_ngrams(sequence, n):
    grams = [tuple(sequence[i:i + n]) for i in range(len(sequence) - n + 1)]
    return len(grams) - len(set(grams))


@pytest.mark.parametrize("penalty, ngram", [(1.5, 0), (1.0, 1), (1.3, 2)])
def test_logit_processing_in_the_loop_equals_the_reference(
    generator, exported, vocabulary, penalty, ngram
):
    prompt = prompt_ids(vocabulary)
    new = MAX_LENGTH - len(prompt)
    expected = processed_greedy(exported["lm"], prompt, new, penalty, ngram)
    got = generator.generate(PROMPT, new, repetition_penalty=penalty,
                             no_repeat_ngram_size=ngram)
    assert got == expected
    # Not vacuous: plain greedy decoding of the random model repeats.
    plain = generator.generate(PROMPT, new)
    assert repeated_ngrams(prompt + plain, max(ngram, 1)) > 0
    assert got != plain
    if ngram:
        assert repeated_ngrams(prompt + got, ngram) == 0


def test_generate_samples_among_the_k_best_logits(generator):
    seen = []
    pick = make_sampler("top_k", top_k=3, seed=7)

    def recording(logits):
        token = pick(logits)
        seen.append((logits, token))
        return token

    tokens = generator.generate(PROMPT, 20, sampler=recording)
    assert [token for _, token in seen] == tokens
    for logits, token in seen:
        assert token in np.argsort(-logits[1:])[:3] + 1
    # The built-in sampler draws the same tokens from the same seed.
    assert generator.generate(PROMPT, 20, sampler="top_k", top_k=3,
                              seed=7) == tokens


def test_generate_seeds_reproduce_and_greedy_is_deterministic(generator):
    greedy = generator.generate(PROMPT, 20)
    assert generator.generate(PROMPT, 20) == greedy
    assert generator.generate(PROMPT, 20, sampler="top_p",
                              temperature=0) == greedy
    assert generator.generate(PROMPT, 20, sampler="top_k", top_k=1,
                              temperature=5.0, seed=None) == greedy
    runs = [generator.generate(PROMPT, 20, sampler=sampler, top_p=0.95,
                               temperature=2.0, seed=seed)
            for sampler in ("top_p", "random") for seed in (3, 3, 4)]
    for run in (runs[:3], runs[3:]):
        assert run[0] == run[1] != run[2]
    assert all(0 not in run for run in runs)


def test_generate_stops_after_the_stop_token(generator, exported):
    greedy = generator.generate([5, 6, 7], 20)
    stop = greedy[3]
    tokens = generator.generate([5, 6, 7], 20, stop_token_id=stop)
    assert tokens == greedy[:greedy.index(stop) + 1]
    expected = models.generate(exported["lm"], [[5, 6, 7]], 20,
                               stop_token_id=stop)[0].tolist()
    assert expected == tokens + [0] * (20 - len(tokens))


def test_translator_with_its_own_source_vocabulary(exported, vocabulary):
    source_words = exported["source_words"]
    generator = Generator(exported["translator_path"],
                          exported["vocabulary"],
                          source_vocabulary_path=exported["source_vocabulary"])
    assert generator.is_seq2seq and generator.source_length == SOURCE_LENGTH
    assert generator.source_tokenizer.vocabulary == source_words
    source = "I can't see how automous cars won't cause a million wrecks"
    source_ids = keras_hub_ids(source_words, [source],
                               sequence_length=SOURCE_LENGTH)
    bos = vocabulary.index("[BOS]")
    new = TRANSLATOR_LENGTH - 1
    expected = models.generate(exported["translator"], [[bos]], new,
                               encoder_token_ids=np.array(source_ids))
    assert generator.generate(None, new, encoder_text=source) == (
        expected[0].tolist())
    assert generator.generate([bos], new, encoder_ids=source_ids[0]) == (
        expected[0].tolist())
    short = keras_hub_ids(source_words, ["Google cars"])[0]
    assert generator.generate(None, new, encoder_ids=short) == (
        generator.generate(None, new, encoder_text="Google cars"))
    with pytest.raises(ValueError, match="exactly one of `encoder_text`"):
        generator.generate(None, 5)
    with pytest.raises(ValueError, match="no token \\(all padding\\)"):
        generator.generate(None, 5, encoder_text="  ")
    with pytest.raises(ValueError, match=f"1 to {SOURCE_LENGTH} ids"):
        generator.generate(None, 5, encoder_ids=list(range(1, 14)))
    # The target vocabulary is not the source one: the sizes tell.
    with pytest.raises(ValueError, match=(
        f"vocabulary file .*vocabulary.txt' has {len(vocabulary)} tokens "
        f"but the encoder .* embeds {len(source_words)}")):
        Generator(exported["translator_path"], exported["vocabulary"])


def test_described_files_need_only_their_path(exported, vocabulary):
    lm = Generator(exported["lm_meta"], quiet=True)
    assert lm.tokenizer.vocabulary == vocabulary
    assert lm.generation_defaults == GENERATION_DEFAULTS["decoder_lm"]
    assert (lm.start_token_id, lm.stop_token_id) == (2, 3)
    plain = Generator(exported["lm_path"], exported["vocabulary"])
    assert lm.generate(PROMPT, 10) == plain.generate(PROMPT, 10)
    translator = Generator(exported["translator_meta"])
    assert translator.source_tokenizer.vocabulary == exported["source_words"]
    assert translator.generation_defaults["sampler"] == "greedy"
    # A path given overrides the embedded vocabulary, and is checked.
    with pytest.raises(ValueError, match=f"has {len(exported['source_words'])}"
                                         " tokens but the model"):
        Generator(exported["lm_meta"], exported["source_vocabulary"])
    with pytest.raises(ValueError, match="carries no vocabulary.*"
                                         "--vocabulary"):
        Generator(exported["lm_path"])


def test_both_cache_forms_give_the_same_tokens(exported, tmp_path):
    """`kv_cache="tensors"` files pass the cache through the signatures;
    the runtime gives the same tokens with them, for an LM and a seq2seq,
    and several sources in a row."""
    lm_path = export_generator_tflite(exported["lm"], tmp_path / "t.tflite",
                                      MAX_LENGTH, kv_cache="tensors")
    stateful = Generator(exported["lm_path"], exported["vocabulary"])
    stateless = Generator(lm_path, exported["vocabulary"])
    assert stateful.cache_in_signatures is False
    assert stateless.cache_in_signatures is True
    assert stateless.generate(PROMPT, 16) == stateful.generate(PROMPT, 16)

    size = stateful.vocabulary_size
    translator = models.seq2seq(size, size, 12, 16, num_layers=1,
                                hidden_dim=16, num_heads=2, dropout=0.0)
    generators = [
        Generator(
            export_generator_tflite(translator, tmp_path / f"{form}.tflite",
                                    16, kv_cache=form),
            exported["vocabulary"])
        for form in ("variables", "tensors")
    ]
    for source in ([7, 8, 9, 10], [11, 12]):
        padded = np.zeros((1, 12), "int32")
        padded[0, :len(source)] = source
        expected = models.generate(translator, [[1]], 15,
                                   encoder_token_ids=padded)[0].tolist()
        for generator in generators:
            assert generator.generate([1], 15, encoder_ids=source) == expected


def test_bad_inputs_raise_clear_errors(exported, generator, tmp_path):
    lm_path = exported["lm_path"]
    vocabulary = exported["vocabulary"]
    size = generator.vocabulary_size
    with pytest.raises(FileNotFoundError, match="vocabulary_path='nowhere"):
        Generator(lm_path, "nowhere.txt")
    with pytest.raises(ValueError, match="no signature 'prefill'"):
        Generator(exported["classifier_path"], vocabulary)
    short = tmp_path / "short.txt"
    short.write_text("[PAD]\n[UNK]\n[BOS]\n[EOS]\nthe\n")
    with pytest.raises(ValueError, match="has 5 tokens but the model"):
        Generator(lm_path, short)
    with pytest.raises(ValueError, match="at least one token"):
        generator.generate([], 5)
    with pytest.raises(ValueError, match="at least one token"):
        generator.generate([0, 0], 5)
    with pytest.raises(ValueError, match="padding \\(id 0\\) between"):
        generator.generate([4, 0, 5], 5)
    with pytest.raises(ValueError, match=f"prompt=\\[4, {size}\\]"):
        generator.generate([4, size], 5)
    with pytest.raises(ValueError, match="prompt=\\[-1\\]"):
        generator.generate([-1], 5)
    with pytest.raises(TypeError, match="prompt=\\[1.5\\]"):
        generator.generate([1.5], 5)
    with pytest.raises(ValueError, match=f"max_length={MAX_LENGTH}, so at "
                                         "most 30 new tokens fit"):
        generator.generate(list(range(1, 11)), MAX_LENGTH - 9)
    assert len(generator.generate(list(range(1, 11)), MAX_LENGTH - 10)) == (
        MAX_LENGTH - 10)
    with pytest.raises(ValueError, match="max_new_tokens=0"):
        generator.generate([4], 0)
    with pytest.raises(ValueError, match="max_new_tokens=2.0"):
        generator.generate([4], 2.0)
    with pytest.raises(ValueError, match="sampler='beam'"):
        generator.generate([4], 5, sampler="beam")
    with pytest.raises(ValueError, match="temperature=-1"):
        generator.generate([4], 5, sampler="top_k", temperature=-1)
    with pytest.raises(ValueError, match="top_k=0"):
        generator.generate([4], 5, sampler="top_k", top_k=0)
    with pytest.raises(ValueError, match="top_p=1.5"):
        generator.generate([4], 5, sampler="top_p", top_p=1.5)
    with pytest.raises(TypeError, match="seed='x'"):
        generator.generate([4], 5, sampler="top_p", seed="x")
    with pytest.raises(ValueError, match="seed=-1"):
        generator.generate([4], 5, sampler="top_p", seed=-1)
    with pytest.raises(ValueError, match="repetition_penalty=0"):
        generator.generate([4], 5, repetition_penalty=0)
    with pytest.raises(ValueError, match="no_repeat_ngram_size=-2"):
        generator.generate([4], 5, no_repeat_ngram_size=-2)
    with pytest.raises(ValueError, match=f"stop_token_id={size}"):
        generator.generate([4], 5, stop_token_id=size)
    with pytest.raises(ValueError, match="must return a token id"):
        generator.generate([4], 5, sampler=lambda logits: 0)
    with pytest.raises(ValueError, match="encoder_text='Hallo'"):
        generator.generate([4], 5, encoder_text="Hallo")
    with pytest.raises(TypeError, match="on_token=3"):
        generator.generate([4], 5, on_token=3)
