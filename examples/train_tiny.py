"""Train a tiny Transformer classifier built from keras_attn layers.

What this teaches: the layers compose like any Keras layers. Token ids go
through `TokenAndPositionEmbedding` (which keeps the padding mask), two
`TransformerEncoder` blocks (self-attention that skips padded tokens), masked
average pooling and a softmax head; `model.fit` trains it under XLA
(`jit_compile=True`), and the `.keras` file reloads in a fresh session
without `custom_objects`.

The task needs attention across positions: each sequence holds random
filler tokens and one A and one B marker at random places; the label says
whether A comes before B. Pooled token+position embeddings are symmetric in
the two positions, so only interactions between tokens (attention) can
tell the order. The data is generated, so the script needs no download.

Run: `python examples/train_tiny.py` (about a minute on 2 CPU cores). It
prints progress within epochs and ends with a summary: the held-out
accuracy against the baseline, and where the model was saved.
"""

import argparse
import os
import tempfile
import time

import keras
import numpy as np

import keras_attn
from keras_attn import training

## Settings
VOCABULARY_SIZE = 16  # id 0 is padding; 1 and 2 are the markers A, B
MAX_LENGTH = 24
HIDDEN_DIM = 32
NUM_HEADS = 4
INTERMEDIATE_DIM = 64
NUM_LAYERS = 2
EPOCHS = 6
BATCH_SIZE = 64
TRAIN_SIZE = 6000
TEST_SIZE = 1000
SEED = 7


def make_data(num_examples, rng):
    """Filler tokens 3..V-1 with one A (id 1) and one B (id 2) inserted at
    random positions, padded with 0; label 1 if A comes before B."""
    ids = np.zeros((num_examples, MAX_LENGTH), "int32")
    labels = np.zeros((num_examples,), "int32")
    for i in range(num_examples):
        length = rng.integers(4, MAX_LENGTH + 1)
        ids[i, :length] = rng.integers(3, VOCABULARY_SIZE, size=length)
        a, b = rng.choice(length, size=2, replace=False)
        ids[i, a], ids[i, b] = 1, 2
        labels[i] = int(a < b)
    return ids, labels


def build_model():
    token_ids = keras.Input((MAX_LENGTH,), dtype="int32", name="token_ids")
    x = keras_attn.layers.TokenAndPositionEmbedding(
        VOCABULARY_SIZE, MAX_LENGTH, HIDDEN_DIM, mask_zero=True
    )(token_ids)
    for _ in range(NUM_LAYERS):
        x = keras_attn.layers.TransformerEncoder(
            INTERMEDIATE_DIM, NUM_HEADS, dropout=0.1
        )(x)
    x = keras.layers.GlobalAveragePooling1D()(x)  # uses the padding mask
    probs = keras.layers.Dense(2, activation="softmax")(x)
    return keras.Model(token_ids, probs)


def make_parser():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=EPOCHS,
                        help="epochs to train (default: %(default)s)")
    parser.add_argument(
        "--train-size", type=int, default=TRAIN_SIZE,
        help="generated training sequences, 10%% of them for validation "
             "(default: %(default)s)")
    parser.add_argument(
        "--output-dir", default=None,
        help="where to save model.keras (default: a new temporary "
             "directory)")
    return parser


def main():
    args = make_parser().parse_args()
    keras.utils.set_random_seed(SEED)
    rng = np.random.default_rng(SEED)

    ## Data
    x_train, y_train = make_data(args.train_size, rng)
    x_test, y_test = make_data(TEST_SIZE, rng)
    majority = max(y_test.mean(), 1 - y_test.mean())

    ## Model
    model = build_model()
    model.compile(
        optimizer=keras.optimizers.Adam(2e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=True,
    )
    model.summary()

    ## Fit, with a progress line every 10 s and one per epoch
    start = time.time()
    history = model.fit(
        x_train, y_train, batch_size=BATCH_SIZE, epochs=args.epochs,
        validation_split=0.1, verbose=0, callbacks=[training.ProgressLogger()])
    seconds = time.time() - start

    ## Evaluate against the trivial baseline
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)

    ## Save, reload (no custom_objects needed), check the outputs agree
    out_dir = args.output_dir or tempfile.mkdtemp(prefix="keras_attn_")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "model.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    diff = np.abs(model.predict(x_test[:64], verbose=0)
                  - reloaded.predict(x_test[:64], verbose=0)).max()

    ## Summary
    epochs = len(history.history["loss"])
    training.print_summary([
        f"held-out accuracy {accuracy:.3f} vs majority-class baseline "
        f"{majority:.3f} on {TEST_SIZE} generated test sequences",
        f"trained {epochs} epoch{'s' * (epochs != 1)} in {seconds:.0f} s "
        f"(XLA compilation included), backend {keras.backend.backend()}",
        f"the reloaded model's outputs differ by {diff:.1e} (at most)",
    ], [(path, "the model; keras.saving.load_model reloads it")], [
        "python examples/train_classifier.py  (the same layers on real "
        "tweets)",
    ])
    if accuracy <= majority + 0.1:
        raise SystemExit("the model did not beat the baseline by 10 points")


if __name__ == "__main__":
    main()
