"""On-device generation: the prefill/decode TFLite file, run with
ai-edge-litert and NumPy only, returns exactly Keras's greedy tokens."""

import keras
import numpy as np
import pytest

from keras_attn import models
from keras_attn.export import export_generator_tflite
from keras_attn.export import tflite_ops
from tests.test_case import recompute_greedy

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="TFLite export needs the TensorFlow backend",
)


def _device_greedy(path, prompt, new_tokens, source=None):
    """The loop a device runs: prefill once, then one decode per token."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    prefill = interpreter.get_signature_runner("prefill")
    decode = interpreter.get_signature_runner("decode")
    stateful = "cache" not in decode.get_input_details()
    encoder = {}
    if source is not None:
        ids = np.asarray(source, "int32")[None]
        state = interpreter.get_signature_runner("encode")(
            encoder_token_ids=ids)
        if not stateful:
            encoder = dict(encoder_token_ids=ids, memory=state["memory"],
                           cross_cache=state["cross_cache"])
    max_length = prefill.get_input_details()["token_ids"]["shape"][1]
    buffer = np.zeros((1, max_length), "int32")
    buffer[0, :len(prompt)] = prompt
    out = prefill(token_ids=buffer, length=np.array(len(prompt), "int32"),
                  **encoder)
    tokens = []
    for index in range(len(prompt), len(prompt) + new_tokens):
        token = int(np.argmax(out["logits"][0, 1:])) + 1  # 0 is padding
        tokens.append(token)
        cache = {} if stateful else {"cache": out["cache"]}
        out = decode(token_id=np.array([[token]], "int32"),
                     index=np.array(index, "int32"), **encoder, **cache)
    return tokens


def _check_ops(path, kv_cache):
    ops = tflite_ops(path)
    assert "DYNAMIC_UPDATE_SLICE" in ops
    assert not [op for op in ops if op.startswith("FLEX")
                or op in ("CUSTOM", "WHILE")], ops
    # The cache is never sliced element by element (rank-5/6
    # STRIDED_SLICE is a slow per-element copy on TFLite).
    if kv_cache == "variables":
        assert {"READ_VARIABLE", "ASSIGN_VARIABLE"} <= set(ops), ops


@pytest.mark.parametrize("kv_cache", ["variables", "tensors"])
def test_decoder_lm_on_device_equals_keras_greedy(kv_cache, tmp_path):
    lm = models.decoder_lm(60, 40, num_layers=2, hidden_dim=32, num_heads=4,
                           num_key_value_heads=2, dropout=0.0)
    path = export_generator_tflite(lm, tmp_path / "lm.tflite", max_length=40,
                                   kv_cache=kv_cache)
    _check_ops(path, kv_cache)
    prompt = [3, 4, 5, 6, 7]
    expected = recompute_greedy(lm, prompt, 32)
    assert _device_greedy(path, prompt, 32) == expected
    # A second sequence in the same file starts afresh.
    assert _device_greedy(path, [9, 8], 32) == recompute_greedy(
        lm, [9, 8], 32)


@pytest.mark.parametrize("kv_cache", ["variables", "tensors"])
def test_seq2seq_on_device_equals_keras_greedy(kv_cache, tmp_path):
    model = models.seq2seq(30, 40, 8, 20, num_layers=1, hidden_dim=16,
                           num_heads=2, dropout=0.0, position="rotary")
    path = export_generator_tflite(model, tmp_path / "s2s.tflite",
                                   max_length=20, kv_cache=kv_cache)
    _check_ops(path, kv_cache)
    for source in ([5, 6, 7, 8, 9, 0, 0, 0], [11, 12, 0, 0, 0, 0, 0, 0]):
        expected = recompute_greedy(model, [1], 19, source)
        assert _device_greedy(path, [1], 19, source) == expected


def test_quantized_stateful_generator_converts(tmp_path):
    lm = models.decoder_lm(60, 16, num_layers=1, hidden_dim=16, num_heads=2,
                           dropout=0.0)
    for quantization in ("float16", "dynamic_int8"):
        path = export_generator_tflite(lm, tmp_path / f"{quantization}.tflite",
                                       max_length=16,
                                       quantization=quantization)
        _check_ops(path, "variables")
        assert len(_device_greedy(path, [3, 4], 8)) == 8


def test_bad_arguments(tmp_path):
    lm = models.decoder_lm(60, 16, num_layers=1, hidden_dim=16, num_heads=2)
    with pytest.raises(ValueError, match="sequence_length=16"):
        export_generator_tflite(lm, tmp_path / "x.tflite", max_length=32)
    with pytest.raises(ValueError, match="max_length=0"):
        export_generator_tflite(lm, tmp_path / "x.tflite", max_length=0)
    with pytest.raises(ValueError, match="quantization='int4'"):
        export_generator_tflite(lm, tmp_path / "x.tflite", max_length=8,
                                quantization="int4")
    with pytest.raises(ValueError, match="kv_cache='state'"):
        export_generator_tflite(lm, tmp_path / "x.tflite", max_length=8,
                                kv_cache="state")
    assert not (tmp_path / "x.tflite").exists()
