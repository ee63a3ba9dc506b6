"""GPU training throughput: our `decoder_lm` against a stack of keras-hub
`TransformerDecoder` blocks (both Keras on JAX) and against PyTorch
`nn.TransformerEncoderLayer` blocks with `torch.compile`, one command.

Shape (GPT-2 small): vocabulary 32000, length 1024, width 768, 12 heads,
FFN 3072, 12 pre-LN layers, batch 16, tied input/output embedding, no
dropout. Keras models train under XLA with the `mixed_bfloat16` policy;
PyTorch under `torch.autocast(bfloat16)`. All use AdamW (lr 1e-4) and
next-token cross-entropy on random token ids.

Each candidate runs in its own process (JAX preallocates the GPU's memory;
PyTorch must not share it) and prints:
- tokens/s over the timed steps (after warm-up steps that compile);
- model TFLOP/s: tokens/s x training FLOPs per token, the same count for
  every candidate: 6 x (weights in matmuls, the vocabulary projection
  included) + 12 x layers x length x width (attention scores and their
  use, forward and backward, causal half not discounted);
- that as a fraction of the bf16 matmul peak this script measures itself
  (the best of several 8192^3 bf16 matmuls in JAX on the same device);
- peak memory (JAX `memory_stats()["peak_bytes_in_use"]`, PyTorch
  `torch.cuda.max_memory_allocated()`; "n/a" where the device has none);
- which attention kernel ran: for Keras, whether the optimized HLO of the
  train step calls cuDNN's fused attention (`__cudnn$fmha...`), else XLA's
  own fusion; for PyTorch, the attention kernels in a profiled step.
Reference figures (H100, November 2026, shared/notes/edge-facts.md):
keras-hub on JAX 293k tokens/s, torch.compile 401k tokens/s; targets for
ours: >= 1.5x keras-hub, >= 1.1x torch.compile.

Run on a GPU machine: `KERAS_BACKEND=jax python benchmarks/gpu_train.py`
(Keras and keras-hub installed; PyTorch optional). `--tiny` runs a 2-layer
toy on the CPU in about a minute, to prove the script works (CI).
"""

import argparse
import glob
import json
import os
import re
import subprocess
import sys
import tempfile
import time

FULL = dict(vocabulary_size=32000, sequence_length=1024, num_layers=12,
            hidden_dim=768, num_heads=12, intermediate_dim=3072,
            batch_size=16, steps=20, warmup=3, peak_size=8192)
TINY = dict(vocabulary_size=256, sequence_length=64, num_layers=2,
            hidden_dim=64, num_heads=4, intermediate_dim=128,
            batch_size=4, steps=3, warmup=1, peak_size=512)
CANDIDATES = ("ours", "keras_hub", "torch")
REFERENCE_TOKENS_PER_S = {"keras_hub": 293e3, "torch": 401e3}  # H100
TARGETS = {"keras_hub": 1.5, "torch": 1.1}
CUDNN_ATTENTION = re.compile(r"__cudnn\$fmha\w*")


def flops_per_token(c):
    """Training FLOPs per token (forward + backward), see the docstring."""
    d, f, n = c["hidden_dim"], c["intermediate_dim"], c["num_layers"]
    matmul_weights = n * (4 * d * d + 2 * d * f) + c["vocabulary_size"] * d
    return 6 * matmul_weights + 12 * n * c["sequence_length"] * d


def batch(c, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    ids = rng.integers(1, c["vocabulary_size"],
                       (c["batch_size"], c["sequence_length"] + 1))
    return ids[:, :-1].astype("int32"), ids[:, 1:].astype("int32")


def measure_peak(c):
    """bf16 matmul TFLOP/s measured with JAX on the default device."""
    import jax
    import jax.numpy as jnp

    n = c["peak_size"]
    a = jnp.ones((n, n), jnp.bfloat16)
    matmul = jax.jit(lambda x, y: x @ y)
    matmul(a, a).block_until_ready()
    best = float("inf")
    for _ in range(10):
        start = time.perf_counter()
        matmul(a, a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best / 1e12


def run_keras(name, c):
    import keras

    keras.config.set_dtype_policy("mixed_bfloat16")
    import common

    shapes = {k: c[k] for k in ("vocabulary_size", "sequence_length",
                                "num_layers", "hidden_dim", "num_heads",
                                "intermediate_dim")}
    if name == "ours":
        from keras_attn import models

        model = models.decoder_lm(dropout=0.0, normalize_first=True,
                                  **shapes)
    else:
        model = common.keras_hub_decoder_lm(dropout=0.0,
                                            normalize_first=True, **shapes)
    model.compile(optimizer=keras.optimizers.AdamW(1e-4),
                  loss=keras.losses.SparseCategoricalCrossentropy(
                      from_logits=True), jit_compile=True)
    x, y = batch(c)
    for _ in range(c["warmup"]):
        model.train_on_batch(x, y)
    start = time.perf_counter()
    for _ in range(c["steps"]):
        loss = model.train_on_batch(x, y)
    seconds = time.perf_counter() - start
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    return {
        "seconds": seconds,
        "loss": float(loss if not isinstance(loss, list) else loss[0]),
        "peak_memory": stats.get("peak_bytes_in_use"),
        "device": str(jax.devices()[0].device_kind),
    }


def keras_attention_kernel(dump_dir):
    """cuDNN fused attention if an optimized HLO module calls it."""
    found = set()
    paths = glob.glob(os.path.join(dump_dir, "*after_optimizations.txt"))
    if not paths:
        return "unknown (no train-step HLO was dumped)"
    for path in paths:
        with open(path, errors="replace") as f:
            found.update(CUDNN_ATTENTION.findall(f.read()))
    if found:
        return "cuDNN flash (" + ", ".join(sorted(found)) + ")"
    return "XLA (no cuDNN fused attention in the HLO)"


def run_torch(c):
    import torch
    from torch import nn

    device = "cuda" if torch.cuda.is_available() else "cpu"
    d, length = c["hidden_dim"], c["sequence_length"]

    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            self.tokens = nn.Embedding(c["vocabulary_size"], d)
            self.positions = nn.Embedding(length, d)
            layer = nn.TransformerEncoderLayer(
                d, c["num_heads"], c["intermediate_dim"], dropout=0.0,
                activation="gelu", batch_first=True, norm_first=True)
            self.blocks = nn.TransformerEncoder(
                layer, c["num_layers"], norm=nn.LayerNorm(d),
                enable_nested_tensor=False)
            self.register_buffer("causal", nn.Transformer
                                 .generate_square_subsequent_mask(length))
            # GPT-2's embedding init, as Keras's models use: N(0, 1) rows
            # would make the tied logits huge.
            for table in (self.tokens, self.positions):
                nn.init.normal_(table.weight, std=0.02)

        def forward(self, ids):
            x = self.tokens(ids) + self.positions.weight[None]
            x = self.blocks(x, mask=self.causal, is_causal=True)
            return x @ self.tokens.weight.T  # tied output projection

    model = LM().to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4,
                                  fused=device == "cuda")
    compiled = torch.compile(model)
    x, y = (torch.as_tensor(a, dtype=torch.long, device=device)
            for a in batch(c))

    def step():
        with torch.autocast(device, dtype=torch.bfloat16):
            logits = compiled(x)
        loss = nn.functional.cross_entropy(
            logits.float().flatten(0, 1), y.flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    for _ in range(c["warmup"]):
        step()
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(c["steps"]):
        loss = step()
    sync()
    seconds = time.perf_counter() - start
    kernels = set()
    with torch.profiler.profile() as profile:
        step()
        sync()
    for event in profile.key_averages():
        if re.search(r"flash|efficient|cudnn|fmha|scaled_dot_product",
                     event.key, re.I):
            kernels.add(event.key)
    return {
        "seconds": seconds,
        "loss": float(loss),
        "peak_memory": (torch.cuda.max_memory_allocated()
                        if device == "cuda" else None),
        "device": (torch.cuda.get_device_name() if device == "cuda"
                   else "cpu"),
        "attention": (", ".join(sorted(kernels)[:3]) if kernels
                      else "no fused attention kernel in the profile"),
    }


def child(name, c, dump_dir):
    if name == "peak":
        result = {"peak_tflops": measure_peak(c)}
    elif name == "torch":
        result = run_torch(c)
    else:
        result = run_keras(name, c)
        result["attention"] = keras_attention_kernel(dump_dir)
    print("RESULT " + json.dumps(result), flush=True)


def run_child(name, args, config):
    """Runs one candidate in a fresh process; its result dict, or None
    (with the reason printed) when it cannot run."""
    with tempfile.TemporaryDirectory(prefix="keras_attn_hlo_") as dump:
        env = dict(os.environ, KERAS_BACKEND="jax",
                   PYTHONPATH=os.pathsep.join(filter(None, [
                       os.path.dirname(os.path.abspath(__file__)),
                       os.environ.get("PYTHONPATH")])))
        if name in ("ours", "keras_hub"):
            env["XLA_FLAGS"] = " ".join(filter(None, [
                os.environ.get("XLA_FLAGS"), f"--xla_dump_to={dump}",
                "--xla_dump_hlo_as_text",
                # Only the train step's modules: small dumps.
                "--xla_dump_hlo_module_re=.*train.*"]))
        command = [sys.executable, os.path.abspath(__file__), "--child",
                   name, "--config", json.dumps(config), "--dump", dump]
        done = subprocess.run(command, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
        for line in done.stdout.splitlines():
            if line.startswith("RESULT "):
                return json.loads(line[len("RESULT "):])
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        print(f"{name}: no result (exit {done.returncode}):\n{tail}",
              flush=True)
        return None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true",
                        help="a 2-layer toy shape, a few steps (CPU, CI)")
    parser.add_argument("--candidates", default=",".join(CANDIDATES))
    parser.add_argument("--steps", type=int)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--dump", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child, json.loads(args.config), args.dump)
    config = dict(TINY if args.tiny else FULL)
    if args.steps:
        config["steps"] = args.steps
    names = args.candidates.split(",")
    for name in names:
        if name not in CANDIDATES:
            parser.error(f"unknown candidate {name!r}")
    if "torch" in names:
        try:
            import torch  # noqa: F401
        except ImportError:
            print("torch: not installed, skipped")
            names.remove("torch")

    print(time.strftime("date %Y-%m-%d %H:%M"), {
        k: v for k, v in config.items() if k != "peak_size"})
    peak = run_child("peak", args, config)
    peak = peak["peak_tflops"] if peak else None
    tokens = config["batch_size"] * config["sequence_length"]
    per_token = flops_per_token(config)
    rows, rates = [], {}
    for name in names:
        result = run_child(name, args, config)
        if result is None:
            continue
        rate = tokens * config["steps"] / result["seconds"]
        rates[name] = rate
        tflops = rate * per_token / 1e12
        memory = result.get("peak_memory")
        rows.append([
            name, result["device"], f"{rate:,.0f}", f"{tflops:.2f}",
            f"{tflops / peak:.1%}" if peak else "n/a",
            f"{memory / 2**30:.2f} GiB" if memory else "n/a",
            result["attention"], f"{result['loss']:.3f}"])
        print(" | ".join(rows[-1]), flush=True)
    print()
    print(f"bf16 matmul peak measured: "
          f"{peak:.1f} TFLOP/s" if peak else "bf16 peak: not measured")
    header = ["model", "device", "tokens/s", "model TFLOP/s",
              "of measured bf16 peak", "peak memory", "attention kernel",
              "last loss"]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if args.tiny:
        print("(--tiny: the ratios below prove the script runs; at this "
              "shape they measure nothing)")
    if "ours" in rates:
        for name, target in TARGETS.items():
            if name in rates:
                ratio = rates["ours"] / rates[name]
                print(f"ours / {name}: {ratio:.2f}x (target >= {target}x: "
                      f"{'met' if ratio >= target else 'missed'})")
            if not args.tiny:
                print(f"ours / {name} H100 reference "
                      f"({REFERENCE_TOKENS_PER_S[name]:,.0f} tokens/s): "
                      f"{rates['ours'] / REFERENCE_TOKENS_PER_S[name]:.2f}x")
    return rows


if __name__ == "__main__":
    main()
