"""Decode speed, side by side: the LiteRT-LM engine, our runner, full
recompute, and the weight-streaming floor, at float32, dynamic int8 and
int4.

One `decoder_lm` (random weights; vocabulary 8000, max_length 128, 4
layers, width 256, 4 heads, FFN 1024, learned positions, tied embeddings)
is exported four ways per precision:
- `litertlm`: `export_litertlm`, run by `litert_lm.Engine` (CPU, one
  thread, greedy `top_k=1`); a step is the engine's own decode time
  (its benchmark info);
- `runner`: `export_generator_tflite` (cache inside the interpreter), run
  by `keras_attn_runtime.Generator`; a step is one `decode` call;
- `recompute`: `export_tflite`, the plain model, run over the whole
  (1, 128) window for every new token; a step is one such pass;
- `floor`: a file holding only the fully-connected layers of one decode
  step, chained (per layer Q+K+V, output, FFN in, FFN out; then the
  vocabulary projection), at the same precision: the time to stream the
  step's weights once, which no decode step can beat.

The variants take turns (A B C D A B C D ...) so a busy machine slows all
alike; each figure is the median over repeats of the median step, and
each ratio the median of the per-repeat ratios.

Run: `python benchmarks/litertlm_decode.py` (about 5 minutes on 2 cores);
`--tiny` runs a tiny model in seconds (what CI runs).
"""

import argparse
import datetime
import os
import platform
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_attn import models  # noqa: E402
from keras_attn.export import converter  # noqa: E402
from keras_attn.export import export_generator_tflite  # noqa: E402
from keras_attn.export import export_litertlm  # noqa: E402
from keras_attn.export import export_tflite  # noqa: E402

PRECISIONS = (None, "dynamic_int8", "int4")
VARIANTS = ("litertlm", "runner", "recompute", "floor")
FULL = dict(vocabulary_size=8000, sequence_length=128, num_layers=4,
            hidden_dim=256, num_heads=4, intermediate_dim=1024)
TINY = dict(vocabulary_size=200, sequence_length=32, num_layers=1,
            hidden_dim=32, num_heads=2, intermediate_dim=64)


def vocabulary_of(size):
    return ["[PAD]", "[UNK]", "[BOS]", "[EOS]"] + [
        f"t{i}" for i in range(4, size)]


def build_model(shape):
    keras.utils.set_random_seed(0)
    model = models.decoder_lm(dropout=0.0, **shape)
    rng = np.random.default_rng(0)
    # Random weights of a trained scale: greedy decoding then wanders
    # over the vocabulary instead of repeating one token.
    model.set_weights([rng.normal(0, 0.05, w.shape).astype(w.dtype)
                       if w.ndim > 1 else w for w in model.get_weights()])
    return model


def floor_model(shape):
    """The fully-connected layers of one decode step, chained."""
    width, ffn = shape["hidden_dim"], shape["intermediate_dim"]
    x = keras.Input((width,), batch_size=1, name="x")
    h = x
    for i in range(shape["num_layers"]):
        qkv = [keras.layers.Dense(width, use_bias=False,
                                  name=f"attention_{part}_{i}")(h)
               for part in ("query", "key", "value")]
        h = keras.layers.Add()(qkv)
        h = keras.layers.Dense(width, use_bias=False,
                               name=f"attention_output_{i}")(h)
        h = keras.layers.Dense(ffn, use_bias=False, name=f"ffn_in_{i}")(h)
        h = keras.layers.Dense(width, use_bias=False, name=f"ffn_out_{i}")(h)
    logits = keras.layers.Dense(shape["vocabulary_size"], use_bias=False,
                                name="logits")(h)
    return keras.Model(x, logits)


def build_files(model, shape, directory):
    vocabulary = vocabulary_of(shape["vocabulary_size"])
    length = shape["sequence_length"]
    files = {}
    floor = floor_model(shape)
    for precision in PRECISIONS:
        name = precision or "float32"
        path = os.path.join(directory, name)
        files[name] = {
            "litertlm": os.fspath(export_litertlm(
                model, path + ".litertlm", vocabulary,
                quantization=precision, sample_prompts=[])),
            "runner": os.fspath(export_generator_tflite(
                model, path + "_runner.tflite", length,
                quantization=precision, sample_prompts=[],
                vocabulary=vocabulary)),
        }
        for variant, source in (("recompute", model), ("floor", floor)):
            target = f"{path}_{variant}.tflite"
            if precision == "int4":
                float_path = f"{path}_{variant}_float.tflite"
                export_tflite(source, float_path, latency_runs=1)
                with open(float_path, "rb") as f:
                    quantized = converter.quantize_int4(f.read())
                with open(target, "wb") as f:
                    f.write(quantized)
            else:
                export_tflite(source, target, quantization=precision,
                              latency_runs=1)
            files[name][variant] = target
    return files, vocabulary


class Timers:
    """One object per variant that times `steps` decode steps, in ms."""

    def __init__(self, files, vocabulary, length, steps):
        from ai_edge_litert.interpreter import Interpreter

        from keras_attn_runtime import Generator
        from keras_attn_runtime.litertlm import LiteRTLMGenerator

        self.steps = steps
        self.prompt = " ".join(vocabulary[4:8])
        self.engine = LiteRTLMGenerator(files["litertlm"], num_threads=1)
        self.runner = Generator(files["runner"], num_threads=1, quiet=True)
        self.plain = {}
        for variant in ("recompute", "floor"):
            interpreter = Interpreter(model_path=files[variant],
                                      num_threads=1)
            runner = interpreter.get_signature_runner()
            (name, detail), = runner.get_input_details().items()
            data = (np.arange(length, dtype=detail["dtype"])[None] % 50 + 4
                    if variant == "recompute"
                    else np.ones(detail["shape"], detail["dtype"]))
            self.plain[variant] = (runner, {name: data})

    def litertlm(self):
        self.engine.generate(self.prompt, self.steps, sampler="greedy")
        return self.engine.last_timings["decode_ms"]

    def runner_step(self):
        self.runner.generate(self.prompt, self.steps)
        return 1e3 * statistics.median(self.runner.last_timings["decode"])

    def plain_step(self, variant):
        runner, inputs = self.plain[variant]
        runner(**inputs)  # warm
        seconds = []
        for _ in range(self.steps if variant == "floor" else 3):
            start = time.perf_counter()
            runner(**inputs)
            seconds.append(time.perf_counter() - start)
        return 1e3 * statistics.median(seconds)

    def time(self, variant):
        if variant == "litertlm":
            return self.litertlm()
        if variant == "runner":
            return self.runner_step()
        return self.plain_step(variant)

    def close(self):
        self.engine.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true",
                        help="a tiny model, a few steps (a smoke test)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="rounds of all variants (default: 5, tiny 1)")
    parser.add_argument("--steps", type=int, default=None,
                        help="decode steps per measurement (default: 64, "
                             "tiny 8)")
    args = parser.parse_args()
    shape = TINY if args.tiny else FULL
    repeats = args.repeats or (1 if args.tiny else 5)
    steps = args.steps or (8 if args.tiny else 64)

    model = build_model(shape)
    with tempfile.TemporaryDirectory(prefix="litertlm_decode_") as tmp:
        files, vocabulary = build_files(model, shape, tmp)
        sizes = {name: {v: os.path.getsize(p) for v, p in paths.items()}
                 for name, paths in files.items()}
        timers = {name: Timers(paths, vocabulary, shape["sequence_length"],
                               steps)
                  for name, paths in files.items()}
        times = {name: {v: [] for v in VARIANTS} for name in files}
        for _ in range(repeats):
            for name, timer in timers.items():
                for variant in VARIANTS:
                    times[name][variant].append(timer.time(variant))
        for timer in timers.values():
            timer.close()

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\n{datetime.datetime.now():%Y-%m-%d %H:%M}, "
          f"{platform.machine()}, {os.cpu_count()} cores, load average "
          f"{load:.1f}; decoder_lm {shape}, {repeats} repeats x {steps} "
          "steps, one thread\n")
    print("| weights | LiteRT-LM engine | our runner | full recompute | "
          "floor | runner / floor | engine / floor | engine / runner | "
          "recompute / runner | .litertlm | runner file |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, variants in times.items():
        median = {v: statistics.median(t) for v, t in variants.items()}

        def ratio(a, b):
            return statistics.median(
                x / y for x, y in zip(variants[a], variants[b]))

        print(f"| {name} | {median['litertlm']:.3f} ms | "
              f"{median['runner']:.3f} ms | {median['recompute']:.2f} ms | "
              f"{median['floor']:.3f} ms | {ratio('runner', 'floor'):.2f}x | "
              f"{ratio('litertlm', 'floor'):.2f}x | "
              f"{ratio('litertlm', 'runner'):.2f}x | "
              f"{ratio('recompute', 'runner'):.1f}x | "
              f"{sizes[name]['litertlm']:,} B | "
              f"{sizes[name]['runner']:,} B |")


if __name__ == "__main__":
    main()
