"""The generation signatures of the TFLite generator and the SavedModel:
`prefill` and `decode` around a fixed-shape KV cache, plus `encode` for
seq2seq. Two forms, chosen by `kv_cache`:

Shape legend: M max_length (the cache length), Y decoder layers, K
key/value heads, H head size, V vocabulary, E source length, D width.

Both forms hold the cache heads first, as `keras_attn.layers.KVCache`
does (keys and values `(1, K, M, H)` per layer), so the attention reads
it in place: no transpose of the cache anywhere in the file.

`kv_cache="variables"` (the TFLite default): the cache lives inside the
interpreter, in TFLite resource variables (one key and one value variable
`(1, K, M, H)` per layer, plus the encoder state for seq2seq) shared by
the signatures of one interpreter. Nothing but ids and logits crosses the
signature:
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
             -> memory (1, E, D), cross_cache (1, Y, 2, K, E, H)
    prefill  token_ids (1, M), length () [+ encoder]
             -> logits (1, V), cache (1, Y, 2, K, M, H)
    decode   token_id (1, 1), cache, index () [+ encoder]
             -> logits (1, V), updated cache
where [+ encoder] is `encoder_token_ids`, `memory` and `cross_cache`, and
index 0 of the third axis holds the keys, index 1 the values. Any number
of sequences can share one interpreter or SavedModel.

A generation loop: (`encode` the source,) `prefill` the prompt, then
repeatedly pick a token from the logits and `decode` it at the next index.
"""

from keras import ops

from keras_attn.layers import KVCache
from keras_attn.models.generation import CachedDecoder
from keras_attn.models.structure import has_decoder_layers

KV_CACHES = ("variables", "tensors")


def generation_decoder(model):
    """`CachedDecoder(model)` for a model with `TransformerDecoder` layers,
    else `None`.

    Raises:
        UnsupportedDecoderError: (a ValueError) from `CachedDecoder`, for a
            model with decoder layers that it cannot run (not laid out as
            `keras_attn.models.decoder_lm` or `seq2seq` lay it out).
    """
    if not has_decoder_layers(model):
        return None
    return CachedDecoder(model)


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
        max_length = decoder.token_input.shape[1]
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


def stack_caches(caches):
    """`Y` `KVCache`s `(B, K, M, H)` -> one tensor `(B, Y, 2, K, M, H)`,
    the cache of the `"tensors"` form."""
    return ops.stack([ops.stack(cache, axis=1) for cache in caches], axis=1)


def unstack_caches(cache, num_layers):
    """Inverse of `stack_caches`: a list of `num_layers` `KVCache`s."""
    # unstack, not cache[:, i]: on TFLite a rank-6 STRIDED_SLICE copies
    # element by element (about 0.4 ms per layer at M=128, D=256), UNPACK
    # copies contiguous blocks.
    return [KVCache(*ops.unstack(layer, 2, axis=1))
            for layer in ops.unstack(cache, num_layers, axis=1)]


def _cache_spec(decoder, length, name):
    import tensorflow as tf

    return tf.TensorSpec(
        (1, len(decoder.layers), 2, decoder.num_kv_heads, length,
         decoder.head_dim), tf.float32, name=name,
    )  # (1, Y, 2, K, M or E, H)


def input_signatures(decoder, max_length):
    """`{signature name: [tf.TensorSpec, ...]}` of the `"tensors"` form,
    batch 1."""
    import tensorflow as tf

    specs = _token_specs(decoder, max_length)
    specs["decode"].insert(1, _cache_spec(decoder, max_length, "cache"))
    if decoder.is_seq2seq:
        length = source_length(decoder)
        encoder = specs["encode"] + [
            tf.TensorSpec((1, length, _hidden_dim(decoder)), tf.float32,
                          name="memory"),
            _cache_spec(decoder, length, "cross_cache"),
        ]
        specs["prefill"] += encoder
        specs["decode"] += encoder
    return specs


def endpoints(decoder, max_length):
    """`{signature name: function}` matching `input_signatures`."""
    layers = len(decoder.layers)

    def encoder_state(encoder_token_ids, memory, cross_cache):
        return (memory, unstack_caches(cross_cache, layers),
                ops.not_equal(encoder_token_ids, 0))

    def encode(encoder_token_ids):
        memory, cross_caches, _ = decoder.encode(encoder_token_ids)
        return {"memory": memory, "cross_cache": stack_caches(cross_caches)}

    def prefill(token_ids, length, *encoder):
        caches = decoder.init_cache(1, max_length)
        state = encoder_state(*encoder) if encoder else None
        _, hidden, caches = decoder.call_with_cache(token_ids, caches, 0,
                                                    state)
        return {"logits": _last_logits(decoder, hidden, length),
                "cache": stack_caches(caches)}

    def decode(token_id, cache, index, *encoder):
        state = encoder_state(*encoder) if encoder else None
        logits, _, caches = decoder.call_with_cache(
            token_id, unstack_caches(cache, layers), index, state)
        return {"logits": logits[:, 0], "cache": stack_caches(caches)}

    functions = {"prefill": prefill, "decode": decode}
    if decoder.is_seq2seq:
        functions["encode"] = encode
    return functions


def source_length(decoder):
    """The encoder input length `E` of a seq2seq model."""
    length = getattr(decoder.encoder_embedding, "sequence_length", None)
    if length is None:  # rotary: the model input fixes the length
        length = decoder.encoder_token_input.shape[1]
    return length


def _cache_variables(caches):
    """`KVCache`s of variables -> `KVCache`s of their values."""
    return [KVCache(cache.keys.read_value(), cache.values.read_value())
            for cache in caches]


def _assign(variables, caches):
    for cache_variables, cache in zip(variables, caches):
        cache_variables.keys.assign(cache.keys)
        cache_variables.values.assign(cache.values)


class _State:
    """The generation state as TensorFlow resource variables: per layer a
    `KVCache` of two variables `(1, K, M, H)`, and for seq2seq the encoder
    output `(1, E, D)`, per-layer cross caches `(1, K, E, H)` and the
    source mask `(1, E)` (int32, 1 for tokens)."""

    def __init__(self, decoder, max_length):
        import tensorflow as tf

        def variable(shape, name, dtype="float32"):
            return tf.Variable(tf.zeros(shape, dtype), trainable=False,
                               name=name)

        def caches(length, prefix):
            shape = (1, decoder.num_kv_heads, length, decoder.head_dim)
            return [KVCache(variable(shape, f"{prefix}key_cache_{i}"),
                            variable(shape, f"{prefix}value_cache_{i}"))
                    for i in range(len(decoder.layers))]

        self.decoder = decoder
        self.max_length = max_length
        self.caches = caches(max_length, "")
        self.variables = [v for cache in self.caches for v in cache]
        if decoder.is_seq2seq:
            length = source_length(decoder)
            self.memory = variable((1, length, _hidden_dim(decoder)),
                                   "memory")
            self.source_mask = variable((1, length), "source_mask", "int32")
            self.cross = caches(length, "cross_")
            self.variables += [self.memory, self.source_mask]
            self.variables += [v for cache in self.cross for v in cache]

    def empty(self):
        return [KVCache.zeros(1, self.decoder.num_kv_heads, self.max_length,
                              self.decoder.head_dim)
                for _ in self.caches]

    def encoder(self):
        if not self.decoder.is_seq2seq:
            return None
        return (self.memory.read_value(), _cache_variables(self.cross),
                ops.not_equal(self.source_mask.read_value(), 0))

    def read(self):
        return _cache_variables(self.caches)

    def write(self, caches):
        _assign(self.caches, caches)


def stateful_endpoints(decoder, max_length):
    """`(endpoints, input signatures, variables)` of the
    `kv_cache="variables"` form."""
    state = _State(decoder, max_length)

    def encode(encoder_token_ids):
        memory, cross_caches, padding = decoder.encode(encoder_token_ids)
        state.memory.assign(memory)
        state.source_mask.assign(ops.cast(padding, "int32"))
        _assign(state.cross, cross_caches)
        return {"memory": memory}

    def prefill(token_ids, length):
        _, hidden, caches = decoder.call_with_cache(
            token_ids, state.empty(), 0, state.encoder()
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
