"""`keras_attn.export.metadata`: the description goes in, comes back out
unchanged through the TensorFlow-free reader, and the rest of the file
keeps its meaning (same signatures, ops, converter metadata, outputs)."""

import json

import keras
import numpy as np
import pytest

from keras_attn import models
from keras_attn.export import export_generator_tflite
from keras_attn.export import export_tflite
from keras_attn.export import metadata
from keras_attn_runtime import TFLiteFile
from keras_attn_runtime import read_metadata

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="exporting the .tflite files needs the TensorFlow backend",
)

VOCABULARY = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"] + [f"w{i}" for i in range(26)]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    keras.utils.set_random_seed(7)
    directory = tmp_path_factory.mktemp("metadata")
    classifier = models.encoder_classifier(30, 8, num_classes=3,
                                           num_layers=1, hidden_dim=16,
                                           num_heads=2)
    export_tflite(classifier, directory / "classifier.tflite",
                  quantization="dynamic_int8")
    lm = models.decoder_lm(30, 12, num_layers=1, hidden_dim=16, num_heads=2)
    export_generator_tflite(lm, directory / "lm.tflite", 12)
    translator = models.seq2seq(20, 30, 6, 10, num_layers=1, hidden_dim=8,
                                num_heads=2)
    export_generator_tflite(translator, directory / "translator.tflite", 10,
                            kv_cache="tensors")
    return {name: (directory / f"{name}.tflite").read_bytes()
            for name in ("classifier", "lm", "translator")}


def outputs(model_bytes, signature, inputs):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model_bytes)
    return interpreter.get_signature_runner(signature)(**inputs)


def test_round_trip_keeps_the_model_and_reads_back(files):
    described = {}
    for name, extra in (
        ("classifier", dict(class_names=["a", "b", "c"],
                            quantization="dynamic_int8",
                            model_type="encoder_classifier")),
        ("lm", dict(generation_config={"sampler": "top_k", "top_k": 5,
                                       "repetition_penalty": 1.3,
                                       "no_repeat_ngram_size": 2})),
        ("translator", dict(source_vocabulary=VOCABULARY[:20],
                            lowercase=False)),
    ):
        before = files[name]
        description = metadata.describe(before, vocabulary=VOCABULARY,
                                        **extra)
        after = metadata.embed(before, description)
        assert read_metadata(after) == description
        # JSON through and through: what was written is what was read.
        assert json.loads(json.dumps(description)) == description
        old, new = TFLiteFile(before), TFLiteFile(after)
        assert new.signatures == old.signatures
        assert new.op_codes == old.op_codes
        # The exporter's own entry is replaced, every other one kept as is.
        others = [n for n in old.metadata_names if n != "keras_attn"]
        assert new.metadata_names == others + ["keras_attn"]
        for entry in others:
            assert new.metadata_buffer(entry) == old.metadata_buffer(entry)
        # Embedding again replaces the entry instead of adding one.
        assert metadata.embed(after, description) == after
        described[name] = (description, before, after)

    description, before, after = described["classifier"]
    assert description["kind"] == "classifier"
    assert description["sequence_length"] == 8
    assert description["special_tokens"] == {
        "pad": "[PAD]", "unk": "[UNK]", "bos": "[BOS]", "eos": "[EOS]"}
    ids = {"token_ids": np.array([[5, 6, 7, 0, 0, 0, 0, 0]], np.int32)}
    np.testing.assert_array_equal(
        outputs(after, "serving_default", ids)["classifier_head"],
        outputs(before, "serving_default", ids)["classifier_head"])

    description, before, after = described["lm"]
    assert (description["kind"], description["model_type"],
            description["max_length"], description["kv_cache"]) == (
        "generator", "decoder_lm", 12, "variables")
    prompt = np.zeros((1, 12), np.int32)
    prompt[0, :3] = [2, 9, 10]
    args = {"token_ids": prompt, "length": np.array(3, np.int32)}
    np.testing.assert_array_equal(outputs(after, "prefill", args)["logits"],
                                  outputs(before, "prefill", args)["logits"])

    description, _, _ = described["translator"]
    assert (description["model_type"], description["source_length"],
            description["kv_cache"], description["lowercase"]) == (
        "seq2seq", 6, "tensors", False)


def test_arguments_that_do_not_fit_the_model_are_named(files):
    cases = [
        ("classifier", dict(vocabulary=VOCABULARY[:10]),
         "`vocabulary`, expected 30 entries"),
        ("classifier", dict(class_names=["a", "b"]),
         "`class_names`, expected 3 entries"),
        ("lm", dict(vocabulary=VOCABULARY + ["extra"]),
         "`vocabulary`, expected 30 entries"),
        ("translator", dict(source_vocabulary=VOCABULARY),
         "`source_vocabulary`, expected 20 entries"),
        ("lm", dict(generation_config={"sampler": "beam"}),
         "sampler='beam'"),
        ("lm", dict(vocabulary=VOCABULARY,
                    generation_config={"stop_token": "[END]"}),
         "stop_token '\\[END\\]' is not in the vocabulary"),
        ("lm", dict(quantization="int3"), "quantization='int3'"),
        ("classifier", dict(class_names=["a", "a", "b"]),
         "distinct non-empty names"),
    ]
    for name, arguments, message in cases:
        with pytest.raises(ValueError, match=message):
            metadata.describe(files[name], **arguments)
    with pytest.raises(ValueError, match="Unsupported description format"):
        metadata.embed(files["lm"], {"format": "keras_attn/2",
                                     "kind": "generator"})
    good = metadata.describe(files["lm"])
    with pytest.raises(ValueError, match="`vocabulary`, expected 30"):
        metadata.embed(files["lm"], dict(good, vocabulary=VOCABULARY[:5]))
    with pytest.raises(ValueError, match="neither a classifier's"):
        metadata.describe(_without_signatures(files["lm"]))


def _without_signatures(model_bytes):
    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(model_bytes, 0))
    model.signatureDefs = []
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def test_a_malformed_description_in_a_file_is_a_clear_error(files,
                                                            tmp_path):
    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as schema

    good = metadata.embed(files["lm"], metadata.describe(files["lm"]))
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(good, 0))
    entry = next(m for m in model.metadata if m.name == b"keras_attn")
    path = tmp_path / "bad.tflite"
    for payload, message in ((b"{not json", "is not UTF-8 JSON"),
                             (b'{"format": "keras_attn/1", "kind": "x"}',
                              "malformed 'keras_attn' description")):
        model.buffers[entry.buffer].data = np.frombuffer(payload, np.uint8)
        builder = flatbuffers.Builder(1024)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        path.write_bytes(builder.Output())
        with pytest.raises(ValueError, match=message) as info:
            read_metadata(path)
        assert str(path) in str(info.value)


def test_embed_file_rewrites_atomically(files, tmp_path):
    path = tmp_path / "lm.tflite"
    path.write_bytes(files["lm"])
    metadata.embed_file(path, metadata.describe(files["lm"],
                                                vocabulary=VOCABULARY))
    assert read_metadata(path)["vocabulary"] == VOCABULARY
    assert [p.name for p in tmp_path.iterdir()] == ["lm.tflite"]
    with pytest.raises(FileNotFoundError, match="nowhere.tflite"):
        metadata.embed_file(tmp_path / "nowhere.tflite", {})
