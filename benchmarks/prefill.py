"""Prompt processing (prefill) of our TFLite generator against full
recompute, per token, side by side in one run.

One `decoder_lm` (vocabulary 8000, width 256, 4 layers, 4 heads, FFN 1024,
random weights) is exported twice: as the prefill/decode generator of
`keras_attn.export.export_generator_tflite`, and as the plain
`serving_default` file of `export_tflite`, which generates by re-running
the whole max_length window for every token (how keras-hub models generate
on TFLite). For a prompt of P tokens:
    prefill per prompt token = prefill time / P;
    full recompute per token = one window pass (its cost for every token
        it produces, the prompt's first included).
The ratio of the two is the issue's figure (target <= 0.5). The table also
gives prefill / one window pass: prefill runs over the fixed
(1, max_length) buffer, so that share does not shrink with P.
Both run with ai-edge-litert on one thread, batch 1, taking turns; medians.

Run: `python benchmarks/prefill.py` (about 2 minutes on 2 cores);
`--tiny` uses a 1-layer toy (CI).
"""

import argparse
import os
import tempfile

import common
import numpy as np


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt-lengths", default="1,8,32,64,127")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--quantization", default="float32",
                        choices=("float32", "float16", "dynamic_int8"))
    parser.add_argument("--tiny", action="store_true",
                        help="a 1-layer toy model, 3 rounds (CI)")
    args = parser.parse_args(argv)
    shapes = dict(common.TINY_SHAPES if args.tiny else common.EDGE_SHAPES)
    if args.tiny:
        args.rounds, args.calls = min(args.rounds, 3), 1
    max_length = shapes["sequence_length"]
    lengths = [int(p) for p in args.prompt_lengths.split(",")]
    if any(not 0 < p < max_length for p in lengths):
        parser.error(f"prompt lengths must be in [1, {max_length - 1}]")

    from ai_edge_litert.interpreter import Interpreter

    from keras_attn import models
    from keras_attn.export import export_generator_tflite
    from keras_attn.export import export_tflite

    model = models.decoder_lm(dropout=0.0, **shapes)
    common.randomize_weights(model)
    quantization = (None if args.quantization == "float32"
                    else args.quantization)
    start = os.getloadavg()[0]
    print(common.machine_line())
    print(f"decoder_lm {shapes}, {args.quantization}, max_length "
          f"{max_length}, ai-edge-litert 1 thread, batch 1, {args.rounds} "
          f"rounds x {args.calls} calls\n")
    with tempfile.TemporaryDirectory(prefix="keras_attn_bench_") as tmp:
        generator = Interpreter(model_path=export_generator_tflite(
            model, os.path.join(tmp, "generator.tflite"), max_length,
            quantization=quantization), num_threads=1)
        full = Interpreter(model_path=export_tflite(
            model, os.path.join(tmp, "full.tflite"),
            quantization=quantization).path, num_threads=1)
        prefill = generator.get_signature_runner("prefill")
        window = full.get_signature_runner("serving_default")
        rows = []
        for length in lengths:
            buffer = common.token_batch(1, max_length,
                                        shapes["vocabulary_size"])
            buffer[0, length:] = 0
            size = np.array(length, "int32")
            logits = prefill(token_ids=buffer, length=size)["logits"]
            (full_logits,) = window(token_ids=buffer).values()
            # Same model, same prompt: the next-token logits agree.
            np.testing.assert_allclose(logits[0], full_logits[0, length - 1],
                                       atol=2e-2 if quantization else 1e-3)
            timing = common.interleaved({
                "prefill": lambda: prefill(token_ids=buffer, length=size),
                "window": lambda: window(token_ids=buffer),
            }, rounds=args.rounds, calls_per_round=args.calls)
            per_token = 1e3 * timing.median("prefill") / length
            window_ms = 1e3 * timing.median("window")
            rows.append([
                length, f"{1e3 * timing.median('prefill'):.2f} ms",
                f"{per_token:.3f} ms", f"{window_ms:.2f} ms",
                f"**{timing.ratio('prefill', 'window') / length:.3f}x**",
                f"{timing.ratio('prefill', 'window'):.2f}x"])
            print(common.markdown_table(["P"] * 6, rows[-1:])
                  .splitlines()[-1], flush=True)
    print()
    print(common.markdown_table(
        ["prompt tokens P", "prefill", "prefill per prompt token",
         "full recompute per token (one window pass)",
         "per-token ratio", "prefill / window pass"], rows))
    print(common.load_note(start))
    return rows


if __name__ == "__main__":
    main()
