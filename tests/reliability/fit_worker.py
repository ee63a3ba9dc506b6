"""A small resumable training run, for tests/reliability/persistence_test.py.

    python -m tests.reliability.fit_worker RUN_DIR EPOCHS [--slow]

Trains a one-layer `encoder_classifier` on generated data through
`keras_attn.training.TrainingRun` (a re-run continues the run), seeded,
on the CPU. Prints the run's one-line description, `EPOCH_DONE <n>` after
each epoch (flushed, so a test can kill the process mid-run), and at the
end a JSON line with the epochs this call trained and their losses; saves
the final weights to RUN_DIR/final.npz. `--slow` sleeps in every batch so
that a kill lands inside an epoch.
"""

import json
import os
import sys
import time

import keras
import numpy as np

from keras_attn import models
from keras_attn import training

SEED = 0


class _Report(keras.callbacks.Callback):
    def __init__(self, slow):
        super().__init__()
        self.slow = slow
        self.epochs, self.losses = [], []

    def on_train_batch_end(self, batch, logs=None):
        if self.slow:
            time.sleep(0.05)

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(epoch + 1)
        self.losses.append(float(logs["loss"]))
        print(f"EPOCH_DONE {epoch + 1}", flush=True)


def main(argv):
    run_dir, epochs = argv[0], int(argv[1])
    slow = "--slow" in argv
    keras.utils.set_random_seed(SEED)
    rng = np.random.default_rng(SEED)
    x = rng.integers(1, 50, (512, 12)).astype("int32")
    y = (x[:, 0] > x[:, 1]).astype("int32")
    run = training.TrainingRun(run_dir, {"hidden_dim": 16}, epochs)
    print(run.describe(), flush=True)
    model = models.encoder_classifier(50, 12, num_classes=2, num_layers=1,
                                      hidden_dim=16, num_heads=2)
    model.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(
                      from_logits=True))
    report = _Report(slow)
    if not run.finished:
        model.fit(x, y, batch_size=32, validation_split=0.25,
                  epochs=run.epochs, shuffle=True, verbose=0,
                  callbacks=run.callbacks(tensorboard=False) + [report])
    np.savez(os.path.join(run_dir, "final.npz"),
             *[np.asarray(w) for w in model.get_weights()])
    print(json.dumps({"epochs": report.epochs, "losses": report.losses}),
          flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
