"""The generation signatures shared by the TFLite generator and the
SavedModel: `prefill` and `decode` around a fixed-shape KV cache, plus
`encode` for seq2seq.

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

A generation loop: `prefill` the prompt, then repeatedly pick a token from
the logits and `decode` it at the next index.
"""

from keras import ops

from keras_attn.models.generation import CachedDecoder


def generation_decoder(model):
    """`CachedDecoder(model)` for a `decoder_lm` or `seq2seq`, else `None`."""
    try:
        return CachedDecoder(model)
    except (TypeError, ValueError):
        return None


def check_max_length(decoder, max_length):
    """Raises a ValueError unless `max_length` is a positive int within the
    model's learned positions."""
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


def default_max_length(decoder):
    """The model's decoder input length (its last input), or `None`."""
    return decoder.model.inputs[-1].shape[1]


def input_signatures(decoder, max_length):
    """`{signature name: [tf.TensorSpec, ...]}`, batch 1."""
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


def endpoints(decoder, max_length):
    """`{signature name: function}` matching `input_signatures`."""
    def encoder_state(encoder_token_ids, memory, cross_cache):
        return memory, cross_cache, ops.not_equal(encoder_token_ids, 0)

    def encode(encoder_token_ids):
        memory, cross_cache, _ = decoder.encode(encoder_token_ids)
        return {"memory": memory, "cross_cache": cross_cache}

    def prefill(token_ids, length, *encoder):
        cache = decoder.init_cache(1, max_length)
        state = encoder_state(*encoder) if encoder else None
        _, hidden, cache = decoder.call_with_cache(token_ids, cache, 0, state)
        last = ops.take(hidden, ops.reshape(length - 1, (1,)), axis=1)
        return {"logits": decoder.logits(last)[:, 0], "cache": cache}

    def decode(token_id, cache, index, *encoder):
        state = encoder_state(*encoder) if encoder else None
        logits, _, cache = decoder.call_with_cache(token_id, cache, index,
                                                   state)
        return {"logits": logits[:, 0], "cache": cache}

    functions = {"prefill": prefill, "decode": decode}
    if decoder.is_seq2seq:
        functions["encode"] = encode
    return functions


def add_generation_endpoints(archive, decoder, max_length):
    """Adds the generation endpoints to a `keras.export.ExportArchive`
    that tracks the model; returns their names."""
    specs = input_signatures(decoder, max_length)
    for name, fn in endpoints(decoder, max_length).items():
        archive.add_endpoint(name, fn, input_signature=specs[name])
    return list(specs)
