""".litertlm bundles on a device: the header read with the standard
library, and `keras_attn_runtime generate` through LiteRT-LM's engine, in
a process that cannot import TensorFlow, giving Keras's greedy text."""

import json

import keras
import pytest

from keras_attn import models
from keras_attn_runtime import litertlm
from tests.runtime.helpers import BLOCKED
from tests.runtime.helpers import keras_hub_ids
from tests.runtime.helpers import needs_tensorflow
from tests.runtime.helpers import run_without_tensorflow

pytestmark = needs_tensorflow

MAX_LENGTH = 32
PROMPT = "Self-driving cars are"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, vocabulary):
    pytest.importorskip("litert_lm")
    from keras_attn.export import export_litertlm

    keras.utils.set_random_seed(7)
    model = models.decoder_lm(len(vocabulary), MAX_LENGTH, num_layers=2,
                              hidden_dim=32, num_heads=4,
                              num_key_value_heads=2, dropout=0.0)
    path = tmp_path_factory.mktemp("litertlm") / "lm.litertlm"
    export_litertlm(model, path, vocabulary, prefill_lengths=(1, 8),
                    sample_prompts=[])
    return model, str(path)


def test_read_bundle_without_the_builder(bundle, vocabulary, tmp_path):
    _, path = bundle
    header = litertlm.read_bundle(path)
    assert [s["type"] for s in header["sections"]] == [
        "LlmMetadataProto", "TFLiteModel", "HF_Tokenizer_Zlib"]
    assert header["sections"][1]["items"]["model_type"] == (
        "tf_lite_prefill_decode")
    assert {"keras_attn", "uuid", "creation_timestamp"} <= set(
        header["system_metadata"])
    description = litertlm.read_description(path)
    assert "vocabulary" not in description  # the tokenizer holds it
    assert description["litert_lm"]["vocabulary_size"] == len(vocabulary)
    assert description["special_tokens"]["eos"] == "[EOS]"
    assert description["max_length"] == MAX_LENGTH
    assert litertlm.is_bundle(path)

    data = open(path, "rb").read()
    truncated = tmp_path / "truncated.litertlm"
    truncated.write_bytes(data[:200])
    with pytest.raises(ValueError, match="truncated.litertlm"):
        litertlm.read_bundle(str(truncated))
    other = tmp_path / "other.litertlm"
    other.write_bytes(b"TFL3" + data[4:1000])
    assert not litertlm.is_bundle(str(other))
    with pytest.raises(ValueError, match="Not a .litertlm bundle"):
        litertlm.read_bundle(str(other))
    with pytest.raises(FileNotFoundError):
        litertlm.read_bundle(str(tmp_path / "missing.litertlm"))


def test_sampler_settings_for_the_engine():
    litert_lm = pytest.importorskip("litert_lm")
    greedy = litertlm.sampler_config(litert_lm, "top_p", temperature=0)
    assert greedy.top_k == 1
    assert litertlm.sampler_config(litert_lm, "greedy").top_k == 1
    top_p = litertlm.sampler_config(litert_lm, "top_p", 0.8, top_p=0.9,
                                    seed=3, vocabulary_size=100)
    assert (top_p.top_k, top_p.top_p, top_p.temperature, top_p.seed) == (
        100, pytest.approx(0.9), pytest.approx(0.8), 3)
    top_k = litertlm.sampler_config(litert_lm, "top_k", 1.0, top_k=5)
    assert (top_k.top_k, top_k.top_p) == (5, 1.0)
    with pytest.raises(ValueError, match="`top_p`"):
        litertlm.sampler_config(litert_lm, "top_p", top_p=1.5)


def test_generate_without_tensorflow_gives_keras_greedy_text(
        bundle, vocabulary):
    model, path = bundle
    args = dict(path=path, prompt=PROMPT)
    process = run_without_tensorflow(f"""
        import contextlib, io, json
        from keras_attn_runtime import cli
        from keras_attn_runtime.litertlm import LiteRTLMGenerator

        ARGS = json.loads(sys.argv[1])
        with LiteRTLMGenerator(ARGS["path"]) as generator:
            text = generator.generate(ARGS["prompt"], 12, sampler="greedy")
            prompt_ids = generator.tokenize(ARGS["prompt"])
            timings = generator.last_timings
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), \\
                contextlib.redirect_stderr(stderr):
            status = cli.main(["generate", ARGS["path"], "--prompt",
                               ARGS["prompt"], "--sampler", "greedy",
                               "--max-new-tokens", "12"])
        loaded = sorted(m for m in sys.modules
                        if m.split(".")[0] in {BLOCKED!r})
        print(json.dumps(dict(text=text, prompt_ids=prompt_ids,
                              timings=timings, status=status,
                              cli=stdout.getvalue(), table=stderr.getvalue(),
                              loaded=loaded)))
    """, [json.dumps(args)])
    assert process.returncode == 0, process.stderr[-3000:]
    out = json.loads(process.stdout.splitlines()[-1])
    assert out["loaded"] == []
    # The engine's tokenizer is ours; its greedy text is Keras's tokens.
    assert out["prompt_ids"] == keras_hub_ids(vocabulary, [PROMPT])[0]
    bos, eos = vocabulary.index("[BOS]"), vocabulary.index("[EOS]")
    expected = models.generate(model, [[bos] + out["prompt_ids"]], 12,
                               stop_token_id=eos)[0].tolist()
    expected = [token for token in expected if token not in (0, eos)]
    words = [vocabulary[i] for i in expected]
    assert out["text"] == "".join(
        word[2:] if i and word.startswith("##") else " " * bool(i) + word
        for i, word in enumerate(words))
    assert out["timings"]["new_tokens"] == len(expected) + (
        len(expected) < 12)  # the stop token is a decode step too
    assert out["timings"]["prompt_tokens"] == 1 + len(out["prompt_ids"])
    assert out["status"] == 0
    assert out["cli"].startswith(PROMPT) and out["cli"].endswith("\n")
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip()
            for line in out["table"].splitlines()[2:]}
    assert rows["model"].endswith("lm.litertlm (LiteRT-LM engine)")
    assert rows["cache length (max_length)"] == "32"
    assert rows["prompt tokens"] == str(1 + len(out["prompt_ids"]))
    assert rows["new tokens"].startswith(str(out["timings"]["new_tokens"]))
    assert float(rows["decode per token (engine's mean)"].split()[0]) > 0
    assert float(rows["tokens/s (all steps)"]) > 0


@pytest.mark.parametrize("flags, message", [
    (["--repetition-penalty", "1.2"], "--repetition-penalty does not apply"),
    (["--no-repeat-ngram-size", "2"], "--no-repeat-ngram-size does not"),
    (["--no-stop"], "always stops at the bundle's stop tokens"),
    (["--vocabulary", "v.txt"], "carries its tokenizer"),
    (["--source", "hallo"], "runs language models"),
])
def test_flags_that_do_not_apply(bundle, flags, message, capsys):
    from keras_attn_runtime import cli

    _, path = bundle
    status = cli.main(["generate", path, "--prompt", "hi", *flags])
    assert status == 2
    assert message in capsys.readouterr().err
