"""Crash-safe training: a killed run resumes, the best model file is never
half-written."""

import json
import os

import keras
import numpy as np
import pytest

from keras_attn import models
from keras_attn import training


class _Crash(keras.callbacks.Callback):
    def __init__(self, at_epoch):
        super().__init__()
        self.at_epoch = at_epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.at_epoch:
            raise RuntimeError("simulated crash")


def _data():
    rng = np.random.default_rng(0)
    x = rng.integers(1, 20, size=(32, 6)).astype("int32")
    y = (x[:, 0] > 10).astype("int32")
    return x, y


def _model():
    model = models.encoder_classifier(20, 6, num_layers=1, hidden_dim=8,
                                      num_heads=2)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    return model


def test_killed_run_resumes_where_it_stopped(tmp_path):
    x, y = _data()
    out = str(tmp_path / "run")
    with pytest.raises(RuntimeError, match="simulated crash"):
        _model().fit(x, y, epochs=4, validation_split=0.25, verbose=0,
                     callbacks=training.standard_callbacks(
                         out, tensorboard=False) + [_Crash(1)])
    assert os.path.exists(os.path.join(out, "best.keras"))
    seen = []
    resumed = _model().fit(
        x, y, epochs=4, validation_split=0.25, verbose=0,
        callbacks=training.standard_callbacks(out, tensorboard=False) + [
            keras.callbacks.LambdaCallback(
                on_epoch_begin=lambda epoch, logs: seen.append(epoch))])
    assert seen == [2, 3]  # epochs 0 and 1 finished before the crash
    assert len(resumed.history["loss"]) == 2
    assert not os.path.exists(os.path.join(out, "backup"))  # cleaned up
    best = json.load(open(os.path.join(out, "best.keras.json")))
    assert best["value"] == pytest.approx(min(
        resumed.history["val_loss"] + [best["value"]]))
    keras.saving.load_model(os.path.join(out, "best.keras"))


def test_failed_save_leaves_the_previous_best(tmp_path, monkeypatch):
    x, y = _data()
    path = str(tmp_path / "best.keras")
    model = _model()
    model.fit(x, y, epochs=1, validation_split=0.25, verbose=0,
              callbacks=[training.BestModelCheckpoint(path)])
    before = open(path, "rb").read()

    def broken_save(*args, **kwargs):
        with open(args[0], "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    checkpoint = training.BestModelCheckpoint(path, monitor="loss")
    checkpoint.set_model(model)
    monkeypatch.setattr(model, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.on_epoch_end(0, {"loss": 0.0})
    assert open(path, "rb").read() == before
    assert sorted(os.listdir(tmp_path)) == ["best.keras", "best.keras.json"]


def test_bad_arguments():
    with pytest.raises(ValueError, match="path"):
        training.BestModelCheckpoint("best.h5")
    with pytest.raises(ValueError, match="mode='up'"):
        training.BestModelCheckpoint("best.keras", mode="up")


def test_mixed_precision_policy():
    assert training.set_mixed_precision(False) == "float32"
    policy = training.set_mixed_precision(True)
    assert policy in ("mixed_float16", "mixed_bfloat16")
    assert keras.config.dtype_policy().name == policy
