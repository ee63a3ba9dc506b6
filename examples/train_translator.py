"""Cross-attention for translation: a small German-to-English Transformer.

What this teaches: the third use of attention, an encoder-decoder where the
decoder's queries attend to the encoder's outputs (cross-attention), the
architecture of "Attention Is All You Need". The sentence pairs are the
example sentences of the Debian dictionary package `trans-de-en`
(`apt-get install trans-de-en`; no download at run time). We translate
held-out sentences with the KV-cached generator (timed after compilation),
score them with BLEU against the trivial baseline of copying the source,
and draw the source/target alignment that cross-attention learned.

Run: `python examples/train_translator.py` (about 5 minutes on 2 CPU
cores). It prints progress within epochs and ends with a summary: results,
every file saved under `--output-dir` (the model and one vocabulary per
language), and the commands to export and run the model. Re-running the
same command continues where it stopped: after a crash at the last
finished epoch, after a finished run only if `--epochs` (the total) grew;
otherwise it says "already trained N/N epochs" and prints the summary
again. A directory trained with other settings is refused (`--overwrite`
starts over). Scale up on a GPU with e.g. `--num-layers 4 --hidden-dim 256
--epochs 30 --mixed-precision`; `KERAS_BACKEND=jax` runs it unchanged. On
several devices or hosts, `--distribution data` replicates the model and
`--distribution model` (JAX) also splits its weights (docs/scaling.md);
`--batch-size` is then per replica, and a run continues with any replica
count or mode.
"""

import argparse
import os
import sys
import time

import keras
import keras_hub
import numpy as np

from keras_attn import data
from keras_attn import distribution
from keras_attn import models
from keras_attn import training
from keras_attn import visualize

## Settings
OUTPUT_DIR = "runs/translator"
SOURCE_LENGTH = 24
TARGET_LENGTH = 24
VOCABULARY_SIZE = 4000  # per language
NUM_LAYERS = 2
HIDDEN_DIM = 96
NUM_HEADS = 4
BATCH_SIZE = 64
EPOCHS = 6
LEARNING_RATE = 2e-3
EVAL_SENTENCES = 300
SEED = 0


def make_parser():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--output-dir", default=OUTPUT_DIR,
        help="run directory: model, vocabularies, backup, logs "
             "(default: %(default)s)")
    parser.add_argument(
        "--epochs", type=int, default=EPOCHS,
        help="total epochs of the run; re-running with a larger number "
             "continues it (default: %(default)s)")
    parser.add_argument(
        "--batch-size", type=int, default=BATCH_SIZE,
        help="sentence pairs per step and replica (default: %(default)s)")
    parser.add_argument(
        "--vocabulary-size", type=int, default=VOCABULARY_SIZE,
        help="largest WordPiece vocabulary to learn, per language "
             "(default: %(default)s)")
    parser.add_argument(
        "--num-layers", type=int, default=NUM_LAYERS,
        help="encoder blocks and decoder blocks (default: %(default)s)")
    parser.add_argument("--hidden-dim", type=int, default=HIDDEN_DIM,
                        help="model width (default: %(default)s)")
    parser.add_argument("--num-heads", type=int, default=NUM_HEADS,
                        help="attention heads (default: %(default)s)")
    parser.add_argument(
        "--max-examples", type=int, default=None,
        help="use only the first N sentence pairs, for a quick try "
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


def build_model(args, source_vocabulary_size, target_vocabulary_size, dist):
    """An encoder-decoder with cross-attention, compiled, its weights
    placed as `--distribution` says."""
    model = dist.build(
        models.seq2seq,
        source_vocabulary_size=source_vocabulary_size,
        target_vocabulary_size=target_vocabulary_size,
        source_length=SOURCE_LENGTH,
        target_length=TARGET_LENGTH,
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


def bleu(references, hypotheses):
    """Corpus BLEU up to bigrams, smoothed (short sentences)."""
    metric = keras_hub.metrics.Bleu(max_order=2, smooth=True)
    metric.update_state([[r] for r in references], hypotheses)
    return float(keras.ops.convert_to_numpy(metric.result()))


def translate(model, sources, bos, eos):
    """Greedy translations of `sources` (token ids), ids per row."""
    return models.generate(model, [[bos]] * len(sources), TARGET_LENGTH - 1,
                           encoder_token_ids=sources, stop_token_id=eos)


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

    ## Data: sentence pairs, split
    pairs = data.read_translation_pairs()[: args.max_examples]
    train, val, test = data.train_val_test_split(pairs, seed=SEED)
    data_line = (f"data: {len(pairs):,} German-English sentence pairs, "
                 f"{len(train):,}/{len(val):,}/{len(test):,} train/val/test")
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

    ## Vocabularies: one per language, learned on train (reused when
    ## continuing; every process learns the same ones, the chief saves them)
    def vocabulary(texts, name):
        path = os.path.join(args.output_dir, name)
        if run.resumed and os.path.exists(path):
            return data.load_vocabulary(path), path
        learned = data.train_vocabulary(texts, args.vocabulary_size)
        if dist.is_chief:
            data.save_vocabulary(learned, path)
        return learned, path

    source_vocabulary, source_path = vocabulary(
        [de for de, _ in train], "source_vocabulary.txt")
    target_vocabulary, target_path = vocabulary(
        [en for _, en in train], "target_vocabulary.txt")
    source_tokenizer = data.make_tokenizer(source_vocabulary, SOURCE_LENGTH)
    target_tokenizer = data.make_tokenizer(target_vocabulary)

    def dataset(split, shuffle=False):
        return data.translation_dataset(
            split, source_tokenizer, target_tokenizer, SOURCE_LENGTH,
            TARGET_LENGTH, batch_size, shuffle=shuffle, seed=SEED,
            drop_remainder=dist.drop_remainder)

    ## Model
    model = build_model(args, len(source_vocabulary), len(target_vocabulary),
                        dist)

    ## Fit: only the epochs the run still lacks (the chief alone writes
    ## checkpoints; other processes restore from them)
    if not run.finished:
        model.fit(dataset(train, shuffle=True), validation_data=dataset(val),
                  epochs=run.epochs, callbacks=dist.callbacks(run.callbacks()),
                  shuffle=False,  # the dataset reshuffles every epoch
                  verbose=0)  # run.callbacks() prints the progress
    if not dist.finish():
        return  # The chief translates, draws and summarizes alone.
    best = keras.saving.load_model(run.best_model_path)

    ## Translate held-out sentences with the KV cache; BLEU vs copy-source
    bos = target_tokenizer.token_to_id(data.BOS)
    eos = target_tokenizer.token_to_id(data.EOS)
    sample = test[:EVAL_SENTENCES]
    sources = np.asarray(keras.ops.convert_to_numpy(
        source_tokenizer([de for de, _ in sample])), "int32")
    start = time.perf_counter()
    translate(best, sources, bos, eos)  # compiles the loop for this shape
    compile_seconds = time.perf_counter() - start
    start = time.perf_counter()
    out = translate(best, sources, bos, eos)
    translate_seconds = time.perf_counter() - start
    hypotheses = [
        text_of(target_tokenizer.detokenize(
            [[int(t) for t in row if t not in (0, eos)]]))
        for row in out
    ]
    references = [en.lower() for _, en in sample]
    model_bleu = bleu(references, hypotheses)
    copy_bleu = bleu(references, [de.lower() for de, _ in sample])
    for (de, en), hyp in list(zip(sample, hypotheses))[:5]:
        print(f"  {de}\n    -> {hyp}\n    (reference: {en})")

    ## Look at cross-attention: the source/target alignment
    row = 0
    decoder_ids = np.zeros((1, TARGET_LENGTH), "int32")
    new = [t for t in out[row] if t not in (0, eos)]
    decoder_ids[0, : len(new) + 1] = [bos] + new
    inputs = {"encoder_token_ids": sources[row:row + 1],
              "decoder_token_ids": decoder_ids}
    layer = f"decoder_layer_{args.num_layers - 1}"
    cross = visualize.attention_weights(best, layer, inputs)["cross_attention"]
    source_tokens = [source_tokenizer.id_to_token(int(i))
                     for i in sources[row] if i]
    target_tokens = [target_tokenizer.id_to_token(int(i))
                     for i in decoder_ids[0] if i]
    heatmap = visualize.plot_attention(
        cross[0][:, : len(target_tokens), : len(source_tokens)],
        source_tokens, target_tokens, heads="mean",
        path=os.path.join(args.output_dir, "cross_attention.png"),
        title="decoder queries (rows) attending to source (columns)")

    ## Summary
    tflite = os.path.join(args.output_dir, "translator.tflite")
    training.print_summary([
        f"held-out BLEU-2 {model_bleu:.3f} vs copy-source baseline "
        f"{copy_bleu:.3f} on {len(sample)} test sentences",
        *run.summary_lines(),
        f"translation: {len(sample)} sentences in {translate_seconds:.2f} s "
        f"(greedy, KV cache, one batch, after compilation; the first, "
        f"compiling call took {compile_seconds:.1f} s)",
        data_line,
        f"{policy}, backend {keras.backend.backend()}",
        dist.describe(args.batch_size, LEARNING_RATE),
    ], [
        (run.best_model_path, f"the model with the best {run.monitor}"),
        (source_path, "its German (source) WordPiece vocabulary"),
        (target_path, "its English (target) WordPiece vocabulary"),
        (heatmap, "cross-attention on a test sentence"),
        *run.state_files(),
    ], [
        f"keras-attn export {run.best_model_path} {tflite} "
        "--format generator",
        f'keras-attn generate {tflite} --source "Der Hund bellt." '
        f"--vocabulary {target_path} --source-vocabulary {source_path}",
        training.rerun_command(sys.argv, run.epochs_done + EPOCHS)
        + f"  (continues for {EPOCHS} more epochs)",
    ])


if __name__ == "__main__":
    main()
