"""TensorFlow SavedModel export with a named `serving_default` signature.

The signature takes the model's inputs by their names (`token_ids`, or
`encoder_token_ids` and `decoder_token_ids` for the models built by
`keras_attn.models`) and returns a dict keyed by the model's output names
(`model.output_names`: `"logits"` for `decoder_lm` and `seq2seq`,
`"classifier_head"` for `encoder_classifier`). Dropout is off (the model is
called with `training=False`).

Models built by `decoder_lm` and `seq2seq` also get the generation
signatures `prefill` and `decode` (and `encode` for seq2seq) of the
on-device generator in its stateless `kv_cache="tensors"` form, with the
same inputs and outputs; see `keras_attn.export.generation_signatures`.

TensorFlow backend only: a SavedModel is a TensorFlow graph.
"""

import os
import warnings

import keras

from keras_attn.export import atomic
from keras_attn.export import generation_signatures
from keras_attn.models.structure import UnsupportedDecoderError

SERVING_SIGNATURE = "serving_default"


def check_exportable(model):
    """Raises unless `model` can be exported (TensorFlow backend, a Keras
    model with `keras.Input` inputs)."""
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            "Exporting to SavedModel or TFLite needs the TensorFlow backend "
            "(set KERAS_BACKEND=tensorflow). Received backend: "
            f"{keras.backend.backend()!r}"
        )
    if not isinstance(model, keras.Model):
        raise TypeError(
            "`model` must be a keras.Model. Received: "
            f"model={type(model).__name__}"
        )
    try:
        model.input  # raises for models built without keras.Input
    except (AttributeError, ValueError) as e:
        raise ValueError(
            "`model` must have defined inputs (a functional model, or a "
            "Sequential model that starts with keras.Input), so that the "
            f"exported signature can name them. Received: model={model.name!r}"
        ) from e


def input_signature(model, batch_size=None):
    """The model's inputs as `tf.TensorSpec`s named like the inputs, in the
    model's input structure (one spec, a list, or a dict keyed by name).

    Args:
        model: a `keras.Model` with defined inputs.
        batch_size: int or `None`. Fixed batch dimension, or `None` for a
            dynamic batch.
    """
    import tensorflow as tf

    def spec(tensor, name):
        shape = (batch_size,) + tuple(tensor.shape[1:])
        return tf.TensorSpec(shape, tensor.dtype, name=name)

    inputs = model.input
    if isinstance(inputs, dict):
        return {key: spec(t, key) for key, t in inputs.items()}
    if isinstance(inputs, (list, tuple)):
        return [spec(t, t.name) for t in inputs]
    return spec(inputs, inputs.name)


def output_dict(model, outputs):
    """The model's outputs as a dict keyed by `model.output_names` (or
    `output_0`, ... when the names do not match the flattened outputs)."""
    if isinstance(outputs, dict):
        return dict(outputs)
    outputs = keras.tree.flatten(outputs)
    names = list(getattr(model, "output_names", None) or [])
    if len(names) != len(outputs) or len(set(names)) != len(names):
        return {f"output_{i}": out for i, out in enumerate(outputs)}
    return dict(zip(names, outputs))


def serving_archive(model, batch_size=None):
    """A `keras.export.ExportArchive` tracking `model`, with one
    `serving_default` endpoint: named inputs -> dict of named outputs.

    Args:
        model: a `keras.Model` with defined inputs.
        batch_size: int or `None`. Batch dimension of the signature.
    """
    def serve(inputs):
        return output_dict(model, model(inputs, training=False))

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        SERVING_SIGNATURE, serve,
        input_signature=[input_signature(model, batch_size)],
    )
    return archive


def export_saved_model(model, path, max_length=None, verbose=False):
    """Exports `model` as a TensorFlow SavedModel at `path`, atomically.

    The SavedModel has the signature `serving_default`, with a dynamic
    batch dimension, whose inputs are named like the model's inputs
    (`token_ids`; `encoder_token_ids` and `decoder_token_ids` for
    `seq2seq`) and whose outputs are a dict keyed by `model.output_names`.
    Reload it with `tf.saved_model.load(path)` or
    `keras.layers.TFSMLayer(path, call_endpoint="serving_default")`.

    A `decoder_lm` or `seq2seq` model also gets the generation signatures
    `prefill`, `decode` (and `encode`) around a KV cache of length
    `max_length`, batch 1, exactly those of
    `export_generator_tflite(..., kv_cache="tensors")` (stateless: the
    cache goes in and out of every call; see
    `keras_attn.export.generation_signatures`), so one generation loop
    serves both files. A model of its own with `TransformerDecoder`
    layers that `keras_attn.models.generation.CachedDecoder` cannot run
    gets `serving_default` only, with a warning that says why.

    The export is written into a hidden temporary directory next to `path`
    and renamed into place only when complete, so an interrupted export
    never leaves a complete-looking SavedModel at `path`, and an existing
    `path` is replaced only after the new export succeeded.

    Args:
        model: keras.Model. A model with `keras.Input` inputs, e.g. one
            built by `keras_attn.models`.
        path: str or path-like. Destination directory; replaced if it
            exists.
        max_length: int or `None`. Cache length of the generation
            signatures (`decoder_lm` and `seq2seq` only). Defaults to the
            length of the model's (decoder) token input.
        verbose: bool. Whether Keras prints the exported endpoints.
            Defaults to `False`.

    Returns:
        The absolute path of the SavedModel directory, as a str.

    Raises:
        RuntimeError: if the Keras backend is not TensorFlow.
        TypeError: if `model` is not a `keras.Model`.
        ValueError: if `model` has no defined inputs, or for a bad
            `max_length` (not a positive int, beyond the learned positions,
            missing for a model with a dynamic input length, or given for
            a model that does not generate).

    Example:

    ```python
    import os
    import tempfile
    import numpy as np
    import tensorflow as tf
    import keras_attn
    from keras_attn.export import export_saved_model
    model = keras_attn.models.encoder_classifier(
        vocabulary_size=50, sequence_length=8, num_layers=1, hidden_dim=16,
        num_heads=2)
    path = export_saved_model(
        model, os.path.join(tempfile.mkdtemp(), "classifier"))
    serve = tf.saved_model.load(path).signatures["serving_default"]
    ids = np.array([[5, 6, 7, 0, 0, 0, 0, 0]], "int32")
    logits = serve(token_ids=ids)["classifier_head"]
    assert np.allclose(logits, model(ids), atol=1e-5)
    ```
    """
    check_exportable(model)
    archive = serving_archive(model)
    try:
        decoder = generation_signatures.generation_decoder(model)
    except UnsupportedDecoderError as e:
        if max_length is not None:
            raise
        # A model of its own with decoder layers: it still serves; say
        # why it gets no generation signatures.
        warnings.warn(
            f"The SavedModel of model={model.name!r} gets `serving_default` "
            f"only, no generation signatures: {e}", stacklevel=2)
        decoder = None
    if decoder is None and max_length is not None:
        raise ValueError(
            "`max_length` sets the cache of the generation signatures, "
            "which only models built by keras_attn.models.decoder_lm or "
            f"seq2seq have. Received: max_length={max_length!r} for "
            f"model={model.name!r}"
        )
    if decoder is not None:
        generation_signatures.add_generation_endpoints(
            archive, decoder,
            generation_signatures.resolve_max_length(decoder, max_length),
        )
    with atomic.atomic_directory(path) as tmp:
        archive.write_out(tmp, verbose=verbose)
    return os.path.abspath(os.fspath(path))
