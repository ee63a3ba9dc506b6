"""Fast cached generation for models built by `decoder_lm` and `seq2seq`.

Shape legend: B batch, P prompt length, M buffer length (P + new tokens),
E source length, Y decoder layers, K key/value heads, H head size,
D hidden width, V vocabulary.

The decoder runs with a KV cache, one `keras_attn.layers.KVCache` per
decoder layer (keys and values `(B, K, M, H)`): the prompt is processed
once (prefill), then each new token costs one decoder step. The whole loop
(prefill, steps and sampling) is one XLA program, compiled once per input
shape and reused by later calls; the per-layer caches pass through
keras-hub's sampler loop as one nested structure.
"""

import weakref

import keras
import keras_hub
import numpy as np
from keras import ops

from keras_attn.layers import KVCache
from keras_attn.layers import TokenAndPositionEmbedding
from keras_attn.models.structure import decoder_structure
from keras_attn.models.structure import table_rows
from keras_attn_runtime import checks
from keras_attn_runtime import samplers

SAMPLERS = ("greedy", "top_k", "top_p", "random")


class CachedDecoder:
    """Runs the decoder of a `decoder_lm` or `seq2seq` model with a KV cache.

    The building block of `generate`, and of on-device generation (the
    TFLite exporter traces `encode`, `call_with_cache` for the prompt, and
    `call_with_cache` for one token). The layers are found by structure
    (`keras_attn.models.structure.decoder_structure`), not by name.

    The cache is a list of `Y` `keras_attn.layers.KVCache`, one per decoder
    layer, keys and values `(B, K, M, H)` (heads first): no stacking of the
    layers' caches, which on TFLite would copy them.

    Args:
        model: a model built by `keras_attn.models.decoder_lm` or
            `keras_attn.models.seq2seq`, or laid out as they lay it out.

    Raises:
        TypeError: if `model` is not a `keras.Model`.
        UnsupportedDecoderError: (a ValueError) for a model without
            `TransformerDecoder` layers or laid out otherwise.
    """

    def __init__(self, model):
        structure = decoder_structure(model)
        self.model = model
        self.token_input = structure.token_input
        self.embedding = structure.embedding
        self.layers = structure.layers
        self.final_norm = structure.final_norm
        self.encoder_layers = structure.encoder_layers
        self.is_seq2seq = bool(self.encoder_layers)
        if self.is_seq2seq:
            self.encoder_token_input = structure.encoder_token_input
            self.encoder_embedding = structure.encoder_embedding
            self.encoder_final_norm = structure.encoder_final_norm
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
        self.vocabulary_size = table_rows(self.embedding)
        self.head_dim = hidden_dim // first.num_heads
        self.compute_dtype = first.compute_dtype

    def init_cache(self, batch_size, max_length):
        """`Y` empty `KVCache`s, keys and values `(B, K, M, H)`."""
        return [
            KVCache.zeros(batch_size, self.num_kv_heads, max_length,
                          self.head_dim, self.compute_dtype)
            for _ in self.layers
        ]

    def encode(self, encoder_token_ids):
        """Runs the encoder once (seq2seq only).

        Returns:
            A tuple `(memory (B, E, D), cross caches, encoder_padding_mask
            (B, E))`, the cross caches a list of `Y` `KVCache`s `(B, K, E,
            H)`; passed as `encoder` to `call_with_cache`.
        """
        padding = ops.not_equal(encoder_token_ids, 0)  # (B, E)
        x = self.encoder_embedding(encoder_token_ids)
        for layer in self.encoder_layers:
            x = layer(x, padding_mask=padding, training=False)
        if self.encoder_final_norm is not None:
            x = self.encoder_final_norm(x)
        cross = [layer.compute_cross_attention_cache(x)
                 for layer in self.layers]
        return x, cross, padding

    def _check_caches(self, caches, name):
        if not (isinstance(caches, (list, tuple))
                and not isinstance(caches, KVCache)
                and len(caches) == len(self.layers)
                and all(isinstance(c, KVCache) for c in caches)):
            raise TypeError(
                f"Received an invalid value for argument `{name}`, expected "
                f"a list of {len(self.layers)} keras_attn.layers.KVCache, "
                "one per decoder layer (see `init_cache`). Received: "
                f"{name} of type {type(caches).__name__}"
            )

    def call_with_cache(self, token_ids, cache, index, encoder=None):
        """Decoder forward pass for `T` tokens at positions `index ..`.

        Args:
            token_ids: int tensor `(B, T)`.
            cache: a list of `Y` `KVCache`s `(B, K, M, H)`, one per layer
                (from `init_cache`); the new keys and values are written
                at `index`.
            index: int or int32 scalar tensor.
            encoder: the tuple from `encode` (seq2seq), else `None`.

        Returns:
            `(logits (B, T, V) float32, hidden (B, T, D), updated cache)`,
            the cache a new list of `Y` `KVCache`s.
        """
        self._check_caches(cache, "cache")
        if isinstance(self.embedding, TokenAndPositionEmbedding):
            x = self.embedding(token_ids, start_index=index)
        else:
            x = self.embedding(token_ids)
        padding = ops.not_equal(token_ids, 0)
        if encoder is not None:
            memory, cross_caches, encoder_padding = encoder
            self._check_caches(cross_caches, "encoder[1]")
        caches = []
        for i, layer in enumerate(self.layers):
            if encoder is None:
                x, layer_cache = layer(
                    x,
                    decoder_padding_mask=padding,
                    self_attention_cache=cache[i],
                    self_attention_cache_update_index=index,
                    training=False,
                )
            else:
                x, layer_cache, _ = layer(
                    x,
                    memory,
                    decoder_padding_mask=padding,
                    encoder_padding_mask=encoder_padding,
                    self_attention_cache=cache[i],
                    self_attention_cache_update_index=index,
                    cross_attention_cache=cross_caches[i],
                    training=False,
                )
            caches.append(layer_cache)
        if self.final_norm is not None:
            x = self.final_norm(x)
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


def process_logits(logits, tokens, index, repetition_penalty=1.0,
                   no_repeat_ngram_size=0):
    """The repetition penalty and the no-repeat n-gram ban, in the loop.

    The same rules as `keras_attn_runtime.samplers.process_logits`, so a
    model generates alike in Keras and on the device: each token already
    in the sequence has its logit divided by `repetition_penalty` if
    positive, multiplied if not (CTRL, Keskar et al. 2019); a token that
    would complete an n-gram already in the sequence is banned, unless
    that bans every token.

    Args:
        logits: float tensor `(B, V)`, padding already masked.
        tokens: int tensor `(B, M)`; the sequence so far is
            `tokens[:, :index]` (later positions are ignored).
        index: int scalar tensor, the position being predicted.
        repetition_penalty: Python float > 0; 1 changes nothing.
        no_repeat_ngram_size: Python int >= 0; 0 turns the ban off.

    Returns:
        The processed logits `(B, V)`.
    """
    if repetition_penalty == 1.0 and not no_repeat_ngram_size:
        return logits
    batch, length = ops.shape(tokens)[0], ops.shape(tokens)[1]
    vocabulary = ops.shape(logits)[-1]
    rows = ops.broadcast_to(ops.arange(batch)[:, None], ops.shape(tokens))

    def counts(token_ids, row_ids, keep):
        # (B, V) count of the kept (row, token) pairs.
        keep = ops.broadcast_to(keep, ops.shape(token_ids))
        indices = ops.stack([ops.reshape(row_ids, [-1]),
                             ops.reshape(token_ids, [-1])], axis=1)
        return ops.scatter(indices, ops.reshape(ops.cast(keep, "float32"),
                                                [-1]), (batch, vocabulary))

    before = ops.arange(length)[None, :] < index  # (1, M)
    if repetition_penalty != 1.0:
        seen = counts(tokens, rows, before & ops.not_equal(tokens, 0)) > 0
        penalized = ops.where(logits > 0, logits / repetition_penalty,
                              logits * repetition_penalty)
        logits = ops.where(seen, penalized, logits)
    n = no_repeat_ngram_size
    if n:
        # Windows start at w = 0 .. M-n; window w is the n-gram
        # tokens[w:w+n], seen if its last token is before `index`, and it
        # bans its last token if its first n-1 match the last n-1 tokens.
        windows = length - n + 1
        start = ops.arange(windows)[None, :]  # (1, W)
        match = (start + n - 1 < index) & (index >= n - 1)
        for j in range(n - 1):
            position = ops.maximum(index - n + 1 + j, 0)
            last = ops.take(tokens, position, axis=1)  # (B,)
            match = match & ops.equal(tokens[:, j:j + windows],
                                      last[:, None])
        banned = counts(tokens[:, n - 1:], rows[:, n - 1:], match) > 0
        banned = banned & ops.not_equal(ops.arange(vocabulary), 0)[None]
        allowed = ops.logical_not(banned) & (logits > -1e8)
        lift = ops.logical_not(ops.any(allowed, axis=-1, keepdims=True))
        logits = ops.where(banned & ops.logical_not(lift), -1e9, logits)
    return logits


class _Generator:
    """Per-model state: the decoder view and compiled loops by sampler."""

    def __init__(self, model):
        self.decoder = CachedDecoder(model)
        self.compiled = {}
        self.traces = 0

    def _loop(self, sampler, stop_token_ids, processing):
        decoder = self.decoder
        repetition_penalty, no_repeat_ngram_size = processing

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
                logits = process_logits(logits, prompt, index,
                                        repetition_penalty,
                                        no_repeat_ngram_size)
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

    def compiled_loop(self, sampler_settings, stop_token_ids,
                      processing=(1.0, 0)):
        """The compiled loop for these settings, made on first use.

        `sampler_settings` is the tuple of `make_sampler` arguments, or a
        sampler instance; equal settings share one sampler (whose seed
        advances from call to call) and one compiled loop. `processing` is
        `(repetition_penalty, no_repeat_ngram_size)`."""
        if isinstance(sampler_settings, keras_hub.samplers.Sampler):
            key = (id(sampler_settings), stop_token_ids, processing)
        else:
            key = (sampler_settings, stop_token_ids, processing)
        if key in self.compiled:
            return self.compiled[key][1]
        if isinstance(sampler_settings, keras_hub.samplers.Sampler):
            sampler = sampler_settings
        else:
            sampler = make_sampler(*sampler_settings)
        loop = self._loop(sampler, stop_token_ids, processing)
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
    if not np.issubdtype(prompt.dtype, np.integer):
        raise TypeError(
            f"`{name}` must hold integer token ids. Received: "
            f"{name}.dtype={prompt.dtype}"
        )
    if prompt.min() < 0 or prompt.max() >= vocabulary_size:
        raise ValueError(
            f"`{name}` holds ids outside [0, {vocabulary_size}). Received: "
            f"min={prompt.min()}, max={prompt.max()}"
        )
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
    repetition_penalty=1.0,
    no_repeat_ngram_size=0,
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
            token; the loop ends when every row is.
        temperature, top_k, top_p, seed: sampler settings (see
            `make_sampler`); temperature 0 is greedy.
        repetition_penalty: float > 0. Tokens already in the row (prompt
            included) have their logits divided by it if positive,
            multiplied if not; 1 (the default) changes nothing.
        no_repeat_ngram_size: int >= 0. With n > 0, no n-gram appears
            twice in a row's prompt plus output (unless that would ban
            every token); 0 (the default) turns it off. Both follow
            `keras_attn_runtime.samplers.process_logits`, so the device
            runtime generates alike.

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
            table_rows(decoder.encoder_embedding),
            name="encoder_token_ids",
        )
        if len(encoder_ids) != batch:
            raise ValueError(
                "`encoder_token_ids` and `prompt_ids` must have the same "
                f"batch size. Received: {len(encoder_ids)} and {batch}"
            )
    elif encoder_token_ids is not None:
        raise ValueError(
            "`encoder_token_ids` is only for seq2seq models; this model is "
            "a decoder-only language model."
        )
    if not isinstance(sampler, keras_hub.samplers.Sampler):
        make_sampler(sampler, temperature, top_k, top_p, seed)  # validates
        sampler = (sampler, temperature, top_k, top_p, seed)
    processing = (
        samplers.check_repetition_penalty(repetition_penalty),
        checks.non_negative_int(no_repeat_ngram_size,
                                "no_repeat_ngram_size"),
    )
    stop = None if stop_token_id is None else (int(stop_token_id),)
    loop = state.compiled_loop(sampler, stop, processing)

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
