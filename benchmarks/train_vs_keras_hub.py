"""Training speed: our encoder classifier against the same model built
from keras-hub layers, side by side, on the TensorFlow and JAX backends.

Both models (`keras_attn.models.encoder_classifier` and
`common.keras_hub_encoder_classifier`) start from the same random
weights, compile with AdamW and sparse cross-entropy (`jit_compile=True`,
i.e. XLA, on TensorFlow; JAX always compiles with XLA) and train on the
same fixed batch of token ids with `train_on_batch`, taking turns, one
step each per round. Each backend runs in its own process (Keras picks its
backend at import). Precisions: float32, and the project's mixed policy
for a CPU (`mixed_bfloat16`; `--mixed-policy mixed_float16` to change it).
Tokens/s is batch x length over the median step time; the ratio is the
median of the per-round step-time ratios (theirs / ours).

Run: `python benchmarks/train_vs_keras_hub.py` (about 15 minutes on 2
cores); `--tiny` trains a 1-layer toy for a few steps (CI).
"""

import argparse
import json
import os
import subprocess
import sys
import time

import common

BACKENDS = ("tensorflow", "jax")
PRECISIONS = ("float32", "mixed")


def child(args):
    """Measures one backend (the one Keras was imported with)."""
    import keras

    from keras_attn import models

    shapes = common.TINY_SHAPES if args.tiny else common.EDGE_SHAPES
    ids = common.token_batch(args.batch_size, shapes["sequence_length"],
                             shapes["vocabulary_size"])
    labels = (ids[:, 0] % 2).astype("int32")
    for precision in args.precisions.split(","):
        policy = args.mixed_policy if precision == "mixed" else "float32"
        keras.config.set_dtype_policy(policy)
        ours = models.encoder_classifier(num_classes=2,
                                         dropout=args.dropout, **shapes)
        theirs = common.keras_hub_encoder_classifier(dropout=args.dropout,
                                                     **shapes)
        common.randomize_weights(ours)
        common.copy_weights(ours, theirs)
        for model in (ours, theirs):
            model.compile(
                optimizer=keras.optimizers.AdamW(1e-4),
                loss=keras.losses.SparseCategoricalCrossentropy(
                    from_logits=True),
                jit_compile=True,
            )
        steps = {name: (lambda m=model: m.train_on_batch(ids, labels))
                 for name, model in (("ours", ours), ("keras_hub", theirs))}
        timing = common.interleaved(steps, rounds=args.rounds, warmup=2)
        tokens = args.batch_size * shapes["sequence_length"]
        print(json.dumps({
            "backend": keras.backend.backend(),
            "precision": policy,
            "ours": tokens / timing.median("ours"),
            "keras_hub": tokens / timing.median("keras_hub"),
            "ratio": timing.ratio("keras_hub", "ours"),
        }), flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--precisions", default=",".join(PRECISIONS))
    parser.add_argument("--mixed-policy", default="mixed_bfloat16",
                        choices=("mixed_bfloat16", "mixed_float16"))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--tiny", action="store_true",
                        help="a 1-layer toy model, batch 4, 2 rounds (CI)")
    parser.add_argument("--child", action="store_true",
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.tiny:
        args.batch_size, args.rounds = 4, min(args.rounds, 2)
    for precision in args.precisions.split(","):
        if precision not in PRECISIONS:
            parser.error(f"unknown precision {precision!r}")
    if args.child:
        return child(args)

    start = os.getloadavg()[0]
    shapes = common.TINY_SHAPES if args.tiny else common.EDGE_SHAPES
    print(common.machine_line())
    print(f"encoder classifier {shapes}, batch {args.batch_size}, AdamW, "
          f"dropout {args.dropout}, XLA (jit_compile=True), {args.rounds} "
          f"alternating steps each\n")
    rows = []
    forwarded = ["--precisions", args.precisions, "--mixed-policy",
                 args.mixed_policy, "--batch-size", str(args.batch_size),
                 "--rounds", str(args.rounds), "--dropout",
                 str(args.dropout)] + (["--tiny"] if args.tiny else [])
    for backend in args.backends.split(","):
        if backend not in BACKENDS:
            parser.error(f"unknown backend {backend!r}")
        env = dict(os.environ, KERAS_BACKEND=backend)
        began = time.perf_counter()
        out = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--child",
             *forwarded], env=env, check=True, stdout=subprocess.PIPE,
            text=True).stdout
        for line in out.splitlines():
            if not line.startswith("{"):
                continue
            r = json.loads(line)
            rows.append([
                "TensorFlow + XLA" if r["backend"] == "tensorflow"
                else "JAX", r["precision"],
                f"{r['ours']:,.0f}", f"{r['keras_hub']:,.0f}",
                f"**{r['ratio']:.2f}x**"])
            print(common.markdown_table(
                ["backend", "precision", "ours tokens/s",
                 "keras-hub tokens/s", "ours / keras-hub"],
                rows[-1:]).splitlines()[-1], flush=True)
        print(f"({backend}: {time.perf_counter() - began:.0f} s)",
              flush=True)
    print()
    print(common.markdown_table(
        ["backend", "precision", "ours tokens/s", "keras-hub tokens/s",
         "ours / keras-hub"], rows))
    print(common.load_note(start))
    return rows


if __name__ == "__main__":
    main()
