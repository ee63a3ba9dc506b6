"""Training helpers shared by the examples and the CLI: crash-safe
checkpoints and mixed precision.

A run writes everything under one directory:
    backup/      BackupAndRestore state; a killed run resumes from it
    best.keras   the best model so far (replaced atomically)
    logs/        TensorBoard logs
"""

import json
import os

import keras

from keras_attn_runtime import atomic


class BestModelCheckpoint(keras.callbacks.Callback):
    """Saves the model whenever `monitor` improves, atomically.

    Unlike `keras.callbacks.ModelCheckpoint`, the file is written beside the
    target and renamed over it, so a crash mid-save never leaves a
    truncated `best.keras`. The best value is kept beside it
    (`best.keras.json`), so a resumed run only replaces the file with a
    better model.

    Args:
        path: str. Target `.keras` file.
        monitor: str. Metric to watch. Defaults to `"val_loss"`.
        mode: `"min"` or `"max"`. Defaults to `"min"`.
    """

    def __init__(self, path, monitor="val_loss", mode="min"):
        super().__init__()
        if not str(path).endswith(".keras"):
            raise ValueError(
                "`path` must end in .keras. Received: path="
                f"{path!r}"
            )
        if mode not in ("min", "max"):
            raise ValueError(
                "Received an invalid value for argument `mode`, expected "
                f"'min' or 'max'. Received: mode={mode!r}"
            )
        self.path = str(path)
        self.monitor = monitor
        self.mode = mode
        self.best = None

    def on_train_begin(self, logs=None):
        record = self.path + ".json"
        if self.best is None and os.path.exists(record):
            with open(record, encoding="utf-8") as f:
                saved = json.load(f)
            if saved.get("monitor") == self.monitor:
                self.best = saved["value"]

    def _improved(self, value):
        if self.best is None:
            return True
        return value < self.best if self.mode == "min" else value > self.best

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not self._improved(value):
            return
        self.best = value
        with atomic.atomic_file(self.path) as tmp:
            self.model.save(tmp)
        atomic.write_text(
            self.path + ".json",
            json.dumps({"monitor": self.monitor, "value": float(value),
                        "epoch": epoch + 1}),
        )


def standard_callbacks(output_dir, monitor="val_loss", mode="min",
                       tensorboard=True):
    """BackupAndRestore + atomic best-model checkpoint (+ TensorBoard).

    Re-running the same command after a crash resumes at the last finished
    epoch (Keras restores model, optimizer and epoch counter from
    `output_dir/backup`, and deletes the backup once training finishes).

    Args:
        output_dir: str. The run directory.
        monitor, mode: what "best" means. Defaults to lowest `val_loss`.
        tensorboard: bool. Also write TensorBoard logs to `output_dir/logs`.

    Returns:
        A list of callbacks for `model.fit`.
    """
    os.makedirs(output_dir, exist_ok=True)
    callbacks = [
        keras.callbacks.BackupAndRestore(os.path.join(output_dir, "backup")),
        BestModelCheckpoint(
            os.path.join(output_dir, "best.keras"), monitor=monitor, mode=mode
        ),
    ]
    if tensorboard:
        callbacks.append(
            keras.callbacks.TensorBoard(os.path.join(output_dir, "logs"))
        )
    return callbacks


def set_mixed_precision(enabled):
    """Sets the global dtype policy: `mixed_float16` on GPU (float16 is fast
    there), `mixed_bfloat16` elsewhere (CPUs and TPUs), or `float32`.

    Returns:
        The policy name that was set.
    """
    if not enabled:
        policy = "float32"
    else:
        devices = [d.lower() for d in _devices()]
        policy = "mixed_float16" if any("gpu" in d or "cuda" in d
                                        for d in devices) else "mixed_bfloat16"
    keras.config.set_dtype_policy(policy)
    return policy


def _devices():
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return [d.device_type for d in tf.config.list_physical_devices()]
    if backend == "jax":
        import jax

        return [d.platform for d in jax.devices()]
    return []
