"""Nothing lost: a killed training run resumes, a killed export leaves the
previous file, files round-trip bit for bit in a fresh process, and a
seeded run is reproducible.

Each test runs the work in a child process, as a user's command would run,
and kills it with SIGKILL (`kill -9`: no cleanup code runs).
"""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from keras_attn import models

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
ON_TENSORFLOW = keras.backend.backend() == "tensorflow"

pytestmark = [
    pytest.mark.large,
    pytest.mark.skipif(os.name != "posix", reason="needs kill -9"),
]


def _env():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
                PYTHONPATH=ROOT + os.pathsep
                + os.environ.get("PYTHONPATH", ""))


def _fit(run_dir, epochs, *flags):
    """Runs the worker to the end; returns (stdout lines, final report)."""
    result = subprocess.run(
        [sys.executable, "-m", "tests.reliability.fit_worker", str(run_dir),
         str(epochs), *flags], cwd=ROOT, env=_env(), capture_output=True,
        text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    return lines, json.loads(lines[-1])


def _weights(run_dir):
    with np.load(os.path.join(run_dir, "final.npz")) as saved:
        return [saved[f"arr_{i}"] for i in range(len(saved.files))]


def test_training_killed_mid_epoch_resumes_where_it_stopped(tmp_path):
    run_dir = tmp_path / "run"
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.reliability.fit_worker", str(run_dir),
         "3", "--slow"], cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True)
    try:
        for line in child.stdout:
            if line.strip() == "EPOCH_DONE 1":
                break
        else:
            pytest.fail("the run ended before its first epoch")
        time.sleep(0.5)  # inside epoch 2: 12 batches of >= 0.05 s each
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    assert not os.path.exists(run_dir / "final.npz")

    lines, report = _fit(run_dir, 3)
    assert lines[0].endswith("continuing after epoch 1 of 3.")
    assert report["epochs"] == [2, 3]  # epoch 1 is not redone
    assert all(np.isfinite(report["losses"]))
    with open(run_dir / "run.json") as f:
        recorded = [entry["epoch"] for entry in json.load(f)["history"]]
    assert recorded == [1, 2, 3]
    # A third call has nothing left to do.
    lines, report = _fit(run_dir, 3)
    assert "already trained 3/3 epochs" in lines[0] and report["epochs"] == []


def test_two_seeded_runs_give_identical_weights(tmp_path):
    _fit(tmp_path / "a", 2)
    _fit(tmp_path / "b", 2)
    for a, b in zip(_weights(tmp_path / "a"), _weights(tmp_path / "b"),
                    strict=True):
        np.testing.assert_array_equal(a, b)


def _classifier(path):
    model = models.encoder_classifier(40, 8, num_classes=3, num_layers=1,
                                      hidden_dim=16, num_heads=2,
                                      position="rotary")
    model.set_weights([np.random.default_rng(i).normal(size=w.shape)
                       .astype(w.dtype) for i, w in
                       enumerate(model.get_weights())])
    model.save(path)
    return model


def test_keras_file_round_trips_bit_for_bit_in_a_fresh_process(tmp_path):
    model = _classifier(tmp_path / "m.keras")
    # As a user loads it: keras_attn imported (it registers the layers),
    # no custom_objects, safe_mode on.
    code = ("import sys, numpy as np, keras, keras_attn\n"
            "m = keras.saving.load_model(sys.argv[1])\n"
            "np.savez(sys.argv[2], *[np.asarray(w) for w in "
            "m.get_weights()])\n")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "m.keras"),
                    str(tmp_path / "w.npz")], cwd=ROOT, env=_env(),
                   check=True, capture_output=True, timeout=300)
    with np.load(tmp_path / "w.npz") as saved:
        loaded = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    for want, got in zip(model.get_weights(), loaded, strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.skipif(not ON_TENSORFLOW, reason="SavedModel needs TensorFlow")
def test_saved_model_holds_the_weights_bit_for_bit(tmp_path):
    from keras_attn.export import export_saved_model

    model = _classifier(tmp_path / "m.keras")
    export_saved_model(model, str(tmp_path / "sm"))
    code = ("import sys, numpy as np, tensorflow as tf\n"
            "v = tf.saved_model.load(sys.argv[1]).variables\n"
            "np.savez(sys.argv[2], *[x.numpy() for x in v])\n")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "sm"),
                    str(tmp_path / "v.npz")], cwd=ROOT, env=_env(),
                   check=True, capture_output=True, timeout=300)
    with np.load(tmp_path / "v.npz") as saved:
        loaded = [saved[name] for name in saved.files]
    for want in model.get_weights():
        assert any(got.shape == want.shape and np.array_equal(got, want)
                   for got in loaded), want.shape


@pytest.mark.skipif(not ON_TENSORFLOW, reason="TFLite export needs "
                                              "TensorFlow")
def test_export_killed_mid_run_leaves_the_previous_file(tmp_path):
    """Killed at several moments (loading, converting, measuring after the
    write), the file is the previous one or a complete new one, never a
    partial one; the next export cleans up what the killed ones left."""
    from ai_edge_litert.interpreter import Interpreter

    _classifier(tmp_path / "m.keras")
    out = tmp_path / "out.tflite"
    previous = b"the previous export"
    command = [sys.executable, "-c",
               "import sys; from keras_attn.cli import main; "
               "sys.exit(main(sys.argv[1:]))",
               "export", str(tmp_path / "m.keras"), str(out)]
    outcomes = set()
    for delay in (1.0, 3.0, 5.0, 7.0):
        out.write_bytes(previous)
        child = subprocess.Popen(command, cwd=ROOT, env=_env(),
                                 stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        child.wait()
        content = out.read_bytes()
        if content == previous:
            outcomes.add("previous")
        else:  # complete: LiteRT loads it and it runs
            interpreter = Interpreter(model_content=content)
            interpreter.allocate_tensors()
            outcomes.add("new")
    assert "previous" in outcomes  # at least one kill landed before the end
    subprocess.run(command, cwd=ROOT, env=_env(), check=True,
                   capture_output=True, timeout=600)
    Interpreter(model_path=str(out)).allocate_tensors()
    assert sorted(os.listdir(tmp_path)) == ["m.keras", "out.tflite"]
