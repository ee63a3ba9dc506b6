"""What a .tflite written by keras_attn says about itself.

Every exporter builds a description of its file (format `keras_attn/1`,
the contract in `keras_attn.export.metadata`): the kind of file
(`"classifier"`: one `serving_default` signature; `"generator"`:
`prefill`/`decode`), the model type, the lengths, the quantization, and
what the caller gives: the vocabularies with their special tokens, the
class names and the generation defaults. It is embedded into the
flatbuffer's metadata, so the command line and the device runtime need
only the model path.

What is given is checked against the Keras model before the conversion
starts: a vocabulary must have as many tokens as the embedding that reads
the token input has rows (the decoder's and the encoder's separately for
seq2seq), and the class names as many entries as the classifier has
outputs. The embedding is found by structure: the layer the token input
feeds, whose rows are its `vocabulary_size` (`TokenAndPositionEmbedding`)
or `input_dim` (`keras.layers.Embedding` and its subclasses).
"""

import keras

from keras_attn.models.structure import UnsupportedDecoderError
from keras_attn.models.structure import decoder_structure
from keras_attn.models.structure import has_decoder_layers
from keras_attn.models.structure import table_rows
from keras_attn.version import __version__
from keras_attn_runtime import description as description_lib
from keras_attn_runtime import samplers
from keras_attn_runtime import vocabulary as vocabulary_lib


def token_inputs(model):
    """`{argument: input tensor}`: the token input each vocabulary argument
    describes (`vocabulary`: the (decoder) tokens; `source_vocabulary`:
    a seq2seq model's encoder tokens), found by structure
    (`keras_attn.models.structure`) for a model that generates, else the
    model's only input."""
    if has_decoder_layers(model):
        try:
            structure = decoder_structure(model)
        except UnsupportedDecoderError:
            structure = None
        if structure is not None:
            found = {"vocabulary": structure.token_input}
            if structure.encoder_token_input is not None:
                found["source_vocabulary"] = structure.encoder_token_input
            return found
    flat = keras.tree.flatten(model.input)
    return {"vocabulary": flat[0]} if len(flat) == 1 else {}


def embedding_rows(model, tensor):
    """Rows of the embedding that `tensor` (a model input) feeds, or `None`
    when no layer with a token table reads it directly."""
    for layer in model.layers:
        try:
            consumed = layer.input
        except (AttributeError, ValueError):  # a layer that was never called
            continue
        if consumed is tensor and table_rows(layer) is not None:
            return table_rows(layer)
    return None


def vocabulary_sizes(model):
    """`{input name: embedding rows}` for the token inputs whose embedding
    is found (used to range-check sample ids)."""
    sizes = {}
    for tensor in token_inputs(model).values():
        rows = embedding_rows(model, tensor)
        if rows is not None:
            sizes[tensor.name] = rows
    return sizes


def _check_tokens(value, name):
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
        raise TypeError(
            f"Received an invalid value for argument `{name}`, expected a "
            "list of str (e.g. keras_attn.data.load_vocabulary(path)). "
            f"Received: {name} of type {type(value).__name__}"
        )
    value = list(value)
    bad = [token for token in value if not isinstance(token, str)]
    if bad or not value:
        raise TypeError(
            f"Received an invalid value for argument `{name}`, expected a "
            f"non-empty list of str. Received: {name} holding {bad[:3]!r}"
        )
    return value


def _check_size(value, name, expected, what):
    if expected is not None and len(value) != expected:
        raise ValueError(
            f"Received an invalid value for argument `{name}`, expected "
            f"{expected} entries ({what}). Received: {name} with "
            f"{len(value)} entries"
        )


def check_vocabularies(model, vocabulary=None, source_vocabulary=None):
    """Returns the vocabularies as lists, checked against `model`.

    Raises:
        TypeError: if one is not a list of str.
        ValueError: if its size is not the embedding's row count, or a
            source vocabulary is given for a model without an encoder.
    """
    inputs = token_inputs(model)
    checked = {}
    for name, value in (("vocabulary", vocabulary),
                        ("source_vocabulary", source_vocabulary)):
        if value is None:
            continue
        value = _check_tokens(value, name)
        if name not in inputs:
            raise ValueError(
                f"`{name}` describes the encoder input of a seq2seq model; "
                f"model={model.name!r} has no `encoder_token_ids` input. "
                f"Received: {name} with {len(value)} entries"
            )
        rows = embedding_rows(model, inputs[name])
        _check_size(value, name, rows,
                    f"the rows of the embedding that reads "
                    f"`{inputs[name].name}`")
        checked[name] = value
    return checked.get("vocabulary"), checked.get("source_vocabulary")


def check_class_names(model, class_names):
    """Returns `class_names` as a list, as many as `model` has outputs."""
    if class_names is None:
        return None
    class_names = _check_tokens(class_names, "class_names")
    shape = tuple(model.output.shape) if len(model.outputs) == 1 else ()
    if len(shape) != 2:
        raise ValueError(
            "`class_names` name the outputs of a classifier, whose output "
            f"has shape (batch, classes). Received: class_names for "
            f"model={model.name!r} with outputs "
            f"{[tuple(t.shape) for t in model.outputs]}"
        )
    _check_size(class_names, "class_names", shape[1],
                "the width of the model's output")
    return class_names


def check_generation_config(config, vocabulary=None):
    """Returns a copy of the generation defaults, checked by
    `keras_attn_runtime.samplers.check_generation_config` (known keys,
    valid sampler settings), with start/stop tokens from `vocabulary` when
    it is given."""
    if config is None:
        return None
    config = samplers.check_generation_config(config)
    for key in ("start_token", "stop_token"):
        token = config.get(key)
        if token is not None and vocabulary is not None and (
            token not in vocabulary
        ):
            raise ValueError(
                f"`generation_config[{key!r}]` must be a token of "
                f"`vocabulary`. Received: {key}={token!r}"
            )
    return config


def model_type(model):
    """By structure: `"seq2seq"` or `"decoder_lm"` for a model with
    `TransformerDecoder` layers (with or without an encoder input),
    `"encoder_classifier"` for a model from one input to
    `(batch, classes)`, else `"other"`."""
    if has_decoder_layers(model):
        if "source_vocabulary" in token_inputs(model):
            return "seq2seq"
        return "decoder_lm"
    if len(keras.tree.flatten(model.input)) == 1 and len(
            model.outputs) == 1 and len(model.output.shape) == 2:
        return "encoder_classifier"
    return "other"


def describe(kind, model_type, quantization, vocabulary=None,
             source_vocabulary=None, lowercase=True, class_names=None,
             generation_config=None, **lengths):
    """The description dict of an exported file (format `keras_attn/1`,
    defined in `keras_attn_runtime.description`), checked there.

    Args:
        kind: `"classifier"` or `"generator"`.
        model_type: from `model_type`.
        quantization: the quantization of the file.
        vocabulary, source_vocabulary, class_names, generation_config:
            already checked against the model (`check_vocabularies`,
            `check_class_names`, `check_generation_config`), or `None`.
        lowercase: bool. The tokenizer's normalization (kept with a
            vocabulary).
        **lengths: `sequence_length`, `max_length`, `source_length`,
            `kv_cache`: those that apply.

    Returns:
        dict.
    """
    if not isinstance(lowercase, bool):
        raise TypeError(
            "Received an invalid value for argument `lowercase`, expected "
            f"a bool. Received: lowercase={lowercase!r}"
        )
    description = {"format": description_lib.FORMAT,
                   "keras_attn_version": __version__,
                   "kind": kind, "model_type": model_type}
    if vocabulary is not None:
        description["vocabulary"] = list(vocabulary)
        description["lowercase"] = lowercase
        description["special_tokens"] = {
            key: token for key, token in zip(description_lib.SPECIAL_TOKENS,
                                             vocabulary_lib.RESERVED_TOKENS)
            if token in vocabulary
        }
    if source_vocabulary is not None:
        description["source_vocabulary"] = list(source_vocabulary)
    if class_names is not None:
        description["class_names"] = list(class_names)
    description.update({key: value for key, value in lengths.items()
                        if value is not None})
    description["quantization"] = quantization
    if generation_config is not None:
        description["generation"] = generation_config
    return description_lib.check_description(description)
