"""What a functional model's layers do, found by how they are connected.

Generation and export need a model's parts: the token embedding, the
`TransformerDecoder` blocks in order, the final norm, and for seq2seq the
encoder. They are found by structure, never by layer name, so a model
built by `keras_attn.models.decoder_lm` or `seq2seq` generates whatever
its layers are called, and so does a model of one's own laid out the same
way: the model's graph is replayed (`keras.models.clone_model` with the
same layers) and each path is read back from the output:

    logits <- [Activation "linear"] <- embedding(reverse=True)
           <- [LayerNormalization] <- TransformerDecoder ... (in order)
           <- [Dropout] <- embedding <- the decoder's token input

and, for seq2seq, the decoders' `encoder_sequence`:

    memory <- [LayerNormalization] <- TransformerEncoder ... (in order)
           <- [Dropout] <- embedding <- the encoder's token input

The embedding is one `keras_attn.layers.TokenAndPositionEmbedding`
(positions at an offset) or `keras.layers.ReversibleEmbedding` (rotary
positions, in the attention), used for both the tokens and the logits. A
model with `TransformerDecoder` layers laid out otherwise raises an
`UnsupportedDecoderError` that says what does not fit: cached generation
would not compute what the model computes.
"""

import typing

import keras

from keras_attn.layers import TokenAndPositionEmbedding
from keras_attn.layers import TransformerDecoder
from keras_attn.layers import TransformerEncoder

# Keyword arguments of the blocks that cached generation reproduces: id 0
# is padding, and the self-attention is causal.
_DECODER_KWARGS = ("encoder_sequence", "decoder_padding_mask",
                   "encoder_padding_mask", "training")
_ENCODER_KWARGS = ("padding_mask", "training")


class UnsupportedDecoderError(ValueError):
    """A model with `TransformerDecoder` layers that cached generation
    cannot run; the message says what does not fit."""


class DecoderStructure(typing.NamedTuple):
    """The parts of a generating model, found by `decoder_structure`.

    Attributes:
        token_input: the model input (a `KerasTensor` of `model.input`)
            holding the decoder's token ids `(B, L)`.
        embedding: the decoder's token embedding, also its output
            projection (`embedding(hidden, reverse=True)`).
        layers: the `TransformerDecoder` blocks, in the order they run.
        final_norm: the `LayerNormalization` after the last block, or
            `None`.
        encoder_token_input, encoder_embedding, encoder_final_norm: the
            same for the encoder of a seq2seq model, else `None`.
        encoder_layers: the `TransformerEncoder` blocks (empty without an
            encoder).
    """

    token_input: typing.Any
    embedding: typing.Any
    layers: list
    final_norm: typing.Any = None
    encoder_token_input: typing.Any = None
    encoder_embedding: typing.Any = None
    encoder_layers: list = []
    encoder_final_norm: typing.Any = None


def has_decoder_layers(model):
    """Whether `model` has `TransformerDecoder` layers (at its top level):
    a model that generates."""
    return any(isinstance(layer, TransformerDecoder)
               for layer in getattr(model, "layers", ()))


def table_rows(layer):
    """The token count of an embedding layer (`vocabulary_size` of
    `TokenAndPositionEmbedding`, `input_dim` of `keras.layers.Embedding`
    and its subclasses), or `None` for another layer."""
    rows = getattr(layer, "vocabulary_size", None)
    if rows is None:
        rows = getattr(layer, "input_dim", None)
    return None if rows is None else int(rows)


class _Call(typing.NamedTuple):
    """One call of an operation in a model's graph."""

    operation: typing.Any
    args: tuple
    kwargs: dict


def _replay(model):
    """`(inputs, outputs, producers)` of `model`'s graph, replayed on new
    inputs with the same layers: `producers` maps `id` of each tensor to
    the `_Call` that made it."""
    producers = {}

    def record(operation, *args, **kwargs):
        outputs = operation(*args, **kwargs)
        call = _Call(operation, args, kwargs)
        for tensor in keras.tree.flatten(outputs):
            producers[id(tensor)] = call
        return outputs

    try:
        replayed = keras.models.clone_model(
            model, clone_function=lambda layer: layer, call_function=record
        )
    except ValueError as e:  # a Sequential or subclassed model
        raise UnsupportedDecoderError(
            "Cached generation needs a functional keras.Model (its graph "
            "of layers is read to find the embedding and the decoder "
            f"blocks). Received: model={model.name!r} of type "
            f"{type(model).__name__}"
        ) from e
    return keras.tree.flatten(replayed.input), replayed.outputs, producers


def _main_input(call):
    """The tensor a call transforms: its first argument."""
    return call.args[0] if call.args else None


def _path(tensor, inputs, producers):
    """The calls from a model input to `tensor`, following each call's
    first argument; `(input index, calls)`."""
    calls = []
    index = {id(t): i for i, t in enumerate(inputs)}
    while id(tensor) not in index:
        call = producers.get(id(tensor))
        if call is None or _main_input(call) is None:
            return None, calls[::-1]
        calls.append(call)
        tensor = _main_input(call)
    return index[id(tensor)], calls[::-1]


def _describe(call):
    layer = call.operation
    return f"{type(layer).__name__} {layer.name!r}"


def _unsupported(model, why):
    return UnsupportedDecoderError(
        "Received an invalid value for argument `model`: cached generation "
        f"cannot run model={model.name!r}: {why}. It runs "
        "models laid out as keras_attn.models.decoder_lm and seq2seq build "
        "them (see keras_attn.models.structure), whatever their layer names."
    )


def _stack(model, calls, block_type, allowed_kwargs):
    """Reads `embedding, [Dropout], block, ..., [LayerNormalization]` off
    the start of `calls`; returns `(embedding, blocks, norm, rest)`."""
    embedding = calls[0].operation
    if not isinstance(embedding, (TokenAndPositionEmbedding,
                                  keras.layers.ReversibleEmbedding)) or (
            set(calls[0].kwargs) - {"training"}):
        raise _unsupported(
            model, f"the token input is read by {_describe(calls[0])}, not "
            "a keras_attn TokenAndPositionEmbedding or a "
            "keras.layers.ReversibleEmbedding called on the token ids")
    rest = calls[1:]
    while rest and isinstance(rest[0].operation, keras.layers.Dropout):
        rest = rest[1:]
    blocks = []
    while rest and isinstance(rest[0].operation, block_type):
        extra = sorted(set(rest[0].kwargs) - set(allowed_kwargs))
        if extra:
            raise _unsupported(
                model, f"{_describe(rest[0])} is called with {extra}, which "
                "cached generation does not pass")
        blocks.append(rest[0].operation)
        rest = rest[1:]
    if not blocks:
        what = _describe(rest[0]) if rest else "nothing"
        raise _unsupported(
            model, f"the embedding {embedding.name!r} feeds {what}, not a "
            f"{block_type.__name__}")
    norm = None
    if rest and isinstance(rest[0].operation,
                           keras.layers.LayerNormalization):
        norm = rest[0].operation
        rest = rest[1:]
    return embedding, blocks, norm, rest


def _encoder_sequence(call):
    if len(call.args) > 1:
        return call.args[1]
    return call.kwargs.get("encoder_sequence")


def decoder_structure(model):
    """The parts of a `decoder_lm`- or `seq2seq`-like model, by structure.

    Args:
        model: a functional `keras.Model` (see the module docstring).

    Returns:
        A `DecoderStructure`.

    Raises:
        UnsupportedDecoderError: (a ValueError) for a model without
            `TransformerDecoder` layers, or one laid out otherwise; the
            message says what does not fit.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            "Received an invalid value for argument `model`, expected a "
            "keras.Model built like keras_attn.models.decoder_lm or seq2seq."
            f" Received: model={type(model).__name__}"
        )
    if not has_decoder_layers(model):
        raise _unsupported(model, "it has no TransformerDecoder layers")
    inputs, outputs, producers = _replay(model)
    if len(outputs) != 1:
        raise _unsupported(model, f"it has {len(outputs)} outputs, not the "
                                  "logits alone")
    index, calls = _path(outputs[0], inputs, producers)
    if index is None or not calls:
        raise _unsupported(model, "its output is not computed from a token "
                                  "input through a chain of layers")
    embedding, layers, final_norm, rest = _stack(
        model, calls, TransformerDecoder, _DECODER_KWARGS)
    if rest and rest[0].operation is embedding and rest[0].kwargs.get(
            "reverse"):
        rest = rest[1:]
    else:
        after = _describe(rest[0]) if rest else "nothing"
        raise _unsupported(
            model, f"after the last TransformerDecoder comes {after}; the "
            f"logits must come from the embedding {embedding.name!r} "
            "called with reverse=True")
    if rest and not (
        len(rest) == 1
        and isinstance(rest[0].operation, keras.layers.Activation)
        and rest[0].operation.activation is keras.activations.linear
    ):
        raise _unsupported(
            model, f"the logits go through {_describe(rest[0])}, which "
            "cached generation does not apply")
    all_decoders = [layer for layer in model.layers
                    if isinstance(layer, TransformerDecoder)]
    if len(all_decoders) != len(layers) or len(set(map(id, layers))) != len(
            layers):
        raise _unsupported(
            model, f"of its {len(all_decoders)} TransformerDecoder layers, "
            f"{len(layers)} calls form the chain from the tokens to the "
            "logits; each must run once, one after the other")
    flat_inputs = keras.tree.flatten(model.input)
    structure = DecoderStructure(flat_inputs[index], embedding, layers,
                                 final_norm)
    decoder_calls = [call for call in calls
                     if isinstance(call.operation, TransformerDecoder)]
    memories = {id(_encoder_sequence(call)) for call in decoder_calls}
    memory = _encoder_sequence(decoder_calls[0])
    if memory is None:
        if memories != {id(None)}:
            raise _unsupported(model, "only some TransformerDecoder layers "
                                      "have an encoder_sequence")
        return structure
    if len(memories) != 1:
        raise _unsupported(model, "its TransformerDecoder layers attend to "
                                  "different encoder outputs")
    encoder_index, encoder_calls = _path(memory, inputs, producers)
    if encoder_index is None or not encoder_calls:
        raise _unsupported(model, "the decoders' encoder_sequence is not "
                                  "computed from a token input")
    encoder_embedding, encoder_layers, encoder_final_norm, rest = _stack(
        model, encoder_calls, TransformerEncoder, _ENCODER_KWARGS)
    if rest:
        raise _unsupported(
            model, f"the encoder output goes through {_describe(rest[0])} "
            "before the decoders")
    return structure._replace(
        encoder_token_input=flat_inputs[encoder_index],
        encoder_embedding=encoder_embedding,
        encoder_layers=encoder_layers,
        encoder_final_norm=encoder_final_norm,
    )
