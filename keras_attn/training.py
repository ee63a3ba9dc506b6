"""Training helpers shared by the examples and the CLI: runs that a re-run
continues instead of repeating, progress within epochs, crash-safe
checkpoints and mixed precision.

A run writes everything under one directory:
    run.json           the run's settings and, per epoch, metrics and time
    backup/            BackupAndRestore state: epochs done, weights,
                       optimizer; kept after the last epoch, so a later
                       call with more epochs continues from it
    best.keras         the best model so far (replaced atomically)
    best.keras.json    its metric value and epoch
    logs/              TensorBoard logs

`TrainingRun` reads that state before training. Re-running a command
continues a killed run at its last finished epoch, continues a finished one
when asked for more epochs in total, and reports "already trained N/N
epochs" when there is nothing left to do. A directory holding a run with
other settings (model size, data, batch size, anything but the number of
epochs), or a `best.keras` whose settings were not recorded, is never
trained into: its `best.keras` would otherwise be kept whenever it scored
better than the new model's epochs, silently mixing two models. The run
stops with an error naming the differing settings; `overwrite=True`
deletes the old run's state and starts over.

How a run is spread over devices is not one of its settings
(`settings_from_args` leaves out `--distribution`, `--mesh-shape` and
`--lr-scaling`): the backup holds whole weights, so a run continues on
another number of replicas, in another mode. The global batch and the
learning rate scaled from it then change between sessions; each epoch's
entry in `run.json` records what it ran with (`session`, and the
optimizer's `learning_rate`), and `KeepLearningRate` makes a resumed
session train with its own learning rate rather than the one the backup
restored. In a run of several processes only the chief writes (`write`).
"""

import hashlib
import json
import math
import os
import shlex
import shutil
import sys
import time

import keras

from keras_attn_runtime import atomic

RUN_RECORD = "run.json"
BEST_MODEL = "best.keras"
BACKUP = "backup"
_UNSET = object()


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
        self.last_saved_epoch = None

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
        self.last_saved_epoch = epoch


class KeepLearningRate(keras.callbacks.Callback):
    """Trains with the learning rate the model was compiled with, even
    after `keras.callbacks.BackupAndRestore` restored another one.

    A float learning rate is one of the optimizer's variables, so a backup
    restores it along with the weights. A session that continues a run on
    another number of replicas compiles the learning rate scaled for its
    own global batch (`keras_attn.distribution`, `--lr-scaling`), and the
    restored value would silently replace it. This callback reads the
    compiled value when `fit` starts (`set_model`, before any restore) and
    sets it again at `on_train_begin`: list it after `BackupAndRestore`.
    A learning-rate schedule is left alone (it follows the restored
    iteration count).
    """

    def __init__(self):
        super().__init__()
        self.learning_rate = None

    def set_model(self, model):
        super().set_model(model)
        self.learning_rate = _float_learning_rate(model)

    def on_train_begin(self, logs=None):
        if self.learning_rate is not None:
            self.model.optimizer.learning_rate = self.learning_rate


def _float_learning_rate(model):
    """The optimizer's learning rate as a float, or `None` without an
    optimizer or with a schedule."""
    optimizer = getattr(model, "optimizer", None)
    rate = getattr(optimizer, "learning_rate", None)
    if not isinstance(rate, keras.Variable):
        return None
    return float(keras.ops.convert_to_numpy(rate))


def standard_callbacks(output_dir, monitor="val_loss", mode="min",
                       tensorboard=True):
    """BackupAndRestore + atomic best-model checkpoint (+ TensorBoard).

    Re-running the same command after a crash resumes at the last finished
    epoch (Keras restores model, optimizer and epoch counter from
    `output_dir/backup`, and deletes the backup once training finishes),
    with the learning rate the model was compiled with
    (`KeepLearningRate`).

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
        KeepLearningRate(),
        BestModelCheckpoint(
            os.path.join(output_dir, "best.keras"), monitor=monitor, mode=mode
        ),
    ]
    if tensorboard:
        callbacks.append(
            keras.callbacks.TensorBoard(os.path.join(output_dir, "logs"))
        )
    return callbacks


class ProgressLogger(keras.callbacks.Callback):
    """Prints progress within epochs and one line per finished epoch.

    Unlike `fit(verbose=1)`, whose progress bar turns into one long line of
    carriage returns in a log file, and `verbose=2`, which is silent until
    an epoch ends, this prints a plain line at most every `interval`
    seconds: the step, the running loss, steps per second and the time
    left in the epoch. The first step of a session is reported on its own,
    since it includes compilation and would distort the rate. Use it
    with `fit(verbose=0)`.

    Args:
        interval: float. Smallest number of seconds between two step lines.
            `0` prints every step. Defaults to `10.0`.
        checkpoint: a `BestModelCheckpoint` of the same `fit`, listed
            before this callback; the epoch line then says when it saved.
            Defaults to `None`.
        stream: file-like. Where to print. Defaults to `None`,
            `sys.stdout` at the time of printing.
    """

    def __init__(self, interval=10.0, checkpoint=None, stream=None):
        super().__init__()
        if not (
            isinstance(interval, (int, float))
            and not isinstance(interval, bool)
            and interval >= 0
        ):
            raise ValueError(
                "Received an invalid value for argument `interval`, "
                "expected a non-negative number of seconds. Received: "
                f"interval={interval!r}"
            )
        self.interval = float(interval)
        self.checkpoint = checkpoint
        self.stream = stream
        self._compiled = False

    def _print(self, text):
        print(text, file=self.stream or sys.stdout, flush=True)

    def on_train_begin(self, logs=None):
        self._compiled = False

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._epoch_start = self._last_print = time.time()
        self._rate_start = None  # (step, time) the rate is measured from

    def on_train_batch_end(self, batch, logs=None):
        now = time.time()
        step = batch + 1
        if self._rate_start is None:
            # The rate is measured from the end of an epoch's first step:
            # that step also fills the input pipeline and, first of all,
            # compiles the training step.
            self._rate_start = (step, now)
            if not self._compiled:
                self._compiled = True
                self._print(
                    f"  first step done in {now - self._epoch_start:.1f} s "
                    "(includes compilation)"
                )
                self._last_print = now
            return
        steps = self.params.get("steps")
        if now - self._last_print < self.interval or step == steps:
            return  # The epoch line follows the last step.
        self._last_print = now
        first_step, first_time = self._rate_start
        rate = (step - first_step) / max(now - first_time, 1e-9)
        text = f"  epoch {self._epoch + 1}/{self.params['epochs']}  step "
        text += f"{step}/{steps}" if steps else f"{step}"
        text += f"  {_format_logs(logs)}  {rate:.1f} steps/s"
        if steps and rate > 0:
            text += f", {_format_seconds((steps - step) / rate)} left in epoch"
        self._print(text)

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.time() - self._epoch_start
        text = (
            f"epoch {epoch + 1}/{self.params['epochs']}  "
            f"{_format_logs(logs)}  ({_format_seconds(seconds)})"
        )
        checkpoint = self.checkpoint
        if checkpoint is not None and checkpoint.last_saved_epoch == epoch:
            text += (
                f"  -> {os.path.basename(checkpoint.path)} "
                f"(new best {checkpoint.monitor})"
            )
        self._print(text)


class TrainingRun:
    """A training run in one directory, which a re-run continues.

    Reads the directory's state (see the module docstring) at construction:
    the recorded settings (`run.json`), the epochs done (the
    `BackupAndRestore` backup) and the best model (`best.keras` and its
    record). Then `fit(..., epochs=run.epochs,
    callbacks=run.callbacks())` trains only what is left: nothing when
    `run.finished`, the remaining epochs otherwise.

    Args:
        output_dir: str. The run directory; created if missing.
        config: dict of JSON-serializable settings that define the run:
            everything but the number of epochs (model sizes, batch size,
            learning rate, dtype policy, a `fingerprint` of the training
            data...). A directory whose recorded settings differ is
            refused.
        epochs: int. Total number of epochs the run should have, counting
            those done by earlier calls.
        monitor: str. Metric that defines the best model. Defaults to
            `"val_loss"`.
        mode: `"min"` or `"max"`. Defaults to `"min"`.
        overwrite: bool. Delete a previous run's state in `output_dir`
            (`run.json`, `backup/`, `best.keras`, `best.keras.json`) and
            start over. Defaults to `False`.
        session: dict of JSON-serializable facts about this call that do
            not define the run, such as how it is distributed (mode,
            replicas, global batch size). Recorded with every epoch this
            call trains (`"session"` in its `run.json` entry), never
            compared. Defaults to `None`.
        write: bool. Whether this process writes the run's files. Pass
            `False` on the other processes of a multi-process run (where
            `keras_attn.distribution.setup(...).is_chief` is false): they
            read the state, never write or delete anything, and with
            `overwrite` start from nothing, as the chief does after
            deleting the old state. Defaults to `True`.

    Attributes:
        epochs_done: int. Epochs finished before this call.
        resumed: bool. Whether `output_dir` already held this run (same
            settings), so files written from the same settings, such as
            a vocabulary, can be reused. With `write=False`, only once the
            run has trained (a `best.keras` or backup): until then the
            chief may still replace those files.
        finished: bool. Whether `epochs_done >= epochs`.
        best_model_path: str. `output_dir/best.keras`.

    Raises:
        ValueError: if `output_dir` holds a run with other settings, or a
            `best.keras` or backup without recorded settings, and
            `overwrite` is false; or for bad arguments.

    Example:

    ```python
    import tempfile
    import numpy as np
    import keras
    import keras_attn

    def build():
        model = keras_attn.models.encoder_classifier(
            20, 6, num_layers=1, hidden_dim=8, num_heads=2)
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(
            from_logits=True))
        return model

    x = np.random.default_rng(0).integers(1, 20, (32, 6))
    y = (x[:, 0] > 10).astype("int32")
    directory = tempfile.mkdtemp()
    for epochs in (1, 2, 2):
        run = keras_attn.training.TrainingRun(
            directory, {"hidden_dim": 8}, epochs)
        print(run.describe())
        if not run.finished:
            build().fit(x, y, validation_split=0.25, epochs=run.epochs,
                        verbose=0, callbacks=run.callbacks(tensorboard=False))
    assert run.finished and run.epochs_done == 2
    ```
    """

    def __init__(self, output_dir, config, epochs, monitor="val_loss",
                 mode="min", overwrite=False, session=None, write=True):
        if not isinstance(config, dict):
            raise TypeError(
                "Expected `config` to be a dict of settings. Received: "
                f"config of type {type(config).__name__}"
            )
        if isinstance(epochs, bool) or not isinstance(epochs, int) or (
            epochs <= 0
        ):
            raise ValueError(
                "Received an invalid value for argument `epochs`, expected "
                f"a positive integer. Received: epochs={epochs!r}"
            )
        if session is not None and not isinstance(session, dict):
            raise TypeError(
                "Expected `session` to be a dict or None. Received: "
                f"session of type {type(session).__name__}"
            )
        self.output_dir = str(output_dir)
        self.config = json.loads(json.dumps(config))  # tuples -> lists
        self.session = json.loads(json.dumps(session or {}))
        self.write = bool(write)
        self.epochs = epochs
        self.monitor = monitor
        self.mode = mode
        self.best_model_path = os.path.join(self.output_dir, BEST_MODEL)
        self._checkpoint = BestModelCheckpoint(
            self.best_model_path, monitor=monitor, mode=mode
        )
        if self.write:
            os.makedirs(self.output_dir, exist_ok=True)
            if overwrite:
                self._delete_state()
        if overwrite and not self.write:
            # The chief deletes the old state before training starts.
            self.resumed, self._history, self.epochs_done = False, [], 0
        else:
            record = self._read_json(RUN_RECORD)
            self.resumed = self._check_settings(record)
            self._history = (
                record.get("history", []) if self.resumed else []
            )
            self.epochs_done = self._backup_epoch()
        if self.epochs_done and not os.path.exists(self.best_model_path):
            raise ValueError(
                f"{self.output_dir!r} has a backup after epoch "
                f"{self.epochs_done} but no {BEST_MODEL}. Start over with "
                "overwrite=True (`--overwrite` in the examples)."
            )
        # Claims the directory for these settings before anything derived
        # from them (a vocabulary) is written there.
        self._write_record()

    @property
    def finished(self):
        return self.epochs_done >= self.epochs

    def describe(self):
        """One line saying what calling `fit` will do."""
        where = self.output_dir
        if self.finished:
            text = f"{where}: already trained {self.epochs_done}/"
            text += f"{self.epochs} epochs"
            if self.epochs_done > self.epochs:
                text = f"{where}: already trained {self.epochs_done} epochs "
                text += f"(asked for {self.epochs})"
            return text + "; nothing to train."
        if self.epochs_done:
            return (f"{where}: continuing after epoch {self.epochs_done} "
                    f"of {self.epochs}.")
        return f"{where}: new run of {_plural(self.epochs, 'epoch')}."

    def callbacks(self, tensorboard=True, progress_interval=10.0):
        """Callbacks for `fit`: backup, compiled learning rate (see
        `KeepLearningRate`), best model, record, progress.

        In a multi-process run, pass them through
        `keras_attn.distribution.setup(...).callbacks`: the other processes
        then restore from the chief's backup without writing, and drop the
        best-model checkpoint and TensorBoard.

        Args:
            tensorboard: bool. Also write TensorBoard logs to
                `output_dir/logs`. Defaults to `True`.
            progress_interval: float or `None`. Seconds between progress
                lines (see `ProgressLogger`); `None` prints nothing.
                Defaults to `10.0`.

        Returns:
            A list of callbacks; use it with `fit(verbose=0)`.
        """
        callbacks = [
            keras.callbacks.BackupAndRestore(
                os.path.join(self.output_dir, BACKUP),
                delete_checkpoint=False,
            ),
            KeepLearningRate(),
            self._checkpoint,
            _RunRecorder(self),
        ]
        if progress_interval is not None:
            callbacks.append(ProgressLogger(progress_interval,
                                            checkpoint=self._checkpoint))
        if tensorboard:
            callbacks.append(keras.callbacks.TensorBoard(
                os.path.join(self.output_dir, "logs")))
        return callbacks

    def state_files(self):
        """`(path, description)` of the files that keep the run's state,
        for a closing summary: `run.json`, `backup/` and `logs/`."""
        out = self.output_dir
        return [
            (os.path.join(out, RUN_RECORD),
             "settings, metrics and time of every epoch"),
            (os.path.join(out, BACKUP),
             "training state, to continue with more --epochs"),
            (os.path.join(out, "logs"),
             f"TensorBoard logs: tensorboard --logdir {out}/logs"),
        ]

    def best(self):
        """The best model's record: `{"monitor", "value", "epoch"}`, or
        `None` before the first epoch."""
        return self._read_json(BEST_MODEL + ".json")

    def history(self):
        """Per-epoch records, in epoch order: `{"epoch", "seconds",
        <metrics>}` for every epoch finished so far, in any session."""
        return sorted(self._history, key=lambda entry: entry["epoch"])

    def training_seconds(self):
        """Seconds spent in the epochs finished so far, all sessions."""
        return sum(entry["seconds"] for entry in self._history)

    def summary_lines(self):
        """Lines on the training for a closing summary."""
        done = max(self.epochs_done, len(self._history))
        lines = [f"trained {_plural(done, 'epoch')} in "
                 f"{_format_seconds(self.training_seconds())}"]
        best = self.best()
        if best:
            lines[0] += (f"; best {best['monitor']} {best['value']:.4f} "
                         f"at epoch {best['epoch']}")
        return lines

    def _on_train_begin(self):
        self._write_record()

    def _on_epoch_end(self, epoch, seconds, logs, learning_rate=None):
        entry = {"epoch": epoch + 1, "seconds": round(seconds, 3)}
        entry.update({key: float(value) for key, value in (logs or {}).items()
                      if _is_number(value)})
        if learning_rate is not None:
            entry.setdefault("learning_rate", learning_rate)
        if self.session:
            entry["session"] = self.session
        self._history = [e for e in self._history if e["epoch"] <= epoch]
        self._history.append(entry)
        self.epochs_done = epoch + 1
        self._write_record()

    def _write_record(self):
        if not self.write:
            return
        atomic.write_text(
            os.path.join(self.output_dir, RUN_RECORD),
            json.dumps({"config": self.config, "history": self.history()},
                       indent=1),
        )

    def _read_json(self, name):
        path = os.path.join(self.output_dir, name)
        if not os.path.exists(path):
            return None
        with open(path, encoding="utf-8") as f:
            return json.load(f)

    def _backup_epoch(self):
        metadata = self._read_json(
            os.path.join(BACKUP, "training_metadata.json")
        )
        return int(metadata["epoch"]) if metadata else 0

    def _check_settings(self, record):
        """Whether the directory holds this run; raises if it holds
        another one."""
        leftovers = [name for name in (BEST_MODEL, BACKUP)
                     if os.path.exists(os.path.join(self.output_dir, name))]
        if record is None:
            if leftovers:
                raise ValueError(
                    f"{self.output_dir!r} holds {' and '.join(leftovers)} "
                    f"from a run whose settings were not recorded (no "
                    f"{RUN_RECORD}), so it cannot be continued safely. "
                    "Start over with overwrite=True (`--overwrite` in the "
                    "examples) or use another directory."
                )
            return False
        recorded = record.get("config", {})
        differences = [
            f"{key}: {_short(recorded, key)} there, "
            f"{_short(self.config, key)} now"
            for key in sorted(set(recorded) | set(self.config))
            if recorded.get(key, _UNSET) != self.config.get(key, _UNSET)
        ]
        if differences and not leftovers:
            return False  # Nothing was trained with the old settings.
        if not self.write and not leftovers:
            # Before training, the chief may still replace run.json and
            # what was derived from it: nothing here is this run's yet.
            return False
        if differences:
            raise ValueError(
                f"{self.output_dir!r} holds a training run with other "
                f"settings ({'; '.join(differences)}). Continuing it would "
                f"mix two models (its {BEST_MODEL} is kept while it scores "
                "better). Start over with overwrite=True (`--overwrite` in "
                "the examples) or use another directory."
            )
        return True

    def _delete_state(self):
        for name in (RUN_RECORD, BEST_MODEL, BEST_MODEL + ".json"):
            path = os.path.join(self.output_dir, name)
            if os.path.exists(path):
                os.remove(path)
        shutil.rmtree(os.path.join(self.output_dir, BACKUP),
                      ignore_errors=True)


class _RunRecorder(keras.callbacks.Callback):
    """Keeps `run.json` up to date for a `TrainingRun`."""

    def __init__(self, run):
        super().__init__()
        self.run = run

    def on_train_begin(self, logs=None):
        self.run._on_train_begin()

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.time()

    def on_epoch_end(self, epoch, logs=None):
        self.run._on_epoch_end(epoch, time.time() - self._start, logs,
                               _float_learning_rate(self.model))


SCRIPT_OPTIONS = ("output_dir", "epochs", "overwrite", "distribution",
                  "mesh_shape", "lr_scaling")


def settings_from_args(args):
    """The parsed arguments that define a run, for `TrainingRun`'s `config`.

    Every argument but `SCRIPT_OPTIONS`: where the run lives
    (`output_dir`), how long it trains in total (`epochs`), whether to
    start over (`overwrite`) and how it is spread over devices
    (`distribution`, `mesh_shape`, `lr_scaling`, from
    `keras_attn.distribution.add_arguments`). So a run continues with more
    epochs, or on another number of replicas, but not with another model
    size, batch size per replica or learning rate per replica.

    Args:
        args: `argparse.Namespace`.

    Returns:
        dict: argument name -> value.
    """
    return {key: value for key, value in vars(args).items()
            if key not in SCRIPT_OPTIONS}


def fingerprint(value):
    """A short hash of JSON-like data, e.g. a training split, for `config`.

    Lists, tuples, dicts, str, numbers and NumPy values are hashed by
    content, so the same data always gives the same fingerprint.

    Args:
        value: the data.

    Returns:
        str. 16 hexadecimal digits of the SHA-256 of its JSON form.

    Example:

    ```python
    import keras_attn
    a = keras_attn.training.fingerprint([("good", 1), ("bad", 0)])
    assert a == keras_attn.training.fingerprint([["good", 1], ["bad", 0]])
    assert a != keras_attn.training.fingerprint([("good", 0), ("bad", 0)])
    ```
    """
    text = json.dumps(value, default=_to_json, ensure_ascii=False,
                      sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def print_summary(results, files, next_steps=(), stream=None):
    """Prints the closing summary of a training script.

    Args:
        results: list of str. Result lines (metrics against baselines,
            times), printed as they are.
        files: list of `(path, description)` pairs: every file the run
            saved.
        next_steps: list of str. Commands to run next.
        stream: file-like. Defaults to `sys.stdout`.
    """
    stream = stream or sys.stdout
    lines = ["", "== Summary =="]
    lines += [f"  {line}" for line in results]
    lines.append("Saved:")
    width = max((len(path) for path, _ in files), default=0)
    lines += [f"  {path:<{width}}  {what}" for path, what in files]
    if next_steps:
        lines.append("Next:")
        lines += [f"  {command}" for command in next_steps]
    print("\n".join(lines), file=stream, flush=True)


def rerun_command(argv, epochs):
    """The command line `argv` with `--epochs` set to `epochs`.

    Every other argument is kept, so the command names the same run (whose
    settings must match); `--overwrite` is dropped, since it would start
    the run over.

    Args:
        argv: list of str. The script and its arguments, as `sys.argv`.
        epochs: int. The new total number of epochs.

    Returns:
        str. `python SCRIPT ARGS... --epochs EPOCHS`, shell-quoted.

    Example:

    ```python
    import keras_attn
    command = keras_attn.training.rerun_command(
        ["train.py", "--epochs", "3", "--hidden-dim=8", "--overwrite"], 6)
    assert command == "python train.py --hidden-dim=8 --epochs 6"
    ```
    """
    kept, arguments = [], list(argv[1:])
    while arguments:
        argument = arguments.pop(0)
        if argument == "--epochs":
            arguments[:1] = []  # And its value.
        elif not (argument.startswith("--epochs=")
                  or argument == "--overwrite"):
            kept.append(argument)
    words = ["python", argv[0], *kept, "--epochs", str(epochs)]
    return " ".join(shlex.quote(word) for word in words)


def _format_logs(logs):
    parts = []
    for key, value in (logs or {}).items():
        if _is_number(value) and key != "learning_rate":
            parts.append(f"{key} {float(value):.4f}")
    return "  ".join(parts)


def _format_seconds(seconds):
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes} min {seconds:02d} s"


def _plural(count, noun):
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _is_number(value):
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _to_json(value):
    if hasattr(value, "tolist"):  # NumPy arrays and scalars
        return value.tolist()
    raise TypeError(f"Cannot fingerprint a {type(value).__name__}")


def _short(settings, key):
    if key not in settings:
        return "(unset)"
    text = json.dumps(settings[key])
    return text if len(text) <= 40 else text[:37] + "..."


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
