"""On-device generation: one .tflite with `prefill` and `decode` signatures
(plus `encode` for seq2seq) around a fixed-shape KV cache.

Shape legend: M max_length (the cache length), Y decoder layers, K
key/value heads, H head size, V vocabulary, E source length, D width.

Signatures (batch 1, int32 ids, float32 tensors):
    encode   (seq2seq) encoder_token_ids (1, E)
             -> memory (1, E, D), cross_cache (1, Y, 2, E, K, H)
    prefill  token_ids (1, M) right-padded with 0, length () [+ encoder]
             -> logits (1, V) at position length - 1, cache (1, Y, 2, M, K, H)
    decode   token_id (1, 1), cache, index () [+ encoder]
             -> logits (1, V) for position index + 1, updated cache
where [+ encoder] is `encoder_token_ids`, `memory` and `cross_cache`.

A device loop: `prefill` the prompt, then repeatedly pick a token from the
logits and `decode` it at the next index. The cache update lowers to the
builtin DYNAMIC_UPDATE_SLICE, so there is no WHILE and no Flex op; every
new token costs one decoder step instead of a pass over the whole window.
"""

import shutil
import tempfile

import keras
from keras import ops

from keras_attn.export import atomic
from keras_attn.export import tflite
from keras_attn.models.generation import CachedDecoder

GENERATOR_QUANTIZATIONS = (None, "float16", "dynamic_int8")


def _signatures(decoder, max_length):
    import tensorflow as tf

    layers = len(decoder.layers)
    cache = tf.TensorSpec(
        (1, layers, 2, max_length, decoder.num_kv_heads, decoder.head_dim),
        tf.float32, name="cache",
    )
    specs = {
        "prefill": [tf.TensorSpec((1, max_length), tf.int32,
                                  name="token_ids"),
                    tf.TensorSpec((), tf.int32, name="length")],
        "decode": [tf.TensorSpec((1, 1), tf.int32, name="token_id"), cache,
                   tf.TensorSpec((), tf.int32, name="index")],
    }
    if decoder.is_seq2seq:
        source = decoder.encoder_embedding
        length = getattr(source, "sequence_length", None)
        if length is None:  # rotary: the model input fixes the length
            length = decoder.model.input["encoder_token_ids"].shape[1]
        hidden = decoder.head_dim * decoder.layers[0].num_heads
        encoder = [
            tf.TensorSpec((1, length), tf.int32, name="encoder_token_ids"),
            tf.TensorSpec((1, length, hidden), tf.float32, name="memory"),
            tf.TensorSpec((1, layers, 2, length, decoder.num_kv_heads,
                           decoder.head_dim), tf.float32, name="cross_cache"),
        ]
        specs["encode"] = encoder[:1]
        specs["prefill"] += encoder
        specs["decode"] += encoder
    return specs


def _endpoints(decoder, max_length):
    def encoder_state(encoder_token_ids, memory, cross_cache):
        return memory, cross_cache, ops.not_equal(encoder_token_ids, 0)

    def encode(encoder_token_ids):
        memory, cross_cache, _ = decoder.encode(encoder_token_ids)
        return {"memory": memory, "cross_cache": cross_cache}

    def prefill(token_ids, length, *encoder):
        cache = decoder.init_cache(1, max_length)
        state = encoder_state(*encoder) if encoder else None
        logits, _, cache = decoder.call_with_cache(token_ids, cache, 0, state)
        last = ops.take(logits, ops.reshape(length - 1, (1,)), axis=1)
        return {"logits": last[:, 0], "cache": cache}

    def decode(token_id, cache, index, *encoder):
        state = encoder_state(*encoder) if encoder else None
        logits, _, cache = decoder.call_with_cache(token_id, cache, index,
                                                   state)
        return {"logits": logits[:, 0], "cache": cache}

    endpoints = {"prefill": prefill, "decode": decode}
    if decoder.is_seq2seq:
        endpoints["encode"] = encode
    return endpoints


def export_generator_tflite(model, path, max_length, quantization=None):
    """Exports a `decoder_lm` or `seq2seq` model for on-device generation.

    Args:
        model: a model built by `keras_attn.models.decoder_lm` or `seq2seq`.
        path: str. The .tflite file to write (atomically).
        max_length: int. Cache length `M`: prompt plus generated tokens.
            With learned positions at most the model's `sequence_length`.
        quantization: `None`, `"float16"` or `"dynamic_int8"`.

    Returns:
        The absolute path written.

    Raises:
        ValueError: for a bad `max_length` or `quantization`.
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
    if isinstance(max_length, bool) or not isinstance(max_length, int) or (
        max_length <= 0
    ):
        raise ValueError(
            "Received an invalid value for argument `max_length`, expected "
            f"a positive integer. Received: max_length={max_length!r}"
        )
    if decoder.max_length is not None and max_length > decoder.max_length:
        raise ValueError(
            f"`max_length`={max_length} exceeds the model's learned "
            f"positions (sequence_length={decoder.max_length})."
        )
    if quantization not in GENERATOR_QUANTIZATIONS:
        raise ValueError(
            "Received an invalid value for argument `quantization`, expected "
            f"one of {GENERATOR_QUANTIZATIONS}. Received: "
            f"quantization={quantization!r}"
        )
    archive = keras.export.ExportArchive()
    archive.track(model)
    specs = _signatures(decoder, max_length)
    for name, fn in _endpoints(decoder, max_length).items():
        archive.add_endpoint(name, fn, input_signature=specs[name])
    saved_model_dir = tempfile.mkdtemp(prefix="keras_attn_generator_")
    try:
        archive.write_out(saved_model_dir, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(
            saved_model_dir, signature_keys=list(specs)
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
