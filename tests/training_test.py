"""Crash-safe training: a killed run resumes, a re-run continues or says it
is done, other settings are refused, the best model file is never
half-written, and progress is printed within epochs."""

import io
import json
import os
import re

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


def _fit(run, epochs_seen=None, extra=()):
    """Fits a fresh model the way the examples do; returns the History."""
    x, y = _data()
    callbacks = run.callbacks(tensorboard=False, progress_interval=None)
    if epochs_seen is not None:
        callbacks.append(keras.callbacks.LambdaCallback(
            on_epoch_begin=lambda epoch, logs: epochs_seen.append(epoch)))
    return _model().fit(x, y, epochs=run.epochs, validation_split=0.25,
                        verbose=0, callbacks=callbacks + list(extra))


SETTINGS = {"hidden_dim": 8, "data": training.fingerprint([1, 2, 3])}


def test_rerun_continues_to_the_total_epochs_or_says_it_is_done(tmp_path):
    out = str(tmp_path / "run")
    run = training.TrainingRun(out, SETTINGS, epochs=1)
    assert (run.resumed, run.epochs_done, run.finished) == (False, 0, False)
    assert run.describe() == f"{out}: new run of 1 epoch."
    first = _fit(run)
    assert run.epochs_done == 1

    again = training.TrainingRun(out, dict(SETTINGS), epochs=1)
    assert again.resumed and again.finished and again.epochs_done == 1
    assert again.describe() == (
        f"{out}: already trained 1/1 epochs; nothing to train.")

    more = training.TrainingRun(out, SETTINGS, epochs=3)
    assert not more.finished
    assert more.describe() == f"{out}: continuing after epoch 1 of 3."
    seen = []
    second = _fit(more, seen)
    assert seen == [1, 2]  # Epochs 2 and 3 only.
    assert more.epochs_done == 3
    assert training.TrainingRun(out, SETTINGS, epochs=2).describe() == (
        f"{out}: already trained 3 epochs (asked for 2); nothing to train.")

    # run.json: the settings and every epoch's metrics, across sessions.
    record = json.load(open(os.path.join(out, "run.json")))
    assert record["config"] == SETTINGS
    val_losses = first.history["val_loss"] + second.history["val_loss"]
    assert [e["epoch"] for e in record["history"]] == [1, 2, 3]
    assert [e["val_loss"] for e in record["history"]] == pytest.approx(
        val_losses)
    assert more.history() == record["history"]
    assert more.training_seconds() == pytest.approx(
        sum(e["seconds"] for e in record["history"]))
    # The best model is the best of all three epochs, whichever session.
    best = more.best()
    assert best["value"] == pytest.approx(min(val_losses))
    assert best["epoch"] == 1 + int(np.argmin(val_losses))
    assert more.summary_lines()[0].startswith("trained 3 epochs in ")
    assert f"best val_loss {min(val_losses):.4f} at epoch {best['epoch']}" in (
        more.summary_lines()[0])


def test_killed_run_is_continued_by_a_training_run(tmp_path):
    out = str(tmp_path / "run")
    run = training.TrainingRun(out, SETTINGS, epochs=4)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _fit(run, extra=[_Crash(1)])
    resumed = training.TrainingRun(out, SETTINGS, epochs=4)
    assert resumed.resumed and resumed.epochs_done == 2
    seen = []
    _fit(resumed, seen)
    assert seen == [2, 3]
    record = json.load(open(os.path.join(out, "run.json")))
    assert [e["epoch"] for e in record["history"]] == [1, 2, 3, 4]


def test_other_settings_are_refused_until_overwrite(tmp_path):
    out = str(tmp_path / "run")
    _fit(training.TrainingRun(out, SETTINGS, epochs=1))
    before = open(os.path.join(out, "best.keras"), "rb").read()
    other = dict(SETTINGS, hidden_dim=16, batch_size=4)
    with pytest.raises(ValueError) as error:
        training.TrainingRun(out, other, epochs=2)
    message = str(error.value)
    assert "other settings" in message
    assert "batch_size: (unset) there, 4 now" in message
    assert "hidden_dim: 8 there, 16 now" in message
    assert "overwrite=True" in message
    assert open(os.path.join(out, "best.keras"), "rb").read() == before

    run = training.TrainingRun(out, other, epochs=1, overwrite=True)
    assert (run.resumed, run.epochs_done) == (False, 0)
    assert sorted(os.listdir(out)) == ["run.json"]
    assert json.load(open(os.path.join(out, "run.json")))["config"] == other


def test_settings_without_trained_state_are_replaced(tmp_path):
    # A run stopped before its first epoch ended left only run.json.
    out = str(tmp_path / "run")
    training.TrainingRun(out, SETTINGS, epochs=1)
    other = dict(SETTINGS, hidden_dim=16)
    run = training.TrainingRun(out, other, epochs=1)
    assert not run.resumed
    assert json.load(open(os.path.join(out, "run.json")))["config"] == other
    # A vocabulary written for SETTINGS must not be reused now.
    assert not training.TrainingRun(out, SETTINGS, epochs=1).resumed


def test_unrecorded_best_model_is_refused(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "best.keras").write_bytes(b"an older model")
    with pytest.raises(ValueError, match="settings were not recorded"):
        training.TrainingRun(str(out), SETTINGS, epochs=1)
    run = training.TrainingRun(str(out), SETTINGS, epochs=1, overwrite=True)
    assert not (out / "best.keras").exists() and run.epochs_done == 0


def test_training_run_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="epochs=0"):
        training.TrainingRun(str(tmp_path), SETTINGS, epochs=0)
    with pytest.raises(ValueError, match="epochs=True"):
        training.TrainingRun(str(tmp_path), SETTINGS, epochs=True)
    with pytest.raises(TypeError, match="config"):
        training.TrainingRun(str(tmp_path), [("hidden_dim", 8)], epochs=1)
    with pytest.raises(ValueError, match="interval=-1"):
        training.ProgressLogger(interval=-1)


def test_progress_lines_within_and_after_epochs(tmp_path):
    x, y = _data()  # 24 training rows: 6 steps of 4.
    stream = io.StringIO()
    checkpoint = training.BestModelCheckpoint(str(tmp_path / "best.keras"))
    history = _model().fit(
        x, y, batch_size=4, epochs=2, validation_split=0.25, verbose=0,
        callbacks=[checkpoint, training.ProgressLogger(
            interval=0, checkpoint=checkpoint, stream=stream)])
    lines = stream.getvalue().splitlines()
    assert re.fullmatch(
        r"  first step done in \d+\.\d s \(includes compilation\)", lines[0])
    # Steps 2..5 of each epoch: the first starts the rate, the last is
    # followed by the epoch line.
    steps = [line for line in lines if "step " in line and "first" not in line]
    assert [re.search(r"step (\d+)/6", line).group(1) for line in steps] == [
        "2", "3", "4", "5", "2", "3", "4", "5"]
    assert all(re.search(r"loss \d+\.\d{4}  [\d.]+ steps/s, \d+ s left in "
                         r"epoch$", line) for line in steps)
    epoch_lines = [line for line in lines if line.startswith("epoch ")]
    assert len(epoch_lines) == 2
    for epoch, line in enumerate(epoch_lines):
        assert line.startswith(
            f"epoch {epoch + 1}/2  loss {history.history['loss'][epoch]:.4f}"
            f"  val_loss {history.history['val_loss'][epoch]:.4f}  (")
    val_losses = history.history["val_loss"]
    assert epoch_lines[0].endswith("-> best.keras (new best val_loss)")
    assert epoch_lines[1].endswith("-> best.keras (new best val_loss)") == (
        val_losses[1] < val_losses[0])


def test_summary_and_rerun_command():
    stream = io.StringIO()
    training.print_summary(
        ["accuracy 0.9 vs baseline 0.5"],
        [("runs/x/best.keras", "the model"), ("runs/x/vocabulary.txt", "")],
        ["keras-attn export runs/x/best.keras x.tflite"], stream=stream)
    assert stream.getvalue() == (
        "\n== Summary ==\n"
        "  accuracy 0.9 vs baseline 0.5\n"
        "Saved:\n"
        "  runs/x/best.keras      the model\n"
        "  runs/x/vocabulary.txt  \n"
        "Next:\n"
        "  keras-attn export runs/x/best.keras x.tflite\n")
    assert training.rerun_command(
        ["examples/train_lm.py", "--epochs=2", "--output-dir", "my runs/a",
         "--overwrite", "--hidden-dim", "8"], 5,
    ) == ("python examples/train_lm.py --output-dir 'my runs/a' "
          "--hidden-dim 8 --epochs 5")
    assert training.rerun_command(["train.py"], 1) == (
        "python train.py --epochs 1")


def test_fingerprint_is_by_content():
    texts = ["a", "b"]
    labels = np.array([0, 1], "int32")
    one = training.fingerprint(list(zip(texts, labels)))
    assert one == training.fingerprint([["a", 0], ["b", 1]])
    assert one != training.fingerprint([["a", 1], ["b", 1]])
    assert one != training.fingerprint([["b", 1], ["a", 0]])
    assert re.fullmatch("[0-9a-f]{16}", one)
    assert training.fingerprint({"b": 1, "a": 2}) == training.fingerprint(
        {"a": 2, "b": 1})


def _compiled(learning_rate):
    model = models.encoder_classifier(20, 6, num_layers=1, hidden_dim=8,
                                      num_heads=2)
    model.compile(keras.optimizers.Adam(learning_rate),
                  keras.losses.SparseCategoricalCrossentropy(
                      from_logits=True))
    return model


def _learning_rate(model):
    return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))


def test_a_resumed_session_trains_with_its_own_learning_rate(tmp_path):
    """Another replica count compiles another (scaled) learning rate: the
    session trains with it, not with the one its backup restores, and
    run.json records each epoch's rate and session."""
    x, y = _data()
    out = str(tmp_path / "run")
    run = training.TrainingRun(out, SETTINGS, epochs=1,
                               session={"replicas": 1})
    _compiled(1e-3).fit(x, y, epochs=1, validation_split=0.25, verbose=0,
                        callbacks=run.callbacks(tensorboard=False,
                                                progress_interval=None))

    # What Keras does alone: the backup brings the old rate back.
    restored = []
    plain = _compiled(4e-3)
    plain.fit(x, y, epochs=1, verbose=0, callbacks=[
        keras.callbacks.BackupAndRestore(os.path.join(out, "backup"),
                                         delete_checkpoint=False),
        keras.callbacks.LambdaCallback(on_train_begin=lambda logs: (
            restored.append(_learning_rate(plain))))])
    assert restored == [pytest.approx(1e-3)]

    more = training.TrainingRun(out, SETTINGS, epochs=3,
                                session={"replicas": 4})
    assert more.resumed and more.epochs_done == 1  # Not a setting.
    used = []
    model = _compiled(4e-3)
    model.fit(x, y, epochs=more.epochs, validation_split=0.25, verbose=0,
              callbacks=more.callbacks(tensorboard=False,
                                       progress_interval=None) + [
                  keras.callbacks.LambdaCallback(
                      on_epoch_begin=lambda epoch, logs: used.append(
                          (epoch, _learning_rate(model))))])
    assert used == [(1, pytest.approx(4e-3)), (2, pytest.approx(4e-3))]
    record = json.load(open(os.path.join(out, "run.json")))
    assert record["config"] == SETTINGS
    assert [(e["epoch"], e["learning_rate"], e["session"])
            for e in record["history"]] == [
        (1, pytest.approx(1e-3), {"replicas": 1}),
        (2, pytest.approx(4e-3), {"replicas": 4}),
        (3, pytest.approx(4e-3), {"replicas": 4}),
    ]


def _files(directory):
    """`{relative path: bytes}` of every file under `directory`."""
    found = {}
    for root, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, directory)] = f.read()
    return found


def test_a_process_that_does_not_write_leaves_the_run_alone(tmp_path):
    """A non-chief process (`write=False`, callbacks through
    `DistributionSetup.callbacks`) reads the run, restores from its backup
    and trains, but writes and deletes nothing."""
    from keras_attn import distribution

    out = str(tmp_path / "run")
    _fit(training.TrainingRun(out, SETTINGS, epochs=1))
    before = _files(out)
    assert {"run.json", "best.keras", "backup/training_metadata.json"} <= (
        set(before))
    worker = distribution.setup()
    worker.is_chief = False

    run = training.TrainingRun(out, SETTINGS, epochs=2, write=False)
    assert (run.resumed, run.epochs_done) == (True, 1)
    seen = []
    _model().fit(*_data(), epochs=run.epochs, validation_split=0.25,
                 verbose=0, callbacks=worker.callbacks(run.callbacks(
                     progress_interval=None)) + [
                     keras.callbacks.LambdaCallback(
                         on_epoch_begin=lambda epoch, logs: seen.append(
                             epoch))])
    assert seen == [1]  # Restored from the chief's backup.
    assert run.epochs_done == 2 and len(run.history()) == 2
    # Other settings are refused there too; overwrite starts from nothing
    # (the chief deletes the state) without deleting anything here.
    with pytest.raises(ValueError, match="other settings"):
        training.TrainingRun(out, dict(SETTINGS, hidden_dim=16), epochs=1,
                             write=False)
    fresh = training.TrainingRun(out, dict(SETTINGS, hidden_dim=16),
                                 epochs=1, overwrite=True, write=False)
    assert (fresh.resumed, fresh.epochs_done) == (False, 0)
    assert _files(out) == before

    # Before any epoch is trained, the chief may still replace run.json
    # and the vocabulary: a non-writer reuses nothing.
    untrained = str(tmp_path / "untrained")
    training.TrainingRun(untrained, SETTINGS, epochs=1)
    assert training.TrainingRun(untrained, SETTINGS, epochs=1).resumed
    assert not training.TrainingRun(untrained, SETTINGS, epochs=1,
                                    write=False).resumed


def test_settings_from_args_leave_out_where_how_long_and_on_what():
    import argparse

    from keras_attn import distribution

    parser = argparse.ArgumentParser()
    for flag, value in (("--output-dir", "runs/x"), ("--epochs", 3),
                        ("--batch-size", 32), ("--hidden-dim", 64)):
        parser.add_argument(flag, default=value)
    parser.add_argument("--overwrite", action="store_true")
    distribution.add_arguments(parser)
    args = parser.parse_args(["--distribution", "data", "--mesh-shape", "2",
                              "--lr-scaling", "sqrt", "--overwrite"])
    assert training.settings_from_args(args) == {"batch_size": 32,
                                                 "hidden_dim": 64}
