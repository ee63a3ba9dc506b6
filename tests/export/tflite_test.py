"""`export_tflite`: builtin ops only, float32 parity with Keras, documented
error bounds for each quantization, clean rejection of Flex/custom/WHILE
ops, and atomic writes.

TensorFlow backend only (the converter needs TensorFlow); the .tflite files
run on the LiteRT runtime (`ai_edge_litert`).
"""

import inspect
import os
import re

import keras
import numpy as np
import pytest
from keras import ops

from keras_attn.export import QUANTIZATIONS
from keras_attn.export import TFLiteReport
from keras_attn.export import UnsupportedOpsError
from keras_attn.export import atomic
from keras_attn.export import converter
from keras_attn.export import export_tflite
from keras_attn.export import tflite_ops
from tests.export.saved_model_test import KINDS
from tests.export.saved_model_test import as_named
from tests.export.saved_model_test import build_model
from tests.export.saved_model_test import sample_inputs
from tests.test_case import assert_allclose
from tests.test_case import to_numpy

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="TFLite conversion needs the TensorFlow backend",
)

# Max abs difference to Keras float32 on the tiny random models (outputs of
# magnitude 0.3 to 1). Measured over 4 seeds x 3 models: float16 <= 5.6e-4,
# dynamic_int8 <= 4.8e-3, int8 <= 4.6e-2; the bounds leave some room.
BOUNDS = {None: 1e-5, "float16": 1e-3, "dynamic_int8": 1e-2, "int8": 0.08}


def _representative(kind):
    return [sample_inputs(kind, batch=8, seed=100 + i) for i in range(4)]


def _interpreter(path):
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_path=str(path))


def _forbidden(op_names):
    return [op for op in op_names if op.upper().startswith("FLEX")
            or op.upper() in ("CUSTOM", "WHILE")]


@pytest.mark.parametrize("kind", KINDS)
def test_float32_matches_keras_with_named_batch_one_signature(kind, tmp_path):
    model = build_model(kind)
    inputs = sample_inputs(kind, batch=4)
    expected = to_numpy(model(inputs))
    report = export_tflite(model, tmp_path / "model.tflite",
                           sample_inputs=inputs, latency_runs=2)
    assert report.max_abs_diff < 1e-5

    # Independently of the report: run it with LiteRT, example by example.
    interpreter = _interpreter(report.path)
    signature = interpreter.get_signature_list()["serving_default"]
    named = as_named(kind, inputs)
    assert sorted(signature["inputs"]) == sorted(named)
    assert signature["outputs"] == model.output_names
    runner = interpreter.get_signature_runner("serving_default")
    for detail in runner.get_input_details().values():
        assert list(detail["shape_signature"]) == [1, 16]
    for i in range(4):
        out = runner(**{k: v[i:i + 1] for k, v in named.items()})
        assert_allclose(out[model.output_names[0]], expected[i:i + 1],
                        atol=1e-5)

    assert not _forbidden(report.ops), report.ops
    assert report.ops == tflite_ops(report.path)
    # A fresh interpreter: once invoked, XNNPACK shows up as DELEGATE.
    runtime_ops = {op["op_name"] for op in
                   _interpreter(report.path)._get_ops_details()}
    assert runtime_ops <= set(report.ops)
    assert report.size_bytes == os.path.getsize(report.path)
    assert report.latency_ms_median > 0


def _operand_types(path):
    """{op name: set of (input tensor types, output tensor type)}."""
    from ai_edge_litert import schema_py_generated as schema

    type_names = {v: k for k, v in vars(schema.TensorType).items()
                  if not k.startswith("_")}
    op_names = {v: k for k, v in vars(schema.BuiltinOperator).items()
                if not k.startswith("_")}
    with open(path, "rb") as f:
        model = schema.Model.GetRootAs(f.read(), 0)
    graph = model.Subgraphs(0)
    found = {}
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        name = op_names[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())]
        inputs = tuple(type_names[graph.Tensors(op.Inputs(j)).Type()]
                       for j in range(op.InputsLength()) if op.Inputs(j) >= 0)
        output = type_names[graph.Tensors(op.Outputs(0)).Type()]
        found.setdefault(name, set()).add((inputs, output))
    return found


@pytest.mark.parametrize("quantization", ["float16", "dynamic_int8", "int8"])
@pytest.mark.parametrize("kind", KINDS)
def test_quantized_stays_within_documented_bound(kind, quantization,
                                                 tmp_path):
    model = build_model(kind)
    report = export_tflite(
        model, tmp_path / "model.tflite", quantization=quantization,
        representative_data=_representative(kind),
        sample_inputs=sample_inputs(kind, batch=4), latency_runs=2,
    )
    assert report.quantization == quantization
    assert report.max_abs_diff < BOUNDS[quantization]
    assert not _forbidden(report.ops), report.ops

    # (activation, weight) types of the dense projections.
    dense = {inputs[:2] for inputs, _ in
             _operand_types(report.path)["FULLY_CONNECTED"]}
    if quantization == "float16":  # float16 constants, dequantized at load
        assert dense == {("FLOAT32", "FLOAT32")}
        assert ((("FLOAT16",), "FLOAT32")
                in _operand_types(report.path)["DEQUANTIZE"])
    elif quantization == "dynamic_int8":
        # The converter leaves weights under 1024 values (the tiny query,
        # key and value kernels here) in float32.
        assert ("FLOAT32", "INT8") in dense
    else:  # int8, but the tiny output layer stays float
        assert dense == {("INT8", "INT8"), ("FLOAT32", "FLOAT32")}


def test_int8_keeps_attention_scores_in_float(tmp_path, monkeypatch):
    """Masking fills scores with a huge negative number; sharing one int8
    scale with it would flatten the attention, so softmax runs in float.
    An output layer over the size limit is int8 like the others."""
    monkeypatch.setattr(converter, "INT8_FLOAT_OUTPUT_MAX_WEIGHTS", 0)
    report = export_tflite(
        build_model("decoder_lm"), tmp_path / "model.tflite",
        quantization="int8",
        representative_data=lambda: iter(_representative("decoder_lm")),
    )
    types = _operand_types(report.path)
    assert {out for _, out in types["SOFTMAX"]} == {"FLOAT32"}
    assert {out for _, out in types["FULLY_CONNECTED"]} == {"INT8"}


def test_representative_data_forms(tmp_path):
    """A single example, a generator, and a callable all calibrate."""
    model = build_model("encoder_classifier")
    batches = _representative("encoder_classifier")
    for i, data in enumerate([
        batches[0][0],  # (L,): one example without the batch axis
        (batch for batch in batches),
        lambda: [{"token_ids": batch} for batch in batches],
    ]):
        report = export_tflite(model, tmp_path / f"{i}.tflite",
                               quantization="int8", representative_data=data)
        assert os.path.exists(report.path)


def test_invalid_arguments_raise_before_writing(tmp_path):
    model = build_model("encoder_classifier")
    path = tmp_path / "model.tflite"
    with pytest.raises(ValueError, match="`quantization`") as error:
        export_tflite(model, path, quantization="int4")
    for choice in QUANTIZATIONS:
        assert repr(choice) in str(error.value)
    with pytest.raises(ValueError, match="representative_data"):
        export_tflite(model, path, quantization="int8")
    with pytest.raises(ValueError, match="yielded no examples"):
        export_tflite(model, path, quantization="int8",
                      representative_data=[])
    with pytest.raises(ValueError, match="num_threads"):
        export_tflite(model, path, num_threads=0)
    with pytest.raises(ValueError, match="sample_inputs"):
        export_tflite(model, path, sample_inputs={"ids": np.ones((1, 16))})
    with pytest.raises(ValueError, match=r"shape \(None, 16\)"):
        export_tflite(model, path, sample_inputs=np.ones((2, 8)))
    assert os.listdir(tmp_path) == []


class _Determinant(keras.layers.Layer):
    """Needs `tf.MatrixDeterminant`, which has no builtin TFLite kernel."""

    def call(self, ids):
        import tensorflow as tf

        x = tf.reshape(tf.cast(ids[:, :4], tf.float32), (-1, 2, 2))
        return tf.linalg.det(x)


class _HalveUntilCount(keras.layers.Layer):
    """A loop whose trip count depends on the input: a TFLite WHILE."""

    def call(self, ids):
        count = ops.sum(ops.cast(ids > 0, "int32"))
        _, x = ops.while_loop(
            lambda i, x: i < count, lambda i, x: (i + 1, x * 0.5),
            (0, ops.cast(ids, "float32")),
        )
        return x


@pytest.mark.parametrize("layer, op", [
    (_Determinant(), "MatrixDeterminant"), (_HalveUntilCount(), "WHILE"),
], ids=["flex", "while"])
def test_unsupported_ops_are_named_and_nothing_is_written(layer, op,
                                                          tmp_path):
    ids = keras.Input((8,), dtype="int32", name="token_ids")
    model = keras.Model(ids, layer(ids))
    with pytest.raises(UnsupportedOpsError, match=op) as error:
        export_tflite(model, tmp_path / "model.tflite")
    assert error.value.ops == [op]
    assert isinstance(error.value, ValueError)
    assert os.listdir(tmp_path) == []


def test_converter_error_messages_are_parsed():
    message = (
        "error: 'tf.Igamma' op is neither a custom op nor a flex op\n"
        "TF Select ops: MatrixDeterminant, Svd\n"
        "Custom ops: BesselI0e\n"
    )
    assert converter.ops_in_converter_error(message) == [
        "BesselI0e", "Igamma", "MatrixDeterminant", "Svd"]


def test_interrupted_write_leaves_no_file(tmp_path, monkeypatch):
    model = build_model("decoder_lm")
    path = tmp_path / "model.tflite"

    def replace(src, dst):
        raise KeyboardInterrupt("interrupted")

    monkeypatch.setattr(atomic.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        export_tflite(model, path)
    assert os.listdir(tmp_path) == []


def test_failed_conversion_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "model.tflite"
    path.write_bytes(b"previous")
    real_converter = converter._tf_converter

    def convert():
        raise RuntimeError("converter crashed")

    def patched(*args):
        # `from_saved_model` returns a subclass: patch the instance.
        instance = real_converter(*args)
        monkeypatch.setattr(instance, "convert", convert)
        return instance

    monkeypatch.setattr(converter, "_tf_converter", patched)
    with pytest.raises(RuntimeError, match="converter crashed"):
        export_tflite(build_model("decoder_lm"), path)
    assert os.listdir(tmp_path) == ["model.tflite"]
    assert path.read_bytes() == b"previous"


def test_report_table_lists_every_field():
    report = TFLiteReport(path="/tmp/m.tflite", quantization="int8",
                          size_bytes=2048, ops=["ADD", "SOFTMAX"],
                          max_abs_diff=0.0123, latency_ms_median=0.5)
    table = report.table()
    for text in ("/tmp/m.tflite", "int8", "2,048 bytes", "0.0123",
                 "0.500 ms", "ADD, SOFTMAX"):
        assert text in table, table
    empty = TFLiteReport("/tmp/m.tflite", None, 1, [], None, None)
    assert "not measured" in empty.table()


FENCE = re.compile(r"```python\n(.*?)```", re.S)


@pytest.mark.parametrize("obj", [export_tflite, tflite_ops, TFLiteReport],
                         ids=lambda obj: obj.__name__)
def test_docstring_example_runs(obj):
    (code,) = FENCE.findall(inspect.getdoc(obj))
    exec(compile(code, "<example>", "exec"), {})


def test_exported_file_has_ordinary_permissions(tmp_path):
    import os
    import stat

    from keras_attn.export import atomic

    path = atomic.write_bytes(tmp_path / "x.bin", b"abc")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask
