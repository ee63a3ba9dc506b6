"""Fast cached generation for models built by `decoder_lm` and `seq2seq`.

Shape legend: B batch, P prompt length, M buffer length (P + new tokens),
E source length, Y decoder layers, K key/value heads, H head size,
D hidden width, V vocabulary.

The decoder runs with a KV cache `(B, Y, 2, M, K, H)`: the prompt is
processed once (prefill), then each new token costs one decoder step. The
whole loop (prefill, steps and sampling) is one XLA program, compiled once
per input shape and reused by later calls.
"""

import weakref

import keras
import keras_hub
import numpy as np
from keras import ops

from keras_attn.layers import TokenAndPositionEmbedding
from keras_attn_runtime import checks

SAMPLERS = ("greedy", "top_k", "top_p", "random")


def _layers_named(model, prefix):
    layers, i = [], 0
    while True:
        try:
            layers.append(model.get_layer(f"{prefix}{i}"))
        except ValueError:
            return layers
        i += 1


def _optional_layer(model, name):
    try:
        return model.get_layer(name)
    except ValueError:
        return None


def _vocabulary_size(embedding):
    """Token count of a builder's embedding: `TokenAndPositionEmbedding`,
    or the `ReversibleEmbedding` used with rotary positions."""
    if isinstance(embedding, TokenAndPositionEmbedding):
        return embedding.vocabulary_size
    return embedding.input_dim


def _per_layer(cache, num_layers):
    """A stacked `(B, Y, 2, ...)` cache as `Y` layer caches; a list of
    per-layer `(keys, values)` pairs as it is."""
    if isinstance(cache, (tuple, list)):
        if len(cache) != num_layers:
            raise ValueError(
                f"A per-layer cache needs one (keys, values) pair for each "
                f"of the {num_layers} decoder layers. Received: "
                f"{len(cache)} entries"
            )
        return [tuple(pair) for pair in cache]
    return ops.unstack(cache, num_layers, axis=1)


class CachedDecoder:
    """Runs the decoder of a `decoder_lm` or `seq2seq` model with a KV cache.

    The building block of `generate`, and of on-device generation (the
    TFLite exporter traces `encode`, `call_with_cache` for the prompt, and
    `call_with_cache` for one token). Layers are found by the names the
    builders give them.

    Args:
        model: a model built by `keras_attn.models.decoder_lm` or
            `keras_attn.models.seq2seq`.
    """

    def __init__(self, model):
        if not isinstance(model, keras.Model):
            raise TypeError(
                "`model` must be a keras.Model built by "
                "keras_attn.models.decoder_lm or seq2seq. Received: "
                f"model={type(model).__name__}"
            )
        self.model = model
        self.layers = _layers_named(model, "decoder_layer_")
        self.embedding = _optional_layer(model, "decoder_embedding")
        if not self.layers or self.embedding is None:
            raise ValueError(
                "`model` has no layers named 'decoder_embedding' and "
                "'decoder_layer_0', ...: build it with "
                "keras_attn.models.decoder_lm or seq2seq. Received: "
                f"model={model.name!r}"
            )
        self.final_norm = _optional_layer(model, "decoder_final_layer_norm")
        self.encoder_layers = _layers_named(model, "encoder_layer_")
        self.is_seq2seq = bool(self.encoder_layers)
        if self.is_seq2seq:
            self.encoder_embedding = model.get_layer("encoder_embedding")
            self.encoder_final_norm = _optional_layer(
                model, "encoder_final_layer_norm"
            )
        first = self.layers[0]
        self.num_kv_heads = first.num_key_value_heads or first.num_heads
        if isinstance(self.embedding, TokenAndPositionEmbedding):
            hidden_dim = self.embedding.embedding_dim
            learned = self.embedding.position == "learned"
            self.max_length = (
                self.embedding.sequence_length if learned else None
            )
        else:  # ReversibleEmbedding: rotary positions, no length limit
            hidden_dim = self.embedding.output_dim
            self.max_length = None
        self.vocabulary_size = _vocabulary_size(self.embedding)
        self.head_dim = hidden_dim // first.num_heads
        self.compute_dtype = first.compute_dtype

    def init_cache(self, batch_size, max_length):
        """Zeros of shape `(B, Y, 2, M, K, H)`."""
        return ops.zeros(
            (batch_size, len(self.layers), 2, max_length, self.num_kv_heads,
             self.head_dim),
            dtype=self.compute_dtype,
        )

    def encode(self, encoder_token_ids):
        """Runs the encoder once (seq2seq only).

        Returns:
            A tuple `(memory (B, E, D), cross_cache (B, Y, 2, E, K, H),
            encoder_padding_mask (B, E))`, passed as `encoder` to
            `call_with_cache`.
        """
        padding = ops.not_equal(encoder_token_ids, 0)  # (B, E)
        x = self.encoder_embedding(encoder_token_ids)
        for layer in self.encoder_layers:
            x = layer(x, padding_mask=padding, training=False)
        if self.encoder_final_norm is not None:
            x = self.encoder_final_norm(x)
        cross = ops.stack(
            [layer.compute_cross_attention_cache(x) for layer in self.layers],
            axis=1,
        )  # (B, Y, 2, E, K, H)
        return x, cross, padding

    def call_with_cache(self, token_ids, cache, index, encoder=None):
        """Decoder forward pass for `T` tokens at positions `index ..`.

        Args:
            token_ids: int tensor `(B, T)`.
            cache: `(B, Y, 2, M, K, H)`, or a list of `Y` pairs
                `(keys (B, M, K, H), values (B, M, K, H))`, one per layer;
                the new keys/values are written at `index`.
            index: int or int32 scalar tensor.
            encoder: the tuple from `encode` (seq2seq), else `None`. Its
                cross cache may be a list of per-layer pairs too.

        Returns:
            `(logits (B, T, V) float32, hidden (B, T, D), updated cache)`,
            the cache in the form it was given. The per-layer form has no
            stacking at all: on TFLite every stack or unstack of the cache
            is a copy of it.
        """
        if isinstance(self.embedding, TokenAndPositionEmbedding):
            x = self.embedding(token_ids, start_index=index)
        else:
            x = self.embedding(token_ids)
        padding = ops.not_equal(token_ids, 0)
        # unstack, not cache[:, i]: on TFLite a rank-6 STRIDED_SLICE copies
        # element by element (about 0.4 ms per layer at M=128, D=256),
        # UNPACK copies contiguous blocks.
        stacked = not isinstance(cache, (tuple, list))
        layer_caches = _per_layer(cache, len(self.layers))
        if encoder is not None:
            memory, cross, encoder_padding = encoder
            cross_caches = _per_layer(cross, len(self.layers))
        caches = []
        for i, layer in enumerate(self.layers):
            if encoder is None:
                x, layer_cache = layer(
                    x,
                    decoder_padding_mask=padding,
                    self_attention_cache=layer_caches[i],
                    self_attention_cache_update_index=index,
                    training=False,
                )
            else:
                x, layer_cache, _ = layer(
                    x,
                    memory,
                    decoder_padding_mask=padding,
                    encoder_padding_mask=encoder_padding,
                    self_attention_cache=layer_caches[i],
                    self_attention_cache_update_index=index,
                    cross_attention_cache=cross_caches[i],
                    training=False,
                )
            caches.append(layer_cache)
        if self.final_norm is not None:
            x = self.final_norm(x)
        if stacked:
            caches = ops.stack(caches, axis=1)
        return self.logits(x), x, caches

    def logits(self, hidden):
        """Float32 logits `(B, T, V)` from final hidden states `(B, T, D)`.

        For a prompt pass only the last position's logits are needed: pick
        that row of `hidden` first, and skip the `(T, D) x (D, V)` product
        for the other positions.
        """
        return ops.cast(self.embedding(hidden, reverse=True), "float32")


def make_sampler(sampler="greedy", temperature=1.0, top_k=10, top_p=0.9,
                 seed=None):
    """A keras-hub sampler from a name, or the sampler instance given.

    Temperature 0 means greedy decoding whatever the name.

    Args:
        sampler: `"greedy"`, `"top_k"`, `"top_p"`, `"random"` or a
            `keras_hub.samplers.Sampler`.
        temperature: float >= 0. Logits are divided by it.
        top_k: int. Tokens kept by `"top_k"`.
        top_p: float in (0, 1]. Probability mass kept by `"top_p"`.
        seed: int or `None`.
    """
    if isinstance(sampler, keras_hub.samplers.Sampler):
        return sampler
    if sampler not in SAMPLERS:
        raise ValueError(
            "Received an invalid value for argument `sampler`, expected one "
            f"of {SAMPLERS} or a keras_hub.samplers.Sampler. Received: "
            f"sampler={sampler!r}"
        )
    if not isinstance(temperature, (int, float)) or temperature < 0:
        raise ValueError(
            "Received an invalid value for argument `temperature`, expected "
            f"a number >= 0. Received: temperature={temperature!r}"
        )
    if sampler == "greedy" or temperature == 0:
        return keras_hub.samplers.GreedySampler()
    if sampler == "top_k":
        if not isinstance(top_k, int) or top_k <= 0:
            raise ValueError(
                "Received an invalid value for argument `top_k`, expected a "
                f"positive integer. Received: top_k={top_k!r}"
            )
        return keras_hub.samplers.TopKSampler(
            k=top_k, seed=seed, temperature=temperature
        )
    if sampler == "top_p":
        if not isinstance(top_p, (int, float)) or not 0 < top_p <= 1:
            raise ValueError(
                "Received an invalid value for argument `top_p`, expected a "
                f"float in (0, 1]. Received: top_p={top_p!r}"
            )
        return keras_hub.samplers.TopPSampler(
            p=top_p, seed=seed, temperature=temperature
        )
    return keras_hub.samplers.RandomSampler(seed=seed, temperature=temperature)


class _Generator:
    """Per-model state: the decoder view and compiled loops by sampler."""

    def __init__(self, model):
        self.decoder = CachedDecoder(model)
        self.compiled = {}
        self.traces = 0

    def _loop(self, sampler, stop_token_ids):
        decoder = self.decoder

        def loop(buffer, mask, index, encoder_token_ids):
            # Python runs here only while tracing: this counts compilations.
            self.traces += 1
            batch, length = ops.shape(buffer)[0], ops.shape(buffer)[1]
            encoder = (
                decoder.encode(encoder_token_ids)
                if decoder.is_seq2seq else None
            )
            cache = decoder.init_cache(batch, length)
            is_padding = ops.equal(
                ops.arange(decoder.vocabulary_size), 0
            )[None, :]  # (1, V)
            _, hidden, cache = decoder.call_with_cache(
                buffer, cache, 0, encoder
            )  # prefill: the whole buffer in one pass

            def next_token_logits(prompt, cache, index):
                # The token at `index - 1` is known; predict `index`.
                token = ops.slice(prompt, [0, index - 1], [batch, 1])
                logits, hidden, cache = decoder.call_with_cache(
                    token, cache, index - 1, encoder
                )
                # Id 0 is padding, never a token to emit: once emitted it
                # would be masked out of the attention.
                logits = ops.where(is_padding, -1e9, logits[:, 0])
                return logits, hidden[:, 0], cache

            return sampler(
                next_token_logits,
                buffer,
                cache=cache,
                index=index,
                mask=mask,
                stop_token_ids=stop_token_ids,
                hidden_states=hidden,
            )

        return loop

    def compiled_loop(self, sampler_settings, stop_token_ids):
        """The compiled loop for these settings, made on first use.

        `sampler_settings` is the tuple of `make_sampler` arguments, or a
        sampler instance; equal settings share one sampler (whose seed
        advances from call to call) and one compiled loop."""
        if isinstance(sampler_settings, keras_hub.samplers.Sampler):
            key = (id(sampler_settings), stop_token_ids)
        else:
            key = (sampler_settings, stop_token_ids)
        if key in self.compiled:
            return self.compiled[key][1]
        if isinstance(sampler_settings, keras_hub.samplers.Sampler):
            sampler = sampler_settings
        else:
            sampler = make_sampler(*sampler_settings)
        loop = self._loop(sampler, stop_token_ids)
        backend = keras.backend.backend()
        if backend == "tensorflow":
            import tensorflow as tf

            fn = tf.function(loop, jit_compile=True, reduce_retracing=True)
        elif backend == "jax":
            fn = self._jax_loop(loop, sampler)
        else:  # torch and others run eagerly
            fn = loop
        # Keep the sampler alive while its id is a key.
        self.compiled[key] = (sampler, fn)
        return fn

    def _jax_loop(self, loop, sampler):
        import jax

        model_vars = list(self.decoder.model.variables)

        @jax.jit
        def stateless(model_values, sampler_values, *args):
            mapping = list(zip(model_vars, model_values)) + list(
                zip(sampler.variables, sampler_values)
            )
            with keras.StatelessScope(state_mapping=mapping) as scope:
                out = loop(*args)
                new = [scope.get_current_value(v) for v in sampler.variables]
            return out, [n if n is not None else o
                         for n, o in zip(new, sampler_values)]

        def run(*args):
            out, new = stateless(
                [v.value for v in model_vars],
                [v.value for v in sampler.variables],
                *args,
            )
            for variable, value in zip(sampler.variables, new):
                variable.assign(value)  # advance the sampling seed
            return out

        return run


_GENERATORS = weakref.WeakKeyDictionary()


def _generator(model):
    if not isinstance(model, keras.Model):
        raise TypeError(
            "`model` must be a keras.Model built by "
            "keras_attn.models.decoder_lm or seq2seq. Received: "
            f"model={type(model).__name__}"
        )
    if model not in _GENERATORS:
        _GENERATORS[model] = _Generator(model)
    return _GENERATORS[model]


def trace_count(model):
    """How many times `generate` has compiled its loop for `model`."""
    return _generator(model).traces


def _check_prompt(prompt_ids, vocabulary_size, name="prompt_ids"):
    try:
        prompt = np.asarray(prompt_ids)
    except ValueError:
        prompt = None
    if prompt is None or prompt.dtype == object:
        # Ragged lists: right-pad with 0.
        rows = [list(row) for row in prompt_ids]
        prompt = np.zeros((len(rows), max(map(len, rows), default=0)), int)
        for i, row in enumerate(rows):
            prompt[i, : len(row)] = row
    if prompt.ndim == 1:
        prompt = prompt[None]
    if prompt.ndim != 2 or prompt.size == 0:
        raise ValueError(
            f"`{name}` must be a non-empty batch of token id sequences, "
            f"shape (batch, length). Received: {name}.shape={prompt.shape}"
        )
    checks.token_id_array(prompt, vocabulary_size, name)
    real = prompt != 0
    lengths = real.sum(axis=1)
    if (lengths == 0).any():
        raise ValueError(
            f"Every row of `{name}` needs at least one token (id 0 is "
            f"padding). Empty rows: {np.flatnonzero(lengths == 0).tolist()}"
        )
    if (real != (np.arange(prompt.shape[1]) < lengths[:, None])).any():
        raise ValueError(
            f"`{name}` must be right-padded: no token after a 0. Received: "
            f"{name}={prompt.tolist()}"
        )
    return prompt.astype("int32"), lengths


def _check_source_length(encoder_ids, embedding):
    """A source longer than the encoder's learned positions would fail
    inside the compiled loop: refuse it here."""
    if getattr(embedding, "position", None) != "learned":
        return  # sinusoidal and rotary positions have no length limit
    length = encoder_ids.shape[1]
    if length > embedding.sequence_length:
        raise ValueError(
            f"`encoder_token_ids` has {length} tokens per row, more than the "
            f"encoder's learned positions (source_length="
            f"{embedding.sequence_length}). Received: "
            f"encoder_token_ids.shape={encoder_ids.shape}"
        )


def generate(
    model,
    prompt_ids,
    max_new_tokens,
    sampler="greedy",
    encoder_token_ids=None,
    stop_token_id=None,
    temperature=1.0,
    top_k=10,
    top_p=0.9,
    seed=None,
):
    """Generates tokens with a KV cache, one compiled loop per shape.

    Token id 0 is padding and is never generated. Prompts of different
    lengths are right-padded with 0. Each row continues
    from its own last token: the loop starts at the shortest prompt and
    keeps the prompt tokens of longer rows where they exist (keras-hub's
    scheme), so padding never enters the attention.

    Args:
        model: a model built by `decoder_lm` or `seq2seq`.
        prompt_ids: int array `(B, P)` right-padded with 0, or a list of
            lists of ids. For `seq2seq`, the decoder prompt (usually the
            begin token alone).
        max_new_tokens: int. Tokens to generate per row.
        sampler: `"greedy"`, `"top_k"`, `"top_p"`, `"random"` or a
            `keras_hub.samplers.Sampler`. Defaults to `"greedy"`.
        encoder_token_ids: int array `(B, E)`, the source (seq2seq only).
        stop_token_id: int or `None`. A row is finished once it emits this
            token; the loop ends when every row is. A token id in
            `[1, vocabulary_size)` (0 is padding, never generated).
        temperature, top_k, top_p, seed: sampler settings (see
            `make_sampler`); temperature 0 is greedy.

    Returns:
        Int32 NumPy array `(B, max_new_tokens)` of generated ids, 0 after a
        row's stop token (which is included).

    Example:

    ```python
    import numpy as np
    import keras_attn
    model = keras_attn.models.seq2seq(20, 20, source_length=5,
                                      target_length=8, num_layers=1,
                                      hidden_dim=16, num_heads=2)
    out = keras_attn.models.generate(
        model, [[1]], max_new_tokens=4,
        encoder_token_ids=np.array([[5, 6, 7, 0, 0]]), stop_token_id=2)
    assert out.shape == (1, 4)
    ```
    """
    state = _generator(model)
    decoder = state.decoder
    prompt, lengths = _check_prompt(prompt_ids, decoder.vocabulary_size)
    if isinstance(max_new_tokens, bool) or not isinstance(
        max_new_tokens, (int, np.integer)
    ) or max_new_tokens <= 0:
        raise ValueError(
            "Received an invalid value for argument `max_new_tokens`, "
            f"expected a positive integer. Received: "
            f"max_new_tokens={max_new_tokens!r}"
        )
    batch, prompt_length = prompt.shape
    total = prompt_length + int(max_new_tokens)
    if decoder.max_length is not None and total > decoder.max_length:
        raise ValueError(
            f"The prompt length ({prompt_length}) plus max_new_tokens "
            f"({max_new_tokens}) exceeds the model's learned positions "
            f"(sequence_length={decoder.max_length})."
        )
    encoder_ids = None
    if decoder.is_seq2seq:
        if encoder_token_ids is None:
            raise ValueError(
                "A seq2seq model needs `encoder_token_ids` (the source)."
            )
        encoder_ids, _ = _check_prompt(
            encoder_token_ids,
            _vocabulary_size(decoder.encoder_embedding),
            name="encoder_token_ids",
        )
        if len(encoder_ids) != batch:
            raise ValueError(
                "`encoder_token_ids` and `prompt_ids` must have the same "
                f"batch size. Received: {len(encoder_ids)} and {batch}"
            )
        _check_source_length(encoder_ids, decoder.encoder_embedding)
    elif encoder_token_ids is not None:
        raise ValueError(
            "`encoder_token_ids` is only for seq2seq models; this model is "
            "a decoder-only language model."
        )
    if not isinstance(sampler, keras_hub.samplers.Sampler):
        make_sampler(sampler, temperature, top_k, top_p, seed)  # validates
        sampler = (sampler, temperature, top_k, top_p, seed)
    stop = None
    if stop_token_id is not None:
        checks.token_id(stop_token_id, decoder.vocabulary_size,
                        "stop_token_id")
        if stop_token_id == 0:
            raise ValueError(
                "Received an invalid value for argument `stop_token_id`, "
                "expected a token id other than 0: id 0 is padding and is "
                "never generated, so the rows would never stop. "
                "Received: stop_token_id=0"
            )
        stop = (int(stop_token_id),)
    loop = state.compiled_loop(sampler, stop)

    buffer = np.zeros((batch, total), "int32")
    buffer[:, :prompt_length] = prompt
    mask = buffer != 0  # prompt tokens are kept, the rest is sampled
    index = np.asarray(lengths.min(), "int32")
    out = loop(
        ops.convert_to_tensor(buffer),
        ops.convert_to_tensor(mask),
        ops.convert_to_tensor(index),
        None if encoder_ids is None else ops.convert_to_tensor(encoder_ids),
    )
    out = ops.convert_to_numpy(out)
    generated = np.zeros((batch, int(max_new_tokens)), "int32")
    for row, length in enumerate(lengths):
        tokens = out[row, length:length + int(max_new_tokens)]
        if stop is not None:
            hits = np.flatnonzero(tokens == stop[0])
            if hits.size:
                tokens = np.where(np.arange(len(tokens)) <= hits[0], tokens, 0)
        generated[row] = tokens
    return generated
