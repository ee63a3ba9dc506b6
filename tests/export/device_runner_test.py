"""The device runner, `export/keras_attn_runner.py`: its tokenizer gives the
token ids of keras-hub's tokenizer on the real corpora, and its classifier
and generator, run in a process where TensorFlow and Keras cannot be
imported, give Keras's probabilities and greedy tokens."""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest

from keras_attn import data
from keras_attn import models
from keras_attn.export import export_generator_tflite
from keras_attn.export import export_tflite

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="exporting the .tflite files needs the TensorFlow backend",
)

RUNNER_PATH = (
    pathlib.Path(__file__).resolve().parents[2] / "export"
    / "keras_attn_runner.py"
)
BLOCKED = ("tensorflow", "tensorflow_text", "keras", "tf_keras", "keras_hub")
CLASS_NAMES = ["negative", "neutral", "positive"]
CLASSIFIER_LENGTH = 16
MAX_LENGTH = 40
NEW_TOKENS = 32
PROMPT = "Self-driving cars!"

# Text the corpora may lack: whitespace that RE2's `\s` misses, format and
# control characters, case folding that changes length, ligatures, CJK,
# emoji sequences, mojibake, the 100-byte word limit (counted after case
# folding: "İ" folds to 3 bytes), and characters newer than Python 3.11's
# Unicode tables.
TRICKY = [
    "", " ", "a\u00a0b", "x\u2028y", "Straße STRASSE", "İstanbul ıI",
    "ﬁne ﬂy", "ＦＵＬＬ ｗｉｄｔｈ！", "½ ² ⅷ ™ ℌ Ω K Å", "😀👍🏽 👨‍👩‍👧 ❤️ ❤",
    "e\u0301 é", "Ã¤Ã¶Ã¼ â€™ â€œ ðŸ˜‚", "中文字符 日本語 한국어",
    "\ufeffbom \u200bzw\u200d \u00adsoft\u00adhy", "a\x0bb\x85c\td",
    "a" * 100, "a" * 101, "é" * 50, "é" * 51, "İ" * 34, "İ" * 33,
    "#tag @user http://t.co/x_y", "ΣΊΣΥΦΟΣ ς", "\ufffd\ufffd", "ǅ ǈ Ꭰ",
    "x\u034fy \u115f \u3164", "\U0001d400\U0001d41a", "ﾊﾟ ﷺ", "...!?",
    "\u0300start end\u0301", "\U0001ccd6\U0001ccf9 \U00010d50 a\U00011b00b "
    "c\U00013439d \ua7cb",
]


@pytest.fixture(scope="module")
def runner():
    spec = importlib.util.spec_from_file_location(
        "keras_attn_runner", RUNNER_PATH
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tweets():
    try:
        return list(data.read_sentiment_csv().texts)
    except FileNotFoundError as error:
        pytest.skip(f"no tweets corpus: {error}")


@pytest.fixture(scope="module")
def vocabulary(tweets):
    # Learned on a subset to stay fast; compared on every text.
    return data.train_vocabulary(tweets[:5000], 2000)


def keras_hub_ids(vocabulary, texts, lowercase=True, sequence_length=None):
    """Ids of `make_tokenizer` on its TensorFlow path (the one `tf.data`
    runs in training), all texts in one batch."""
    import tensorflow as tf

    tokenizer = data.make_tokenizer(vocabulary, sequence_length, lowercase)
    ids = tf.function(tokenizer.tokenize)(tf.constant(texts, tf.string))
    if isinstance(ids, tf.RaggedTensor):
        return ids.to_list()
    return ids.numpy().tolist()


def assert_same_ids(runner, vocabulary, texts, lowercase=True):
    tokenizer = runner.WordPieceTokenizer(vocabulary, lowercase=lowercase)
    expected = keras_hub_ids(vocabulary, texts, lowercase)
    mismatches = [
        (text, want, got) for text, want in zip(texts, expected)
        if (got := tokenizer.tokenize(text)) != want
    ]
    assert not mismatches, (len(mismatches), mismatches[:3])


def test_tokenizer_ids_equal_keras_hub_on_every_tweet(
    runner, tweets, vocabulary
):
    start = time.perf_counter()
    texts = tweets + TRICKY
    for lowercase in (True, False):
        assert_same_ids(runner, vocabulary, texts, lowercase)
    assert time.perf_counter() - start < 40


def test_tokenizer_ids_equal_keras_hub_on_every_translation_sentence(
    runner
):
    if not os.path.exists(data.TRANSLATION_PATH):
        pytest.skip(f"no translation dictionary at {data.TRANSLATION_PATH}")
    sentences = [s for pair in data.read_translation_pairs() for s in pair]
    vocabulary = data.train_vocabulary(sentences[:5000], 2000)
    start = time.perf_counter()
    assert_same_ids(runner, vocabulary, sentences + TRICKY)
    assert time.perf_counter() - start < 40


def test_encode_truncates_and_pads_like_keras_hub(runner, tweets,
                                                  vocabulary):
    texts = tweets[:2000] + TRICKY
    expected = np.array(keras_hub_ids(vocabulary, texts, sequence_length=12))
    tokenizer = runner.WordPieceTokenizer(vocabulary, sequence_length=12)
    got = np.stack([tokenizer.encode(text) for text in texts])
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, expected)
    assert (expected == 0).any() and (expected[:, -1] != 0).any()


def test_detokenize_equals_keras_hub_and_round_trips(runner, tweets,
                                                     vocabulary):
    import tensorflow as tf

    texts = tweets[:2000] + TRICKY
    ids = keras_hub_ids(vocabulary, texts)
    hub = data.make_tokenizer(vocabulary)
    expected = tf.function(hub.detokenize)(tf.ragged.constant(ids, tf.int32))
    tokenizer = runner.WordPieceTokenizer(vocabulary)
    got = [tokenizer.detokenize(row) for row in ids]
    assert got == [text.decode("utf-8") for text in expected.numpy()]
    # Detokenized text tokenizes back to the same ids, where no word was
    # unknown ("[UNK]" reads back as "[", "unk", "]").
    unk = vocabulary.index("[UNK]")
    known = [row for row in ids if unk not in row]
    assert len(known) > 1000
    assert all(tokenizer.tokenize(tokenizer.detokenize(row)) == row
               for row in known)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tweets, vocabulary):
    """A classifier and a language model, their .tflite files, and the
    vocabulary file."""
    directory = tmp_path_factory.mktemp("device")
    vocabulary_path = directory / "vocabulary.txt"
    data.save_vocabulary(vocabulary, vocabulary_path)
    classifier = models.encoder_classifier(
        len(vocabulary), CLASSIFIER_LENGTH, num_classes=3, num_layers=1,
        hidden_dim=32, num_heads=2, dropout=0.0,
    )
    export_tflite(classifier, directory / "classifier.tflite",
                  latency_runs=1)
    lm = models.decoder_lm(len(vocabulary), MAX_LENGTH, num_layers=2,
                           hidden_dim=32, num_heads=4, num_key_value_heads=2,
                           dropout=0.0)
    export_generator_tflite(lm, directory / "lm.tflite", MAX_LENGTH)
    return dict(directory=directory, vocabulary=str(vocabulary_path),
                classifier=classifier, lm=lm,
                classifier_path=str(directory / "classifier.tflite"),
                lm_path=str(directory / "lm.tflite"))


DEVICE_SCRIPT = textwrap.dedent("""
    import contextlib, importlib.util, io, json, sys

    BLOCKED, RUNNER, ARGS = json.loads(sys.argv[1])

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is blocked on the device")

    preloaded = sorted(set(BLOCKED) & set(sys.modules))
    sys.meta_path.insert(0, Block())
    spec = importlib.util.spec_from_file_location("keras_attn_runner", RUNNER)
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)

    classifier = runner.Classifier(ARGS["classifier_path"], ARGS["vocabulary"],
                                   ARGS["class_names"])
    generator = runner.Generator(ARGS["lm_path"], ARGS["vocabulary"])
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        runner.main(["classify", ARGS["classifier_path"], ARGS["vocabulary"],
                     ARGS["texts"][0], "--class-names", "a,b,c"])
        runner.main(["generate", ARGS["lm_path"], ARGS["vocabulary"],
                     "--prompt", ARGS["prompt"], "--max-new-tokens", "5",
                     "--no-stop"])
    print(json.dumps(dict(
        preloaded=preloaded,
        loaded=sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED),
        probabilities=classifier.predict(ARGS["texts"]).tolist(),
        label=classifier.classify(ARGS["texts"][0]),
        greedy=generator.generate(ARGS["prompt"], ARGS["new_tokens"]),
        cli=stdout.getvalue().splitlines(),
    )))
""")


def test_runner_without_tensorflow_matches_keras(exported, tweets,
                                                 vocabulary):
    texts = tweets[:24] + TRICKY[:8]
    args = dict(texts=texts, prompt=PROMPT, new_tokens=NEW_TOKENS,
                class_names=CLASS_NAMES,
                **{k: exported[k] for k in
                   ("classifier_path", "lm_path", "vocabulary")})
    process = subprocess.run(
        [sys.executable, "-c", DEVICE_SCRIPT,
         json.dumps([BLOCKED, str(RUNNER_PATH), args])],
        capture_output=True, text=True, timeout=120,
    )
    assert process.returncode == 0, process.stderr[-3000:]
    out = json.loads(process.stdout.splitlines()[-1])
    assert out["preloaded"] == [] and out["loaded"] == []

    token_ids = np.array(
        keras_hub_ids(vocabulary, texts, sequence_length=CLASSIFIER_LENGTH)
    )
    logits = keras.ops.convert_to_numpy(
        exported["classifier"](token_ids)
    ).astype("float64")
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(out["probabilities"], expected, atol=1e-5)
    best = int(expected[0].argmax())
    assert out["label"][0] == CLASS_NAMES[best]
    assert abs(out["label"][1] - expected[0, best]) < 1e-5

    prompt = [vocabulary.index("[BOS]")] + keras_hub_ids(vocabulary,
                                                          [PROMPT])[0]
    keras_tokens = models.generate(exported["lm"], [prompt], NEW_TOKENS)
    assert out["greedy"] == keras_tokens[0].tolist()

    classified, generated = out["cli"]
    assert classified.split("\t")[0] == "abc"[best]
    tokenizer_text = " ".join(
        vocabulary[i] for i in out["greedy"][:5]
    ).replace(" ##", "")
    assert generated == tokenizer_text


@pytest.fixture(scope="module")
def generator(runner, exported):
    return runner.Generator(exported["lm_path"], exported["vocabulary"])


def test_sampler_keeps_the_k_best_and_the_top_p_mass(runner):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=50).astype("float32")
    logits[0] = 100.0  # padding is never picked, however likely
    ranked = np.argsort(-logits[1:]) + 1
    probabilities = np.exp(logits[1:] / 0.7 - (logits[1:] / 0.7).max())
    probabilities /= probabilities.sum()
    pick = runner.make_sampler("top_k", temperature=0.7, top_k=5, seed=1)
    draws = np.array([pick(logits) for _ in range(4000)])
    assert set(draws) <= set(ranked[:5])
    kept = probabilities[ranked[:5] - 1] / probabilities[ranked[:5] - 1].sum()
    frequencies = np.array([(draws == i).mean() for i in ranked[:5]])
    np.testing.assert_allclose(frequencies, kept, atol=0.03)

    pick = runner.make_sampler("top_p", temperature=0.7, top_p=0.6, seed=1)
    draws = {pick(logits) for _ in range(4000)}
    cumulative = np.cumsum(probabilities[ranked - 1])
    nucleus = ranked[:np.searchsorted(cumulative, 0.6) + 1]
    assert cumulative[len(nucleus) - 1] >= 0.6
    assert draws == set(nucleus)  # every kept token shows up

    for pick in (runner.make_sampler("greedy"),
                 runner.make_sampler("top_p", temperature=0)):
        assert {pick(logits) for _ in range(20)} == {ranked[0]}


def test_generate_samples_among_the_k_best_logits(generator, runner):
    seen = []
    pick = runner.make_sampler("top_k", top_k=3, seed=7)

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
    runs = [generator.generate(PROMPT, 20, sampler="top_p", top_p=0.95,
                               temperature=2.0, seed=seed)
            for seed in (3, 3, 4)]
    assert runs[0] == runs[1] != runs[2]
    assert all(0 not in run for run in runs)


def test_generate_stops_after_the_stop_token(generator, exported):
    greedy = generator.generate([5, 6, 7], 20)
    stop = greedy[3]
    tokens = generator.generate([5, 6, 7], 20, stop_token_id=stop)
    assert tokens == greedy[:greedy.index(stop) + 1]
    expected = models.generate(exported["lm"], [[5, 6, 7]], 20,
                               stop_token_id=stop)[0].tolist()
    assert expected == tokens + [0] * (20 - len(tokens))


def test_seq2seq_translates_like_keras(runner, exported, vocabulary):
    model = models.seq2seq(len(vocabulary), len(vocabulary), 12, 20,
                           num_layers=1, hidden_dim=16, num_heads=2,
                           dropout=0.0)
    path = export_generator_tflite(
        model, exported["directory"] / "seq2seq.tflite", max_length=20)
    generator = runner.Generator(path, exported["vocabulary"])
    assert generator.is_seq2seq and generator.source_length == 12
    source = "I can't see how automous cars won't cause a million wrecks"
    source_ids = keras_hub_ids(vocabulary, [source], sequence_length=12)
    bos = vocabulary.index("[BOS]")
    expected = models.generate(model, [[bos]], 19,
                               encoder_token_ids=np.array(source_ids))
    assert generator.generate(None, 19, encoder_text=source) == (
        expected[0].tolist())
    assert generator.generate([bos], 19, encoder_ids=source_ids[0]) == (
        expected[0].tolist())
    short = keras_hub_ids(vocabulary, ["Google cars"])[0]
    assert generator.generate(None, 19, encoder_ids=short) == (
        generator.generate(None, 19, encoder_text="Google cars"))
    with pytest.raises(ValueError, match="exactly one of `encoder_text`"):
        generator.generate(None, 5)
    with pytest.raises(ValueError, match="no token \\(all padding\\)"):
        generator.generate(None, 5, encoder_text="  ")
    with pytest.raises(ValueError, match="1 to 12 ids"):
        generator.generate(None, 5, encoder_ids=list(range(1, 14)))


def test_bad_inputs_raise_clear_errors(runner, exported, generator,
                                       tmp_path):
    classifier_path = exported["classifier_path"]
    lm_path = exported["lm_path"]
    vocabulary = exported["vocabulary"]
    size = generator.vocabulary_size
    with pytest.raises(FileNotFoundError, match="model_path='nowhere"):
        runner.Classifier("nowhere.tflite", vocabulary)
    with pytest.raises(FileNotFoundError, match="vocabulary_path='nowhere"):
        runner.Generator(lm_path, "nowhere.txt")
    with pytest.raises(ValueError, match="Not a .tflite model"):
        runner.Classifier(vocabulary, vocabulary)
    with pytest.raises(ValueError, match="no signature 'serving_default'"):
        runner.Classifier(lm_path, vocabulary)
    with pytest.raises(ValueError, match="no signature 'prefill'"):
        runner.Generator(classifier_path, vocabulary)
    short = tmp_path / "short.txt"
    short.write_text("[PAD]\n[UNK]\n[BOS]\n[EOS]\nthe\n")
    with pytest.raises(ValueError, match="has 5 tokens but the model"):
        runner.Generator(lm_path, short)
    bad = tmp_path / "bad.txt"
    bad.write_text("[UNK]\n[PAD]\n")
    with pytest.raises(ValueError, match="must start with '\\[PAD\\]'"):
        runner.WordPieceTokenizer(bad)
    with pytest.raises(ValueError, match="class_names"):
        runner.Classifier(classifier_path, vocabulary, ["a", "b"])
    with pytest.raises(ValueError, match="num_threads=0"):
        runner.Classifier(classifier_path, vocabulary, num_threads=0)
    classifier = runner.Classifier(classifier_path, vocabulary)
    with pytest.raises(TypeError, match="texts=5"):
        classifier.predict(5)
    with pytest.raises(ValueError, match=r"token_ids.shape=\(1, 3\)"):
        classifier.predict_ids([[1, 2, 3]])
    with pytest.raises(ValueError, match=f"outside \\[0, {size}\\)"):
        classifier.predict_ids(np.full((1, CLASSIFIER_LENGTH), size))

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
    with pytest.raises(ValueError, match=f"max_length={MAX_LENGTH}"):
        generator.generate(list(range(1, 11)), MAX_LENGTH - 9)
    assert len(generator.generate(list(range(1, 11)), MAX_LENGTH - 10)) == (
        MAX_LENGTH - 10)
    with pytest.raises(ValueError, match="max_new_tokens=0"):
        generator.generate([4], 0)
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
    with pytest.raises(ValueError, match=f"stop_token_id={size}"):
        generator.generate([4], 5, stop_token_id=size)
    with pytest.raises(ValueError, match="must return a token id"):
        generator.generate([4], 5, sampler=lambda logits: 0)
    with pytest.raises(ValueError, match="encoder_text='Hallo'"):
        generator.generate([4], 5, encoder_text="Hallo")
    tokenizer = generator.tokenizer
    with pytest.raises(TypeError, match="text=None"):
        tokenizer.tokenize(None)
    with pytest.raises(ValueError, match=f"ids=\\[{size}\\]"):
        tokenizer.detokenize([size])
    with pytest.raises(ValueError, match="sequence_length=None"):
        tokenizer.encode("hello")


def test_cli_generate_streams_keras_greedy_and_reports(exported, vocabulary,
                                                       capsys):
    from keras_attn import cli

    assert cli.main(["generate", exported["lm_path"], "--vocabulary",
                     exported["vocabulary"], "--prompt", PROMPT,
                     "--max-new-tokens", "12", "--no-stop"]) == 0
    printed = capsys.readouterr().out.splitlines()
    prompt = [vocabulary.index("[BOS]")] + keras_hub_ids(vocabulary,
                                                          [PROMPT])[0]
    keras_tokens = models.generate(exported["lm"], [prompt], 12)[0]
    expected = " ".join(vocabulary[i] for i in keras_tokens).replace(
        " ##", "")
    assert printed[0] == f"{PROMPT} {expected}"
    report = dict(
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in printed[3:]
    )
    assert report["prompt tokens"] == str(len(prompt))
    assert report["new tokens"] == "12"
    assert report["cache length (max_length)"] == str(MAX_LENGTH)
    assert float(report["tokens/s (all steps)"]) > 0
    assert report["decode per token (median)"].endswith(" ms")


def test_cli_generate_errors_name_the_problem(exported, capsys):
    from keras_attn import cli

    assert cli.main(["generate", exported["classifier_path"],
                     "--vocabulary", exported["vocabulary"]]) == 2
    assert "prefill" in capsys.readouterr().err
    assert cli.main(["generate", exported["lm_path"], "--vocabulary",
                     exported["vocabulary"], "--max-new-tokens",
                     str(MAX_LENGTH + 1)]) == 2
    assert f"max_length={MAX_LENGTH}" in capsys.readouterr().err
    missing = os.path.join(os.path.dirname(exported["lm_path"]), "no.tflite")
    assert cli.main(["generate", missing]) == 2
    assert "no.tflite" in capsys.readouterr().err


def test_runner_generates_with_both_cache_forms(exported, runner, tmp_path):
    """`kv_cache="tensors"` files pass the cache through the signatures;
    the runner gives the same tokens with them, for an LM and a seq2seq,
    and several sources in a row."""
    lm_path = export_generator_tflite(exported["lm"], tmp_path / "t.tflite",
                                      MAX_LENGTH, kv_cache="tensors")
    stateful = runner.Generator(exported["lm_path"], exported["vocabulary"])
    stateless = runner.Generator(lm_path, exported["vocabulary"])
    assert stateful.cache_in_signatures is False
    assert stateless.cache_in_signatures is True
    assert stateless.generate(PROMPT, 16) == stateful.generate(PROMPT, 16)

    size = stateful.vocabulary_size
    translator = models.seq2seq(size, size, 12, 16, num_layers=1,
                                hidden_dim=16, num_heads=2, dropout=0.0)
    generators = [
        runner.Generator(
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
