"""On-device generation: one .tflite with `prefill` and `decode` signatures
(plus `encode` for seq2seq) around a fixed-shape KV cache; the signatures
are described in `keras_attn.export.generation_signatures`.

A device loop: `prefill` the prompt, then repeatedly pick a token from the
logits and `decode` it at the next index. The cache update lowers to the
builtin DYNAMIC_UPDATE_SLICE, so there is no WHILE and no Flex op; every
new token costs one decoder step instead of a pass over the whole window.
"""

import keras
import numpy as np

from keras_attn.export import converter
from keras_attn.export import description as description_lib
from keras_attn.export import embedding_lookup
from keras_attn.export import generation_signatures as signatures
from keras_attn.export import inputs as inputs_lib
from keras_attn.export import metadata
from keras_attn.export import report as report_lib
from keras_attn.export.saved_model import check_exportable
from keras_attn.layers.validation import positive_int
from keras_attn.models.generation import CachedDecoder
from keras_attn.models.structure import table_rows

GENERATOR_QUANTIZATIONS = (None, "float16", "dynamic_int8", "int4")
# Static "int8" calibrates the activations of one stateless signature; a
# generator's signatures share a KV cache that calibration does not run.
_WHY_NOT_INT8 = (
    " (static \"int8\" calibrates one stateless signature and is for "
    "export_tflite; a generator takes \"dynamic_int8\" for int8 weights)"
)
# The parity check of the report: at most this many prompts and greedy
# tokens per prompt.
MAX_SAMPLE_PROMPTS = 16
MAX_NEW_TOKENS = 16


def _source_ids(rows, source_length):
    """Encoder ids `(N, E)`: each row truncated or padded with 0."""
    sources = np.zeros((len(rows), source_length), "int32")
    for i, row in enumerate(rows):
        row = row[:source_length]
        sources[i, :len(row)] = row
    return [list(map(int, row)) for row in sources]


def _rows(sample_prompts):
    """`sample_prompts` (an array `(N, L)` or `(L,)`, or a list of id
    lists of any lengths) -> list of 1-D arrays."""
    if isinstance(sample_prompts, (list, tuple)) and all(
            isinstance(row, (list, tuple)) for row in sample_prompts):
        return [np.asarray(row) if row else np.zeros(0, int)
                for row in sample_prompts]
    value = np.asarray(keras.ops.convert_to_numpy(sample_prompts))
    if value.ndim == 1 and value.size:
        value = value[None]
    if value.size and value.ndim != 2:
        raise ValueError(
            "`sample_prompts` must be token ids of shape (N, L), "
            "right-padded with 0. Received: "
            f"sample_prompts.shape={value.shape}"
        )
    return list(value)


def _until_padding(row):
    """The tokens of a right-padded row: those before its first 0."""
    zeros = np.flatnonzero(row == 0)
    return row[:zeros[0]] if zeros.size else row


def _start_id(decoder, vocabulary, generation_config):
    """The id a seq2seq decoder starts from: the configured start token,
    else `[BOS]`, in `vocabulary` or else in the reserved tokens that
    every keras_attn vocabulary starts with (id 1 if neither holds it)."""
    from keras_attn.data import RESERVED_TOKENS

    token = (generation_config or {}).get("start_token", "[BOS]")
    tokens = vocabulary or RESERVED_TOKENS
    start = tokens.index(token) if token in tokens else 1
    return start if start < decoder.vocabulary_size else 1


def parity_inputs(decoder, max_length, sample_prompts, start_id):
    """`(prompts, sources, new_tokens, prompts_from)` for the report.

    `sample_prompts` is an integer array `(N, L)` (or a list of id lists),
    right-padded with 0: a `decoder_lm`'s prompts, a `seq2seq`'s sources
    (whose decoder prompt is `[start_id]`). `None` draws random ids.
    Rows are cut to fit: prompts to `max_length - new_tokens` tokens,
    sources to the encoder length. An empty sequence skips the check
    (`prompts` is then empty).
    """
    new_tokens = min(MAX_NEW_TOKENS, max_length // 2)
    if decoder.is_seq2seq:
        new_tokens = min(MAX_NEW_TOKENS, max_length - 1)
    vocabulary = decoder.vocabulary_size
    if decoder.is_seq2seq:
        vocabulary = table_rows(decoder.encoder_embedding)
    room = max_length - new_tokens  # the longest prompt
    if sample_prompts is None:
        rng = np.random.default_rng(0)
        length = (signatures.source_length(decoder) if decoder.is_seq2seq
                  else room)
        lengths = sorted({1, max(1, length // 2), length})
        rows = [rng.integers(1, vocabulary, n) for n in lengths]
        prompts_from = "random ids"
    else:
        rows = _rows(sample_prompts)[:MAX_SAMPLE_PROMPTS]
        for row in rows:
            inputs_lib.check_token_ids(row, "sample_prompts", vocabulary)
        rows = [_until_padding(row) for row in rows]
        if any(len(row) == 0 for row in rows):
            raise ValueError(
                "Every row of `sample_prompts` needs a token before its "
                "padding (id 0). Received empty rows: "
                f"{[i for i, row in enumerate(rows) if len(row) == 0]}"
            )
        prompts_from = "sample_prompts"
    if not rows:
        return [], None, new_tokens, prompts_from
    if decoder.is_seq2seq:
        sources = _source_ids(rows, signatures.source_length(decoder))
        return [[start_id]] * len(rows), sources, new_tokens, prompts_from
    prompts = [list(map(int, row[:room])) for row in rows]
    return prompts, None, new_tokens, prompts_from


def export_generator_tflite(model, path, max_length=None, quantization=None,
                            kv_cache="variables", vocabulary=None,
                            source_vocabulary=None, generation_config=None,
                            lowercase=True, sample_prompts=None,
                            num_threads=1, int4_block_size=32,
                            int4_components=converter.INT4_COMPONENTS):
    """Exports a `decoder_lm` or `seq2seq` model for on-device generation,
    and reports on the file.

    The file describes itself (`keras_attn.export.description`): kind,
    model type, lengths, cache form, quantization, and the vocabularies,
    special tokens and generation defaults given here, so the runtime
    needs only its path. The report's greedy parity runs the file with
    LiteRT as a device does and compares its tokens with
    `keras_attn.models.generate(..., sampler="greedy")`.

    Args:
        model: a model built by `keras_attn.models.decoder_lm` or `seq2seq`.
        path: str. The .tflite file to write (atomically).
        max_length: int or `None`. Cache length `M`: prompt plus generated
            tokens. With learned positions at most the model's
            `sequence_length`. Defaults to the length of the model's
            (decoder) token input.
        quantization: `None`, `"float16"`, `"dynamic_int8"` (int8
            weights) or `"int4"` (block-wise int4 weights, decoder_lm
            only; see `keras_attn.export.converter.quantize_int4`). Static
            `"int8"` is for `export_tflite` only.
        kv_cache: `"variables"` (default): the cache stays inside the
            interpreter, and `decode` takes only the token and its index;
            one sequence per interpreter. `"tensors"`: stateless
            signatures that take and return the cache, as the SavedModel's.
            See `keras_attn.export.generation_signatures`.
        vocabulary: list of str or `None`. The (target) vocabulary, in id
            order; as many tokens as the (decoder) embedding has rows.
            Embedded in the file with its special tokens.
        source_vocabulary: list of str or `None`. A seq2seq model's source
            vocabulary; as many tokens as the encoder embedding has rows.
        generation_config: dict or `None`. Default sampler settings for
            the runtime: `sampler`, `temperature`, `top_k`, `top_p`,
            `repetition_penalty`, `no_repeat_ngram_size`, `start_token`,
            `stop_token`.
        lowercase: bool. The tokenizer's normalization, embedded with the
            vocabulary. Defaults to `True`.
        sample_prompts: int array `(N, L)` right-padded with 0, a list of
            id lists, or `None`: prompts for the parity check (for
            seq2seq: sources, decoded from `[BOS]`). At most the first
            16 rows, cut to fit `max_length`. Defaults to random ids; an
            empty list skips the check.
        num_threads: int. LiteRT threads for the timings. Defaults to `1`.
        int4_block_size: int. With `"int4"`: 32, 64 or 128 weights per
            scale; must divide the model width and feedforward width.
            Defaults to 32.
        int4_components: sequence of `"attention"`, `"ffn"`,
            `"embedding"`: with `"int4"`, the weights to quantize.
            Defaults to all three.

    Returns:
        A `GeneratorReport` (path-like: `os.fspath(report)` is the path).

    Raises:
        ValueError: for a bad `max_length`, `quantization`, `kv_cache`, a
            vocabulary or `sample_prompts` that do not fit the model.
        TypeError: for `sample_prompts` that are not integer ids.
        UnsupportedOpsError: if the file would need non-builtin ops.

    Example:

    ```python
    import os
    import tempfile
    import keras_attn
    from keras_attn.export import export_generator_tflite
    lm = keras_attn.models.decoder_lm(50, 16, num_layers=1, hidden_dim=16,
                                      num_heads=2)
    report = export_generator_tflite(
        lm, os.path.join(tempfile.mkdtemp(), "lm.tflite"), max_length=16)
    print(report.table())
    ```
    """
    check_exportable(model)
    decoder = CachedDecoder(model)
    max_length = signatures.resolve_max_length(decoder, max_length)
    converter.check_quantization(quantization, GENERATOR_QUANTIZATIONS,
                                 _WHY_NOT_INT8)
    int4_components = converter.check_int4(int4_block_size, int4_components)
    if quantization == "int4" and decoder.is_seq2seq:
        raise ValueError(
            "Received an invalid value for argument `quantization`: "
            "\"int4\" is implemented for decoder_lm generators; a seq2seq "
            "takes None, \"float16\" or \"dynamic_int8\". Received: "
            "quantization='int4'"
        )
    signatures.check_kv_cache(kv_cache)
    positive_int(num_threads, "num_threads")
    vocabulary, source_vocabulary = description_lib.check_vocabularies(
        model, vocabulary, source_vocabulary)
    generation_config = description_lib.check_generation_config(
        generation_config, vocabulary)
    source_length = (signatures.source_length(decoder)
                     if decoder.is_seq2seq else None)
    prompts, sources, new_tokens, prompts_from = parity_inputs(
        decoder, max_length, sample_prompts,
        _start_id(decoder, vocabulary, generation_config))
    model_type = description_lib.model_type(model)
    description = description_lib.describe(
        "generator", model_type, quantization, vocabulary=vocabulary,
        source_vocabulary=source_vocabulary, lowercase=lowercase,
        generation_config=generation_config, max_length=max_length,
        source_length=source_length, kv_cache=kv_cache,
    )

    archive = keras.export.ExportArchive()
    archive.track(model)
    if quantization == "int4":
        # The token table as EMBEDDING_LOOKUP: int4 quantizes it once for
        # the lookup and the tied output projection.
        decoder = embedding_lookup.LookupDecoder(decoder)
        embedding_lookup.check_int4_block_size(decoder, int4_block_size)
    names = signatures.add_generation_endpoints(archive, decoder, max_length,
                                                kv_cache)
    if quantization == "int4":
        model_bytes = converter.quantize_int4(
            converter.convert(archive, names), int4_block_size,
            int4_components)
    else:
        model_bytes = converter.convert(archive, names, quantization)
    written = metadata.write(path, model_bytes, description)

    measured = {"identical": 0, "encode_ms": None, "prefill_ms": None,
                "decode_ms": None}
    if prompts:
        measured = report_lib.generator_parity(
            model, written["path"], prompts, sources, new_tokens,
            num_threads)
    return report_lib.GeneratorReport(
        quantization=quantization, model_type=model_type,
        max_length=max_length, source_length=source_length,
        kv_cache=kv_cache, prompts=len(prompts), prompts_from=prompts_from,
        new_tokens=new_tokens,
        next_command=report_lib.next_command(
            written["path"], "generator", model_type,
            written["description"]),
        **written, **measured,
    )
