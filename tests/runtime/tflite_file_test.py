"""`TFLiteFile` reads what LiteRT's own flatbuffer reader reads (op codes,
signatures), finds the embedding sizes, and turns every truncated or
corrupt file into one ValueError naming the file."""

import numpy as np
import pytest

from keras_attn_runtime import TFLiteFile
from keras_attn_runtime import read_metadata
from keras_attn_runtime.tflite_file import op_names
from tests.runtime.helpers import needs_tensorflow

pytestmark = needs_tensorflow

MODELS = ("classifier_path", "lm_path", "translator_path")


def litert_op_codes(model_bytes):
    """The op codes by the object API of LiteRT's generated schema."""
    from ai_edge_litert import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.BuiltinOperator).items()}
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(model_bytes, 0))
    builtins = [max(c.builtinCode, c.deprecatedBuiltinCode)
                for c in model.operatorCodes]
    return [(code.customCode.decode(), True) if builtin == 32 else
            (names[builtin], False)
            for code, builtin in zip(model.operatorCodes, builtins)]


@pytest.mark.parametrize("name", MODELS)
def test_op_codes_and_signatures_match_litert(exported, name):
    from ai_edge_litert.interpreter import Interpreter

    from keras_attn.export import tflite_ops

    path = exported[name]
    model_bytes = open(path, "rb").read()
    model = TFLiteFile(path)
    assert model.op_codes == litert_op_codes(model_bytes)
    assert op_names(path) == tflite_ops(path)
    interpreter = Interpreter(model_path=path)
    listed = interpreter.get_signature_list()
    assert sorted(model.signatures) == sorted(listed)
    for key, signature in model.signatures.items():
        runner = interpreter.get_signature_runner(key)
        for part, details in (("inputs", runner.get_input_details()),
                              ("outputs", runner.get_output_details())):
            assert sorted(signature[part]) == sorted(details)
            for tensor, spec in signature[part].items():
                assert spec["shape"] == details[tensor]["shape"].tolist()
                assert np.dtype(spec["dtype"]) == details[tensor]["dtype"]


def test_embedding_rows_are_the_vocabulary_sizes(exported, vocabulary):
    classifier = TFLiteFile(exported["classifier_path"])
    assert classifier.embedding_rows("serving_default", "token_ids") == (
        len(vocabulary))
    lm = TFLiteFile(exported["lm_path"])
    assert lm.embedding_rows("prefill", "token_ids") == len(vocabulary)
    assert lm.embedding_rows("decode", "token_id") == len(vocabulary)
    assert lm.embedding_rows("decode", "index") is None  # positions
    translator = TFLiteFile(exported["translator_path"])
    assert translator.embedding_rows("encode", "encoder_token_ids") == len(
        exported["source_words"]) != len(vocabulary)
    with pytest.raises(ValueError, match="no signature 'encode'"):
        lm.embedding_rows("encode", "encoder_token_ids")


def test_metadata_names_and_description(exported):
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec((1, 4), tf.float32)])
    def double(x):
        return {"y": 2.0 * x}

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [double.get_concrete_function()], double)
    foreign = converter.convert()  # a .tflite keras_attn never described
    plain = TFLiteFile(foreign)
    assert "CONVERSION_METADATA" in plain.metadata_names
    assert plain.description is None and read_metadata(foreign) is None
    lengths_only = read_metadata(exported["lm_path"])
    assert lengths_only["kind"] == "generator"
    assert "vocabulary" not in lengths_only
    described = read_metadata(exported["lm_meta"])
    assert described["kind"] == "generator"
    assert described["max_length"] == 40
    assert read_metadata(open(exported["lm_meta"], "rb").read()) == described


def test_truncated_and_corrupt_files_give_one_clear_error(exported, tmp_path):
    model_bytes = open(exported["translator_path"], "rb").read()
    rng = np.random.default_rng(0)
    lengths = sorted({0, 3, 7, 8, 16, 64, 1000, len(model_bytes) // 2,
                      len(model_bytes) - 1,
                      *rng.integers(8, len(model_bytes), 40).tolist()})
    path = tmp_path / "broken.tflite"
    for length in lengths:
        path.write_bytes(model_bytes[:length])
        with pytest.raises(ValueError) as info:
            TFLiteFile(path)
        message = str(info.value)
        assert str(path) in message and "\n" not in message
        assert "truncated or corrupt" in message
    # Corrupt bytes in the tables (the start of the file holds the root
    # table, its vtable and the offsets): a clear error or a file that
    # still reads, never a struct.error or an IndexError.
    detected = 0
    for _ in range(300):
        broken = bytearray(model_bytes)
        offset = int(rng.integers(0, 4096))
        broken[offset] = int(rng.integers(0, 256))
        try:
            TFLiteFile(bytes(broken), name="broken.tflite")
        except ValueError as error:
            assert "broken.tflite" in str(error)
            detected += 1
    assert detected > 10
    with pytest.raises(ValueError, match="no TFL3 file identifier"):
        TFLiteFile(exported["vocabulary"])
    with pytest.raises(FileNotFoundError, match="nowhere.tflite"):
        TFLiteFile(tmp_path / "nowhere.tflite")
    with pytest.raises(TypeError, match="path or bytes"):
        TFLiteFile(3)
