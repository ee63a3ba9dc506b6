"""`export_saved_model`: a `serving_default` signature named like the model's
inputs that matches Keras, reloads as a `TFSMLayer`, and is written
atomically (an interrupted export leaves nothing complete-looking behind).

TensorFlow backend only (SavedModel is a TensorFlow format).
"""

import inspect
import os
import re

import keras
import numpy as np
import pytest

import keras_attn
from keras_attn.export import atomic
from keras_attn.export import export_saved_model
from keras_attn.export import saved_model
from tests.test_case import assert_allclose
from tests.test_case import recompute_greedy
from tests.test_case import to_numpy

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="SavedModel export needs the TensorFlow backend",
)

VOCABULARY, LENGTH = 50, 16
TINY = dict(num_layers=1, hidden_dim=16, num_heads=2)
KINDS = ("encoder_classifier", "decoder_lm", "seq2seq")


def build_model(kind):
    """A tiny model of each builder (shared with tflite_test)."""
    if kind == "encoder_classifier":
        return keras_attn.models.encoder_classifier(VOCABULARY, LENGTH,
                                                    **TINY)
    if kind == "decoder_lm":
        return keras_attn.models.decoder_lm(VOCABULARY, LENGTH, **TINY)
    return keras_attn.models.seq2seq(VOCABULARY, VOCABULARY, LENGTH,
                                     LENGTH, **TINY)


def random_ids(rng, batch):
    """Token ids with right padding (id 0) of random lengths, one row
    unpadded."""
    ids = rng.integers(1, VOCABULARY, (batch, LENGTH)).astype("int32")
    lengths = rng.integers(2, LENGTH, batch)
    lengths[0] = LENGTH
    ids[np.arange(LENGTH)[None] >= lengths[:, None]] = 0
    return ids


def sample_inputs(kind, batch=3, seed=0):
    """Inputs in the model's structure: an array, or a dict for seq2seq."""
    rng = np.random.default_rng(seed)
    if kind == "seq2seq":
        return {"encoder_token_ids": random_ids(rng, batch),
                "decoder_token_ids": random_ids(rng, batch)}
    return random_ids(rng, batch)


def as_named(kind, inputs):
    return inputs if kind == "seq2seq" else {"token_ids": inputs}


def _siblings(path):
    return sorted(os.listdir(os.path.dirname(path)))


@pytest.mark.parametrize("kind", KINDS)
def test_serving_signature_named_like_inputs_matches_keras(kind, tmp_path):
    import tensorflow as tf

    model = build_model(kind)
    inputs = sample_inputs(kind)
    expected = to_numpy(model(inputs))
    path = export_saved_model(model, tmp_path / "export")
    assert path == str(tmp_path / "export")

    serve = tf.saved_model.load(path).signatures["serving_default"]
    _, named_specs = serve.structured_input_signature
    assert sorted(named_specs) == sorted(as_named(kind, inputs))
    assert all(spec.shape[0] is None for spec in named_specs.values())
    outputs = serve(**as_named(kind, inputs))
    assert list(outputs) == model.output_names
    assert_allclose(outputs[model.output_names[0]], expected, atol=1e-5)


def test_tfsm_layer_reloads_the_export(tmp_path):
    model = build_model("seq2seq")
    inputs = sample_inputs("seq2seq")
    path = export_saved_model(model, tmp_path / "export")
    layer = keras.layers.TFSMLayer(path, call_endpoint="serving_default")
    outputs = layer(inputs)
    assert_allclose(outputs["logits"], model(inputs), atol=1e-5)


def test_dropout_is_off_in_the_export(tmp_path):
    import tensorflow as tf

    model = keras_attn.models.encoder_classifier(
        VOCABULARY, LENGTH, dropout=0.5, **TINY)
    ids = sample_inputs("encoder_classifier")
    serve = tf.saved_model.load(
        export_saved_model(model, tmp_path / "m")).signatures[
            "serving_default"]
    first = serve(token_ids=ids)["classifier_head"]
    assert_allclose(first, serve(token_ids=ids)["classifier_head"], atol=0)
    assert_allclose(first, model(ids, training=False), atol=1e-5)


def test_existing_export_is_replaced(tmp_path):
    path = tmp_path / "export"
    path.mkdir()
    (path / "stale.txt").write_text("old")
    export_saved_model(build_model("decoder_lm"), path)
    assert not (path / "stale.txt").exists()
    assert (path / "saved_model.pb").exists()
    assert _siblings(str(path)) == ["export"]  # no temporary left


def _interrupt_write_out(monkeypatch):
    """Makes the export write part of a SavedModel, then fail as an
    interrupted export would."""
    real_archive = saved_model.serving_archive

    def write_out(filepath, **kwargs):
        with open(os.path.join(filepath, "saved_model.pb"), "wb") as f:
            f.write(b"partial")
        raise KeyboardInterrupt("interrupted")

    def serving_archive(*args, **kwargs):
        # `ExportArchive()` returns a backend subclass: patch the instance.
        archive = real_archive(*args, **kwargs)
        monkeypatch.setattr(archive, "write_out", write_out)
        return archive

    monkeypatch.setattr(saved_model, "serving_archive", serving_archive)


def test_interrupted_export_leaves_nothing_at_path(tmp_path, monkeypatch):
    _interrupt_write_out(monkeypatch)
    path = tmp_path / "export"
    with pytest.raises(KeyboardInterrupt):
        export_saved_model(build_model("decoder_lm"), path)
    assert not path.exists()
    assert os.listdir(tmp_path) == []  # the temporary directory is gone


def test_interrupted_export_keeps_the_previous_export(tmp_path, monkeypatch):
    import tensorflow as tf

    model = build_model("decoder_lm")
    ids = sample_inputs("decoder_lm")
    path = export_saved_model(model, tmp_path / "export")
    _interrupt_write_out(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        export_saved_model(build_model("decoder_lm"), path)
    assert os.listdir(tmp_path) == ["export"]
    serve = tf.saved_model.load(path).signatures["serving_default"]
    assert_allclose(serve(token_ids=ids)["logits"], model(ids), atol=1e-5)


def test_failed_swap_restores_the_previous_directory(tmp_path, monkeypatch):
    path = tmp_path / "bundle"
    path.mkdir()
    (path / "old.txt").write_text("old")
    real_replace = os.replace
    calls = []

    def replace(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # the new directory moving into place
            raise OSError("disk went away")
        return real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", replace)
    with pytest.raises(OSError, match="disk went away"):
        with atomic.atomic_directory(path) as tmp:
            (tmp_path / os.path.basename(tmp) / "new.txt").write_text("new")
    assert os.listdir(tmp_path) == ["bundle"]
    assert os.listdir(path) == ["old.txt"]


def test_write_bytes_failure_leaves_no_file(tmp_path, monkeypatch):
    def replace(src, dst):
        raise OSError("no space left")

    monkeypatch.setattr(atomic.os, "replace", replace)
    with pytest.raises(OSError, match="no space left"):
        atomic.write_bytes(tmp_path / "model.bin", b"data")
    assert os.listdir(tmp_path) == []


def test_model_without_inputs_is_rejected(tmp_path):
    model = keras.Sequential([keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="defined inputs"):
        export_saved_model(model, tmp_path / "export")
    with pytest.raises(TypeError, match="keras.Model"):
        export_saved_model(keras.layers.Dense(2), tmp_path / "export")
    assert os.listdir(tmp_path) == []


FENCE = re.compile(r"```python\n(.*?)```", re.S)


@pytest.mark.parametrize("obj", [
    export_saved_model, atomic.write_bytes, atomic.atomic_directory,
], ids=lambda obj: obj.__name__)
def test_docstring_example_runs(obj):
    (code,) = FENCE.findall(inspect.getdoc(obj))
    exec(compile(code, "<example>", "exec"), {})


def test_module_helpers_are_consistent():
    model = build_model("seq2seq")
    specs = saved_model.input_signature(model, batch_size=1)
    assert {name: spec.name for name, spec in specs.items()} == {
        "encoder_token_ids": "encoder_token_ids",
        "decoder_token_ids": "decoder_token_ids",
    }
    assert all(spec.shape == (1, LENGTH) for spec in specs.values())


def _saved_model_greedy(path, prompt, new_tokens, source=None):
    """The same loop a device runs on the TFLite generator, on the
    SavedModel's generation signatures."""
    import tensorflow as tf

    signatures = tf.saved_model.load(path).signatures
    encoder = {}
    if source is not None:
        ids = tf.constant([source], tf.int32)
        state = signatures["encode"](encoder_token_ids=ids)
        encoder = dict(encoder_token_ids=ids, memory=state["memory"],
                       cross_cache=state["cross_cache"])
    max_length = signatures["prefill"].structured_input_signature[1][
        "token_ids"].shape[1]
    buffer = np.zeros((1, max_length), "int32")
    buffer[0, :len(prompt)] = prompt
    out = signatures["prefill"](token_ids=tf.constant(buffer),
                                length=tf.constant(len(prompt)), **encoder)
    tokens = []
    for index in range(len(prompt), len(prompt) + new_tokens):
        tokens.append(int(np.argmax(out["logits"][0, 1:])) + 1)
        out = signatures["decode"](token_id=tf.constant([[tokens[-1]]]),
                                   cache=out["cache"],
                                   index=tf.constant(index), **encoder)
    return tokens, out["logits"]


@pytest.mark.parametrize("kind", ["decoder_lm", "seq2seq"])
def test_generation_signatures_equal_uncached_keras_greedy(kind, tmp_path):
    keras.utils.set_random_seed(3)
    model = build_model(kind)
    path = export_saved_model(model, tmp_path / kind)
    import tensorflow as tf

    names = set(tf.saved_model.load(path).signatures)
    expected_names = {"serving_default", "prefill", "decode"}
    if kind == "seq2seq":
        expected_names.add("encode")
    assert names == expected_names
    source = [5, 6, 7, 8, 0, 0, 0, 0] * 2 if kind == "seq2seq" else None
    prompt = [3, 4, 5]
    tokens, _ = _saved_model_greedy(path, prompt, LENGTH - len(prompt),
                                    source)
    assert tokens == recompute_greedy(model, prompt, LENGTH - len(prompt),
                                       source)


def test_prefill_logits_match_keras(tmp_path):
    import tensorflow as tf

    model = build_model("decoder_lm")
    path = export_saved_model(model, tmp_path / "lm", max_length=12)
    prefill = tf.saved_model.load(path).signatures["prefill"]
    ids = np.zeros((1, 12), "int32")
    ids[0, :7] = [9, 8, 7, 6, 5, 4, 3]
    out = prefill(token_ids=tf.constant(ids), length=tf.constant(7))
    padded = np.zeros((1, LENGTH), "int32")
    padded[:, :12] = ids
    assert_allclose(out["logits"], to_numpy(model(padded))[:, 6], atol=1e-5)
    assert out["cache"].shape == (1, 1, 2, 2, 12, 8)  # (1, Y, 2, K, M, H)


def test_generation_max_length_is_checked(tmp_path):
    lm = build_model("decoder_lm")
    with pytest.raises(ValueError, match="sequence_length=16"):
        export_saved_model(lm, tmp_path / "a", max_length=LENGTH + 1)
    with pytest.raises(ValueError, match="max_length=0"):
        export_saved_model(lm, tmp_path / "b", max_length=0)
    classifier = build_model("encoder_classifier")
    with pytest.raises(ValueError, match="only models built by"):
        export_saved_model(classifier, tmp_path / "c", max_length=8)
    assert os.listdir(tmp_path) == []


def test_decoder_model_of_its_own_gets_serving_and_a_warning(tmp_path):
    """A model with decoder layers that `CachedDecoder` cannot run (not
    laid out as the builders lay it out) still exports `serving_default`,
    and the warning says why it gets no generation signatures; with an
    explicit `max_length` that reason is the error."""
    import tensorflow as tf

    ids = keras.Input((LENGTH,), dtype="int32", name="token_ids")
    x = keras.layers.Embedding(VOCABULARY, 16, name="tokens")(ids)
    x = keras_attn.layers.TransformerDecoder(32, 2, name="block")(x)
    model = keras.Model(ids, keras.layers.Dense(VOCABULARY)(x))
    with pytest.warns(UserWarning, match="`serving_default` only, no "
                      "generation signatures: .*read by Embedding 'tokens'"):
        path = export_saved_model(model, tmp_path / "own")
    inputs = sample_inputs("decoder_lm")
    loaded = tf.saved_model.load(path)
    assert set(loaded.signatures) == {"serving_default"}
    (outputs,) = loaded.signatures["serving_default"](
        token_ids=inputs).values()
    assert_allclose(outputs, model(inputs), atol=1e-5)
    with pytest.raises(ValueError, match="read by Embedding 'tokens'"):
        export_saved_model(model, tmp_path / "again", max_length=8)
