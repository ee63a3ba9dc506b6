"""`keras-attn`: the quickstart end to end on a small generated corpus,
export with an embedded description, and the runtime commands (`generate`,
`classify`) that answer without importing TensorFlow."""

import json
import os
import re
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from keras_attn import cli
from keras_attn_runtime import cli as runtime_cli
from keras_attn_runtime import read_metadata

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="the quickstart exports SavedModel/TFLite (TensorFlow backend)",
)

WORDS = {
    "negative": ["awful", "scary", "hate", "crash", "never"],
    "neutral": ["today", "report", "news", "testing", "announced"],
    "positive": ["love", "great", "amazing", "excited", "safer"],
}
FILLER = ["the", "car", "drives", "google", "self", "driving", "road", "a"]


def _corpus(path, rows=600, seed=0):
    """Sentences whose label is given by the words they contain."""
    rng = np.random.default_rng(seed)
    lines = ["sentiment,confidence,text"]
    for _ in range(rows):
        label = rng.choice(list(WORDS))
        words = list(rng.choice(FILLER, size=5)) + list(
            rng.choice(WORDS[label], size=2))
        rng.shuffle(words)
        lines.append(f"{label},1.0,{' '.join(words)}")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_quickstart_trains_exports_and_explains(tmp_path, capsys):
    csv = _corpus(tmp_path / "sentiment.csv")
    out = tmp_path / "out"
    results = cli.quickstart(cli.build_parser().parse_args([
        "quickstart", "--data", csv, "--output-dir", str(out),
        "--epochs", "3", "--sequence-length", "12", "--vocabulary-size",
        "200", "--num-layers", "1", "--hidden-dim", "16",
        "--batch-size", "32",
    ]))
    printed = capsys.readouterr().out
    for name in ("classifier.keras", "vocabulary.txt", "classifier.tflite",
                 "attention.png", os.path.join("saved_model",
                                               "saved_model.pb")):
        assert (out / name).exists(), name
    assert results["accuracy"] > results["baseline"] + 0.3, results
    assert results["tflite_max_abs_diff"] < 1e-4
    assert "held-out accuracy" in printed and "TFLite" in printed
    assert str(out / "classifier.tflite") in printed
    # The file carries its vocabulary and class names.
    description = read_metadata(out / "classifier.tflite")
    assert description["class_names"] == sorted(WORDS)
    assert description["vocabulary"] == (out / "vocabulary.txt").read_text(
        ).splitlines()
    assert f"keras-attn classify {out / 'classifier.tflite'}" in printed


def test_bad_flags_exit_with_a_message(capsys):
    with pytest.raises(SystemExit):
        cli.main(["quickstart", "--epochs", "0"])
    assert ("keras-attn quickstart: error: argument --epochs: expected a "
            "positive integer, got '0'") in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["unknown"])


@pytest.mark.parametrize(
    "fmt, quantize, expected",
    [("tflite", "dynamic_int8", "model.tflite"),
     ("saved_model", "none", os.path.join("model", "saved_model.pb")),
     ("generator", "none", "model.tflite")],
)
def test_export_command(fmt, quantize, expected, tmp_path, capsys):
    from keras_attn import models

    if fmt == "generator":
        model = models.decoder_lm(30, 8, num_layers=1, hidden_dim=8,
                                  num_heads=2)
    else:
        model = models.encoder_classifier(30, 8, num_layers=1, hidden_dim=8,
                                          num_heads=2)
    model.save(tmp_path / "model.keras")
    ids = np.random.default_rng(0).integers(1, 30, size=(4, 8))
    np.save(tmp_path / "ids.npy", ids)
    output = str(tmp_path / ("model" if fmt == "saved_model"
                             else "model.tflite"))
    assert cli.main(["export", str(tmp_path / "model.keras"), output,
                     "--format", fmt, "--quantize", quantize,
                     "--data", str(tmp_path / "ids.npy")]) == 0
    assert (tmp_path / expected).exists()
    printed = capsys.readouterr().out
    assert "max abs diff" in printed or "->" in printed


def test_export_errors(tmp_path, capsys):
    assert cli.main(["export", str(tmp_path / "missing.keras"),
                     str(tmp_path / "x.tflite")]) == 2
    assert capsys.readouterr().err == (
        "keras-attn export: error: no such model file: "
        f"{tmp_path / 'missing.keras'}\n")


def test_export_litertlm_then_generate(tmp_path, capsys):
    pytest.importorskip("litert_lm")
    from keras_attn import models

    model = models.decoder_lm(30, 16, num_layers=1, hidden_dim=32,
                              num_heads=2)
    model.save(tmp_path / "lm.keras")
    # The vocabulary is found beside the model, as the examples save it.
    (tmp_path / "vocabulary.txt").write_text(
        "".join(t + "\n" for t in VOCABULARY))
    output = str(tmp_path / "lm.litertlm")
    assert cli.main(["export", str(tmp_path / "lm.keras"), output,
                     "--format", "litertlm", "--quantize", "int4",
                     "--prefill-lengths", "1,4",
                     "--int4-components", "attention,ffn"]) == 0
    captured = capsys.readouterr()
    assert "embedding" in captured.err and "vocabulary.txt" in captured.err
    assert "decoder_lm as a LiteRT-LM bundle (prefill 1, 4; decode)" in (
        captured.out)
    assert "prompts (random ids) give the text of Keras's greedy" in (
        captured.out)
    assert cli.main(["generate", output, "--prompt", "w5 w6", "--sampler",
                     "greedy", "--max-new-tokens", "4"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("w5 w6 ")
    assert "LiteRT-LM engine" in captured.err


def test_export_litertlm_errors(tmp_path, capsys):
    from keras_attn import models

    models.decoder_lm(30, 8, num_layers=1, hidden_dim=8, num_heads=2).save(
        tmp_path / "lm.keras")
    model = str(tmp_path / "lm.keras")
    for flags, message in (
        (["--format", "litertlm"], "needs the model's vocabulary"),
        (["--format", "litertlm", "--quantize", "float16"],
         "takes --quantize none, dynamic_int8 or int4"),
        (["--format", "tflite", "--quantize", "int4"],
         "int4 is for --format generator and litertlm"),
        (["--format", "generator", "--prefill-lengths", "1,8"],
         "--prefill-lengths is for --format litertlm"),
        (["--format", "litertlm", "--int4-block-size", "64"],
         "go with --quantize int4"),
        (["--format", "litertlm", "--prefill-lengths", "1,x"],
         "comma-separated integers"),
    ):
        assert cli.main(["export", model, str(tmp_path / "out"),
                         *flags]) == 2
        error = capsys.readouterr().err
        assert error.startswith("keras-attn export: error: ") and (
            message in error) and error.count("\n") == 1, error


VOCABULARY = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"] + [f"w{i}" for i in range(26)]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A classifier and a language model exported by `keras-attn export`
    with their vocabulary (and class names) embedded."""
    from keras_attn import models

    keras.utils.set_random_seed(3)
    directory = tmp_path_factory.mktemp("cli")
    vocabulary = directory / "words.txt"
    vocabulary.write_text("".join(t + "\n" for t in VOCABULARY))
    classifier = models.encoder_classifier(30, 8, num_classes=2,
                                           num_layers=1, hidden_dim=8,
                                           num_heads=2)
    classifier.save(directory / "classifier.keras")
    lm = models.decoder_lm(30, 12, num_layers=1, hidden_dim=8, num_heads=2)
    lm.save(directory / "lm.keras")
    for name, extra in (("classifier", ["--class-names", "no,yes"]),
                        ("lm", ["--format", "generator"])):
        assert cli.main(["export", str(directory / f"{name}.keras"),
                         str(directory / f"{name}.tflite"), "--vocabulary",
                         str(vocabulary), *extra]) == 0
    return dict(classifier=str(directory / "classifier.tflite"),
                lm=str(directory / "lm.tflite"), lm_keras=lm,
                lm_keras_path=str(directory / "lm.keras"))


def test_export_embeds_the_description(exported, capsys):
    description = read_metadata(exported["classifier"])
    assert description["class_names"] == ["no", "yes"]
    assert description["vocabulary"] == VOCABULARY
    assert description["kind"] == "classifier"
    lm = read_metadata(exported["lm"])
    assert (lm["kind"], lm["model_type"], lm["max_length"]) == (
        "generator", "decoder_lm", 12)
    # The runtime commands need only the model path.
    assert cli.main(["classify", exported["classifier"], "w1 w2",
                     "--no-timings"]) == 0
    label, _, text = capsys.readouterr().out.strip().split("\t")
    assert label in ("no", "yes") and text == "w1 w2"
    assert cli.main(["export", exported["lm_keras_path"], "y", "--format",
                     "saved_model", "--class-names", "a,b"]) == 2
    assert "embedded in TFLite files only" in capsys.readouterr().err


def test_generate_streams_keras_greedy_and_reports(exported, capsys):
    from keras_attn import models

    assert cli.main(["generate", exported["lm"], "--prompt", "w3 w4",
                     "--max-new-tokens", "6", "--no-stop",
                     "--sampler", "greedy", "--repetition-penalty", "1"]) == 0
    captured = capsys.readouterr()
    tokens = models.generate(exported["lm_keras"], [[2, 7, 8]], 6)[0]
    assert captured.out.splitlines() == [
        "w3 w4 " + " ".join(VOCABULARY[i] for i in tokens)]
    assert "| new tokens" in captured.err


def test_generate_errors_name_the_problem(exported, capsys, tmp_path):
    assert cli.main(["generate", exported["classifier"]]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("keras-attn generate: error:")
    assert "prefill" in err[0]
    # Too many new tokens for the model: cut to the room left, with a
    # notice that names the limit.
    assert cli.main(["generate", exported["lm"], "--max-new-tokens", "13",
                     "--prompt", "w1"]) == 0
    err = capsys.readouterr().err
    assert "notice: --max-new-tokens 13 is more than fits: generating at " \
           "most 10 (the model's max_length=12 minus 2 prompt tokens)" in err
    missing = str(tmp_path / "no.tflite")
    assert cli.main(["generate", missing]) == 2
    assert "no.tflite" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError):
        cli.main(["generate", missing, "--debug"])


def test_generate_and_classify_take_the_runtime_flags(capsys):
    def flags(main, command):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        return set(re.findall(r"--[a-z-]+", text.split("options:")[1]))

    for command in ("generate", "classify"):
        ours = cli.build_parser().parse_args([command, "m.tflite"])
        theirs = runtime_cli.build_parser().parse_args([command, "m.tflite"])
        assert {k: v for k, v in vars(ours).items() if k != "run"} == vars(
            theirs)
        assert flags(cli.main, command) == flags(runtime_cli.main, command)


BLOCK_TENSORFLOW = textwrap.dedent("""
    import json, sys

    BLOCKED = ("tensorflow", "keras", "keras_hub", "tensorflow_text")

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is blocked")

    sys.meta_path.insert(0, Block())
    from keras_attn import cli
    try:
        status = cli.main(sys.argv[1:])
    except SystemExit as stop:
        status = stop.code
    print(json.dumps(dict(status=status, loaded=sorted(
        m for m in sys.modules if m.split(".")[0] in BLOCKED))))
""")


@pytest.mark.parametrize("argv", [
    ["--help"], ["generate", "--help"], ["classify", "--help"],
    ["export", "--help"], ["generate", "LM", "--prompt", "w1",
                           "--max-new-tokens", "3"],
    ["classify", "CLASSIFIER", "w1 w2"],
], ids=lambda argv: "-".join(argv[:2]))
def test_commands_that_need_no_tensorflow_do_not_import_it(exported, argv):
    argv = [exported["lm"] if a == "LM" else exported["classifier"]
            if a == "CLASSIFIER" else a for a in argv]
    process = subprocess.run(
        [sys.executable, "-c", BLOCK_TENSORFLOW, *argv],
        capture_output=True, text=True, timeout=120)
    assert process.returncode == 0, process.stderr[-2000:]
    out = json.loads(process.stdout.splitlines()[-1])
    assert out == {"status": 0, "loaded": []}
    assert "Traceback" not in process.stderr
    if "--help" not in argv:
        # Quiet: only the timing table on stderr, no backend log line.
        assert all(line.startswith("|") for line in
                   process.stderr.splitlines()), process.stderr


def test_bundle_runtime_writes_a_runnable_zipapp(tmp_path, capsys):
    path = tmp_path / "rt.pyz"
    assert cli.main(["bundle-runtime", str(path)]) == 0
    assert str(path) in capsys.readouterr().out
    process = subprocess.run([sys.executable, str(path), "generate",
                              "--help"], capture_output=True, text=True,
                             timeout=60)
    assert process.returncode == 0
    assert process.stdout.startswith("usage: python rt.pyz generate")
