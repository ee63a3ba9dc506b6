"""`model.quantize("int8")` / `("int4")` (Keras's quantization API) on the
three builders: logits stay close to float, padding stays masked, the
quantized model saves and loads exactly, generates like its own full
recompute, and exports to SavedModel and TFLite.

Run with `-s -m ""` to print the whole error table (random weights; width
64, 2 layers); the default run keeps a representative subset.
"""

import itertools
import os

import keras
import numpy as np
import pytest

from keras_attn import models
from tests.test_case import assert_allclose
from tests.test_case import recompute_greedy
from tests.test_case import to_numpy

KINDS = ["classifier", "lm", "seq2seq"]
POSITIONS = ["learned", "rotary"]
MODES = ["int8", "int4"]

# Measured with the settings of `_build` (see the module docstring); the
# bounds leave room for other backends and seeds. Relative error = max
# |quantized - float| / max |float| over real positions.
BOUNDS = {
    "int8": dict(relative=0.06, argmax=0.95),
    "int4": dict(relative=0.45, argmax=0.6),
}


def _ids(rng, batch, length, vocab):
    ids = np.zeros((batch, length), "int32")
    for row in ids:
        n = rng.integers(length // 2, length + 1)
        row[:n] = rng.integers(1, vocab, size=n)
    return ids


def _build(kind, position, width=64, layers=2):
    """A model with fixed random weights, inputs, and the real-token mask
    of its logits (None for the classifier)."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    common = dict(num_layers=layers, hidden_dim=width, num_heads=4,
                  position=position, dropout=0.0)
    if kind == "classifier":
        model = models.encoder_classifier(500, 32, num_classes=4, **common)
        return model, _ids(rng, 32, 32, 500), None
    if kind == "lm":
        model = models.decoder_lm(500, 32, num_key_value_heads=2, **common)
        x = _ids(rng, 32, 32, 500)
        return model, x, x != 0
    model = models.seq2seq(400, 500, 24, 20, **common)
    x = {"encoder_token_ids": _ids(rng, 32, 24, 400),
         "decoder_token_ids": _ids(rng, 32, 20, 500)}
    return model, x, x["decoder_token_ids"] != 0


def _cases(default, *axes):
    """All combinations of `axes`, those not in `default` marked large (the
    default run keeps a few representative ones)."""
    return [
        pytest.param(*case) if case in default
        else pytest.param(*case, marks=pytest.mark.large)
        for case in itertools.product(*axes)
    ]


def _quantized_kernels(model):
    return [v for v in model.weights
            if keras.backend.standardize_dtype(v.dtype) == "int8"]


@pytest.mark.parametrize(
    "kind, position, mode",
    _cases({("lm", "rotary", "int8"), ("lm", "rotary", "int4"),
            ("classifier", "learned", "int8")}, KINDS, POSITIONS, MODES),
)
def test_quantized_logits_stay_close_to_float(kind, position, mode):
    model, x, real = _build(kind, position)
    reference = to_numpy(model(x)).astype("float64")
    model.quantize(mode)
    assert _quantized_kernels(model), "quantize changed no layer"
    quantized = to_numpy(model(x)).astype("float64")
    if real is not None:
        reference, quantized = reference[real], quantized[real]
    error = np.abs(quantized - reference)
    relative = error.max() / np.abs(reference).max()
    agreement = np.mean(quantized.argmax(-1) == reference.argmax(-1))
    print(f"\n{kind} {position} {mode}: max|err| {error.max():.2e} "
          f"mean|err| {error.mean():.2e} max|logit| "
          f"{np.abs(reference).max():.2e} relative {relative:.3f} "
          f"argmax agreement {agreement:.3f} over {len(reference)}")
    assert 0 < relative <= BOUNDS[mode]["relative"]
    assert agreement >= BOUNDS[mode]["argmax"]


@pytest.mark.parametrize(
    "kind, position",
    _cases({("classifier", "rotary"), ("seq2seq", "rotary")},
           ["classifier", "seq2seq"], POSITIONS),
)
def test_padding_stays_masked_after_quantize(kind, position):
    """The padding id's embedding does not reach the logits at real tokens
    (Keras's quantized ReversibleEmbedding, the embedding of rotary models,
    drops its Keras mask; the builders pass explicit padding masks)."""
    model, x, real = _build(kind, position, width=32, layers=1)
    model.quantize("int8")
    before = to_numpy(model(x))
    table = next(v for v in _quantized_kernels(model)
                 if v.path.startswith("encoder_embedding/"))
    values = to_numpy(table).copy()
    values[0] = np.random.default_rng(3).integers(-127, 128, values.shape[1])
    table.assign(values)  # a different vector for padding id 0
    after = to_numpy(model(x))
    if real is not None:
        before, after = before[real], after[real]
    assert_allclose(after, before, atol=0)


@pytest.mark.parametrize(
    "kind, position, mode",
    _cases({(kind, "learned", mode) for kind in KINDS for mode in MODES}
           | {("lm", "rotary", "int4")}, KINDS, POSITIONS, MODES),
)
def test_quantized_model_saves_and_loads_exactly(kind, position, mode,
                                                 tmp_path):
    model, x, _ = _build(kind, position, width=32, layers=1)
    model.quantize(mode)
    path = os.path.join(tmp_path, "quantized.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert_allclose(loaded(x), model(x), atol=0, rtol=0)
    assert len(_quantized_kernels(loaded)) == len(_quantized_kernels(model))
    modes = {layer.path: layer.quantization_mode
             for layer in loaded._flatten_layers()}
    for layer in model._flatten_layers():
        assert modes[layer.path] == layer.quantization_mode, layer.path


@pytest.mark.parametrize(
    "kind, mode",
    _cases({("lm", "int8"), ("lm", "int4")}, ["lm", "seq2seq"], MODES),
)
def test_generate_on_a_quantized_model_equals_its_full_recompute(
        kind, mode, tmp_path):
    model, _, _ = _build(kind, "learned", width=32, layers=1)
    model.quantize(mode)
    path = os.path.join(tmp_path, "quantized.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    prompt, source = [5, 9, 2], None
    kwargs = {}
    if kind == "seq2seq":
        prompt, source = [1], [4, 8, 15, 16, 23, 42, 0, 0]
        kwargs["encoder_token_ids"] = np.array(
            [source + [0] * 16], "int32")
    for m in (model, loaded):
        tokens = models.generate(m, [prompt], max_new_tokens=6, **kwargs)
        reference = recompute_greedy(
            m, prompt, 6,
            source=None if source is None else source + [0] * 16)
        assert tokens[0].tolist() == reference


# Export: TensorFlow backend only (SavedModel and TFLite).
export = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="SavedModel/TFLite export needs the TensorFlow backend",
)


@pytest.mark.large
@export
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
def test_quantized_saved_model_serves_the_quantized_outputs(kind, mode,
                                                            tmp_path):
    import tensorflow as tf

    from keras_attn.export import export_saved_model

    model, x, _ = _build(kind, "learned", width=32, layers=1)
    model.quantize(mode)
    serve = tf.saved_model.load(
        export_saved_model(model, os.path.join(tmp_path, "sm"))
    ).signatures["serving_default"]
    inputs = x if isinstance(x, dict) else {"token_ids": x}
    (outputs,) = serve(**inputs).values()
    assert_allclose(outputs, model(x), atol=1e-5)


@pytest.mark.large
@export
@pytest.mark.parametrize("kind", KINDS)
def test_tflite_export_of_int4_and_weight_only_int8(kind, tmp_path):
    from keras_attn.export import export_tflite

    sizes = {}
    for name in ("float", "int4", "int8_weights"):
        model, x, _ = _build(kind, "learned", width=32, layers=1)
        if name == "int4":
            model.quantize("int4")
        elif name == "int8_weights":
            model.quantize(config=keras.quantizers.Int8QuantizationConfig(
                activation_quantizer=None))
        sample = keras.tree.map_structure(lambda a: a[:1], x)
        report = export_tflite(model, os.path.join(tmp_path, name),
                               sample_inputs=sample)
        assert report.max_abs_diff < 1e-4, (name, report.max_abs_diff)
        sizes[name] = report.size_bytes
    print(f"\n{kind} TFLite bytes: {sizes}")
    # Weight-only int8 keeps int8 weights in the file; Keras's int4 path
    # unpacks them into int8 constants (no smaller than float here).
    assert sizes["int8_weights"] < 0.8 * sizes["float"], sizes


@pytest.mark.large
@export
def test_tflite_cannot_convert_int8_activation_quantization(tmp_path):
    """Pins a limitation: `quantize("int8")` quantizes activations too, and
    the TFLite converter cannot lower Keras's int8 x int8 matmul
    (BatchMatMulV3 on raw int8) to builtin ops. Use weight-only int8
    (`Int8QuantizationConfig(activation_quantizer=None)`) or quantize in
    the converter (`export_tflite(quantization="dynamic_int8")`)."""
    from keras_attn.export import export_tflite

    model, _, _ = _build("classifier", "learned", width=32, layers=1)
    model.quantize("int8")
    with pytest.raises(Exception, match="'tfl.fully_connected' op operand"):
        export_tflite(model, os.path.join(tmp_path, "int8.tflite"))
    assert not os.path.exists(os.path.join(tmp_path, "int8.tflite"))
