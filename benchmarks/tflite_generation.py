"""On-device generation speed: KV cache vs full recompute, same model, one run.

Exports one `decoder_lm` twice: as the prefill/decode generator of
`keras_attn.export.export_generator_tflite` (KV cache), and as the plain
`serving_default` classifier-style file of `export_tflite`, which can only
generate by re-running the whole window for every new token (how keras-hub
models generate on TFLite today). Both are run with ai-edge-litert on the
CPU, one thread, batch 1, greedy, from the same prompt; the runs alternate
so machine noise hits both alike. The tokens must be identical. Each row
quantizes both files the same way; rows: float32 with the cache in TFLite
variables (the default `kv_cache`) and in signature tensors, and
dynamic_int8 with variables.

Run: `python benchmarks/tflite_generation.py` (about 2 minutes on 2 cores).
The model size matches the keras-hub decoder measured in
shared/notes/edge-facts.md (vocabulary 8000, width 256, 4 layers, 4 heads,
FFN 1024, max_length 128).
"""

import argparse
import os
import platform
import statistics
import tempfile
import time

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from keras_attn import models
from keras_attn.export import export_generator_tflite
from keras_attn.export import export_tflite
from keras_attn.export.report import greedy_generate


def recompute_greedy(interpreter, prompt, new_tokens, max_length):
    run = interpreter.get_signature_runner("serving_default")
    buffer = np.zeros((1, max_length), "int32")
    buffer[0, : len(prompt)] = prompt
    tokens = []
    for index in range(len(prompt), len(prompt) + new_tokens):
        (logits,) = run(token_ids=buffer).values()  # (1, L, V)
        token = int(np.argmax(logits[0, index - 1, 1:])) + 1
        tokens.append(token)
        buffer[0, index] = token
    return tokens


def measure(model, quantization, kv_cache, prompt, args, directory):
    """Tokens/s of both files for one quantization; asserts equal tokens."""
    name = quantization or "float32"
    # No parity check in the export: this benchmark checks the tokens
    # against the full recompute itself.
    cached_path = export_generator_tflite(
        model, os.path.join(directory, f"cached_{name}_{kv_cache}.tflite"),
        args.max_length, quantization=quantization, kv_cache=kv_cache,
        sample_prompts=[]).path
    full = export_tflite(model, os.path.join(directory, f"full_{name}.tflite"),
                         quantization=quantization)
    cached = Interpreter(model_path=cached_path, num_threads=1)
    recompute = Interpreter(model_path=full.path, num_threads=1)
    timings = {"cached": [], "recompute": []}
    outputs = {}
    for _ in range(args.repeats):
        for kind, fn in (
            ("cached", lambda: greedy_generate(cached, prompt,
                                               args.new_tokens)[0]),
            ("recompute", lambda: recompute_greedy(
                recompute, prompt, args.new_tokens, args.max_length)),
        ):
            start = time.perf_counter()
            outputs[kind] = fn()
            timings[kind].append(time.perf_counter() - start)
    assert outputs["cached"] == outputs["recompute"], f"{name}: tokens differ"
    rates = {k: args.new_tokens / statistics.median(v)
             for k, v in timings.items()}
    return (f"| {name} | {kv_cache} | {rates['cached']:.0f} tokens/s | "
            f"{rates['recompute']:.1f} tokens/s | "
            f"{rates['cached'] / rates['recompute']:.1f}x | "
            f"{os.path.getsize(cached_path) / 1e6:.1f} MB | yes |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=112)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rows", default="float32:variables,"
                        "float32:tensors,dynamic_int8:variables",
                        help="comma-separated WEIGHTS:KV_CACHE, WEIGHTS one "
                             "of float32, float16, dynamic_int8 (both files "
                             "of a row are quantized the same way), "
                             "KV_CACHE variables or tensors (default: "
                             "%(default)s)")
    args = parser.parse_args()
    rows = []
    for row in args.rows.split(","):
        weights, _, kv_cache = row.partition(":")
        if weights not in ("float32", "float16", "dynamic_int8") or (
            kv_cache not in ("variables", "tensors")
        ):
            parser.error(f"bad row {row!r} in --rows")
        rows.append((None if weights == "float32" else weights, kv_cache))
    prompt = list(range(5, 5 + args.max_length - args.new_tokens))
    model = models.decoder_lm(
        vocabulary_size=8000, sequence_length=args.max_length, num_layers=4,
        hidden_dim=256, num_heads=4, intermediate_dim=1024, dropout=0.0)
    print(f"date {time.strftime('%Y-%m-%d')}, {platform.machine()}, "
          f"{os.cpu_count()} cores, ai-edge-litert 1 thread, batch 1, "
          f"greedy, {args.new_tokens} new tokens at max_length "
          f"{args.max_length}\n")
    print("| weights | kv_cache | KV cache | full recompute | ratio | "
          "generator file | identical tokens |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="keras_attn_bench_") as tmp:
        for quantization, kv_cache in rows:
            print(measure(model, quantization, kv_cache, prompt, args, tmp),
                  flush=True)


if __name__ == "__main__":
    main()
