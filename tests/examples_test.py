"""The example scripts as a user runs them: `--help`, a run at tiny sizes
in a subprocess, what it prints and saves, and what a re-run does."""

import importlib.util
import json
import os
import pathlib
import re
import shlex
import subprocess
import sys

import keras
import pytest

from keras_attn import data

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SCRIPTS = ["train_classifier", "train_lm", "train_translator", "train_tiny"]
# Tiny sizes: one epoch of a one-layer model on 300 examples.
TINY = ["--max-examples", "300", "--epochs", "1", "--num-layers", "1",
        "--hidden-dim", "16", "--num-heads", "2", "--vocabulary-size", "300",
        "--batch-size", "16"]


def _module(name):
    spec = importlib.util.spec_from_file_location(
        f"examples_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _has_translation_pairs():
    return os.path.isfile(data.TRANSLATION_PATH)


def _needs_data(name):
    if name == "train_translator" and not _has_translation_pairs():
        pytest.skip("the Debian package trans-de-en is not installed")


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_describes_every_flag_with_its_default(name):
    module = _module(name)
    parser = module.make_parser()
    text = " ".join(parser.format_help().split())
    for action in parser._actions:
        if action.dest == "help":
            continue
        assert action.help, f"--{action.dest} has no help"
        if action.nargs != 0:  # Flags with a value show their default.
            assert "(default: " in action.help, action.dest
    assert f"continues it (default: {module.EPOCHS})" in text or (
        f"epochs to train (default: {module.EPOCHS})" in text)


@pytest.mark.parametrize("name",
                         ["train_classifier", "train_lm", "train_translator"])
def test_a_directory_trained_with_other_settings_is_refused(
    name, tmp_path, monkeypatch, capsys
):
    _needs_data(name)
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text(
        json.dumps({"config": {"hidden_dim": 1}, "history": []}))
    (out / "best.keras").write_bytes(b"an older model")
    monkeypatch.setattr(sys, "argv", [f"{name}.py", "--output-dir", str(out),
                                      "--max-examples", "50"])
    module = _module(name)
    with pytest.raises(SystemExit) as exit:
        module.main()
    assert exit.value.code == 2
    error = " ".join(capsys.readouterr().err.split())
    assert "holds a training run with other settings" in error
    assert f"hidden_dim: 1 there, {module.HIDDEN_DIM} now" in error
    assert "`--overwrite`" in error
    assert (out / "best.keras").read_bytes() == b"an older model"
    assert sorted(os.listdir(out)) == ["best.keras", "run.json"]


def _run(args, cwd, env=None):
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3",
               **(env or {}))
    result = subprocess.run([sys.executable, *args], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=900)
    return result


def _example(name, args, cwd, env=None, prefix=()):
    result = _run([*prefix, str(EXAMPLES / f"{name}.py"), *args], cwd, env)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _summary(stdout):
    """The summary's sections: results, saved paths, next commands."""
    summary = stdout.split("\n== Summary ==\n", 1)[1]
    sections, current = {"results": []}, "results"
    for line in summary.splitlines():
        if line in ("Saved:", "Next:"):
            current = line[:-1].lower()
            sections[current] = []
        elif line.startswith("  "):
            sections[current].append(line[2:])
    sections["saved"] = [line.split("  ")[0] for line in sections["saved"]]
    return sections


def _held_out(stdout):
    return next(line for line in _summary(stdout)["results"]
                if line.startswith("held-out"))


@pytest.mark.large
def test_classifier_run_rerun_and_continue(tmp_path):
    out = str(tmp_path / "classifier")
    args = ["--output-dir", out, "--sequence-length", "16", *TINY]
    stdout = _example("train_classifier", args, tmp_path)
    assert f"{out}: new run of 1 epoch." in stdout
    assert re.search(r"first step done in [\d.]+ s", stdout)
    assert re.search(r"^epoch 1/1  .*val_accuracy", stdout, re.M)
    assert "classes (label id order): negative, neutral, positive" in stdout
    summary = _summary(stdout)
    results = "\n".join(summary["results"])
    assert re.search(r"held-out accuracy [\d.]+ vs majority-class baseline",
                     results)
    assert re.search(r"4,9\d\d of the corpus's 38,\d\d\d rows were not "
                     r"UTF-8 and were repaired", results)
    assert re.search(r"trained 1 epoch in \d+ s; best val_accuracy", results)
    for name in ("best.keras", "vocabulary.txt", "class_names.txt",
                 "attention.png", "run.json", "backup", "logs"):
        assert os.path.join(out, name) in summary["saved"]
    assert all(os.path.exists(path) for path in summary["saved"])
    with open(os.path.join(out, "class_names.txt")) as f:
        assert f.read() == "negative\nneutral\npositive\n"

    # The same command again: nothing to train, the same evaluation.
    again = _example("train_classifier", args, tmp_path)
    assert f"{out}: already trained 1/1 epochs; nothing to train." in again
    assert "first step" not in again and "\nepoch " not in again
    assert _held_out(again) == _held_out(stdout)

    # The printed command continues the run to 4 epochs in total.
    command = shlex.split(summary["next"][-1].split("  (")[0])
    assert command[0] == "python" and command[-2:] == ["--epochs", "4"]
    more = _run(command[1:], ROOT)
    assert more.returncode == 0, more.stdout + more.stderr
    assert f"{out}: continuing after epoch 1 of 4." in more.stdout
    assert re.findall(r"^epoch (\d)/4", more.stdout, re.M) == ["2", "3", "4"]
    with open(os.path.join(out, "run.json")) as f:
        record = json.load(f)
    assert [entry["epoch"] for entry in record["history"]] == [1, 2, 3, 4]
    assert "trained 4 epochs in" in more.stdout


@pytest.mark.large
@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="keras-attn export needs TensorFlow")
def test_language_model_run_and_its_next_commands(tmp_path, capsys):
    from keras_attn import cli

    out = str(tmp_path / "lm")
    stdout = _example("train_lm", ["--output-dir", out,
                                   "--sequence-length", "16", *TINY],
                      tmp_path)
    summary = _summary(stdout)
    results = "\n".join(summary["results"])
    assert re.search(r"held-out perplexity [\d.]+ vs unigram baseline",
                     results)
    assert re.search(r"generation: [\d,]+ new tokens/s \(greedy, KV cache, "
                     r"batch 4, \d+ new tokens each, after compilation",
                     results)
    assert "-- greedy continuations" in stdout
    assert "\ufffd" not in stdout
    for name in ("best.keras", "vocabulary.txt", "run.json"):
        assert os.path.join(out, name) in summary["saved"]
    assert all(os.path.exists(path) for path in summary["saved"])

    # The export and generate commands it prints work as printed.
    export, generate, _ = summary["next"]
    for command in (export, generate):
        words = shlex.split(command)
        assert words[0] == "keras-attn"
        extra = ["--max-new-tokens", "4"] if words[1] == "generate" else []
        assert cli.main(words[1:] + extra) == 0, command
    assert os.path.exists(os.path.join(out, "lm.tflite"))
    # Generated text on stdout, the timing table on stderr (pipe-friendly).
    printed = capsys.readouterr()
    assert "self driving cars" in printed.out
    assert "tokens/s" in printed.err and "tokens/s" not in printed.out


@pytest.mark.large
def test_translator_run_and_rerun(tmp_path):
    _needs_data("train_translator")
    out = str(tmp_path / "translator")
    args = ["--output-dir", out, *TINY]
    stdout = _example("train_translator", args, tmp_path)
    summary = _summary(stdout)
    results = "\n".join(summary["results"])
    assert re.search(r"held-out BLEU-2 [\d.]+ vs copy-source baseline "
                     r"[\d.]+ on 30 test sentences", results)
    assert re.search(r"translation: 30 sentences in [\d.]+ s \(greedy, KV "
                     r"cache, one batch, after compilation", results)
    for name in ("best.keras", "source_vocabulary.txt",
                 "target_vocabulary.txt", "cross_attention.png"):
        assert os.path.join(out, name) in summary["saved"]
    assert all(os.path.exists(path) for path in summary["saved"])
    assert any("--source-vocabulary" in line for line in summary["next"])
    again = _example("train_translator", args, tmp_path)
    assert f"{out}: already trained 1/1 epochs; nothing to train." in again
    assert _held_out(again) == _held_out(stdout)


@pytest.mark.large
def test_tiny_example(tmp_path):
    out = str(tmp_path / "tiny")
    result = _run([str(EXAMPLES / "train_tiny.py"), "--epochs", "1",
                   "--train-size", "300", "--output-dir", out], tmp_path)
    if result.returncode != 0:  # One epoch on 300 examples may not learn.
        assert "did not beat the baseline" in result.stderr
    summary = _summary(result.stdout)
    assert re.search(r"held-out accuracy [\d.]+ vs majority-class baseline",
                     summary["results"][0])
    assert summary["saved"] == [os.path.join(out, "model.keras")]
    assert os.path.exists(summary["saved"][0])



# The device count is fixed when a backend starts, so each run is a fresh
# process: JAX gets 4 virtual CPU devices from XLA_FLAGS; TensorFlow gets 2
# logical CPUs from this prefix, which then runs the script as __main__.
JAX_4_DEVICES = {"KERAS_BACKEND": "jax",
                 "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
TENSORFLOW_2_CPUS = ["-c", (
    "import runpy, sys; import tensorflow as tf; "
    "cpu = tf.config.list_physical_devices('CPU')[0]; "
    "tf.config.set_logical_device_configuration("
    "cpu, [tf.config.LogicalDeviceConfiguration()] * 2); "
    "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
)]


def _epochs(out):
    """`(epoch, learning rate, session)` of every epoch in run.json."""
    with open(os.path.join(out, "run.json")) as f:
        history = json.load(f)["history"]
    return [(e["epoch"], e["learning_rate"], e["session"]) for e in history]


@pytest.mark.large
def test_language_model_continues_on_another_mesh(tmp_path):
    """JAX, 4 virtual devices: one epoch data-parallel (4 replicas), then
    the same run continued model-parallel on a 2 x 2 mesh (2 replicas of
    weights split in 2) for its second epoch."""
    module = _module("train_lm")
    out = str(tmp_path / "lm")
    # 4 windows per replica: at these sizes the validation and test splits
    # hold only a few global batches.
    args = ["--output-dir", out, "--sequence-length", "16", *TINY,
            "--num-heads", "4", "--batch-size", "4"]
    stdout = _example("train_lm", [*args, "--distribution", "data"],
                      tmp_path, JAX_4_DEVICES)
    assert f"{out}: new run of 1 epoch." in stdout
    assert re.findall(r"^epoch (\d)/1", stdout, re.M) == ["1"]
    lr = module.LEARNING_RATE
    assert (f"distribution data: 4 replicas, mesh batch 4; global batch 16 "
            f"(4 per replica), learning rate {4 * lr:g} ({lr:g} scaled "
            "linear)") in _summary(stdout)["results"]

    more = _example("train_lm", [*args, "--distribution", "model",
                                 "--mesh-shape", "2,2", "--epochs", "2"],
                    tmp_path, JAX_4_DEVICES)
    assert f"{out}: continuing after epoch 1 of 2." in more
    assert re.findall(r"^epoch (\d)/2", more, re.M) == ["2"]
    results = _summary(more)["results"]
    assert re.search(r"held-out perplexity [\d.]+ vs unigram", results[0])
    assert "trained 2 epochs in" in results[1]
    assert (f"distribution model: 2 replicas, mesh batch 2 x model 2; "
            f"global batch 8 (4 per replica), learning rate {2 * lr:g} "
            f"({lr:g} scaled linear)") in results
    # The backup restored epoch 1's weights and optimizer, and epoch 2
    # trained with its own learning rate, not the restored one.
    assert _epochs(out) == [
        (1, pytest.approx(4 * lr), {"distribution": "data", "replicas": 4,
                                    "processes": 1, "mesh": {"batch": 4},
                                    "global_batch_size": 16}),
        (2, pytest.approx(2 * lr), {"distribution": "model", "replicas": 2,
                                    "processes": 1,
                                    "mesh": {"batch": 2, "model": 2},
                                    "global_batch_size": 8}),
    ]
    with open(os.path.join(out, "backup", "training_metadata.json")) as f:
        assert json.load(f)["epoch"] == 2
    with open(os.path.join(out, "best.keras.json")) as f:
        best = json.load(f)
    val_losses = [e["val_loss"] for e in json.load(
        open(os.path.join(out, "run.json")))["history"]]
    assert best["value"] == pytest.approx(min(val_losses))


@pytest.mark.large
def test_classifier_data_parallel_on_two_tensorflow_cpus_then_one(
    tmp_path
):
    """TensorFlow MirroredStrategy over 2 logical CPUs for one epoch, then
    the run continued on one device."""
    module = _module("train_classifier")
    out = str(tmp_path / "classifier")
    args = ["--output-dir", out, "--sequence-length", "16", *TINY,
            "--batch-size", "8"]
    tensorflow = {"KERAS_BACKEND": "tensorflow"}
    stdout = _example("train_classifier", [*args, "--distribution", "data"],
                      tmp_path, tensorflow, prefix=TENSORFLOW_2_CPUS)
    assert f"{out}: new run of 1 epoch." in stdout
    lr = module.LEARNING_RATE
    summary = _summary(stdout)
    assert (f"distribution data: 2 replicas; global batch 16 (8 per "
            f"replica), learning rate {2 * lr:g} ({lr:g} scaled linear)"
            ) in summary["results"]
    for name in ("best.keras", "vocabulary.txt", "class_names.txt",
                 "attention.png", "run.json", "backup", "logs"):
        assert os.path.join(out, name) in summary["saved"]
    assert all(os.path.exists(path) for path in summary["saved"])

    more = _example("train_classifier", [*args, "--epochs", "2"], tmp_path,
                    tensorflow)
    assert f"{out}: continuing after epoch 1 of 2." in more
    assert re.findall(r"^epoch (\d)/2", more, re.M) == ["2"]
    assert _epochs(out) == [
        (1, pytest.approx(2 * lr), {"distribution": "data", "replicas": 2,
                                    "processes": 1, "global_batch_size": 16}),
        (2, pytest.approx(lr), {"distribution": "none", "replicas": 1,
                                "processes": 1, "global_batch_size": 8}),
    ]
