"""What the model builders share (private): argument checks, embeddings,
stacks of blocks, and their layer names.

Layer names of every builder (stable, for checkpoints and layout maps;
generation and export find layers by structure instead, see
`keras_attn.models.structure`):
    "{side}_embedding", "{side}_layer_{i}", "{side}_final_layer_norm" (pre-LN
    only), with side "encoder" or "decoder"; "pooling" and
    "classifier_head" (classifier). Language-model logits come from the
    decoder embedding's reverse projection.

Padding (token id 0) reaches the blocks and the pooling as explicit masks
(`padding_mask(token_ids)`), not only as the embedding's Keras mask: after
`Model.quantize`, Keras 3.15's quantized `ReversibleEmbedding` (the
embedding of rotary models) returns no Keras mask, and padded tokens would
enter the attention and the pooling.
"""

import keras
from keras import ops

from keras_attn.layers import TokenAndPositionEmbedding
from keras_attn.layers import TransformerDecoder
from keras_attn.layers import TransformerEncoder
from keras_attn.layers.validation import positive_int
from keras_attn.layers.validation import rate

POSITIONS = ("learned", "sinusoidal", "rotary")
ROTARY_MAX_WAVELENGTH = 10000


def check_args(
    vocabulary_size, sequence_length, num_layers, hidden_dim, num_heads,
    intermediate_dim, dropout, num_key_value_heads, position,
):
    """Validates the arguments every builder shares; returns the
    feed-forward width (`intermediate_dim`, default `4 * hidden_dim`)."""
    positive_int(vocabulary_size, "vocabulary_size")
    positive_int(sequence_length, "sequence_length")
    positive_int(num_layers, "num_layers")
    positive_int(hidden_dim, "hidden_dim")
    positive_int(num_heads, "num_heads")
    positive_int(num_key_value_heads, "num_key_value_heads", allow_none=True)
    rate(dropout, "dropout")
    if hidden_dim % num_heads:
        raise ValueError(
            f"`hidden_dim` must be divisible by `num_heads`. Received: "
            f"hidden_dim={hidden_dim}, num_heads={num_heads}"
        )
    if position not in POSITIONS:
        raise ValueError(
            "Received an invalid value for argument `position`, expected "
            f"one of {POSITIONS}. Received: position={position!r}"
        )
    if intermediate_dim is None:
        return 4 * hidden_dim
    return positive_int(intermediate_dim, "intermediate_dim")


def embedding(side, vocabulary_size, sequence_length, hidden_dim, position,
              tie_weights=True):
    """Token embedding (+ positions unless rotary), masking token id 0."""
    initializer = keras.initializers.RandomNormal(stddev=0.02)
    if position == "rotary":  # positions enter in the attention instead
        return keras.layers.ReversibleEmbedding(
            vocabulary_size, hidden_dim, tie_weights=tie_weights,
            embeddings_initializer=initializer, mask_zero=True,
            name=f"{side}_embedding",
        )
    return TokenAndPositionEmbedding(
        vocabulary_size, sequence_length, hidden_dim,
        tie_weights=tie_weights, embeddings_initializer=initializer,
        mask_zero=True, position=position, name=f"{side}_embedding",
    )


def block_kwargs(num_heads, intermediate_dim, dropout, normalize_first,
                 num_key_value_heads, position, layer_norm_epsilon,
                 sliding_window=None):
    return dict(
        intermediate_dim=intermediate_dim,
        num_heads=num_heads,
        dropout=dropout,
        activation="gelu",
        layer_norm_epsilon=layer_norm_epsilon,
        normalize_first=normalize_first,
        num_key_value_heads=num_key_value_heads,
        rotary_max_wavelength=(
            ROTARY_MAX_WAVELENGTH if position == "rotary" else None
        ),
        sliding_window=sliding_window,
    )


def padding_mask(token_ids):
    """`token_ids != 0`, `(B, L)`: True at real tokens."""
    return ops.not_equal(token_ids, 0)


def encoder_stack(x, padding, num_layers, block):
    """Embedded tokens -> `num_layers` encoder blocks (-> final norm).
    `padding` is `padding_mask(token_ids)`; `block` the dict from
    `block_kwargs`."""
    x = keras.layers.Dropout(block["dropout"],
                             name="encoder_embedding_dropout")(x)
    for i in range(num_layers):
        x = TransformerEncoder(name=f"encoder_layer_{i}", **block)(
            x, padding_mask=padding)
    return _final_norm(x, "encoder", block)


def decoder_stack(x, padding, encoder_outputs, encoder_padding, num_layers,
                  block):
    """Embedded tokens -> causal decoder blocks (with cross-attention to
    `encoder_outputs` if given) (-> final norm)."""
    x = keras.layers.Dropout(block["dropout"],
                             name="decoder_embedding_dropout")(x)
    for i in range(num_layers):
        layer = TransformerDecoder(name=f"decoder_layer_{i}", **block)
        if encoder_outputs is None:
            x = layer(x, decoder_padding_mask=padding)
        else:
            x = layer(x, encoder_outputs, decoder_padding_mask=padding,
                      encoder_padding_mask=encoder_padding)
    return _final_norm(x, "decoder", block)


def _final_norm(x, side, block):
    if not block["normalize_first"]:
        return x
    # Pre-LN blocks leave the residual stream unnormalized.
    return keras.layers.LayerNormalization(
        epsilon=block["layer_norm_epsilon"], name=f"{side}_final_layer_norm"
    )(x)


def lm_logits(x, embedding_layer):
    """Hidden states -> float32 token logits through the embedding's reverse
    projection (the token matrix itself when tied, its own matrix if not)."""
    logits = embedding_layer(x, reverse=True)
    # float32 logits keep the softmax cross-entropy exact under mixed
    # precision.
    return keras.layers.Activation("linear", dtype="float32",
                                   name="logits")(logits)
