"""Trains the three builders a few SGD steps distributed on virtual devices
and on one device, and prints what the tests compare, as JSON.

Run by tests/distribution/single_host_test.py in a fresh process, because
the device count is fixed when the backend starts:

    KERAS_BACKEND=jax XLA_FLAGS=--xla_force_host_platform_device_count=4 \\
        python -m tests.distribution.single_host_worker
    KERAS_BACKEND=tensorflow python -m tests.distribution.single_host_worker

Arguments name the runs (`decoder_lm/model/2,2`: builder, mode, mesh);
none runs them all. TensorFlow gets 2 logical CPUs (set below, before any
op). Every run uses
dropout 0 and the same global batch, so the only difference between a
distributed run and the one-device run is where the arithmetic happens.
"""

import json
import sys

import keras
import numpy as np

from keras_attn import distribution
from keras_attn import models
from tests.test_case import recompute_greedy

STEPS = 3
GLOBAL_BATCH = 8
LEARNING_RATE = 0.1
TINY = dict(num_layers=2, hidden_dim=16, num_heads=4, intermediate_dim=32,
            dropout=0.0)

# name -> (builder, keyword arguments)
BUILDERS = {
    "encoder_classifier": (models.encoder_classifier, dict(
        vocabulary_size=64, sequence_length=8, num_classes=3, **TINY)),
    "decoder_lm": (models.decoder_lm, dict(
        vocabulary_size=64, sequence_length=8, num_key_value_heads=2,
        position="rotary", tie_weights=False, **TINY)),
    "seq2seq": (models.seq2seq, dict(
        source_vocabulary_size=30, target_vocabulary_size=40,
        source_length=7, target_length=6, **TINY)),
}


def _ids(rng, batch, length, vocabulary, padded):
    """Token ids in [1, vocabulary); right-padded rows if `padded`."""
    ids = rng.integers(1, vocabulary, size=(batch, length)).astype("int32")
    if padded:
        for row in ids:
            row[rng.integers(2, length + 1):] = 0
    return ids


def batches(name):
    """`STEPS` global batches `(x, y)`. Language-model targets have no
    padding: tf.distribute averages per-replica means, equal to the global
    token mean only when every replica holds as many real tokens."""
    rng = np.random.default_rng(0)
    n = STEPS * GLOBAL_BATCH
    if name == "encoder_classifier":
        return _ids(rng, n, 8, 64, padded=True), rng.integers(0, 3, size=n)
    if name == "decoder_lm":
        tokens = _ids(rng, n, 9, 64, padded=False)
        return tokens[:, :-1], tokens[:, 1:]
    target = _ids(rng, n, 7, 40, padded=False)
    x = {"encoder_token_ids": _ids(rng, n, 7, 30, padded=True),
         "decoder_token_ids": target[:, :-1]}
    return x, target[:, 1:]


def dataset(name):
    import tensorflow as tf

    x, y = batches(name)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH)


def compile_model(model, jit_compile=True):
    model.compile(
        optimizer=keras.optimizers.SGD(LEARNING_RATE),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )


def train(model, name):
    history = model.fit(dataset(name), epochs=STEPS, steps_per_epoch=1,
                        verbose=0)
    return [float(v) for v in history.history["loss"]]


def shardings(model):
    """`{path: [axis name or None per dimension]}` as JAX placed them."""
    out = {}
    for variable in model.variables:
        spec = tuple(variable.value.sharding.spec)
        out[variable.path] = list(spec) + [None] * (
            len(variable.shape) - len(spec))
    return out


_REFERENCES = {}


def one_device(name, initial):
    """The one-device twin trained from `initial`; reused by the runs of
    the same builder that start from the same weights."""
    key = (name, tuple(float(np.sum(w)) for w in initial))
    if key not in _REFERENCES:
        builder, kwargs = BUILDERS[name]
        keras.distribution.set_distribution(None)
        reference = builder(**kwargs)
        reference.set_weights(initial)
        compile_model(reference)
        _REFERENCES[key] = (reference, train(reference, name))
    return _REFERENCES[key]


def run_mode(name, mode, mesh_shape=None):
    """One distributed run and its one-device twin from the same initial
    weights; returns the numbers the tests check."""
    builder, kwargs = BUILDERS[name]
    setup = distribution.setup(distribution=mode, mesh_shape=mesh_shape)
    model = setup.build(builder, **kwargs)
    with setup.scope():
        compile_model(model, setup.jit_compile)
    initial = model.get_weights()
    losses = train(model, name)
    result = {"losses": losses, "replicas": setup.num_replicas}
    if keras.backend.backend() == "jax":
        result["shardings"] = shardings(model)
    keras.distribution.set_distribution(None)

    reference, reference_losses = one_device(name, initial)
    result["reference_losses"] = reference_losses
    result["max_loss_diff"] = float(np.max(np.abs(
        np.subtract(losses, reference_losses))))
    result["max_weight_diff"] = max(
        float(np.max(np.abs(a - b))) if a.size else 0.0
        for a, b in zip(model.get_weights(), reference.get_weights())
    )
    result["max_weight_change"] = max(
        float(np.max(np.abs(a - b))) if a.size else 0.0
        for a, b in zip(reference.get_weights(), initial)
    )
    if name != "encoder_classifier":
        result["generation"] = compare_generation(
            name, model, reference, setup
        )
    return result


def compare_generation(name, model, reference, setup):
    """Greedy tokens from `generate` on the distributed model (weights in
    place, distribution active) and, independently, by recomputing the
    full forward pass of the one-device model at every step."""
    prompt = [5, 9, 3]
    source = [4, 8, 15, 16, 0, 0, 0] if name == "seq2seq" else None
    keras.distribution.set_distribution(setup.distribution)
    with setup.scope():
        tokens = models.generate(
            model, [prompt] if source is None else [[prompt[0]]], 4,
            encoder_token_ids=None if source is None else [source],
        )[0].tolist()
    keras.distribution.set_distribution(None)
    expected = recompute_greedy(
        reference, prompt if source is None else prompt[:1], 4, source
    )
    return {"tokens": tokens, "expected": expected}


def all_runs(backend):
    if backend == "tensorflow":
        return [f"{name}/data" for name in BUILDERS]
    return [f"{name}/{mode}" for name in BUILDERS
            for mode in ("data", "model/2,2")] + [
        "decoder_lm/model/1,4", "seq2seq/model/1,4"]


def main(keys):
    """`keys`: runs `builder/mode[/BATCH,MODEL]`; all of this backend's
    if empty."""
    backend = keras.backend.backend()
    results = {"backend": backend}
    if backend == "tensorflow":
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2
        )
        try:
            distribution.setup(distribution="model")
        except ValueError as error:
            results["model_mode_error"] = str(error)
    for key in keys or all_runs(backend):
        name, mode, *mesh_shape = key.split("/")
        keras.utils.set_random_seed(0)
        results[key] = run_mode(name, mode, *mesh_shape)
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1:])
