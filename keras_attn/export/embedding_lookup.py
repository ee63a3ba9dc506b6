"""A decoder forward pass whose token table is TFLite's EMBEDDING_LOOKUP.

Shape legend: B batch (1 in the exported files), T tokens, D width,
M cache length, K key/value heads, H head size, V vocabulary.

Why. A `decoder_lm` with tied weights reads one table (V, D) twice: the
token lookup (GATHER in TFLite) and the output projection (a
FULLY_CONNECTED whose weights are that table). ai-edge-quantizer
quantizes FULLY_CONNECTED weights, but it has no weight-only or dynamic
config for GATHER: the FC then gets an int4 copy of the table and every
signature that gathers keeps a float32 one (a LiteRT-LM file with four
signatures grew to 171% of float32). TFLite's converter turns a
`tf.function` declared `experimental_implements="embedding_matmul"` with
arguments `(table, ids)` into EMBEDDING_LOOKUP(ids, table); that op is in
the quantizer's dynamic policy, so giving it the FC's config quantizes the
shared table once for both (ai-edge-quantizer's own LiteRT-LM recipes
quantize embedders through EMBEDDING_LOOKUP too). The dynamic int8
converter benefits as well: one int8 table instead of two.

`CachedDecoder.call_with_cache` embeds with the model's layer (GATHER);
`forward` here runs the same decoder layers after the lookup. It is the
decoder-only path of `call_with_cache` with a different first op: the
parity tests of both exporters compare it with
`keras_attn.models.generate`.
"""

import functools

from keras import ops

from keras_attn.layers import TokenAndPositionEmbedding


@functools.cache
def _embedding_lookup():
    import tensorflow as tf

    @tf.function(experimental_implements="embedding_matmul",
                 autograph=False)
    def embedding_lookup(table, ids):
        # The converter replaces this body by EMBEDDING_LOOKUP(ids, table).
        return tf.gather(table, ids)  # (T, D)

    return embedding_lookup


def token_embeddings(decoder, token_ids, index):
    """Embedded tokens `(B, T, D)`, positions from `index` added (learned
    or sinusoidal; rotary positions enter in the attention)."""
    embedding = decoder.embedding
    with_positions = isinstance(embedding, TokenAndPositionEmbedding)
    table = (embedding.token_embedding if with_positions
             else embedding).embeddings
    batch, length = token_ids.shape
    x = _embedding_lookup()(table, ops.reshape(token_ids, (-1,)))  # (B*T, D)
    x = ops.reshape(x, (batch, length, x.shape[-1]))  # (B, T, D)
    if with_positions:
        x = x + embedding.position_embedding(x, start_index=index)
    return x


def forward(decoder, token_ids, caches, index):
    """The decoder on `T` tokens at positions `index ..`, with a KV cache.

    Args:
        decoder: `keras_attn.models.generation.CachedDecoder` of a
            `decoder_lm`.
        token_ids: int32 `(B, T)`; id 0 is padding (its query row sees
            nothing).
        caches: list of `Y` `keras_attn.layers.KVCache`s, keys and values
            `(B, K, M, H)`; the new keys and values are written at `index`.
        index: int32 scalar.

    Returns:
        `(hidden (B, T, D) after the final norm, updated caches)`.
    """
    x = token_embeddings(decoder, token_ids, index)
    padding = ops.not_equal(token_ids, 0)
    updated = []
    for layer, cache in zip(decoder.layers, caches):
        x, cache = layer(
            x, decoder_padding_mask=padding, self_attention_cache=cache,
            self_attention_cache_update_index=index, training=False)
        updated.append(cache)
    if decoder.final_norm is not None:
        x = decoder.final_norm(x)
    return x, updated


def check_int4_block_size(decoder, block_size):
    """int4 blocks run along each weight's input axis: the width and the
    feedforward width must be multiples of the block size."""
    widths = {"the model width": decoder.head_dim
              * decoder.layers[0].num_heads}
    for layer in decoder.layers:
        intermediate = getattr(layer, "intermediate_dim", None)
        if intermediate:
            widths["the feedforward width"] = intermediate
    for what, width in widths.items():
        if width % block_size:
            raise ValueError(
                "Received an invalid value for argument `int4_block_size`, "
                f"expected a divisor of {what} ({width}): int4 blocks run "
                "along each weight's input axis. Received: "
                f"int4_block_size={block_size}"
            )


class LookupDecoder:
    """A `CachedDecoder` of a `decoder_lm` whose `call_with_cache` embeds
    through EMBEDDING_LOOKUP (`forward`); every other attribute is the
    wrapped decoder's."""

    def __init__(self, decoder):
        if decoder.is_seq2seq:
            raise ValueError(
                "EMBEDDING_LOOKUP decoding is implemented for decoder_lm "
                "models; this model is a seq2seq."
            )
        self._decoder = decoder

    def __getattr__(self, name):
        return getattr(self._decoder, name)

    def call_with_cache(self, token_ids, cache, index, encoder=None):
        hidden, caches = forward(self._decoder, token_ids, cache, index)
        return self._decoder.logits(hidden), hidden, caches
