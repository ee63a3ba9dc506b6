"""Self-describing .tflite files: the keras_attn description, embedded.

`describe` builds the description of a converted model (what
`keras_attn_runtime.description` defines: kind, lengths, vocabularies,
class names, generation defaults), reading the shapes from the file and
checking what it is given against them; `embed` writes it into the
flatbuffer's `Model.metadata` list as the entry `"keras_attn"` (UTF-8
JSON). LiteRT ignores metadata it does not know, so the file runs as
before; `keras_attn_runtime.read_metadata` reads it back without
TensorFlow, and the runtime's `Classifier`, `Generator` and command line
then need only the model path.

The flatbuffer is rebuilt with the object API of TensorFlow's generated
TFLite schema, the same round trip the TFLite converter makes to add its
own conversion metadata: every other table and buffer keeps its content.
"""

import json
import os

import numpy as np

from keras_attn.export import description as description_lib
from keras_attn_runtime import atomic
from keras_attn_runtime import checks
from keras_attn_runtime import vocabulary as vocabulary_lib
from keras_attn_runtime.description import METADATA_NAME
from keras_attn_runtime.description import check_description
from keras_attn_runtime.tflite_file import TFLiteFile

_FILE_IDENTIFIER = b"TFL3"


def describe(model_bytes, model_type=None, vocabulary=None,
             source_vocabulary=None, lowercase=True, class_names=None,
             quantization=None, generation_config=None):
    """The description of a converted .tflite, checked against it.

    Kind, lengths and cache form come from the file's signatures:
    `serving_default` makes a classifier (`sequence_length` from
    `token_ids`), `prefill`/`decode` a generator (`max_length`, and
    `source_length` with `encode`; `kv_cache="tensors"` when `decode`
    takes the cache). Special tokens are the reserved ones the vocabulary
    holds.

    Args:
        model_bytes: bytes. The .tflite content.
        model_type: `"encoder_classifier"`, `"decoder_lm"`, `"seq2seq"`,
            `"other"` or `None` (a generator with `encode` is `"seq2seq"`,
            one without `"decoder_lm"`, a classifier `"other"`).
        vocabulary: list of str or `None`. The (target) vocabulary; its
            size must be the model's embedding input (and, for a
            generator, its logits) size.
        source_vocabulary: list of str or `None`. A seq2seq model's
            source vocabulary; its size must be the encoder's embedding
            input size.
        lowercase: bool. The tokenizer's normalization. Defaults to
            `True`.
        class_names: list of str or `None`. A classifier's class names,
            as many as its outputs.
        quantization: `None`, `"float16"`, `"dynamic_int8"`, `"int8"` or
            `"int4"`.
        generation_config: dict or `None`. Generator defaults
            (`keras_attn_runtime.samplers.check_generation_config`).

    Returns:
        dict, ready for `embed`.

    Raises:
        ValueError: if an argument does not fit the model (naming it), or
            the file has neither a classifier's nor a generator's
            signatures.

    Example:

    ```python
    import os
    import tempfile
    import keras_attn
    from keras_attn.export import export_tflite
    from keras_attn.export import metadata
    from keras_attn_runtime import read_metadata
    vocabulary = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"] + list("abcdef")
    model = keras_attn.models.encoder_classifier(
        vocabulary_size=10, sequence_length=8, num_classes=2, num_layers=1,
        hidden_dim=16, num_heads=2)
    path = os.path.join(tempfile.mkdtemp(), "model.tflite")
    export_tflite(model, path)
    metadata.embed_file(path, metadata.describe(
        open(path, "rb").read(), vocabulary=vocabulary,
        class_names=["no", "yes"]))
    assert read_metadata(path)["class_names"] == ["no", "yes"]
    ```
    """
    model = TFLiteFile(model_bytes, name="the model")
    signatures = model.signatures
    if "prefill" in signatures and "decode" in signatures:
        seq2seq = "encode" in signatures
        kind = "generator"
        model_type = model_type or ("seq2seq" if seq2seq else "decoder_lm")
        lengths = dict(
            max_length=_dimension(signatures, "prefill", "inputs",
                                  "token_ids", 1),
            kv_cache=("tensors" if "cache" in signatures["decode"]["inputs"]
                      else "variables"),
        )
        if seq2seq:
            lengths["source_length"] = _dimension(
                signatures, "encode", "inputs", "encoder_token_ids", 1)
    elif "serving_default" in signatures:
        kind, model_type = "classifier", model_type or "other"
        lengths = dict(sequence_length=_dimension(
            signatures, "serving_default", "inputs", "token_ids", 1))
    else:
        raise ValueError(
            "The model has neither a classifier's signature "
            "(serving_default) nor a generator's (prefill, decode). "
            f"Received signatures: {sorted(signatures)}"
        )
    if vocabulary is not None:
        vocabulary = vocabulary_lib.check_vocabulary(vocabulary)
    if source_vocabulary is not None:
        source_vocabulary = vocabulary_lib.check_vocabulary(
            source_vocabulary, "`source_vocabulary`")
    description = description_lib.describe(
        kind, model_type, quantization, vocabulary=vocabulary,
        source_vocabulary=source_vocabulary,
        lowercase=lowercase,
        class_names=class_names, generation_config=generation_config,
        **lengths)
    check_fits(model, description)
    return description


def _dimension(signatures, name, part, tensor, axis):
    spec = signatures[name][part].get(tensor)
    if spec is None or len(spec["shape"]) <= axis:
        raise ValueError(
            f"The model's {name!r} signature has no {tensor!r} {part[:-1]} "
            f"with {axis + 1} dimensions. Received {part}: "
            f"{sorted(signatures[name][part])}"
        )
    return int(spec["shape"][axis])


def check_fits(model, description):
    """Raises a ValueError naming the argument that does not fit `model`.

    Args:
        model: `keras_attn_runtime.TFLiteFile`.
        description: dict, checked by `check_description`.
    """
    signatures = model.signatures
    sizes = []  # (argument, received size, model size, what it is)
    if description["kind"] == "generator":
        # Every generator's `decode` returns logits (LiteRT-LM's prefill
        # signatures do not).
        logits = signatures["decode"]["outputs"]["logits"]["shape"][-1]
        sizes.append(("vocabulary", logits, "the size of its logits"))
        if "encode" in signatures:
            sizes.append(("source_vocabulary", model.embedding_rows(
                "encode", "encoder_token_ids"), "its encoder's embedding "
                "input size"))
    else:
        (output,) = signatures["serving_default"]["outputs"].values()
        sizes.append(("class_names", output["shape"][-1],
                      "its output width"))
        sizes.append(("vocabulary", model.embedding_rows(
            "serving_default", "token_ids"), "its embedding input size"))
    for argument, size, what in sizes:
        value = description.get(argument)
        if value is not None and size is not None and len(value) != size:
            raise ValueError(
                f"Received an invalid value for argument `{argument}`, "
                f"expected {size} entries ({what}). Received: {argument} "
                f"with {len(value)} entries, e.g. {checks.short(value[:3])}"
            )


def embed(model_bytes, description):
    """Returns the .tflite bytes with `description` embedded.

    The entry `"keras_attn"` of `Model.metadata` holds the description as
    UTF-8 JSON; an entry already there is replaced. Everything else in
    the file keeps its content (the converter's own metadata included).

    Args:
        model_bytes: bytes. A .tflite file's content.
        description: dict. From `describe` (checked again here).

    Returns:
        bytes.

    Raises:
        ValueError: for a malformed description, one that does not fit
            the model, or a file over 2 GB whose weights lie outside the
            flatbuffer.
    """
    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as schema

    description = check_description(description)
    check_fits(TFLiteFile(model_bytes, name="the model"), description)
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(model_bytes, 0))
    buffers = model.buffers or []
    outside = [buffer for buffer in buffers if buffer.offset > 1]
    if outside:
        # Weights appended after the flatbuffer (ai-edge-quantizer writes
        # files of 256 KB of weights and more this way) move back inside:
        # the rebuilt file is a plain flatbuffer, up to its 2 GB limit.
        if len(model_bytes) >= 2**31 - 2**20:
            raise ValueError(
                "The model keeps its weights outside the flatbuffer and is "
                "too large (over 2 GB) to hold them inside; embedding a "
                "description there is not supported."
            )
        for buffer in outside:
            buffer.data = np.frombuffer(
                model_bytes, np.uint8, buffer.size, buffer.offset)
            buffer.offset = buffer.size = 0
    payload = json.dumps(description, ensure_ascii=False,
                         separators=(",", ":")).encode("utf-8")
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(payload, np.uint8)
    entries = model.metadata or []
    existing = [entry for entry in entries
                if entry.name.decode("utf-8") == METADATA_NAME]
    if existing:
        buffers[existing[0].buffer] = buffer
    else:
        entry = schema.MetadataT()
        entry.name = METADATA_NAME
        entry.buffer = len(buffers)
        buffers.append(buffer)
        entries.append(entry)
    model.buffers = buffers
    model.metadata = entries
    builder = flatbuffers.Builder(len(model_bytes) + len(payload) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=_FILE_IDENTIFIER)
    return bytes(builder.Output())


def embed_file(path, description):
    """Embeds `description` into the .tflite file at `path`, atomically.

    Args:
        path: str or `os.PathLike`. A .tflite file, rewritten in place.
        description: dict. From `describe`.

    Returns:
        The absolute path, as a str.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"No model file. Received: path={str(path)!r}")
    with open(path, "rb") as f:
        model_bytes = f.read()
    return atomic.write_bytes(path, embed(model_bytes, description))


def write(path, model_bytes, description):
    """Embeds `description` into the .tflite bytes and writes them to
    `path` atomically: the last step of every exporter.

    Returns:
        The fields every export report has: `path` (absolute),
        `size_bytes`, `ops` and `description`.
    """
    model_bytes = embed(model_bytes, description)
    path = atomic.write_bytes(path, model_bytes)
    return {"path": path, "size_bytes": len(model_bytes),
            "ops": sorted({name for name, _ in TFLiteFile(
                model_bytes, name=path).op_codes}),
            "description": description}
