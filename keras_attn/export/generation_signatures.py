"""The generation signatures of the TFLite generator and the SavedModel:
`prefill` and `decode` around a fixed-shape KV cache, plus `encode` for
seq2seq. Two forms, chosen by `kv_cache`:

Shape legend: M max_length (the cache length), Y decoder layers, K
key/value heads, H head size, V vocabulary, E source length, D width.

`kv_cache="variables"` (the TFLite default): the cache lives inside the
interpreter, in TFLite resource variables (one key and one value variable
per layer, plus the encoder state for seq2seq) shared by the signatures of
one interpreter. Nothing but ids and logits crosses the signature:
    encode   (seq2seq) encoder_token_ids (1, E) -> memory (1, E, D)
             and stores the cross-attention cache and source mask
    prefill  token_ids (1, M) right-padded with 0, length ()
             -> logits (1, V) at position length - 1; stores the cache
    decode   token_id (1, 1), index () -> logits (1, V) for position
             index + 1; updates the cache in place
One interpreter holds one sequence at a time; `prefill` starts a new one
(for seq2seq after `encode` of its source). It is the faster form: no
1 MB-sized cache copies in and out of the interpreter per token, and no
stacking of the layers' caches (see BENCHMARKS.md).

`kv_cache="tensors"` (the SavedModel's form, and an option for TFLite):
stateless signatures that take and return the cache:
    encode   (seq2seq) encoder_token_ids (1, E)
             -> memory (1, E, D), cross_cache (1, Y, 2, E, K, H)
    prefill  token_ids (1, M), length () [+ encoder]
             -> logits (1, V), cache (1, Y, 2, M, K, H)
    decode   token_id (1, 1), cache, index () [+ encoder]
             -> logits (1, V), updated cache
where [+ encoder] is `encoder_token_ids`, `memory` and `cross_cache`. Any
number of sequences can share one interpreter or SavedModel.

A generation loop: (`encode` the source,) `prefill` the prompt, then
repeatedly pick a token from the logits and `decode` it at the next index.
"""

from keras import ops

from keras_attn.layers import TransformerDecoder
from keras_attn.models.generation import CachedDecoder

KV_CACHES = ("variables", "tensors")


def generation_decoder(model):
    """`CachedDecoder(model)` for a model with `TransformerDecoder` layers,
    else `None`.

    Raises:
        ValueError: from `CachedDecoder`, for a model with decoder layers
            that it cannot run (not laid out as `keras_attn.models.decoder_lm`
            or `seq2seq` build it).
    """
    if not has_decoder_layers(model):
        return None
    return CachedDecoder(model)


def has_decoder_layers(model):
    """Whether `model` has `TransformerDecoder` layers (at its top level):
    a model that generates."""
    return any(isinstance(layer, TransformerDecoder)
               for layer in model.layers)


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


def resolve_max_length(decoder, max_length):
    """`max_length`, or by default the length of the model's (decoder)
    token input; checked by `check_max_length`."""
    if max_length is None:
        inputs = decoder.model.input
        if isinstance(inputs, dict):
            inputs = inputs["decoder_token_ids"]
        max_length = inputs.shape[1]
        if max_length is None:
            raise ValueError(
                "The model's token input has no fixed length: pass "
                "`max_length`, the cache length of the generation "
                "signatures. Received: max_length=None"
            )
    check_max_length(decoder, max_length)
    return max_length


def _hidden_dim(decoder):
    return decoder.head_dim * decoder.layers[0].num_heads


def _token_specs(decoder, max_length):
    """The id inputs every form shares: `{signature: [TensorSpec, ...]}`."""
    import tensorflow as tf

    specs = {
        "prefill": [tf.TensorSpec((1, max_length), tf.int32,
                                  name="token_ids"),
                    tf.TensorSpec((), tf.int32, name="length")],
        "decode": [tf.TensorSpec((1, 1), tf.int32, name="token_id"),
                   tf.TensorSpec((), tf.int32, name="index")],
    }
    if decoder.is_seq2seq:
        specs["encode"] = [tf.TensorSpec(
            (1, source_length(decoder)), tf.int32, name="encoder_token_ids"
        )]
    return specs


def _last_logits(decoder, hidden, length):
    """Logits `(1, V)` of position `length - 1` only (the prompt's last)."""
    last = ops.take(hidden, ops.reshape(length - 1, (1,)), axis=1)
    return decoder.logits(last)[:, 0]


def input_signatures(decoder, max_length):
    """`{signature name: [tf.TensorSpec, ...]}` of the `"tensors"` form,
    batch 1."""
    import tensorflow as tf

    layers = len(decoder.layers)
    specs = _token_specs(decoder, max_length)
    specs["decode"].insert(1, tf.TensorSpec(
        (1, layers, 2, max_length, decoder.num_kv_heads, decoder.head_dim),
        tf.float32, name="cache",
    ))
    if decoder.is_seq2seq:
        length = source_length(decoder)
        encoder = specs["encode"] + [
            tf.TensorSpec((1, length, _hidden_dim(decoder)), tf.float32,
                          name="memory"),
            tf.TensorSpec((1, layers, 2, length, decoder.num_kv_heads,
                           decoder.head_dim), tf.float32, name="cross_cache"),
        ]
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
        return {"logits": _last_logits(decoder, hidden, length),
                "cache": cache}

    def decode(token_id, cache, index, *encoder):
        state = encoder_state(*encoder) if encoder else None
        logits, _, cache = decoder.call_with_cache(token_id, cache, index,
                                                   state)
        return {"logits": logits[:, 0], "cache": cache}

    functions = {"prefill": prefill, "decode": decode}
    if decoder.is_seq2seq:
        functions["encode"] = encode
    return functions


def source_length(decoder):
    """The encoder input length `E` of a seq2seq model."""
    length = getattr(decoder.encoder_embedding, "sequence_length", None)
    if length is None:  # rotary: the model input fixes the length
        length = decoder.model.input["encoder_token_ids"].shape[1]
    return length


class _State:
    """The generation state as TensorFlow resource variables: per layer
    `(key, value)` caches `(1, M, K, H)`, and for seq2seq the encoder
    output `(1, E, D)`, per-layer cross caches `(1, E, K, H)` and the
    source mask `(1, E)` (int32, 1 for tokens)."""

    def __init__(self, decoder, max_length):
        import tensorflow as tf

        def variable(shape, name, dtype="float32"):
            return tf.Variable(tf.zeros(shape, dtype), trainable=False,
                               name=name)

        self.decoder = decoder
        self.shape = (1, max_length, decoder.num_kv_heads, decoder.head_dim)
        self.caches = [
            (variable(self.shape, f"key_cache_{i}"),
             variable(self.shape, f"value_cache_{i}"))
            for i in range(len(decoder.layers))
        ]
        self.variables = [v for pair in self.caches for v in pair]
        if decoder.is_seq2seq:
            length = source_length(decoder)
            cross = (1, length, decoder.num_kv_heads, decoder.head_dim)
            self.memory = variable((1, length, _hidden_dim(decoder)),
                                   "memory")
            self.source_mask = variable((1, length), "source_mask", "int32")
            self.cross = [
                (variable(cross, f"cross_key_cache_{i}"),
                 variable(cross, f"cross_value_cache_{i}"))
                for i in range(len(decoder.layers))
            ]
            self.variables += [self.memory, self.source_mask]
            self.variables += [v for pair in self.cross for v in pair]

    def encoder(self):
        if not self.decoder.is_seq2seq:
            return None
        cross = [(k.read_value(), v.read_value()) for k, v in self.cross]
        return (self.memory.read_value(), cross,
                ops.not_equal(self.source_mask.read_value(), 0))

    def read(self):
        return [(k.read_value(), v.read_value()) for k, v in self.caches]

    def write(self, caches):
        for (key, value), (k, v) in zip(self.caches, caches):
            key.assign(k)
            value.assign(v)


def stateful_endpoints(decoder, max_length):
    """`(endpoints, input signatures, variables)` of the
    `kv_cache="variables"` form."""
    state = _State(decoder, max_length)
    layers = len(decoder.layers)

    def encode(encoder_token_ids):
        memory, cross, padding = decoder.encode(encoder_token_ids)
        state.memory.assign(memory)
        state.source_mask.assign(ops.cast(padding, "int32"))
        for (key, value), pair in zip(
            state.cross, ops.unstack(cross, layers, axis=1)
        ):
            k, v = ops.unstack(pair, 2, axis=1)
            key.assign(k)
            value.assign(v)
        return {"memory": memory}

    def prefill(token_ids, length):
        empty = [(ops.zeros(state.shape), ops.zeros(state.shape))
                 for _ in range(layers)]
        _, hidden, caches = decoder.call_with_cache(
            token_ids, empty, 0, state.encoder()
        )
        state.write(caches)
        return {"logits": _last_logits(decoder, hidden, length)}

    def decode(token_id, index):
        logits, _, caches = decoder.call_with_cache(
            token_id, state.read(), index, state.encoder()
        )
        state.write(caches)
        return {"logits": logits[:, 0]}

    functions = {"prefill": prefill, "decode": decode}
    if decoder.is_seq2seq:
        functions["encode"] = encode
    return functions, _token_specs(decoder, max_length), state.variables


def check_kv_cache(kv_cache):
    """Raises a ValueError unless `kv_cache` is one of `KV_CACHES`."""
    if kv_cache not in KV_CACHES:
        raise ValueError(
            "Received an invalid value for argument `kv_cache`, expected "
            f"one of {KV_CACHES}. Received: kv_cache={kv_cache!r}"
        )


def add_generation_endpoints(archive, decoder, max_length,
                             kv_cache="tensors"):
    """Adds the generation endpoints to a `keras.export.ExportArchive`
    that tracks the model; returns their names."""
    check_kv_cache(kv_cache)
    if kv_cache == "tensors":
        specs = input_signatures(decoder, max_length)
        functions = endpoints(decoder, max_length)
    else:
        functions, specs, variables = stateful_endpoints(decoder, max_length)
        archive.add_variable_collection("generation_state", variables)
    for name, fn in functions.items():
        archive.add_endpoint(name, fn, input_signature=specs[name])
    return list(specs)
