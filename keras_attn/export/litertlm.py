"""A `decoder_lm` as one LiteRT-LM bundle (`.litertlm`).

LiteRT-LM is Google's on-device LLM engine (C++, with Kotlin, Swift,
Python and C APIs). It loads one `.litertlm` file holding a TFLite
prefill/decode model, a tokenizer and an `LlmMetadata` protobuf.
`export_litertlm` writes such a file for every `decoder_lm` (learned,
sinusoidal and rotary positions; multi-head, grouped-query and
multi-query attention); `litert_lm.Engine` then generates exactly
`keras_attn.models.generate(..., sampler="greedy")`'s tokens.

Shape legend: T prefill length, M cache length (`max_length`), K
key/value heads, H head size, V vocabulary, Y decoder layers.

The signatures (what LiteRT-LM 0.18's CPU executor recognises; batch 1):
    prefill_<T>  tokens (1, T) int32, input_pos (T,) int32,
                 kv_cache_k_<i>, kv_cache_v_<i> (1, K, M, H) float32
                 (`keras_attn.layers.KVCache`'s layout, passed through)
                 -> the updated kv_cache_k_<i>, kv_cache_v_<i>
    decode       tokens (1, 1), input_pos (1,), the caches
                 -> logits (1, 1, V) float32 and the updated caches
for each T of `prefill_lengths` and each layer i < Y. The engine
prepends the start token, prefills the prompt in chunks (a chunk's
unused slots hold token 0 at position 0), feeds the last prompt token to
the first `decode`, and swaps the cache buffers after each call. A chunk
is written into the cache at `input_pos[0]`: padded slots write after the
real tokens, where the next call writes before any query can see them
(the causal mask follows the positions), so this is exact. Prefill
returns no logits (no (T, D) x (D, V) product). Id 0 (padding) never
wins: the decode logits get -1e9 there. The token table is read through
EMBEDDING_LOOKUP (`keras_attn.export.embedding_lookup`), so that int4 and
int8 quantize the tied table once.

The bundle: `LlmMetadata` (start token, stop tokens, `max_num_tokens` =
M, a generic model type), the model (its tensors unnamed: only the
signatures' names are read), the HF `tokenizer.json` of
`keras_attn.export.hf_tokenizer` (our tokenizer's ids), and our
description (`keras_attn.export.description`, without the vocabulary:
the tokenizer holds it) inside the model and as the system metadata entry
`"keras_attn"` of the bundle's header. It is written atomically.

seq2seq models are not a LiteRT-LM model type (the engine runs one
token stream, no encoder): `export_generator_tflite` and
`keras-attn generate` run them.
"""

import contextlib
import io
import json
import os
import tempfile

import keras
import numpy as np
from keras import ops

from keras_attn.export import converter
from keras_attn.export import description as description_lib
from keras_attn.export import embedding_lookup
from keras_attn.export import generation_signatures as signatures
from keras_attn.export import hf_tokenizer
from keras_attn.export import metadata
from keras_attn.export import report as report_lib
from keras_attn.export.saved_model import check_exportable
from keras_attn.layers import KVCache
from keras_attn.layers.validation import positive_int
from keras_attn.models.generation import CachedDecoder
from keras_attn_runtime import atomic
from keras_attn_runtime import vocabulary as vocabulary_lib
from keras_attn_runtime.tflite_file import TFLiteFile

LITERTLM_QUANTIZATIONS = (None, "dynamic_int8", "int4")
# Long chunks prefill fast; `prefill_1` lets the engine fill the last free
# cache slots of a multi-turn session (it only picks chunks that fit).
DEFAULT_PREFILL_LENGTHS = (1, 8, 32, 128)
# The report's greedy check through the engine: at most this many prompts
# (and, as for generator files, 16 new tokens each).
MAX_SAMPLE_PROMPTS = 8
# Bytes of our description in a bundle's header (the engine reads 16 KB of
# header: sections' entries and the builder's own entries share it).
MAX_HEADER_DESCRIPTION = 8192
_WHY_NOT = (" (float16 and static int8 are not offered for LiteRT-LM "
            "bundles: \"dynamic_int8\" gives int8 weights, \"int4\" "
            "block-wise int4 weights)")


def _run_signature(decoder, tokens, input_pos, flat_caches, with_logits):
    """One LiteRT-LM call: `{output name: tensor}`. The engine's caches
    `(1, K, M, H)` are our `KVCache` layout: they pass through as they
    are, no transpose."""
    caches = [KVCache(flat_caches[2 * i], flat_caches[2 * i + 1])
              for i in range(len(decoder.layers))]
    hidden, caches = embedding_lookup.forward(decoder, tokens, caches,
                                              input_pos[0])
    outputs = {}
    for i, cache in enumerate(caches):
        outputs[f"kv_cache_k_{i}"] = cache.keys
        outputs[f"kv_cache_v_{i}"] = cache.values
    if with_logits:
        logits = decoder.logits(hidden)  # (1, 1, V)
        never_padding = np.zeros(decoder.vocabulary_size, "float32")
        never_padding[0] = -1e9  # id 0 is padding, never generated
        outputs["logits"] = logits + ops.convert_to_tensor(never_padding)
    return outputs


def litertlm_endpoints(decoder, max_length, prefill_lengths):
    """`{signature name: (function, input signature)}`: `prefill_<T>` for
    each T of `prefill_lengths`, and `decode`."""
    import tensorflow as tf

    shape = (1, decoder.num_kv_heads, max_length, decoder.head_dim)
    caches = []
    for i in range(len(decoder.layers)):
        caches += [tf.TensorSpec(shape, tf.float32, name=f"kv_cache_k_{i}"),
                   tf.TensorSpec(shape, tf.float32, name=f"kv_cache_v_{i}")]

    def endpoint(length, with_logits):
        def call(tokens, input_pos, *flat_caches):
            return _run_signature(decoder, tokens, input_pos, flat_caches,
                                  with_logits)

        return call, [tf.TensorSpec((1, length), tf.int32, name="tokens"),
                      tf.TensorSpec((length,), tf.int32, name="input_pos"),
                      *caches]

    functions = {f"prefill_{length}": endpoint(length, False)
                 for length in prefill_lengths}
    functions["decode"] = endpoint(1, True)
    return functions


def convert_litertlm_model(model, max_length, prefill_lengths,
                           quantization=None, int4_block_size=32,
                           int4_components=converter.INT4_COMPONENTS):
    """The prefill/decode .tflite bytes of a `decoder_lm` (builtin ops,
    quantized), without a description. Arguments as `export_litertlm`."""
    decoder = CachedDecoder(model)
    archive = keras.export.ExportArchive()
    archive.track(model)
    functions = litertlm_endpoints(decoder, max_length, prefill_lengths)
    for name, (function, input_signature) in functions.items():
        archive.add_endpoint(name, function, input_signature=input_signature)
    model_bytes = converter.convert(
        archive, list(functions),
        "dynamic_int8" if quantization == "dynamic_int8" else None)
    if quantization == "int4":
        model_bytes = converter.quantize_int4(model_bytes, int4_block_size,
                                              int4_components)
    return model_bytes


def _without_tensor_names(model_bytes):
    """The .tflite with its tensors unnamed. The converter names a tensor
    after every Keras op fused into it ("decoder_layer_0_1/feedforward_
    intermediate_dense_1/Gelu/mul_2;..."): 40 KB in a two-layer model, 7%
    of its int4 bundle. Neither LiteRT nor LiteRT-LM reads them: inputs and
    outputs are found through the signatures, which keep their names."""
    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(model_bytes, 0))
    for graph in model.subgraphs:
        for tensor in graph.tensors:
            tensor.name = None
    builder = flatbuffers.Builder(len(model_bytes) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def check_prefill_lengths(prefill_lengths, max_length):
    """The sorted distinct lengths; each in [1, max_length], 1 among them."""
    if isinstance(prefill_lengths, (str, bytes)) or not hasattr(
            prefill_lengths, "__iter__"):
        raise TypeError(
            "Received an invalid value for argument `prefill_lengths`, "
            "expected a sequence of positive integers. Received: "
            f"prefill_lengths={prefill_lengths!r}"
        )
    lengths = list(prefill_lengths)
    if not lengths or any(
            isinstance(n, bool) or not isinstance(n, (int, np.integer))
            or not 1 <= n <= max_length for n in lengths):
        raise ValueError(
            "Received an invalid value for argument `prefill_lengths`, "
            f"expected integers in [1, max_length={max_length}]. Received: "
            f"prefill_lengths={lengths!r}"
        )
    if 1 not in lengths:
        raise ValueError(
            "Received an invalid value for argument `prefill_lengths`, "
            "expected 1 among them: the engine prefills only chunks that "
            "fit the free cache slots, and near the end of the context "
            "(a second turn) only 1 fits. Received: "
            f"prefill_lengths={lengths!r}"
        )
    return sorted({int(n) for n in lengths})


def _token_id(vocabulary, token, argument):
    if not isinstance(token, str) or token not in vocabulary:
        raise ValueError(
            f"Received an invalid value for argument `{argument}`, expected "
            f"a token of `vocabulary`. Received: {argument}={token!r}"
        )
    return vocabulary.index(token)


def _stop_ids(vocabulary, stop_tokens):
    if isinstance(stop_tokens, str):
        stop_tokens = [stop_tokens]
    stop_tokens = list(stop_tokens or [])
    if not stop_tokens:
        raise ValueError(
            "Received an invalid value for argument `stop_tokens`, expected "
            "at least one token: LiteRT-LM refuses a model without stop "
            "tokens (\"Stop tokens are required\"). Received: "
            f"stop_tokens={stop_tokens!r}"
        )
    return [_token_id(vocabulary, token, "stop_tokens")
            for token in stop_tokens]


def llm_metadata(start_id, stop_ids, max_length):
    """The `LlmMetadata` protobuf of a bundle: start and stop tokens, the
    context length, a generic (template-free) model."""
    from litert_lm_builder.runtime.proto import llm_metadata_pb2

    proto = llm_metadata_pb2.LlmMetadata()
    proto.start_token.token_ids.ids.append(int(start_id))
    for stop in stop_ids:
        proto.stop_tokens.add().token_ids.ids.append(int(stop))
    proto.max_num_tokens = int(max_length)
    proto.llm_model_type.generic_model.SetInParent()
    return proto


def write_bundle(path, model_bytes, tokenizer_json, llm_metadata_proto,
                 description=None):
    """Writes a `.litertlm` atomically: `LlmMetadata`, the prefill/decode
    model (float32 activations preferred), the HF tokenizer, and
    `description` as the system metadata entry `"keras_attn"` (JSON; at
    most `MAX_HEADER_DESCRIPTION` bytes: LiteRT-LM 0.18 reads 16 KB of
    header, and fails with "Failed to read header data" beyond).

    Returns:
        The absolute path, as a str.
    """
    import litert_lm_builder as builder_lib

    if description is not None:
        text = json.dumps(description, ensure_ascii=False,
                          separators=(",", ":"))
        if len(text.encode("utf-8")) > MAX_HEADER_DESCRIPTION:
            raise ValueError(
                "The description is too long for a LiteRT-LM header "
                f"({len(text)} characters; at most "
                f"{MAX_HEADER_DESCRIPTION} bytes fit beside the engine's "
                "own entries); a vocabulary belongs in the tokenizer."
            )

    with tempfile.TemporaryDirectory(prefix="keras_attn_litertlm_") as tmp:
        parts = {"llm_metadata.pb": llm_metadata_proto.SerializeToString(),
                 "model.tflite": model_bytes,
                 "tokenizer.json": tokenizer_json.encode("utf-8")}
        for name, data in parts.items():
            with open(os.path.join(tmp, name), "wb") as f:
                f.write(data)
        builder = builder_lib.LitertLmFileBuilder()
        if description is not None:
            builder.add_system_metadata(builder_lib.Metadata(
                key="keras_attn", dtype=builder_lib.DType.STRING,
                value=text))
        builder.add_llm_metadata(os.path.join(tmp, "llm_metadata.pb"),
                                 supports_thinking=False,
                                 supports_function_calling=False)
        # The builder prints a line about the activation type.
        with contextlib.redirect_stdout(io.StringIO()):
            builder.add_tflite_model(
                os.path.join(tmp, "model.tflite"),
                builder_lib.TfLiteModelType.PREFILL_DECODE,
                prefer_activation_type="fp32")
        builder.add_hf_tokenizer(os.path.join(tmp, "tokenizer.json"))
        with atomic.atomic_file(path) as target:
            with open(target, "wb") as f:  # the builder seeks: a real file
                builder.build(f, validate_metadata=True)
    return os.path.abspath(os.fspath(path))


def _check_model(model):
    check_exportable(model)
    if not signatures.has_decoder_layers(model):
        raise ValueError(
            "Received an invalid value for argument `model`, expected a "
            "decoder_lm (keras_attn.models.decoder_lm): LiteRT-LM runs "
            f"decoder-only language models. Received: model={model.name!r}"
        )
    decoder = CachedDecoder(model)
    if decoder.is_seq2seq:
        raise ValueError(
            "seq2seq is not a LiteRT-LM model type: LiteRT-LM runs "
            "decoder-only language models (one token stream, no encoder). "
            "Export a translator with "
            "keras_attn.export.export_generator_tflite and run it with "
            "`keras-attn generate MODEL.tflite --source TEXT` (or "
            f"keras_attn_runtime.Generator). Received: model={model.name!r}"
        )
    return decoder


def export_litertlm(model, path, vocabulary, max_length=None,
                    prefill_lengths=DEFAULT_PREFILL_LENGTHS,
                    start_token=vocabulary_lib.BOS,
                    stop_tokens=(vocabulary_lib.EOS,), quantization=None,
                    int4_block_size=32,
                    int4_components=converter.INT4_COMPONENTS,
                    lowercase=True, generation_config=None,
                    sample_prompts=None, num_threads=1):
    """Exports a `decoder_lm` as one LiteRT-LM bundle, and reports on it.

    The bundle runs in `litert_lm.Engine` (Android, iOS, desktop, web and
    Python) and in `keras-attn generate MODEL.litertlm --prompt TEXT`.
    With greedy sampling (`SamplerConfig(top_k=1)`) a float32 bundle
    generates the tokens of `keras_attn.models.generate(...,
    sampler="greedy")`. See the module docstring for what is inside.

    Args:
        model: a model built by `keras_attn.models.decoder_lm`.
        path: str. The `.litertlm` file to write (atomically).
        vocabulary: list of str. The model's vocabulary in id order (e.g.
            `keras_attn.data.load_vocabulary(path)`); it becomes the
            bundle's tokenizer.
        max_length: int or `None`. Context length `M` of the engine
            (prompt, start token and generated tokens). With learned
            positions at most the model's `sequence_length`. Defaults to
            the length of the model's token input.
        prefill_lengths: sequence of int. The prompt chunk lengths (one
            `prefill_<T>` signature each), in [1, `max_length`], 1 among
            them. Defaults to those of (1, 8, 32, 128) up to `max_length`.
        start_token: str. Prepended by the engine to every session.
            Defaults to `"[BOS]"`.
        stop_tokens: sequence of str, at least one (the engine requires
            it). Defaults to `("[EOS]",)`.
        quantization: `None` (float32), `"dynamic_int8"` (int8 weights,
            the TFLite converter's) or `"int4"` (block-wise int4 weights
            with ai-edge-quantizer; see `converter.quantize_int4`).
        int4_block_size: int. 32, 64 or 128 values per int4 scale; must
            divide the model width and feedforward width. Defaults to 32
            (the most accurate).
        int4_components: sequence of `"attention"`, `"ffn"`,
            `"embedding"`: the weights int4 quantizes; the others stay
            float32. Defaults to all three.
        lowercase: bool. The tokenizer's normalization, as given to
            `make_tokenizer`. Defaults to `True`.
        generation_config: dict or `None`. Sampler defaults recorded in
            the description (`keras-attn generate` reads them).
        sample_prompts: int array `(N, L)` right-padded with 0, a list of
            id lists, or `None`: prompts (without the start token) for
            the report's greedy check through `litert_lm.Engine`. At most
            8, cut to fit. Defaults to random ids; an empty list skips the
            check (so does a missing `litert_lm`).
        num_threads: int. Engine CPU threads of the check. Defaults to 1.

    Returns:
        A `LiteRTLMReport` (path-like: `os.fspath(report)` is the path).

    Raises:
        ValueError: for a model that is not a `decoder_lm` (a seq2seq
            included), or an argument that does not fit it.
        UnsupportedOpsError: if the model would need non-builtin ops.

    Example:

    ```python
    import os
    import tempfile
    import keras_attn
    from keras_attn.export import export_litertlm
    vocabulary = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"] + [
        f"w{i}" for i in range(4, 50)]
    lm = keras_attn.models.decoder_lm(50, 16, num_layers=1, hidden_dim=16,
                                      num_heads=2)
    report = export_litertlm(
        lm, os.path.join(tempfile.mkdtemp(), "lm.litertlm"), vocabulary)
    print(report.table())
    ```
    """
    decoder = _check_model(model)
    max_length = signatures.resolve_max_length(decoder, max_length)
    if prefill_lengths is DEFAULT_PREFILL_LENGTHS:
        prefill_lengths = [n for n in prefill_lengths if n <= max_length]
    prefill_lengths = check_prefill_lengths(prefill_lengths, max_length)
    converter.check_quantization(quantization, LITERTLM_QUANTIZATIONS,
                                 _WHY_NOT)
    int4_components = converter.check_int4(int4_block_size, int4_components)
    if quantization == "int4":
        embedding_lookup.check_int4_block_size(decoder, int4_block_size)
    positive_int(num_threads, "num_threads")
    if vocabulary is None:
        raise ValueError(
            "Received an invalid value for argument `vocabulary`, expected "
            "the model's vocabulary (a list of str): it becomes the "
            "bundle's tokenizer. Received: vocabulary=None"
        )
    vocabulary, _ = description_lib.check_vocabularies(model, vocabulary)
    start_id = _token_id(vocabulary, start_token, "start_token")
    stop_ids = _stop_ids(vocabulary, stop_tokens)
    generation_config = dict(generation_config or {})
    generation_config.setdefault("start_token", start_token)
    generation_config.setdefault("stop_token", vocabulary[stop_ids[0]])
    generation_config = description_lib.check_generation_config(
        generation_config, vocabulary)
    description = description_lib.describe(
        "generator", "decoder_lm", quantization, vocabulary=vocabulary,
        lowercase=lowercase, generation_config=generation_config,
        max_length=max_length, kv_cache="tensors")
    # The tokenizer holds the vocabulary; a copy in the description would
    # not fit the engine's 16 KB header, and weighs 6% of an int4 bundle.
    del description["vocabulary"]
    description["litert_lm"] = {
        "prefill_lengths": prefill_lengths,
        "vocabulary_size": len(vocabulary),
        "stop_tokens": [vocabulary[i] for i in stop_ids],
    }
    if quantization == "int4":
        description["litert_lm"]["int4"] = {
            "block_size": int4_block_size,
            "components": list(int4_components)}
    tokenizer_json = hf_tokenizer.tokenizer_json(vocabulary, lowercase)

    model_bytes = convert_litertlm_model(
        model, max_length, prefill_lengths, quantization, int4_block_size,
        int4_components)
    model_bytes = _without_tensor_names(metadata.embed(model_bytes,
                                                       description))
    path = write_bundle(path, model_bytes, tokenizer_json,
                        llm_metadata(start_id, stop_ids, max_length),
                        description)

    prompts, new_tokens, prompts_from = _parity_prompts(
        decoder, max_length, sample_prompts)
    measured = {"prompts": 0, "identical": 0, "decode_ms": None,
                "prefill_ms": None, "checked": "not measured"}
    if prompts:
        measured = _engine_parity(model, path, vocabulary, prompts, start_id,
                                  stop_ids, new_tokens, max_length,
                                  num_threads)
    return report_lib.LiteRTLMReport(
        path=path, quantization=quantization,
        size_bytes=os.path.getsize(path), model_bytes=len(model_bytes),
        ops=sorted({name for name, _ in TFLiteFile(
            model_bytes, name=path).op_codes}),
        max_length=max_length, prefill_lengths=prefill_lengths,
        prompts_from=prompts_from, new_tokens=new_tokens,
        description=description,
        next_command=report_lib.next_command(path, "generator", "decoder_lm",
                                             description),
        **measured,
    )


def _parity_prompts(decoder, max_length, sample_prompts):
    """`(prompts, new tokens, where the prompts come from)`: id lists
    without the start token, cut so that the start token, the prompt and
    the new tokens fit `max_length`."""
    from keras_attn.export.generator import parity_inputs

    if max_length < 3:
        return [], 0, "none: max_length < 3"
    # One slot of the context goes to the start token.
    prompts, _, new_tokens, prompts_from = parity_inputs(
        decoder, max_length - 1, sample_prompts, 0)
    if sample_prompts is None:
        # Random ids from 4 on: the reserved tokens' strings ("[BOS]") are
        # special to the engine's prompt handling.
        rng = np.random.default_rng(0)
        low = min(4, decoder.vocabulary_size - 1)
        prompts = [list(map(int, rng.integers(low, decoder.vocabulary_size,
                                              len(prompt))))
                   for prompt in prompts]
    return prompts[:MAX_SAMPLE_PROMPTS], new_tokens, prompts_from


def _engine_parity(model, path, vocabulary, prompts, start_id, stop_ids,
                   new_tokens, max_length, num_threads):
    """The engine's greedy text vs Keras's greedy tokens, detokenized by
    the engine, for prompts given as text (the engine's own input)."""
    from keras_attn_runtime import litertlm as runtime_litertlm

    try:
        runtime_litertlm.import_litert_lm()
    except ImportError:
        return {"prompts": 0, "identical": 0, "decode_ms": None,
                "prefill_ms": None,
                "checked": "not measured: litert_lm is not installed "
                           "(pip install litert-lm-api)"}
    from keras_attn.models import generate
    from keras_attn_runtime.tokenizer import WordPieceTokenizer

    tokenizer = WordPieceTokenizer(vocabulary)
    checked, identical, decode, prefill = 0, 0, [], []
    with runtime_litertlm.LiteRTLMGenerator(
            path, num_threads=num_threads) as engine:
        for prompt in prompts:
            text = tokenizer.detokenize(prompt)
            ids = [start_id] + engine.tokenize(text)
            if len(ids) + new_tokens > max_length:
                continue  # the text tokenizes longer than its ids
            # Up to the context's end: one compiled loop for all prompts.
            expected = generate(model, [ids], max_length - len(ids),
                                sampler="greedy", stop_token_id=stop_ids[0])
            expected = expected[0].tolist()[:new_tokens]
            ends = [i for i, token in enumerate(expected)
                    if token in stop_ids]
            expected = expected[:ends[0]] if ends else expected
            got = engine.generate(text, new_tokens, sampler="greedy")
            checked += 1
            identical += got == engine.detokenize(expected)
            timings = engine.last_timings
            prefill.append(timings["prefill_ms"])
            if timings["decode_ms"] is not None:
                decode.append(timings["decode_ms"])
    return {"prompts": checked, "identical": identical,
            "decode_ms": float(np.median(decode)) if decode else None,
            "prefill_ms": float(np.median(prefill)) if prefill else None,
            "checked": "litert_lm.Engine, CPU, greedy (top_k=1)"}
