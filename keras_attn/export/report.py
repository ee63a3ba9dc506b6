"""What an export produced and measured: `TFLiteReport` (a classifier-style
`serving_default` file), `GeneratorReport` (a `prefill`/`decode` file)
and `LiteRTLMReport` (a `.litertlm` bundle), and the measurements behind
them, run with the LiteRT runtime (`ai_edge_litert`) or LiteRT-LM's
engine: parity with Keras and latency at batch 1.

Both reports are path-like (`os.fspath(report)` is `report.path`), so a
report goes wherever the file's path went before the exporters returned
reports; `report.table()` is the text to print.
"""

import dataclasses
import shlex
import statistics
import time

import keras
import numpy as np

from keras_attn.export import inputs as inputs_lib
from keras_attn.export.saved_model import output_dict

# Text the suggested next command runs on; any text works (words outside
# the vocabulary become [UNK]).
EXAMPLE_TEXT = "Hello"


def _wrap(words, width):
    lines, line = [], ""
    for word in words:
        candidate = f"{line}, {word}" if line else word
        if line and len(candidate) > width:
            lines.append(line + ",")
            line = word
        else:
            line = candidate
    return "\n".join(lines + [line])


def _table(rows):
    """`[(key, value)]` -> a two-column text table; multi-line values
    continue under their first line."""
    key_width = max(len(key) for key, _ in rows)
    lines = []
    for key, value in rows:
        for i, part in enumerate(str(value).split("\n")):
            lines.append(f"{key if i == 0 else '':<{key_width}}  {part}")
    return "\n".join(lines)


def _size(size_bytes):
    return f"{size_bytes / 1e6:.2f} MB ({size_bytes:,} bytes)"


def _description_rows(description, kind):
    """Rows on what the file carries about itself."""
    if description is None:
        return [("metadata", "none embedded (keras_attn.export.metadata "
                 "is not installed)")]
    rows = []
    for key, name in (("vocabulary", "vocabulary"),
                      ("source_vocabulary", "source vocabulary")):
        if key in description:
            rows.append((name, f"{len(description[key])} tokens, embedded"))
        elif key == "vocabulary" or description.get("model_type") == (
                "seq2seq"):
            rows.append((name, "not embedded (pass `{}=` to embed it; "
                         "the runtime then needs --{})".format(
                             key, key.replace("_", "-"))))
    if "class_names" in description:
        rows.append(("class names", _wrap(description["class_names"], 60)))
    elif kind == "classifier" and description.get("model_type") == (
            "encoder_classifier"):
        rows.append(("class names", "not embedded (pass `class_names=`)"))
    if "generation" in description:
        rows.append(("generation defaults", ", ".join(
            f"{key}={value}" for key, value in
            description["generation"].items())))
    return rows


def next_command(path, kind, model_type, description):
    """The `keras-attn` command that runs the file, or `None` for a file
    the runtime does not run (a serving file of a language model).
    `description`: what the file carries (`None`: nothing), so the
    vocabularies it lacks become flags."""
    if kind == "classifier":
        if model_type != "encoder_classifier":
            return None
        words = ["keras-attn", "classify", path, EXAMPLE_TEXT]
    else:
        flag = "--source" if model_type == "seq2seq" else "--prompt"
        words = ["keras-attn", "generate", path, flag, EXAMPLE_TEXT]
    carried = description or {}
    if "vocabulary" not in carried:
        words += ["--vocabulary", "vocabulary.txt"]
    if model_type == "seq2seq" and "source_vocabulary" not in carried:
        words += ["--source-vocabulary", "source_vocabulary.txt"]
    return " ".join(shlex.quote(str(word)) for word in words)


@dataclasses.dataclass(frozen=True)
class _FileReport:
    """What every export report says of its file; path-like
    (`os.fspath(report)` is `report.path`)."""

    path: str
    quantization: str | None
    size_bytes: int
    ops: list

    def __fspath__(self):
        return self.path


@dataclasses.dataclass(frozen=True)
class TFLiteReport(_FileReport):
    """What `export_tflite` produced and measured.

    Path-like: `os.fspath(report)` is `report.path`.

    Attributes:
        path: str. Absolute path of the .tflite file.
        quantization: str or `None`. The quantization used.
        size_bytes: int. File size.
        ops: list of str. Sorted op names in the file.
        max_abs_diff: float or `None`. Largest absolute difference between
            the TFLite outputs and the Keras float32 outputs on
            `sample_inputs`; `None` without sample inputs.
        latency_ms_median: float or `None`. Median batch-1 latency of the
            TFLite model in milliseconds; `None` without sample inputs.
        description: dict or `None`. The description embedded in the file
            (`keras_attn.export.description`); `None` when none is.
        next_command: str or `None`. The command that runs the file.

    Example:

    ```python
    from keras_attn.export import TFLiteReport
    report = TFLiteReport(
        path="/tmp/model.tflite", quantization="dynamic_int8",
        size_bytes=1542616, ops=["ADD", "FULLY_CONNECTED", "SOFTMAX"],
        max_abs_diff=0.036, latency_ms_median=0.96)
    print(report.table())
    ```
    """

    max_abs_diff: float | None
    latency_ms_median: float | None
    description: dict | None = None
    next_command: str | None = None

    def table(self):
        """Returns the report as a readable two-column text table."""
        diff = ("not measured" if self.max_abs_diff is None
                else f"{self.max_abs_diff:.3g} (vs Keras float32)")
        latency = ("not measured" if self.latency_ms_median is None
                   else f"{self.latency_ms_median:.3f} ms (median, batch 1)")
        rows = [
            ("path", self.path),
            ("quantization", self.quantization or "none (float32)"),
            ("size", _size(self.size_bytes)),
            ("max abs diff", diff),
            ("latency", latency),
            (f"ops ({len(self.ops)})", _wrap(self.ops, width=60)),
        ]
        if self.description is not None or self.next_command is not None:
            rows += _description_rows(self.description, "classifier")
        if self.next_command is not None:
            rows.append(("next", self.next_command))
        return _table(rows)


@dataclasses.dataclass(frozen=True)
class GeneratorReport(_FileReport):
    """What `export_generator_tflite` produced and measured.

    Path-like: `os.fspath(report)` is `report.path`.

    Attributes:
        path, quantization, size_bytes, ops: as in `TFLiteReport`.
        model_type: str. `"decoder_lm"` or `"seq2seq"`.
        max_length: int. The cache length `M` (prompt plus new tokens).
        source_length: int or `None`. The encoder length (seq2seq).
        kv_cache: str. `"variables"` or `"tensors"`.
        prompts: int. Prompts the parity check ran (0: not measured).
        prompts_from: str. Where they came from (`"sample_prompts"` or
            `"random ids"`).
        new_tokens: int. Greedy tokens generated per prompt.
        identical: int. Prompts whose greedy tokens from the file equal
            those of `keras_attn.models.generate(..., sampler="greedy")`.
        encode_ms, prefill_ms, decode_ms: float or `None`. Median times
            with one LiteRT thread: `encode` (seq2seq) and `prefill` per
            call, `decode` per token.
        description: dict or `None`. The description embedded in the file;
            `None` when none is.
        next_command: str. The command that runs the file.

    Example:

    ```python
    from keras_attn.export import GeneratorReport
    report = GeneratorReport(
        path="/tmp/lm.tflite", quantization=None, size_bytes=92360,
        ops=["DYNAMIC_UPDATE_SLICE", "FULLY_CONNECTED"],
        model_type="decoder_lm", max_length=32, source_length=None,
        kv_cache="variables", prompts=3, prompts_from="random ids",
        new_tokens=16, identical=3, encode_ms=None, prefill_ms=0.41,
        decode_ms=0.12, description=None,
        next_command="keras-attn generate /tmp/lm.tflite --prompt Hello")
    print(report.table())
    ```
    """

    model_type: str
    max_length: int
    source_length: int | None
    kv_cache: str
    prompts: int
    prompts_from: str
    new_tokens: int
    identical: int
    encode_ms: float | None
    prefill_ms: float | None
    decode_ms: float | None
    description: dict | None
    next_command: str

    def table(self):
        """Returns the report as a readable two-column text table."""
        lengths = f"max_length {self.max_length} (prompt + new tokens)"
        if self.source_length is not None:
            lengths += f", source_length {self.source_length}"
        if self.prompts:
            parity = (f"{self.identical}/{self.prompts} prompts "
                      f"({self.prompts_from}) give Keras's greedy tokens "
                      f"({self.new_tokens} new tokens each)")
        else:
            parity = "not measured"
        rows = [
            ("path", self.path),
            ("model", f"{self.model_type}, KV cache in {self.kv_cache}"),
            ("lengths", lengths),
            ("quantization", self.quantization or "none (float32)"),
            ("size", _size(self.size_bytes)),
            ("greedy parity", parity),
        ]
        for name, value, unit in (("encode", self.encode_ms, "ms"),
                                  ("prefill", self.prefill_ms, "ms"),
                                  ("decode", self.decode_ms, "ms/token")):
            if value is not None:
                rows.append((name, f"{value:.3f} {unit} (median, 1 thread)"))
        rows.append((f"ops ({len(self.ops)})", _wrap(self.ops, width=60)))
        rows += _description_rows(self.description, "generator")
        rows.append(("next", self.next_command))
        return _table(rows)


@dataclasses.dataclass(frozen=True)
class LiteRTLMReport(_FileReport):
    """What `export_litertlm` produced and measured.

    Path-like: `os.fspath(report)` is `report.path`.

    Attributes:
        path, quantization, size_bytes: as in `TFLiteReport` (the size of
            the whole bundle).
        ops: list of str. Sorted op names of the bundle's model.
        model_bytes: int. Size of the prefill/decode model inside.
        max_length: int. The context length `M` (start token, prompt and
            new tokens).
        prefill_lengths: list of int. The prompt chunk lengths (one
            `prefill_<T>` signature each).
        prompts: int. Prompts the greedy check ran (0: not measured).
        prompts_from: str. Where they came from.
        new_tokens: int. Greedy tokens generated per prompt.
        identical: int. Prompts whose text from the engine (greedy,
            `SamplerConfig(top_k=1)`) is the text of
            `keras_attn.models.generate(..., sampler="greedy")`'s tokens.
        checked: str. How the check ran, or why it did not.
        prefill_ms, decode_ms: float or `None`. The engine's medians:
            prefill of a prompt, decode per token (its own timer).
        description: dict. The description the bundle carries.
        next_command: str. The command that runs the bundle.

    Example:

    ```python
    from keras_attn.export import LiteRTLMReport
    report = LiteRTLMReport(
        path="/tmp/lm.litertlm", quantization="int4", size_bytes=2774337,
        ops=["EMBEDDING_LOOKUP", "FULLY_CONNECTED"], model_bytes=2715968,
        max_length=64, prefill_lengths=[1, 8, 32], prompts=3,
        prompts_from="random ids", new_tokens=16, identical=3,
        checked="litert_lm.Engine, CPU, greedy (top_k=1)",
        prefill_ms=0.9, decode_ms=0.42, description=None,
        next_command="keras-attn generate /tmp/lm.litertlm --prompt Hello")
    print(report.table())
    ```
    """

    model_bytes: int
    max_length: int
    prefill_lengths: list
    prompts: int
    prompts_from: str
    new_tokens: int
    identical: int
    checked: str
    prefill_ms: float | None
    decode_ms: float | None
    description: dict | None
    next_command: str

    def table(self):
        """Returns the report as a readable two-column text table."""
        if self.prompts:
            parity = (f"{self.identical}/{self.prompts} prompts "
                      f"({self.prompts_from}) give the text of Keras's "
                      f"greedy tokens ({self.new_tokens} new tokens at "
                      f"most; {self.checked})")
        else:
            parity = self.checked
        rows = [
            ("path", self.path),
            ("model", "decoder_lm as a LiteRT-LM bundle (prefill "
                      f"{', '.join(map(str, self.prefill_lengths))}; "
                      "decode)"),
            ("context", f"max_length {self.max_length} (start token + "
                        "prompt + new tokens)"),
            ("quantization", self.quantization or "none (float32)"),
            ("size", f"{_size(self.size_bytes)}; model "
                     f"{self.model_bytes / 1e6:.2f} MB"),
            ("greedy parity", parity),
        ]
        for name, value, unit in (("prefill", self.prefill_ms, "ms"),
                                  ("decode", self.decode_ms, "ms/token")):
            if value is not None:
                rows.append((name, f"{value:.3f} {unit} (median, engine)"))
        rows.append((f"ops ({len(self.ops)})", _wrap(self.ops, width=60)))
        extras = (self.description or {}).get("litert_lm", {})
        if "vocabulary_size" in extras:
            rows.append(("tokenizer", f"HF WordPiece tokenizer.json, "
                         f"{extras['vocabulary_size']} tokens, in the "
                         "bundle"))
        rows += [row for row in _description_rows(self.description,
                                                  "generator")
                 if row[0] != "vocabulary"]
        rows.append(("next", self.next_command))
        return _table(rows)


def interpreter(path, num_threads):
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_path=str(path), num_threads=num_threads)


def run_signature(runner, example_batch):
    """Runs a batch through a signature runner, one example at a time when
    the signature's batch dimension is fixed to 1."""
    details = runner.get_input_details()
    fixed_one = any(
        len(d["shape_signature"]) and d["shape_signature"][0] == 1
        for d in details.values()
    )
    if not fixed_one:
        return runner(**example_batch)
    outputs = [runner(**example)
               for example in inputs_lib.examples(example_batch)]
    return {key: np.concatenate([out[key] for out in outputs])
            for key in outputs[0]}


def _keras_outputs(model, batch):
    inputs = model.input
    if isinstance(inputs, (list, tuple)):
        batch = [batch[t.name] for t in inputs]
    elif not isinstance(inputs, dict):
        batch = batch[inputs.name]
    outputs = output_dict(model, model(batch, training=False))
    return {key: keras.ops.convert_to_numpy(value)
            for key, value in outputs.items()}


def max_abs_diff(runner, model, batch):
    """Largest absolute difference between the signature's outputs and
    the Keras model's on a batch."""
    got = run_signature(runner, batch)
    expected = _keras_outputs(model, batch)
    if set(got) != set(expected):
        raise RuntimeError(
            f"TFLite outputs {sorted(got)} differ from the model's outputs "
            f"{sorted(expected)}."
        )
    return max(
        float(np.max(np.abs(got[key].astype("float64")
                            - expected[key].astype("float64"))))
        for key in expected
    )


def median_latency_ms(runner, batch, runs):
    """Median batch-1 latency of a signature, after 2 warm-up runs."""
    example = next(inputs_lib.examples(batch))
    for _ in range(2):  # warm-up: first calls allocate and pack weights
        runner(**example)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        runner(**example)
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def _timed(fn, **kwargs):
    start = time.perf_counter()
    out = fn(**kwargs)
    return out, time.perf_counter() - start


def greedy_generate(interpreter, prompt, new_tokens, source=None):
    """Greedy tokens from a generator file, as a device runs it: (`encode`
    the source,) `prefill` the prompt, then one `decode` per token; id 0
    (padding) is never picked. Both `kv_cache` forms.

    Args:
        interpreter: an `ai_edge_litert` interpreter of the file.
        prompt: list of int. The prompt ids (seq2seq: the decoder's).
        new_tokens: int. Tokens to generate.
        source: list of int or `None`. The encoder ids (seq2seq), padded
            with 0 to the source length.

    Returns:
        `(tokens, seconds)`: the list of ids, and a dict of the wall times
        of `encode` (or `None`), `prefill` and each `decode` (a list).
    """
    prefill = interpreter.get_signature_runner("prefill")
    decode = interpreter.get_signature_runner("decode")
    stateless = "cache" in decode.get_input_details()
    seconds = {"encode": None, "decode": []}
    encoder = {}
    if source is not None:
        ids = np.asarray(source, "int32")[None]
        state, seconds["encode"] = _timed(
            interpreter.get_signature_runner("encode"),
            encoder_token_ids=ids)
        if stateless:
            encoder = dict(encoder_token_ids=ids, memory=state["memory"],
                           cross_cache=state["cross_cache"])
    max_length = prefill.get_input_details()["token_ids"]["shape"][1]
    buffer = np.zeros((1, max_length), "int32")
    buffer[0, :len(prompt)] = prompt
    out, seconds["prefill"] = _timed(
        prefill, token_ids=buffer, length=np.array(len(prompt), "int32"),
        **encoder)
    tokens = []
    for index in range(len(prompt), len(prompt) + new_tokens):
        tokens.append(int(np.argmax(out["logits"][0, 1:])) + 1)
        if len(tokens) == new_tokens:
            break
        cache = {"cache": out["cache"]} if stateless else {}
        out, step = _timed(
            decode, token_id=np.array([[tokens[-1]]], "int32"),
            index=np.array(index, "int32"), **encoder, **cache)
        seconds["decode"].append(step)
    return tokens, seconds


def _median_ms(values):
    return 1e3 * statistics.median(values) if values else None


def generator_parity(model, path, prompts, sources, new_tokens,
                     num_threads=1):
    """Greedy parity and timing of a generator file against Keras.

    Args:
        model: the exported `decoder_lm` or `seq2seq`.
        path: the generator .tflite.
        prompts: list of lists of int. Decoder prompts.
        sources: list of lists of int (padded to the source length), one
            per prompt, for seq2seq; else `None`.
        new_tokens: int. Greedy tokens per prompt.
        num_threads: int. LiteRT threads.

    Returns:
        dict: `identical` (int), and the medians `encode_ms` (or `None`),
        `prefill_ms` and `decode_ms` (per token).
    """
    from keras_attn.models import generate

    runner = interpreter(path, num_threads)
    sources = sources or [None] * len(prompts)
    # Warm-up: the first calls allocate and pack the weights.
    greedy_generate(runner, prompts[0], min(2, new_tokens), sources[0])
    tokens, times = [], {"encode": [], "prefill": [], "decode": []}
    for prompt, source in zip(prompts, sources):
        found, seconds = greedy_generate(runner, prompt, new_tokens, source)
        tokens.append(found)
        times["prefill"].append(seconds["prefill"])
        times["decode"] += seconds["decode"]
        if seconds["encode"] is not None:
            times["encode"].append(seconds["encode"])
    expected = generate(
        model, prompts, new_tokens, sampler="greedy",
        encoder_token_ids=None if sources[0] is None else np.asarray(
            sources, "int32"),
    )
    identical = sum(found == want.tolist()
                    for found, want in zip(tokens, expected))
    return {"identical": int(identical),
            "encode_ms": _median_ms(times["encode"]),
            "prefill_ms": _median_ms(times["prefill"]),
            "decode_ms": _median_ms(times["decode"])}
