"""The shell commands of README.md, docs/export.md and export/README.md, run
as written on the example scripts' own outputs.

The only changes: the training commands get tiny sizes appended (one epoch
of a one-layer model on 300 examples), and `pip install` lines are skipped
(this environment has the packages). Each page runs in a fresh folder that
holds `examples/` and the `runs/` the training commands wrote, as a user's
checkout does after following the README.
"""

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
PAGES = ["README.md", "docs/export.md", "export/README.md",
         "docs/litertlm.md"]
# Width 32: int4 blocks (32 values) must divide the width.
TINY = ["--max-examples", "300", "--epochs", "1", "--num-layers", "1",
        "--hidden-dim", "32", "--num-heads", "2", "--vocabulary-size", "300",
        "--batch-size", "16"]
BLOCK = re.compile(r"^```(?:sh|bash)\n(.*?)^```", re.S | re.M)
PYTHON = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
# The input file of the documented batch translation (a user's own file).
SENTENCES = "Der Hund bellt.\nIch bin müde.\n"

pytestmark = [
    pytest.mark.large,
    pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                       reason="keras-attn export needs TensorFlow"),
    pytest.mark.skipif(not os.path.isfile(data.TRANSLATION_PATH),
                       reason="the Debian package trans-de-en is not "
                              "installed (the translator example's data)"),
]


def documented_commands(page):
    """The commands of a page's sh/bash blocks, continuation lines joined,
    without the Quickstart (CI runs it) and `pip install` lines."""
    commands = []
    for block in BLOCK.findall((ROOT / page).read_text()):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if not words or line.startswith("python3 -m venv"):
                continue
            if words[:2] == ["pip", "install"]:
                continue
            commands.append(line)
    return commands


def is_training(command):
    words = shlex.split(command, comments=True)
    return (words[0] == "python" and len(words) > 1
            and words[1].startswith("examples/train_"))


def run(command, cwd):
    if is_training(command):
        command = shlex.join(shlex.split(command, comments=True) + TINY)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
               PATH=os.path.dirname(sys.executable) + os.pathsep
               + os.environ.get("PATH", ""))
    result = subprocess.run(["bash", "-c", command], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (command, result.stderr[-3000:])
    assert "Traceback" not in result.stderr, (command, result.stderr)
    return result


def checkout(folder, runs=None):
    """A folder laid out like the user's checkout: examples/ and runs/."""
    folder.mkdir()
    (folder / "examples").symlink_to(ROOT / "examples")
    if runs is not None:
        (folder / "runs").symlink_to(runs)
    (folder / "sentences.txt").write_text(SENTENCES)
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The README's training commands, run once at tiny sizes."""
    folder = checkout(tmp_path_factory.mktemp("first") / "checkout")
    training = [c for c in documented_commands("README.md")
                if is_training(c)]
    assert len(training) == 3, training
    for command in training:
        run(command, folder)
    for name in ("classifier", "lm", "translator"):
        assert (folder / "runs" / name / "best.keras").is_file()
    return folder / "runs"


def test_every_page_documents_commands():
    for page in PAGES:
        assert documented_commands(page), page


def test_readme_commands(runs, tmp_path):
    folder = checkout(tmp_path / "checkout", runs)
    outputs = [run(c, folder) for c in documented_commands("README.md")]
    # A re-run of a finished training run says so instead of training.
    assert all("already trained 1/1 epochs" in o.stdout for o in outputs[:3])
    assert (folder / "lm.tflite").is_file()
    assert (folder / "lm.litertlm").is_file()
    for generated in (outputs[4], outputs[-1]):  # .tflite, .litertlm
        assert generated.stdout.strip()  # the generated text
        assert "tokens/s" in generated.stderr  # the timing table


def test_docs_export_commands(runs, tmp_path):
    folder = checkout(tmp_path / "checkout", runs)
    outputs = [run(c, folder) for c in documented_commands("docs/export.md")]
    for name in ("classifier.tflite", "lm.tflite", "lm_saved_model"):
        assert (folder / name).exists(), name
    class_names = (runs / "classifier" / "class_names.txt").read_text().split()
    printed = [line.split("\t") for line in outputs[-1].stdout.splitlines()]
    assert [text for _, _, text in printed] == ["I love it", "I hate it"]
    assert all(label in class_names for label, _, _ in printed), printed


def test_litertlm_commands(runs, tmp_path):
    folder = checkout(tmp_path / "checkout", runs)
    outputs = [run(c, folder) for c in documented_commands("docs/litertlm.md")]
    for name in ("lm.litertlm", "lm_int4.litertlm"):
        assert (folder / name).is_file(), name
    assert outputs[-1].stdout.strip() and "tokens/s" in outputs[-1].stderr


def test_device_guide_commands(runs, tmp_path):
    folder = checkout(tmp_path / "checkout", runs)
    outputs = [run(c, folder)
               for c in documented_commands("export/README.md")]
    for name in ("classifier.tflite", "lm.tflite", "translator.tflite",
                 "keras_attn_runtime.pyz"):
        assert (folder / name).is_file(), name
    translations = (folder / "translations.txt").read_text().splitlines()
    assert len(translations) == len(SENTENCES.splitlines())
    assert all(line.strip() for line in translations)
    assert outputs[-1].stdout.strip()  # the piped prompt's continuation

    # Its Python example, in the same folder, with the vocabulary file the
    # example names ("a file without a description") beside the model.
    (folder / "vocabulary.txt").write_text(
        (runs / "lm" / "vocabulary.txt").read_text())
    (code,) = PYTHON.findall((ROOT / "export/README.md").read_text())
    result = subprocess.run([sys.executable, "-c", code], cwd=folder,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "prefill" in result.stdout  # generator.last_timings
