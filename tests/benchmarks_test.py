"""The side-by-side benchmarks: their keras-hub counterparts compute the
same function as our models, their timing helper, and smoke runs of each
script at a toy shape (large: each starts Python, Keras and a converter)."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS = os.path.join(ROOT, "benchmarks")
sys.path.insert(0, BENCHMARKS)

import common  # noqa: E402

from keras_attn import models  # noqa: E402


def test_keras_hub_classifier_matches_ours_with_copied_weights():
    shapes = common.TINY_SHAPES
    ours = models.encoder_classifier(num_classes=3, dropout=0.0, **shapes)
    theirs = common.keras_hub_encoder_classifier(num_classes=3, **shapes)
    common.randomize_weights(ours, seed=3)
    common.copy_weights(ours, theirs)
    ids = common.token_batch(4, shapes["sequence_length"],
                             shapes["vocabulary_size"], padded_fraction=0.5)
    assert (ids == 0).any()  # padding is exercised
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(ours(ids)),
        keras.ops.convert_to_numpy(theirs(ids)), atol=1e-5)


def test_keras_hub_decoder_lm_matches_ours_with_copied_weights():
    shapes = common.TINY_SHAPES
    ours = models.decoder_lm(dropout=0.0, **shapes)
    theirs = common.keras_hub_decoder_lm(**shapes)
    common.randomize_weights(ours, seed=4)
    common.copy_weights(ours, theirs)
    ids = common.token_batch(2, shapes["sequence_length"],
                             shapes["vocabulary_size"], padded_fraction=0.0)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(ours(ids)),
        keras.ops.convert_to_numpy(theirs(ids)), atol=1e-4)


def test_randomize_weights_leaves_no_zero_bias_or_unit_scale():
    model = models.encoder_classifier(**common.TINY_SHAPES)
    common.randomize_weights(model)
    for variable in model.weights:
        value = keras.ops.convert_to_numpy(variable)
        assert np.all(value != 0), variable.path
        assert not np.allclose(value, 1.0), variable.path


def test_copy_weights_rejects_different_models():
    small = models.encoder_classifier(**common.TINY_SHAPES)
    other = models.encoder_classifier(**dict(common.TINY_SHAPES,
                                             hidden_dim=8))
    with pytest.raises(ValueError, match="variables differ"):
        common.copy_weights(small, other)


def test_interleaved_times_every_candidate_each_round_in_turn():
    calls = []
    timing = common.interleaved(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
        rounds=4, calls_per_round=2, warmup=1)
    assert calls[:2] == ["a", "b"]  # warm-up
    timed = calls[2:]
    assert timed.count("a") == timed.count("b") == 8
    # The order rotates, so neither always runs first.
    assert timed[0] == "a" and timed[4] == "b"
    assert len(timing.times["a"]) == len(timing.times["b"]) == 4
    assert timing.ratio("a", "a") == 1.0


def test_ratio_is_the_median_of_per_round_ratios():
    timing = common.Timing({"x": [1.0, 2.0, 9.0], "y": [2.0, 2.0, 3.0]})
    # Per-round ratios 0.5, 1.0, 3.0: median 1.0 (the medians' ratio is 1).
    assert timing.ratio("x", "y") == 1.0
    assert timing.median("x") == 2.0


def test_gpu_train_flops_per_token_counts_matmuls_and_attention():
    import gpu_train

    c = dict(vocabulary_size=10, sequence_length=4, num_layers=2,
             hidden_dim=3, num_heads=1, intermediate_dim=5)
    weights = 2 * (4 * 9 + 2 * 15) + 10 * 3
    assert gpu_train.flops_per_token(c) == 6 * weights + 12 * 2 * 4 * 3


def _run(script, *args, env=None):
    done = subprocess.run(
        [sys.executable, os.path.join(BENCHMARKS, script), *args],
        cwd=ROOT, env=dict(os.environ, **(env or {})), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:]
    return done.stdout


def _table_rows(out):
    return [line for line in out.splitlines()
            if line.startswith("| ") and not line.startswith("| weights")
            and "---" not in line]


@pytest.mark.large
def test_tflite_vs_keras_hub_runs_tiny():
    out = _run("tflite_vs_keras_hub.py", "--tiny",
               "--quantizations", "float32,dynamic_int8")
    assert "| float32 |" in out and "| dynamic_int8 |" in out
    assert "x** |" in out


@pytest.mark.large
def test_litertlm_decode_runs_tiny():
    out = _run("litertlm_decode.py", "--tiny")
    rows = _table_rows(out)
    assert [row.split(" | ")[0] for row in rows] == [
        "| float32", "| dynamic_int8", "| int4"], out[-3000:]
    # Every variant measured: 10 columns after the weights, none empty.
    assert all(len(row.strip("|").split("|")) == 11 for row in rows)


@pytest.mark.large
def test_prefill_runs_tiny():
    out = _run("prefill.py", "--tiny", "--prompt-lengths", "1,8")
    assert "| 8 |" in out and "per-token ratio" in out


@pytest.mark.large
def test_train_vs_keras_hub_runs_tiny_on_jax():
    out = _run("train_vs_keras_hub.py", "--tiny", "--backends", "jax",
               "--precisions", "float32")
    assert "| JAX | float32 |" in out


@pytest.mark.large
def test_gpu_train_runs_tiny_on_cpu():
    out = _run("gpu_train.py", "--tiny", "--candidates", "ours,keras_hub")
    rows = [line for line in out.splitlines()
            if line.startswith("| ours |") or line.startswith(
                "| keras_hub |")]
    assert len(rows) == 2, out[-3000:]
    # The kernel report read a dumped train-step HLO (CPU: XLA's own).
    assert all("XLA (no cuDNN fused attention" in row for row in rows)
    assert "ours / keras_hub:" in out


@pytest.mark.large
def test_gpu_train_torch_path_runs_tiny_on_cpu():
    pytest.importorskip("torch")
    out = _run("gpu_train.py", "--tiny", "--candidates", "torch")
    (row,) = [line for line in out.splitlines()
              if line.startswith("| torch |")]
    assert "scaled_dot_product" in row or "flash" in row, row
