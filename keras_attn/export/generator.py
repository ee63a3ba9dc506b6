"""On-device generation: one .tflite with `prefill` and `decode` signatures
(plus `encode` for seq2seq) around a fixed-shape KV cache; the signatures
are described in `keras_attn.export.generation_signatures`.

A device loop: `prefill` the prompt, then repeatedly pick a token from the
logits and `decode` it at the next index. The cache update lowers to the
builtin DYNAMIC_UPDATE_SLICE, so there is no WHILE and no Flex op; every
new token costs one decoder step instead of a pass over the whole window.
"""

import shutil
import tempfile

import keras

from keras_attn.export import atomic
from keras_attn.export import generation_signatures as signatures
from keras_attn.export import tflite
from keras_attn.models.generation import CachedDecoder

GENERATOR_QUANTIZATIONS = (None, "float16", "dynamic_int8")


def export_generator_tflite(model, path, max_length=None, quantization=None,
                            kv_cache="variables"):
    """Exports a `decoder_lm` or `seq2seq` model for on-device generation.

    Args:
        model: a model built by `keras_attn.models.decoder_lm` or `seq2seq`.
        path: str. The .tflite file to write (atomically).
        max_length: int or `None`. Cache length `M`: prompt plus generated
            tokens. With learned positions at most the model's
            `sequence_length`. Defaults to the length of the model's
            (decoder) token input.
        quantization: `None`, `"float16"` or `"dynamic_int8"`.
        kv_cache: `"variables"` (default): the cache stays inside the
            interpreter, and `decode` takes only the token and its index;
            one sequence per interpreter. `"tensors"`: stateless
            signatures that take and return the cache, as the SavedModel's.
            See `keras_attn.export.generation_signatures`.

    Returns:
        The absolute path written.

    Raises:
        ValueError: for a bad `max_length`, `quantization` or `kv_cache`.
        UnsupportedOpsError: if the file would need non-builtin ops.

    Example:

    ```python
    import os
    import tempfile
    import keras_attn
    from keras_attn.export import export_generator_tflite
    lm = keras_attn.models.decoder_lm(50, 16, num_layers=1, hidden_dim=16,
                                      num_heads=2)
    path = export_generator_tflite(
        lm, os.path.join(tempfile.mkdtemp(), "lm.tflite"), max_length=16)
    ```
    """
    import tensorflow as tf

    decoder = CachedDecoder(model)
    max_length = signatures.resolve_max_length(decoder, max_length)
    if quantization not in GENERATOR_QUANTIZATIONS:
        raise ValueError(
            "Received an invalid value for argument `quantization`, expected "
            f"one of {GENERATOR_QUANTIZATIONS}. Received: "
            f"quantization={quantization!r}"
        )
    archive = keras.export.ExportArchive()
    archive.track(model)
    names = signatures.add_generation_endpoints(archive, decoder, max_length,
                                                kv_cache)
    saved_model_dir = tempfile.mkdtemp(prefix="keras_attn_generator_")
    try:
        archive.write_out(saved_model_dir, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(
            saved_model_dir, signature_keys=names
        )
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS
        ]
        if quantization is not None:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantization == "float16":
            converter.target_spec.supported_types = [tf.float16]
        try:
            model_bytes = converter.convert()
        except Exception as e:  # the converter's error class is private
            unsupported = tflite._ops_in_converter_error(str(e))
            if unsupported:
                raise tflite.UnsupportedOpsError(unsupported) from e
            raise
    finally:
        shutil.rmtree(saved_model_dir, ignore_errors=True)
    rejected = tflite._rejected_ops(model_bytes)
    if rejected:
        raise tflite.UnsupportedOpsError(rejected)
    return atomic.write_bytes(path, model_bytes)
