"""A trained language model as LiteRT-LM bundles: size, held-out
perplexity, greedy agreement and decode speed, float32 vs dynamic int8 vs
int4.

Takes the run directory of `examples/train_lm.py` (best.keras and
vocabulary.txt) and exports three `.litertlm` bundles with
`keras_attn.export.export_litertlm`: float32, `dynamic_int8` (the TFLite
converter's int8 weights) and `int4` (ai-edge-quantizer, block-wise, all
components). For each it measures:

- size: the bundle, and the prefill/decode model inside;
- held-out perplexity: the test split of train_lm.py (same corpus reader,
  split seed and `lm_dataset` windows), every window fed token by token to
  the bundle's own `decode` signature (ai-edge-litert; id 0 is masked in
  the bundle, so the Keras reference masks it too);
- greedy agreement with float32: teacher-forced (argmax of the quantized
  logits == argmax of the float32 bundle's at every held-out position) and
  free-running through `litert_lm.Engine` (100 test prompts: [BOS] and the
  first 4 word pieces of a test tweet, 20 greedy tokens, stop at [EOS];
  texts compared after the engine's tokenizer), and the float32 bundle's
  text against `keras_attn.models.generate`'s;
- decode speed: the engine's own decode tokens/s over those prompts.

Run: `python benchmarks/litertlm_quality.py RUN_DIR` (RUN_DIR defaults to
runs/lm; about 5 minutes on 2 cores).
"""

import argparse
import datetime
import math
import os
import platform
import statistics
import tempfile

import keras
import numpy as np

from keras_attn import data
from keras_attn import models
from keras_attn.export import export_litertlm
from keras_attn_runtime import litertlm as runtime_litertlm
from keras_attn_runtime.tokenizer import WordPieceTokenizer

SEED = 0  # train_lm.py's split seed
PROMPT_TOKENS = 4
NEW_TOKENS = 20
PRECISIONS = (None, "dynamic_int8", "int4")


def bundle_model(path):
    """The prefill/decode .tflite bytes inside a bundle."""
    for section in runtime_litertlm.read_bundle(path)["sections"]:
        if section["type"] == "TFLiteModel":
            with open(path, "rb") as f:
                f.seek(section["begin"])
                return f.read(section["end"] - section["begin"])
    raise ValueError(f"no model in {path}")


def decode_logits(model_bytes, windows):
    """Teacher-forced logits `(N, L, V)` of the bundle's `decode`."""
    from ai_edge_litert.interpreter import Interpreter

    decode = Interpreter(model_content=model_bytes,
                         num_threads=1).get_signature_runner("decode")
    empty = {name: np.zeros(spec["shape"], "float32")
             for name, spec in decode.get_input_details().items()
             if name.startswith("kv_cache")}
    out = []
    for window in windows:
        caches, rows = dict(empty), []
        for index, token in enumerate(window):
            result = decode(tokens=np.array([[token]], "int32"),
                            input_pos=np.array([index], "int32"), **caches)
            caches = {name: result[name] for name in empty}
            rows.append(result["logits"][0, 0])
        out.append(rows)
    return np.asarray(out, "float32")


def perplexity(logits, targets):
    """exp(mean NLL) over the targets that are not padding."""
    logits = logits.astype("float64")
    logits = logits - logits.max(-1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    real = targets != 0
    picked = np.take_along_axis(log_probs, targets[..., None], -1)[..., 0]
    return math.exp(-picked[real].mean())


def engine_texts(path, prompts, reference_ids, num_threads=1):
    """Greedy texts of the engine for each prompt text, their ids, the
    `reference_ids` detokenized by the engine, and its decode tokens/s
    (median over prompts)."""
    texts, rates = [], []
    with runtime_litertlm.LiteRTLMGenerator(path, num_threads) as engine:
        for prompt in prompts:
            texts.append(engine.generate(prompt, NEW_TOKENS,
                                         sampler="greedy"))
            timings = engine.last_timings
            if timings["decode_ms"]:
                rates.append(1e3 / timings["decode_ms"])
        ids = [engine.tokenize(text) for text in texts]
        references = [engine.detokenize(r) for r in reference_ids]
    return texts, ids, references, statistics.median(rates)


def agreement(reference, other):
    """(identical sequences, positional agreement, mean common prefix)."""
    same = sum(a == b for a, b in zip(reference, other))
    positions = total = prefix = 0
    for a, b in zip(reference, other):
        total += len(a)
        positions += sum(x == y for x, y in zip(a, b))
        common = 0
        while common < min(len(a), len(b)) and a[common] == b[common]:
            common += 1
        prefix += common
    return same, positions / max(total, 1), prefix / len(reference)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", nargs="?", default="runs/lm")
    parser.add_argument("--prompts", type=int, default=100)
    parser.add_argument("--windows", type=int, default=None,
                        help="held-out windows to score (default: all)")
    parser.add_argument("--output-dir", default=None)
    args = parser.parse_args()

    model = keras.saving.load_model(os.path.join(args.run_dir, "best.keras"))
    vocabulary = data.load_vocabulary(
        os.path.join(args.run_dir, "vocabulary.txt"))
    length = model.input.shape[1]
    tokenizer = data.make_tokenizer(vocabulary)
    texts = data.read_lm_corpus().texts
    _, _, test = data.train_val_test_split(texts, seed=SEED)
    windows, targets = [], []
    for inputs, batch_targets in data.lm_dataset(test, tokenizer, length,
                                                 256):
        windows += keras.ops.convert_to_numpy(inputs).tolist()
        targets += keras.ops.convert_to_numpy(batch_targets).tolist()
    windows = np.asarray(windows[:args.windows], "int32")
    targets = np.asarray(targets[:args.windows], "int32")

    keras_logits = keras.ops.convert_to_numpy(model.predict(
        windows, batch_size=256, verbose=0))
    keras_logits[..., 0] = -1e9  # as in the bundles: id 0 never wins
    keras_ppl = perplexity(keras_logits, targets)

    bos = vocabulary.index(data.BOS)
    eos = vocabulary.index(data.EOS)
    reader = WordPieceTokenizer(vocabulary)
    prompts = []
    for text in test[:args.prompts]:
        ids = reader.tokenize(text)[:PROMPT_TOKENS]
        prompts.append(reader.detokenize(ids) if ids else "")

    # Keras's greedy tokens for the same prompts (the bundle's tokenizer
    # gives our ids: tests/export/hf_tokenizer_test.py).
    expected_ids = []
    for prompt in prompts:
        prompt_ids = reader.tokenize(prompt)
        room = length - 1 - len(prompt_ids)
        expected = models.generate(model, [[bos] + prompt_ids], room,
                                   sampler="greedy", stop_token_id=eos)
        expected = expected[0].tolist()[:NEW_TOKENS]
        expected_ids.append(expected[:expected.index(eos)]
                            if eos in expected else expected)

    directory = args.output_dir or tempfile.mkdtemp(prefix="litertlm_q_")
    results = {}
    for quantization in PRECISIONS:
        name = quantization or "float32"
        path = os.path.join(directory, f"lm_{name}.litertlm")
        report = export_litertlm(model, path, vocabulary,
                                 quantization=quantization,
                                 sample_prompts=[])
        model_bytes = bundle_model(path)
        logits = decode_logits(model_bytes, windows)
        out, ids, keras_texts, rate = engine_texts(path, prompts,
                                                   expected_ids)
        results[name] = dict(size=report.size_bytes,
                             model=len(model_bytes), logits=logits,
                             ppl=perplexity(logits, targets), texts=out,
                             ids=ids, rate=rate, keras_texts=keras_texts)
        print(f"{name}: {report.size_bytes:,} B, perplexity "
              f"{results[name]['ppl']:.3f}, decode {rate:.0f} tokens/s",
              flush=True)

    # The float32 bundle against Keras's greedy tokens, same prompts.
    float32 = results["float32"]
    same_as_keras = sum(text == want for text, want in
                        zip(float32["texts"], float32["keras_texts"]))

    real = targets != 0
    reference = float32["logits"].argmax(-1)[real]
    print(f"\n{datetime.date.today()}, {platform.processor() or 'cpu'} "
          f"({os.cpu_count()} cores), keras-attn litertlm_quality.py; "
          f"model {os.path.abspath(args.run_dir)}: V={len(vocabulary)}, "
          f"L={length}, {len(test)} test tweets, {int(real.sum()):,} "
          f"held-out targets in {len(windows)} windows; Keras float32 "
          f"perplexity (id 0 masked) {keras_ppl:.3f}; float32 bundle text "
          f"== Keras greedy on {same_as_keras}/{len(prompts)} prompts\n")
    print("| bundle | .litertlm | model | % of float32 | held-out "
          "perplexity | teacher-forced greedy agreement | engine: same "
          f"{NEW_TOKENS}-token text / positional / common prefix | "
          "engine decode tokens/s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, result in results.items():
        agree = (result["logits"].argmax(-1)[real] == reference).mean()
        same, positional, prefix = agreement(float32["ids"], result["ids"])
        change = 100 * (result["ppl"] / float32["ppl"] - 1)
        print(f"| {name} | {result['size']:,} B | {result['model']:,} B | "
              f"{100 * result['size'] / float32['size']:.1f} | "
              f"{result['ppl']:.3f} ({change:+.2f}%) | {100 * agree:.2f}% | "
              f"{same}/{len(prompts)} / {100 * positional:.1f}% / "
              f"{prefix:.1f} | {result['rate']:.0f} |")


if __name__ == "__main__":
    main()
