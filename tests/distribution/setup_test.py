"""`add_arguments` / `setup` / `DistributionSetup`: flags, argument
errors, the batch and learning-rate rules, and checkpoints written by the
chief only and restored everywhere (in the default TensorFlow process, one
device; the engines themselves run in single_host_test.py and
multi_process_test.py)."""

import argparse
import os

import keras
import numpy as np
import pytest

from keras_attn import distribution
from keras_attn import training


def test_flags_parse_into_a_one_device_setup():
    parser = distribution.add_arguments(argparse.ArgumentParser())
    args = parser.parse_args([])
    assert (args.distribution, args.mesh_shape, args.lr_scaling) == (
        "none", None, "linear")
    setup = distribution.setup(args)
    assert setup.mode == "none" and setup.num_replicas == 1
    assert setup.is_chief and setup.strategy is None
    assert setup.jit_compile and not setup.drop_remainder
    with setup.scope():
        model = setup.build(keras.Sequential, [keras.layers.Dense(2)])
    assert isinstance(model, keras.Sequential)
    args = parser.parse_args(["--distribution", "model", "--mesh-shape",
                              "2,4", "--lr-scaling", "sqrt"])
    assert (args.distribution, args.mesh_shape, args.lr_scaling) == (
        "model", "2,4", "sqrt")


@pytest.mark.parametrize("rule, factor", [
    ("linear", 8.0), ("sqrt", 8 ** 0.5), ("none", 1.0)])
def test_batch_is_per_replica_and_learning_rate_follows_the_rule(
        rule, factor):
    setup = distribution.DistributionSetup("data", lr_scaling=rule)
    setup.num_replicas = 8
    assert setup.global_batch_size(32) == 256
    assert setup.scale_learning_rate(1e-3) == pytest.approx(1e-3 * factor)


@pytest.mark.parametrize("kwargs, match", [
    (dict(distribution="both"), "argument `distribution`"),
    (dict(lr_scaling="cubic"), "argument `lr_scaling`"),
    (dict(distribution="none", mesh_shape="2"), "needs --distribution"),
    (dict(distribution="data", mesh_shape="2,2"), "expected 'BATCH'"),
    (dict(distribution="model", mesh_shape="2"), "'BATCH,MODEL'"),
    (dict(distribution="model", mesh_shape="a,b"), "'BATCH,MODEL'"),
    (dict(distribution="model", mesh_shape="0,2"), "'BATCH,MODEL'"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        distribution.setup(**kwargs)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="the TensorFlow backend's answer")
def test_model_parallel_on_tensorflow_points_to_jax():
    with pytest.raises(ValueError, match="KERAS_BACKEND=jax"):
        distribution.setup(distribution="model")


def _standard(tmp_path):
    return training.standard_callbacks(str(tmp_path), monitor="loss",
                                       tensorboard=True)


def test_the_chief_keeps_every_callback(tmp_path):
    setup = distribution.DistributionSetup("data")
    callbacks = _standard(tmp_path) + [keras.callbacks.EarlyStopping()]
    assert setup.callbacks(callbacks) == callbacks


def test_other_processes_keep_no_writer(tmp_path):
    setup = distribution.DistributionSetup("data")
    setup.is_chief = False
    stop = keras.callbacks.EarlyStopping()
    extra = [stop, keras.callbacks.CSVLogger("x.csv"),
             keras.callbacks.ModelCheckpoint("x.keras")]
    kept = setup.callbacks(_standard(tmp_path / "run") + extra)
    # The restore first, then the compiled learning rate set again.
    assert [type(c).__name__ for c in kept] == [
        "RestoreOnly", "KeepLearningRate", "EarlyStopping"]
    assert kept[0].backup_dir == os.path.join(tmp_path, "run", "backup")
    assert kept[2] is stop


def _model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), "mse")
    return model


class _Stop(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        raise RuntimeError("stop")


def test_a_non_chief_restores_the_chief_s_backup_and_writes_nothing(
        tmp_path):
    """The chief trains one epoch and dies; another process then restores
    its weights, optimizer state and epoch from the chief's backup, trains,
    and leaves the backup as it found it."""
    x = np.arange(12, dtype="float32").reshape(4, 3) / 12
    y = np.ones((4, 2), "float32")
    backup = tmp_path / "backup"
    chief = _model()
    with pytest.raises(RuntimeError, match="stop"):
        chief.fit(x, y, epochs=3, verbose=0, callbacks=[
            keras.callbacks.BackupAndRestore(str(backup)), _Stop()])
    saved = {p.name: p.read_bytes() for p in backup.iterdir()}

    worker = distribution.DistributionSetup("data")
    worker.is_chief = False
    other = _model()
    other.set_weights([np.zeros_like(w) for w in other.get_weights()])
    callbacks = worker.callbacks(
        [keras.callbacks.BackupAndRestore(str(backup))])
    history = other.fit(x, y, epochs=2, verbose=0, callbacks=callbacks)
    assert history.epoch == [1]  # the chief finished epoch 0

    reference = _model()  # two epochs without interruption
    reference.fit(x, y, epochs=2, verbose=0)
    for got, want in zip(other.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(got, want, atol=1e-6)
    assert {p.name: p.read_bytes() for p in backup.iterdir()} == saved
