"""Self-describing exports: the description each exporter builds follows
the contract (format `keras_attn/1`), what the caller gives is checked
against the model before anything is written, and the description is
embedded in the .tflite's metadata (read back here with LiteRT's schema,
not with keras_attn's reader)."""

import json
import os

import keras
import numpy as np
import pytest

from keras_attn import models
from keras_attn.export import description
from keras_attn.export import export_generator_tflite
from keras_attn.export import export_tflite
from keras_attn.version import __version__

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="TFLite export needs the TensorFlow backend",
)

RESERVED = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]
VOCABULARY = RESERVED + [f"w{i}" for i in range(26)]
SOURCE_VOCABULARY = RESERVED + [f"s{i}" for i in range(16)]


def _classifier():
    return models.encoder_classifier(30, 8, num_classes=3, num_layers=1,
                                     hidden_dim=16, num_heads=2)


def _translator():
    return models.seq2seq(20, 30, 6, 10, num_layers=1, hidden_dim=16,
                          num_heads=2, dropout=0.0)


def embedded_description(path):
    """The JSON of the `keras_attn` entry of `Model.metadata`, or `None`."""
    from ai_edge_litert import schema_py_generated as schema

    with open(path, "rb") as f:
        model = schema.Model.GetRootAs(f.read(), 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name().decode() == "keras_attn":
            data = model.Buffers(entry.Buffer()).DataAsNumpy()
            return json.loads(data.tobytes().decode("utf-8"))
    return None


def test_description_follows_the_contract():
    found = description.describe(
        "generator", "seq2seq", "dynamic_int8", vocabulary=VOCABULARY,
        source_vocabulary=SOURCE_VOCABULARY, lowercase=False,
        generation_config={"sampler": "top_k", "top_k": 5},
        max_length=10, source_length=6, kv_cache="tensors",
        sequence_length=None,
    )
    assert found == {
        "format": "keras_attn/1",
        "keras_attn_version": __version__,
        "kind": "generator",
        "model_type": "seq2seq",
        "vocabulary": VOCABULARY,
        "source_vocabulary": SOURCE_VOCABULARY,
        "lowercase": False,
        "special_tokens": {"pad": "[PAD]", "unk": "[UNK]", "bos": "[BOS]",
                           "eos": "[EOS]"},
        "max_length": 10,
        "source_length": 6,
        "kv_cache": "tensors",
        "quantization": "dynamic_int8",
        "generation": {"sampler": "top_k", "top_k": 5},
    }
    # Without a vocabulary: kind, lengths and quantization only.
    assert description.describe(
        "classifier", "encoder_classifier", None, sequence_length=8,
    ) == {"format": "keras_attn/1", "keras_attn_version": __version__,
          "kind": "classifier", "model_type": "encoder_classifier",
          "sequence_length": 8, "quantization": None}
    # Special tokens: only the reserved tokens the vocabulary holds.
    assert description.describe(
        "classifier", "other", None, vocabulary=["[PAD]", "[UNK]", "a"],
    )["special_tokens"] == {"pad": "[PAD]", "unk": "[UNK]"}


def test_model_type_by_structure():
    ids = keras.Input((4,), dtype="int32", name="token_ids")
    regressor = keras.Model(ids, keras.layers.Embedding(10, 3)(ids))
    assert [description.model_type(model) for model in (
        _classifier(), models.decoder_lm(30, 8, num_layers=1,
                                         hidden_dim=16, num_heads=2),
        _translator(), regressor,
    )] == ["encoder_classifier", "decoder_lm", "seq2seq", "other"]


def test_classifier_arguments_are_checked_before_writing(tmp_path):
    model = _classifier()
    path = tmp_path / "c.tflite"
    with pytest.raises(ValueError, match=r"`class_names`, expected 3 "
                       r"entries .*Received: class_names with 2 entries"):
        export_tflite(model, path, class_names=["a", "b"])
    with pytest.raises(ValueError, match=r"`vocabulary`, expected 30 "
                       r"entries .*Received: vocabulary with 31 entries"):
        export_tflite(model, path, vocabulary=VOCABULARY + ["extra"])
    with pytest.raises(TypeError, match="`class_names`, expected a "
                       "non-empty list of str"):
        export_tflite(model, path, class_names=[0, 1, 2])
    with pytest.raises(TypeError, match="`lowercase`"):
        export_tflite(model, path, vocabulary=VOCABULARY, lowercase="yes")
    lm = models.decoder_lm(30, 8, num_layers=1, hidden_dim=16, num_heads=2)
    with pytest.raises(ValueError, match=r"shape \(batch, classes\)"):
        export_tflite(lm, path, class_names=["a", "b", "c"])
    assert os.listdir(tmp_path) == []


def test_token_ids_must_be_integers_in_the_vocabulary(tmp_path):
    """Float ids are refused, not cast (a cast hid data that is not ids),
    and ids past the embedding are refused before TFLite reads out of
    bounds."""
    model = _classifier()
    path = tmp_path / "c.tflite"
    with pytest.raises(TypeError, match=r"`sample_inputs\['token_ids'\]` "
                       r"to hold integer token ids.*dtype float64"):
        export_tflite(model, path, sample_inputs=np.ones((2, 8)))
    with pytest.raises(ValueError, match=r"outside \[0, 30\).*e\.g\. 30"):
        export_tflite(model, path, sample_inputs=np.full((1, 8), 30))
    with pytest.raises(ValueError, match=r"representative_data.*outside"):
        export_tflite(model, path, quantization="int8",
                      representative_data=np.full((4, 8), -1))
    translator = _translator()
    with pytest.raises(ValueError, match=r"encoder_token_ids'\]` holds ids "
                       r"outside \[0, 20\)"):
        export_tflite(translator, path, sample_inputs={
            "encoder_token_ids": np.full((1, 6), 25),
            "decoder_token_ids": np.ones((1, 10), "int32")})
    assert os.listdir(tmp_path) == []


def test_generation_config_is_checked(tmp_path):
    lm = models.decoder_lm(30, 8, num_layers=1, hidden_dim=16, num_heads=2)
    path = tmp_path / "lm.tflite"
    with pytest.raises(ValueError, match=r"unknown keys: \['beam'\]"):
        export_generator_tflite(lm, path, generation_config={"beam": 4})
    with pytest.raises(ValueError, match="`sampler`"):
        export_generator_tflite(lm, path, generation_config={
            "sampler": "beam"})
    with pytest.raises(ValueError, match="`top_p`"):
        export_generator_tflite(lm, path, generation_config={
            "sampler": "top_p", "top_p": 2.0})
    with pytest.raises(ValueError, match=r"stop_token='\[END\]'"):
        export_generator_tflite(lm, path, vocabulary=VOCABULARY,
                                generation_config={"stop_token": "[END]"})
    with pytest.raises(TypeError, match="`generation_config`, expected a "
                       "dict"):
        export_generator_tflite(lm, path, generation_config="greedy")
    assert os.listdir(tmp_path) == []


def test_classifier_file_carries_its_vocabulary_and_class_names(tmp_path):
    model = _classifier()
    ids = np.array([[5, 6, 7, 0, 0, 0, 0, 0], [9, 8, 7, 6, 5, 4, 3, 2]])
    report = export_tflite(model, tmp_path / "c.tflite", sample_inputs=ids,
                           vocabulary=VOCABULARY, class_names=["a", "b", "c"],
                           latency_runs=1)
    assert report.max_abs_diff < 1e-5  # the metadata changes no output
    assert embedded_description(report.path) == report.description == {
        "format": "keras_attn/1", "keras_attn_version": __version__,
        "kind": "classifier", "model_type": "encoder_classifier",
        "vocabulary": VOCABULARY, "lowercase": True,
        "special_tokens": {"pad": "[PAD]", "unk": "[UNK]", "bos": "[BOS]",
                           "eos": "[EOS]"},
        "class_names": ["a", "b", "c"], "sequence_length": 8,
        "quantization": None,
    }
    assert report.next_command == f"keras-attn classify {report.path} Hello"


def test_translator_file_carries_both_vocabularies(tmp_path):
    config = {"sampler": "greedy", "start_token": "[BOS]",
              "stop_token": "[EOS]"}
    report = export_generator_tflite(
        _translator(), tmp_path / "t.tflite", vocabulary=VOCABULARY,
        source_vocabulary=SOURCE_VOCABULARY, generation_config=config,
        quantization="float16", sample_prompts=[])
    found = embedded_description(report.path)
    assert found == report.description
    assert found["vocabulary"] == VOCABULARY
    assert found["source_vocabulary"] == SOURCE_VOCABULARY
    assert {key: found[key] for key in (
        "kind", "model_type", "max_length", "source_length", "kv_cache",
        "quantization", "generation")} == {
        "kind": "generator", "model_type": "seq2seq", "max_length": 10,
        "source_length": 6, "kv_cache": "variables",
        "quantization": "float16", "generation": config}
    assert report.next_command == f"keras-attn generate {report.path} " \
        "--source Hello"


