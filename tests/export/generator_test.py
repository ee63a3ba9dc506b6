"""On-device generation: the prefill/decode TFLite file, run with
ai-edge-litert and NumPy only, returns exactly Keras's greedy tokens."""

import keras
import numpy as np
import pytest

from keras_attn import models
from keras_attn.export import export_generator_tflite
from keras_attn.export import tflite_ops

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="TFLite export needs the TensorFlow backend",
)


def _device_greedy(path, prompt, new_tokens, source=None):
    """The loop a device runs: prefill once, then one decode per token."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    encoder = {}
    if source is not None:
        ids = np.asarray(source, "int32")[None]
        state = interpreter.get_signature_runner("encode")(
            encoder_token_ids=ids)
        encoder = dict(encoder_token_ids=ids, memory=state["memory"],
                       cross_cache=state["cross_cache"])
    prefill = interpreter.get_signature_runner("prefill")
    decode = interpreter.get_signature_runner("decode")
    max_length = prefill.get_input_details()["token_ids"]["shape"][1]
    buffer = np.zeros((1, max_length), "int32")
    buffer[0, :len(prompt)] = prompt
    out = prefill(token_ids=buffer, length=np.array(len(prompt), "int32"),
                  **encoder)
    tokens = []
    for index in range(len(prompt), len(prompt) + new_tokens):
        token = int(np.argmax(out["logits"][0, 1:])) + 1  # 0 is padding
        tokens.append(token)
        out = decode(token_id=np.array([[token]], "int32"),
                     cache=out["cache"], index=np.array(index, "int32"),
                     **encoder)
    return tokens


def test_decoder_lm_on_device_equals_keras_greedy(tmp_path):
    lm = models.decoder_lm(60, 40, num_layers=2, hidden_dim=32, num_heads=4,
                           num_key_value_heads=2, dropout=0.0)
    path = export_generator_tflite(lm, tmp_path / "lm.tflite", max_length=40)
    ops = tflite_ops(path)
    assert "DYNAMIC_UPDATE_SLICE" in ops
    assert not [op for op in ops if op.startswith("FLEX")
                or op in ("CUSTOM", "WHILE")], ops
    prompt = [3, 4, 5, 6, 7]
    expected = models.generate(lm, [prompt], 32)[0].tolist()
    assert _device_greedy(path, prompt, 32) == expected


def test_seq2seq_on_device_equals_keras_greedy(tmp_path):
    model = models.seq2seq(30, 40, 8, 20, num_layers=1, hidden_dim=16,
                           num_heads=2, dropout=0.0, position="rotary")
    path = export_generator_tflite(model, tmp_path / "s2s.tflite",
                                   max_length=20)
    source = [5, 6, 7, 8, 9, 0, 0, 0]
    expected = models.generate(model, [[1]], 19,
                               encoder_token_ids=np.array([source]))
    assert _device_greedy(path, [1], 19, source) == expected[0].tolist()


def test_bad_arguments(tmp_path):
    lm = models.decoder_lm(60, 16, num_layers=1, hidden_dim=16, num_heads=2)
    with pytest.raises(ValueError, match="sequence_length=16"):
        export_generator_tflite(lm, tmp_path / "x.tflite", max_length=32)
    with pytest.raises(ValueError, match="max_length=0"):
        export_generator_tflite(lm, tmp_path / "x.tflite", max_length=0)
    with pytest.raises(ValueError, match="quantization='int4'"):
        export_generator_tflite(lm, tmp_path / "x.tflite", max_length=8,
                                quantization="int4")
    assert not (tmp_path / "x.tflite").exists()
