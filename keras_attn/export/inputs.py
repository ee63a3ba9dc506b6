"""Example inputs for the exporters: calibration data and sample inputs as
NumPy batches keyed by the model's input names, checked before the (slow)
conversion starts."""

import math

import keras
import numpy as np

from keras_attn_runtime import checks


def input_specs(model):
    """{input name: (dtype, shape)} in the order of the model's inputs."""
    inputs = model.input
    if isinstance(inputs, dict):
        return {key: (t.dtype, tuple(t.shape)) for key, t in inputs.items()}
    return {t.name: (t.dtype, tuple(t.shape))
            for t in keras.tree.flatten(inputs)}


def check_token_ids(value, what, vocabulary_size=None):
    """Raises unless `value` (a NumPy array) holds integer token ids in
    `[0, vocabulary_size)` (`keras_attn_runtime.checks.token_id_array`).
    Float ids are refused rather than cast: a cast hides data that is not
    token ids, and out-of-range ids make the embedding lookup fail (or read
    garbage) inside TFLite."""
    if vocabulary_size is None:
        checks.token_id_array(value, math.inf, what)  # the dtype only
    else:
        checks.token_id_array(value, vocabulary_size, what)


def named_arrays(batch, specs, what, vocabulary_sizes=None):
    """A batch (dict of arrays, or one array for a single-input model) ->
    dict `{input name: numpy array (B, ...)}` in the input dtypes. A single
    example without the batch axis gets one.

    Args:
        batch: the batch received.
        specs: from `input_specs`.
        what: str. The argument name, for error messages.
        vocabulary_sizes: dict or `None`. `{input name: size}` of the
            token inputs whose ids are range-checked.
    """
    names = list(specs)
    if not isinstance(batch, dict):
        if isinstance(batch, (list, tuple)) and len(batch) == len(names) \
                and len(names) > 1:
            batch = dict(zip(names, batch))
        elif len(names) == 1:
            batch = {names[0]: batch}
        else:
            raise ValueError(
                f"`{what}` for a model with several inputs must be dicts "
                f"keyed by input name {names}. Received: {type(batch)}"
            )
    if set(batch) != set(names):
        raise ValueError(
            f"`{what}` must have the model's inputs {sorted(names)}. "
            f"Received keys: {sorted(batch)}"
        )
    arrays = {}
    for name in names:
        dtype, shape = specs[name]
        value = np.asarray(keras.ops.convert_to_numpy(batch[name]))
        if value.ndim == len(shape) - 1:
            value = value[None]
        if value.ndim != len(shape) or any(
                want is not None and got != want
                for got, want in zip(value.shape[1:], shape[1:])):
            raise ValueError(
                f"`{what}[{name!r}]` must have shape {shape} (None: any "
                f"size). Received: shape={value.shape}"
            )
        if np.issubdtype(np.dtype(dtype), np.integer):
            check_token_ids(value, f"{what}[{name!r}]",
                            (vocabulary_sizes or {}).get(name))
        arrays[name] = value.astype(dtype)
    return arrays


def examples(batch):
    """Splits a dict of batched arrays into batch-1 dicts."""
    size = len(next(iter(batch.values())))
    for i in range(size):
        yield {name: value[i:i + 1] for name, value in batch.items()}


def representative_examples(data, specs, vocabulary_sizes=None):
    """`representative_data` -> list of batch-1 dicts keyed by input name.

    Materialized once, so a one-shot generator works and malformed data
    fails before the (slow) conversion starts.
    """
    source = data() if callable(data) else data
    if isinstance(source, (dict, np.ndarray)) or keras.ops.is_tensor(source):
        source = [source]  # a single batch
    found = []
    for batch in source:
        found.extend(examples(named_arrays(
            batch, specs, "representative_data", vocabulary_sizes)))
    if not found:
        raise ValueError("`representative_data` yielded no examples.")
    return found
