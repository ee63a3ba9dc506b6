"""Cross-attention for translation: a small German-to-English Transformer.

What this teaches: the third use of attention, an encoder-decoder where the
decoder's queries attend to the encoder's outputs (cross-attention), the
architecture of "Attention Is All You Need". The sentence pairs are the
example sentences of the Debian dictionary package `trans-de-en`
(`apt-get install trans-de-en`; no download at run time). We translate
held-out sentences with the KV-cached generator, score them with BLEU
against the trivial baseline of copying the source, and draw the
source/target alignment that cross-attention learned.

Run: `python examples/train_translator.py` (several minutes on 2 CPU
cores). Re-running after a crash resumes from the last epoch. Scale up on a
GPU with e.g. `--num-layers 4 --hidden-dim 256 --epochs 30
--mixed-precision`; `KERAS_BACKEND=jax` runs it unchanged.
"""

import argparse
import os
import time

import keras
import keras_hub
import numpy as np

from keras_attn import data
from keras_attn import models
from keras_attn import training
from keras_attn import visualize

## Settings
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


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default="runs/translator")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--vocabulary-size", type=int,
                        default=VOCABULARY_SIZE)
    parser.add_argument("--num-layers", type=int, default=NUM_LAYERS)
    parser.add_argument("--hidden-dim", type=int, default=HIDDEN_DIM)
    parser.add_argument("--num-heads", type=int, default=NUM_HEADS)
    parser.add_argument("--max-examples", type=int, default=None)
    parser.add_argument("--mixed-precision", action="store_true")
    return parser.parse_args()


def text_of(detokenized):
    """The first string of a detokenizer output (str or bytes)."""
    value = np.asarray(keras.ops.convert_to_numpy(detokenized)).reshape(-1)[0]
    return value.decode() if isinstance(value, bytes) else str(value)


def bleu(references, hypotheses):
    """Corpus BLEU up to bigrams, smoothed (short sentences)."""
    metric = keras_hub.metrics.Bleu(max_order=2, smooth=True)
    metric.update_state([[r] for r in references], hypotheses)
    return float(keras.ops.convert_to_numpy(metric.result()))


def main():
    args = parse_args()
    keras.utils.set_random_seed(SEED)
    policy = training.set_mixed_precision(args.mixed_precision)
    os.makedirs(args.output_dir, exist_ok=True)

    ## Data: sentence pairs, split, one vocabulary per language
    pairs = data.read_translation_pairs()[: args.max_examples]
    train, val, test = data.train_val_test_split(pairs, seed=SEED)
    source_vocabulary = data.train_vocabulary([de for de, _ in train],
                                              args.vocabulary_size)
    target_vocabulary = data.train_vocabulary([en for _, en in train],
                                              args.vocabulary_size)
    data.save_vocabulary(source_vocabulary,
                         os.path.join(args.output_dir, "source_vocabulary.txt"))
    data.save_vocabulary(target_vocabulary,
                         os.path.join(args.output_dir, "target_vocabulary.txt"))
    source_tokenizer = data.make_tokenizer(source_vocabulary, SOURCE_LENGTH)
    target_tokenizer = data.make_tokenizer(target_vocabulary)

    def dataset(split, shuffle=False):
        return data.translation_dataset(
            split, source_tokenizer, target_tokenizer, SOURCE_LENGTH,
            TARGET_LENGTH, args.batch_size, shuffle=shuffle, seed=SEED)

    ## Model: encoder-decoder with cross-attention
    model = models.seq2seq(
        source_vocabulary_size=len(source_vocabulary),
        target_vocabulary_size=len(target_vocabulary),
        source_length=SOURCE_LENGTH,
        target_length=TARGET_LENGTH,
        num_layers=args.num_layers,
        hidden_dim=args.hidden_dim,
        num_heads=args.num_heads,
    )
    model.compile(
        optimizer=keras.optimizers.AdamW(LEARNING_RATE, weight_decay=0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, ignore_class=0),
        jit_compile=True,
    )

    ## Fit
    start = time.time()
    model.fit(dataset(train, shuffle=True), validation_data=dataset(val),
              epochs=args.epochs, verbose=2,
              callbacks=training.standard_callbacks(args.output_dir))
    seconds = time.time() - start
    best = keras.saving.load_model(
        os.path.join(args.output_dir, "best.keras"))

    ## Translate held-out sentences with the KV cache; BLEU vs copy-source
    bos = target_tokenizer.token_to_id(data.BOS)
    eos = target_tokenizer.token_to_id(data.EOS)
    sample = test[:EVAL_SENTENCES]
    sources = np.asarray(keras.ops.convert_to_numpy(
        source_tokenizer([de for de, _ in sample])), "int32")
    start = time.time()
    out = models.generate(best, [[bos]] * len(sample), TARGET_LENGTH - 1,
                          encoder_token_ids=sources, stop_token_id=eos)
    translate_seconds = time.time() - start
    hypotheses = [
        text_of(target_tokenizer.detokenize(
            [[int(t) for t in row if t not in (0, eos)]]))
        for row in out
    ]
    references = [en.lower() for _, en in sample]
    model_bleu = bleu(references, hypotheses)
    copy_bleu = bleu(references, [de.lower() for de, _ in sample])
    print(f"held-out BLEU-2 {model_bleu:.3f} vs copy-source baseline "
          f"{copy_bleu:.3f}; {seconds:.0f} s of training, {len(sample)} "
          f"sentences translated in {translate_seconds:.1f} s, {policy}, "
          f"backend {keras.backend.backend()}")
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
    path = visualize.plot_attention(
        cross[0][:, : len(target_tokens), : len(source_tokens)],
        source_tokens, target_tokens, heads="mean",
        path=os.path.join(args.output_dir, "cross_attention.png"),
        title="decoder queries (rows) attending to source (columns)")
    print(f"cross-attention heatmap -> {path}")


if __name__ == "__main__":
    main()
