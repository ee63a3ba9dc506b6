"""Shared checks every keras_attn layer must pass, on any Keras backend.

`run_layer_test` builds the layer from its constructor arguments and checks:
config and serialization round trips, eager and symbolic output shapes, one
`fit` step under XLA (`jit_compile=True`), mixed precision dtypes, and a
`.keras` save/load with equal outputs.
"""

import os

import keras
import numpy as np
from keras import ops


def to_numpy(x):
    return ops.convert_to_numpy(x)


def flatten(outputs):
    """Flattens nested tuples/lists/dicts of tensors into a list."""
    return keras.tree.flatten(outputs)


def recompute_greedy(model, prompt, new_tokens, source=None):
    """Reference for generation: greedy decoding with the plain Keras
    forward pass over the whole window at every step (no cache), never
    id 0. `source`: the encoder ids of a seq2seq model."""
    inputs = model.input
    length = (inputs["decoder_token_ids"] if source is not None
              else inputs).shape[1]
    buffer = np.zeros((1, length), "int32")
    buffer[0, :len(prompt)] = prompt
    tokens = []
    for index in range(len(prompt), len(prompt) + new_tokens):
        inputs = buffer if source is None else {
            "encoder_token_ids": np.asarray([source], "int32"),
            "decoder_token_ids": buffer}
        logits = to_numpy(model(inputs, training=False))[0, index - 1]
        tokens.append(int(np.argmax(logits[1:])) + 1)
        buffer[0, index] = tokens[-1]
    return tokens


def assert_allclose(actual, expected, atol=1e-5, rtol=1e-5, msg=""):
    np.testing.assert_allclose(
        to_numpy(actual), to_numpy(expected), atol=atol, rtol=rtol,
        err_msg=msg,
    )


def _input_spec(name, value):
    value = np.asarray(value)
    return keras.Input(shape=value.shape[1:], dtype=str(value.dtype), name=name)


def _functional_model(layer, input_data, call_kwargs):
    """A model `inputs -> layer(**inputs, **call_kwargs)`; tensor inputs are
    named by the call argument they feed."""
    inputs = {name: _input_spec(name, v) for name, v in input_data.items()}
    outputs = layer(**inputs, **call_kwargs)
    return keras.Model(inputs, outputs)


def run_layer_test(
    layer_cls,
    init_kwargs,
    input_data,
    call_kwargs=None,
    expected_output_shapes=None,
    expected_num_trainable_weights=None,
    run_training=True,
    run_mixed_precision=True,
    tmp_path=None,
):
    """Runs the behaviours every layer shares.

    Args:
        layer_cls: the layer class.
        init_kwargs: dict of constructor arguments.
        input_data: dict `{call argument name: numpy array}` of the tensor
            inputs (batch first).
        call_kwargs: dict of non-tensor call arguments.
        expected_output_shapes: list of shapes of the flattened outputs.
        expected_num_trainable_weights: int, checked after building.
        run_training: whether to fit one step (needs a float first output).
        run_mixed_precision: whether to check `mixed_float16` dtypes.
        tmp_path: a directory for the `.keras` file.
    """
    call_kwargs = call_kwargs or {}

    # Config round trip.
    layer = layer_cls(**init_kwargs)
    config = layer.get_config()
    clone = layer_cls.from_config(config)
    assert clone.get_config() == config, "from_config(get_config()) differs"
    for key, value in init_kwargs.items():
        if isinstance(value, (int, float, str, bool, type(None))):
            assert config[key] == value, f"config[{key!r}] != {value!r}"

    # Serialization round trip: registered, found without custom_objects.
    serialized = keras.saving.serialize_keras_object(layer)
    assert serialized["module"] == "keras_attn" or serialized.get(
        "registered_name", ""
    ).startswith("keras_attn>"), serialized
    revived = keras.saving.deserialize_keras_object(serialized)
    assert type(revived) is layer_cls
    assert revived.get_config() == config

    # Eager call.
    eager = flatten(layer(**input_data, **call_kwargs))
    if expected_output_shapes is not None:
        got = [tuple(o.shape) for o in eager]
        assert got == [tuple(s) for s in expected_output_shapes], got
    if expected_num_trainable_weights is not None:
        assert len(layer.trainable_weights) == expected_num_trainable_weights

    # Symbolic call: same shapes with the batch left open.
    model = _functional_model(layer_cls(**init_kwargs), input_data,
                              call_kwargs)
    symbolic = flatten(model.outputs)
    assert len(symbolic) == len(eager)
    for sym, eag in zip(symbolic, eager):
        assert tuple(sym.shape[1:]) == tuple(eag.shape[1:]), (
            sym.shape, eag.shape)

    # One fit step under XLA; trainable variables move.
    if run_training:
        first = model.outputs[0]
        train_model = keras.Model(model.inputs, first)
        train_model.compile(optimizer="adam", loss="mse", jit_compile=True)
        before = [to_numpy(w).copy() for w in train_model.trainable_weights]
        target = np.random.default_rng(0).normal(
            size=(len(next(iter(input_data.values()))),) + tuple(
                first.shape[1:])
        ).astype("float32")
        history = train_model.fit(
            input_data, target, batch_size=len(target), epochs=1, verbose=0
        )
        assert np.isfinite(history.history["loss"][0])
        after = [to_numpy(w) for w in train_model.trainable_weights]
        if before:
            assert any(
                not np.allclose(b, a) for b, a in zip(before, after)
            ), "one fit step changed no trainable weight"

    # Mixed precision: float16 compute, float32 variables, finite outputs.
    if run_mixed_precision:
        mixed = layer_cls(**init_kwargs, dtype="mixed_float16")
        outputs = flatten(mixed(**input_data, **call_kwargs))
        assert keras.backend.standardize_dtype(outputs[0].dtype) == (
            "float16"
        ), outputs[0].dtype
        for w in mixed.weights:
            assert keras.backend.standardize_dtype(w.dtype) == "float32"
        for o in outputs:
            if keras.backend.is_float_dtype(
                keras.backend.standardize_dtype(o.dtype)
            ):
                assert np.isfinite(to_numpy(o).astype("float32")).all()

    # .keras save/load gives equal outputs, with no custom_objects.
    if tmp_path is not None:
        path = os.path.join(str(tmp_path), "layer_test.keras")
        model.save(path)
        loaded = keras.saving.load_model(path)
        for a, b in zip(flatten(model(input_data)),
                        flatten(loaded(input_data))):
            assert_allclose(a, b, atol=0, rtol=0)


def gradient_of_sum(fn, x):
    """Gradient of `sum(fn(x))` with respect to `x`, on the active backend."""
    backend = keras.backend.backend()
    x = np.asarray(x)
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.cast(fn(x), "float32"))
        return to_numpy(tape.gradient(loss, x))
    if backend == "jax":
        import jax

        return to_numpy(jax.grad(lambda a: ops.sum(fn(a)))(x))
    if backend == "torch":
        import torch

        x = torch.tensor(x, requires_grad=True)
        ops.sum(fn(x)).backward()
        return x.grad.numpy()
    raise NotImplementedError(backend)
