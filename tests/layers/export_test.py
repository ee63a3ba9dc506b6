"""Every layer traces under XLA and `model.export`; a model built from them
converts to TFLite with builtin ops only and matches Keras.

TensorFlow backend only (SavedModel and TFLite are TensorFlow formats).
"""

import keras
import numpy as np
import pytest

from keras_attn import layers
from tests.test_case import assert_allclose
from tests.test_case import to_numpy

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="SavedModel/TFLite export needs the TensorFlow backend",
)

LENGTH, WIDTH = 8, 16
IDS = np.array([[5, 7, 9, 3, 0, 0, 0, 0], [1, 2, 3, 4, 5, 6, 7, 8]], "int32")


def _every_layer_model():
    ids = keras.Input((LENGTH,), dtype="int32", name="token_ids")
    x = layers.TokenAndPositionEmbedding(20, LENGTH, WIDTH, mask_zero=True)(
        ids)
    x = x + layers.SinusoidalPositionEncoding()(x)
    x = layers.TransformerEncoder(32, 4, num_key_value_heads=2,
                                  rotary_max_wavelength=100)(x)
    y = layers.TokenAndPositionEmbedding(
        20, LENGTH, WIDTH, position="sinusoidal")(ids)
    y = y + layers.PositionEmbedding(LENGTH)(y)
    y = layers.TransformerDecoder(32, 4, normalize_first=True)(y, x)
    y = layers.MultiHeadAttention(2, 8, num_key_value_heads=1)(
        y, x, use_causal_mask=True)
    q = keras.layers.Reshape((LENGTH, 2, 8))(y)
    q = layers.RotaryEmbedding()(q)
    z = layers.ScaledDotProductAttention()(q, q, q, is_causal=True)
    z = keras.layers.Reshape((LENGTH, WIDTH))(z)
    logits = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling1D()(z))
    return keras.Model(ids, logits)


def _tflite_ops(path):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    return interpreter, {op["op_name"] for op in
                         interpreter._get_ops_details()}


def test_every_layer_under_jit_compile():
    model = _every_layer_model()
    eager = to_numpy(model(IDS))
    model.compile(jit_compile=True)
    assert_allclose(model.predict(IDS, verbose=0), eager, atol=1e-5)


def test_saved_model_and_tflite_builtin_ops_match_keras(tmp_path):
    import tensorflow as tf

    model = _every_layer_model()
    expected = to_numpy(model(IDS))
    saved = tmp_path / "saved_model"
    model.export(str(saved), format="tf_saved_model", verbose=False)
    reloaded = tf.saved_model.load(str(saved))
    assert_allclose(reloaded.serve(IDS), expected, atol=1e-5)

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    path = tmp_path / "model.tflite"
    path.write_bytes(converter.convert())
    interpreter, op_names = _tflite_ops(path)
    assert not [op for op in op_names
                if "FLEX" in op.upper() or "CUSTOM" in op.upper()
                or op.upper() == "WHILE"], op_names
    runner = interpreter.get_signature_runner("serving_default")
    for i in range(len(IDS)):
        (out,) = runner(token_ids=IDS[i:i + 1]).values()
        assert_allclose(out, expected[i:i + 1], atol=1e-5)


def test_cached_decode_step_converts_to_builtin_tflite(tmp_path):
    """The KV-cache update lowers to DYNAMIC_UPDATE_SLICE, not Flex ops."""
    import tensorflow as tf

    decoder = layers.TransformerDecoder(32, 4, num_key_value_heads=2)
    x = np.random.default_rng(0).normal(size=(1, 6, WIDTH)).astype("float32")
    full = to_numpy(decoder(x))
    cache_shape = (1, 2, 6, 2, WIDTH // 4)

    def step(token, cache, index):
        out, cache = decoder(token, self_attention_cache=cache,
                             self_attention_cache_update_index=index)
        return {"out": out, "cache": cache}

    archive = keras.export.ExportArchive()
    archive.track(decoder)
    archive.add_endpoint("decode", step, input_signature=[
        tf.TensorSpec((1, 1, WIDTH), tf.float32, name="token"),
        tf.TensorSpec(cache_shape, tf.float32, name="cache"),
        tf.TensorSpec((), tf.int32, name="index"),
    ])
    saved = tmp_path / "decoder"
    archive.write_out(str(saved), verbose=False)
    converter = tf.lite.TFLiteConverter.from_saved_model(
        str(saved), signature_keys=["decode"])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    path = tmp_path / "step.tflite"
    path.write_bytes(converter.convert())
    interpreter, op_names = _tflite_ops(path)
    assert "DYNAMIC_UPDATE_SLICE" in op_names, op_names
    assert "VAR_HANDLE" not in op_names, op_names  # weights are constants
    runner = interpreter.get_signature_runner("decode")
    cache = np.zeros(cache_shape, "float32")
    for i in range(6):
        result = runner(token=x[:, i:i + 1], cache=cache,
                        index=np.array(i, "int32"))
        cache = result["cache"]
        assert_allclose(result["out"], full[:, i:i + 1], atol=1e-5)
