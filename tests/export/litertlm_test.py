"""LiteRT-LM bundles: what is inside, and `litert_lm.Engine` generating
exactly `keras_attn.models.generate(..., sampler="greedy")`'s tokens.

The test vocabulary is `[PAD] [UNK] [BOS] [EOS] w4 w5 ...`: every token is
a whole word, so the engine's text reads back as ids exactly ("w12 w7" ->
[12, 7]) through the bundle's real WordPiece tokenizer.
"""

import inspect
import os
import re
import zlib

import keras
import numpy as np
import pytest

from keras_attn import models
from keras_attn.export import LiteRTLMReport
from keras_attn.export import converter
from keras_attn.export import description as description_lib
from keras_attn.export import export_litertlm
from keras_attn.export import hf_tokenizer
from keras_attn.export import litertlm
from keras_attn.export import metadata
from keras_attn_runtime import litertlm as runtime_litertlm
from keras_attn_runtime.tflite_file import TFLiteFile
from keras_attn_runtime.tflite_file import read_metadata

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="TFLite export needs the TensorFlow backend",
)

V, M = 40, 48
VOCABULARY = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"] + [
    f"w{i}" for i in range(4, V)]
BOS, EOS = 2, 3
PREFILL = (1, 8, 32)
# 1 to 3 prefill calls (e.g. 33 + [BOS] = 32 + 1 + 1), up to the end of
# the context (40 + [BOS] + 7 new tokens = M).
PROMPT_LENGTHS = (1, 2, 7, 9, 17, 33, 40)


def _lm(position="learned", num_key_value_heads=None, seed=0):
    """A decoder_lm whose greedy tokens vary (random weights alone give
    near-uniform logits): embeddings x20 and kernels x2 widen the logit
    margins far beyond float32 rounding."""
    keras.utils.set_random_seed(seed)
    model = models.decoder_lm(V, M, num_layers=2, hidden_dim=32, num_heads=4,
                              num_key_value_heads=num_key_value_heads,
                              position=position, dropout=0.0)
    for weight in model.weights:
        if "embeddings" in weight.path:
            weight.assign(weight.numpy() * 20)
        elif "kernel" in weight.path:
            weight.assign(weight.numpy() * 2)
    return model


def _text(ids):
    return " ".join(VOCABULARY[i] for i in ids)


def _ids(text):
    return [VOCABULARY.index(word) for word in text.split()]


def _engine(path):
    litert_lm = pytest.importorskip("litert_lm")
    litert_lm.set_min_log_severity(litert_lm.LogSeverity.ERROR)
    return litert_lm.Engine(str(path), backend=litert_lm.Backend.CPU(),
                            cache_dir=":nocache")


def _session(engine, new_tokens):
    import litert_lm

    return engine.create_session(
        apply_prompt_template=False,
        sampler_config=litert_lm.SamplerConfig(top_k=1),
        max_output_tokens=new_tokens)


def _keras_greedy(model, ids, new_tokens):
    """`generate`'s greedy tokens after `ids`, up to the stop token
    (excluded), and whether it stopped there. Every call has the same
    length M, so one compiled loop serves them all."""
    buffer_tokens = M - len(ids)
    out = models.generate(model, [ids], buffer_tokens, sampler="greedy",
                          stop_token_id=EOS)[0].tolist()[:new_tokens]
    if EOS in out:
        return out[:out.index(EOS)], True
    return out, False


def _check_engine_equals_keras(model, path):
    """Every prompt length, then a second turn in the same session."""
    engine = _engine(path)
    rng = np.random.default_rng(1)
    stopped = []
    for length in PROMPT_LENGTHS:
        prompt = [int(i) for i in rng.integers(4, V, length)]
        new_tokens = M - 1 - length
        session = _session(engine, new_tokens)
        session.run_prefill([_text(prompt)])
        got = _ids(session.run_decode().texts[0])
        session.close()
        expected, stop = _keras_greedy(model, [BOS] + prompt, new_tokens)
        assert got == expected, (length, got, expected)
        stopped.append(stop)
    # Second turn: the engine continues the cache; the last token of turn
    # 1 (the stop token when it stopped there) is fed first.
    # (turn 1 prompt, turn 2 prompt, max_output_tokens of both turns): the
    # second case's turn 2 reaches the end of the context.
    for first, second, new_tokens in ((5, 3, 4), (9, 20, 10)):
        p1 = [int(i) for i in rng.integers(4, V, first)]
        p2 = [int(i) for i in rng.integers(4, V, second)]
        session = _session(engine, new_tokens)
        session.run_prefill([_text(p1)])
        out1 = _ids(session.run_decode().texts[0])
        turn1, stop = _keras_greedy(model, [BOS] + p1, new_tokens)
        assert out1 == turn1
        sequence = [BOS] + p1 + out1 + [EOS] * stop + p2
        session.run_prefill([_text(p2)])
        out2 = _ids(session.run_decode().texts[0])
        session.close()
        turn2, _ = _keras_greedy(model, sequence,
                                 min(new_tokens, M - len(sequence)))
        assert out2 == turn2, (first, second)
    engine.close()
    return stopped


@pytest.fixture(scope="module")
def rotary_gqa(tmp_path_factory):
    """Rotary positions and grouped-query heads (K=2): the bundle and its
    model."""
    model = _lm("rotary", num_key_value_heads=2, seed=2)
    path = tmp_path_factory.mktemp("litertlm") / "lm.litertlm"
    report = export_litertlm(model, path, VOCABULARY, prefill_lengths=PREFILL,
                             sample_prompts=[])
    return model, report


def test_engine_generates_keras_greedy_tokens(rotary_gqa):
    model, report = rotary_gqa
    stopped = _check_engine_equals_keras(model, report.path)
    # Both kinds ran: generations that end at the stop token and
    # generations that end at max_output_tokens or the context's end.
    assert any(stopped) and not all(stopped), stopped


@pytest.mark.large
@pytest.mark.parametrize("position", ["learned", "sinusoidal", "rotary"])
@pytest.mark.parametrize("num_key_value_heads", [None, 2, 1])
def test_engine_generates_keras_greedy_tokens_everywhere(
        position, num_key_value_heads, tmp_path):
    model = _lm(position, num_key_value_heads)
    path = export_litertlm(model, tmp_path / "lm.litertlm", VOCABULARY,
                           prefill_lengths=PREFILL, sample_prompts=[]).path
    _check_engine_equals_keras(model, path)


def _sections(path):
    """`{section type: bytes}` of a bundle."""
    data = open(path, "rb").read()
    return {section["type"]: data[section["begin"]:section["end"]]
            for section in runtime_litertlm.read_bundle(path)["sections"]}


def test_bundle_holds_metadata_model_and_tokenizer(rotary_gqa):
    from litert_lm_builder.runtime.proto import llm_metadata_pb2
    from tokenizers import Tokenizer

    model, report = rotary_gqa
    sections = _sections(report.path)
    assert set(sections) == {"LlmMetadataProto", "TFLiteModel",
                             "HF_Tokenizer_Zlib"}
    proto = llm_metadata_pb2.LlmMetadata.FromString(
        sections["LlmMetadataProto"])
    assert list(proto.start_token.token_ids.ids) == [BOS]
    assert [list(t.token_ids.ids) for t in proto.stop_tokens] == [[EOS]]
    assert proto.max_num_tokens == M
    assert proto.llm_model_type.HasField("generic_model")

    # The model: LiteRT-LM's signature names and heads-first caches.
    inner = TFLiteFile(sections["TFLiteModel"], name="model")
    signatures = inner.signatures
    assert set(signatures) == {"prefill_1", "prefill_8", "prefill_32",
                               "decode"}
    cache = (1, 2, M, 8)  # (1, K, M, H)
    for name, spec in signatures.items():
        length = 1 if name == "decode" else int(name.split("_")[1])
        inputs = {key: tuple(value["shape"])
                  for key, value in spec["inputs"].items()}
        caches = {f"kv_cache_{kind}_{i}": cache for i in range(2)
                  for kind in "kv"}
        assert inputs == {"tokens": (1, length), "input_pos": (length,),
                          **caches}
        outputs = {key: tuple(value["shape"])
                   for key, value in spec["outputs"].items()}
        assert outputs == dict(caches, **(
            {"logits": (1, 1, V)} if name == "decode" else {}))
    ops = {name for name, _ in inner.op_codes}
    assert "EMBEDDING_LOOKUP" in ops and "GATHER" not in ops
    assert not [op for op in ops if op.startswith("FLEX")
                or op in ("CUSTOM", "WHILE")]
    assert report.ops == sorted(ops)

    # Our description in the model and in the bundle's header, without
    # the vocabulary (the tokenizer holds it; the engine reads 16 KB of
    # header). The model's tensors are unnamed, its signatures named.
    description = read_metadata(sections["TFLiteModel"])
    assert description == runtime_litertlm.read_description(report.path)
    assert description == report.description
    assert "vocabulary" not in description
    assert description["special_tokens"] == {
        "pad": "[PAD]", "unk": "[UNK]", "bos": "[BOS]", "eos": "[EOS]"}
    assert description["max_length"] == M
    assert description["litert_lm"] == {
        "prefill_lengths": list(PREFILL), "vocabulary_size": V,
        "stop_tokens": ["[EOS]"]}
    assert {name for _, name, *_ in _tensors(sections["TFLiteModel"])} == {
        ""}
    assert "40 tokens, in the bundle" in report.table()

    # The tokenizer: zlib-compressed tokenizer.json after its size.
    size = int.from_bytes(sections["HF_Tokenizer_Zlib"][:8], "little")
    text = zlib.decompress(sections["HF_Tokenizer_Zlib"][8:])
    assert len(text) == size
    tokenizer = Tokenizer.from_str(text.decode("utf-8"))
    assert tokenizer.encode("W5 w17, w39", add_special_tokens=False).ids \
        == [5, 17, VOCABULARY.index("[UNK]"), 39]


def test_decode_never_gives_padding_and_equals_keras(rotary_gqa):
    """The bundle's `decode`, run by LiteRT as the engine does: its logits
    are the Keras model's, except id 0's, which can never win."""
    from ai_edge_litert.interpreter import Interpreter

    model, report = rotary_gqa
    interpreter = Interpreter(
        model_content=_sections(report.path)["TFLiteModel"])
    decode = interpreter.get_signature_runner("decode")
    caches = {name: np.zeros(spec["shape"], "float32")
              for name, spec in decode.get_input_details().items()
              if name.startswith("kv_cache")}
    prompt = [BOS, 7, 21, 33, 5]
    buffer = np.zeros((1, M), "int32")
    buffer[0, :len(prompt)] = prompt
    expected = keras.ops.convert_to_numpy(model(buffer))[0]
    for index, token in enumerate(prompt):
        out = decode(tokens=np.array([[token]], "int32"),
                     input_pos=np.array([index], "int32"), **caches)
        caches = {name: out[name] for name in caches}
        np.testing.assert_allclose(out["logits"][0, 0, 1:],
                                   expected[index, 1:], atol=2e-4)
        assert out["logits"][0, 0, 0] <= -1e8


def test_report_checks_the_engine(tmp_path):
    pytest.importorskip("litert_lm")
    model = _lm("learned", seed=3)
    report = export_litertlm(model, tmp_path / "lm.litertlm", VOCABULARY,
                             max_length=24, prefill_lengths=(1, 8))
    assert isinstance(report, LiteRTLMReport)
    assert os.fspath(report) == report.path == str(tmp_path / "lm.litertlm")
    assert report.prompts == 3 and report.identical == 3, report.table()
    assert report.prefill_lengths == [1, 8] and report.max_length == 24
    assert report.size_bytes == os.path.getsize(report.path)
    assert report.model_bytes < report.size_bytes
    assert report.decode_ms > 0
    table = report.table()
    assert "3/3 prompts" in table
    assert f"keras-attn generate {report.path} --prompt" in table


def _tensors(model_bytes):
    """`[(subgraph, tensor name, type name, shape, buffer)]` of a .tflite."""
    from tensorflow.lite.python import schema_py_generated as schema

    types = {value: name for name, value in vars(schema.TensorType).items()
             if not name.startswith("_")}
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(model_bytes, 0))
    return [(graph.name.decode(), (tensor.name or b"").decode(),
             types[tensor.type],
             tuple(tensor.shape), tensor.buffer)
            for graph in model.subgraphs for tensor in graph.tensors]


def _weight_types(model_bytes):
    """`{component: weight types}` of the FULLY_CONNECTED and
    EMBEDDING_LOOKUP ops (the component from the op's output name; the
    output projection's output is a signature output)."""
    from tensorflow.lite.python import schema_py_generated as schema

    codes = {value: name for name, value in
             vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    types = {value: name for name, value in vars(schema.TensorType).items()
             if not name.startswith("_")}
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(model_bytes, 0))
    found = {}
    for graph in model.subgraphs:
        for op in graph.operators:
            code = model.operatorCodes[op.opcodeIndex]
            name = codes[max(code.builtinCode, code.deprecatedBuiltinCode)]
            if name not in ("FULLY_CONNECTED", "EMBEDDING_LOOKUP"):
                continue
            output = graph.tensors[op.outputs[0]].name.decode()
            weight = graph.tensors[op.inputs[1]]  # FC: kernel; EL: table
            if np.prod(weight.shape) < converter.INT4_MIN_WEIGHTS:
                continue  # stays float32 by design (rotary angles)
            component = next((part for part in ("self_attention",
                                                "feedforward")
                              if part in output), "embedding")
            found.setdefault(component, set()).add(types[weight.type])
    return found


def _outside_buffers(model_bytes):
    """How many buffers of a .tflite lie after its flatbuffer."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.Model.GetRootAs(model_bytes, 0)
    return sum(model.Buffers(i).Offset() > 1
               for i in range(model.BuffersLength()))


def _decode_logits(model_bytes, tokens):
    from ai_edge_litert.interpreter import Interpreter

    decode = Interpreter(model_content=model_bytes).get_signature_runner(
        "decode")
    caches = {name: np.zeros(spec["shape"], "float32")
              for name, spec in decode.get_input_details().items()
              if name.startswith("kv_cache")}
    logits = []
    for index, token in enumerate(tokens):
        out = decode(tokens=np.array([[token]], "int32"),
                     input_pos=np.array([index], "int32"), **caches)
        caches = {name: out[name] for name in caches}
        logits.append(out["logits"][0, 0, 1:])
    return np.array(logits)


def test_int4_quantizes_the_table_once_and_stays_close(tmp_path):
    """int4 block 32: one int4 table shared by the lookup and the output
    projection (no float copy), about a sixth of the float32 size, logits
    near Keras's float32 ones."""
    keras.utils.set_random_seed(0)
    vocabulary_size, length = 1000, 24
    model = models.decoder_lm(vocabulary_size, length, num_layers=2,
                              hidden_dim=128, num_heads=4,
                              num_key_value_heads=2, dropout=0.0)
    float32 = litertlm.convert_litertlm_model(model, length, [1, 8])
    int4 = converter.quantize_int4(float32, 32)
    assert len(int4) < 0.22 * len(float32), (len(int4), len(float32))
    tables = {(kind, buffer) for _, _, kind, shape, buffer in _tensors(int4)
              if shape == (vocabulary_size, 128)}
    assert [kind for kind, _ in tables] == ["INT4"], tables
    tokens = [5, 17, 300, 42, 7, 999, 12]
    buffer = np.zeros((1, length), "int32")
    buffer[0, :len(tokens)] = tokens
    expected = keras.ops.convert_to_numpy(model(buffer))[0, :len(tokens), 1:]
    error = _decode_logits(int4, tokens) - expected
    relative = np.sqrt(np.mean(error ** 2) / np.mean(expected ** 2))
    assert relative < 0.35, relative  # float32: ~1e-6, dynamic int8: ~0.02
    # ai-edge-quantizer appends the weights after the flatbuffer (a file
    # with 256 KB of weights or more); embedding our description moves
    # them inside, and the file computes the same.
    embedded = metadata.embed(int4, description_lib.describe(
        "generator", "decoder_lm", "int4", max_length=length,
        kv_cache="tensors"))
    assert _outside_buffers(int4) > 0 and _outside_buffers(embedded) == 0
    np.testing.assert_array_equal(_decode_logits(embedded, tokens),
                                  _decode_logits(int4, tokens))
    assert read_metadata(embedded)["quantization"] == "int4"

    # Components: the feedforward weights alone.
    ffn = converter.quantize_int4(float32, 32, ["ffn"])
    assert _weight_types(ffn) == {"self_attention": {"FLOAT32"},
                                  "feedforward": {"INT4"},
                                  "embedding": {"FLOAT32"}}
    assert _weight_types(int4) == {"self_attention": {"INT4"},
                                   "feedforward": {"INT4"},
                                   "embedding": {"INT4"}}
    assert len(int4) < len(ffn) < len(float32)


@pytest.mark.large
def test_int4_bundle_runs_in_the_engine(tmp_path):
    pytest.importorskip("litert_lm")
    model = _lm("rotary", num_key_value_heads=1, seed=3)
    report = export_litertlm(model, tmp_path / "lm.litertlm", VOCABULARY,
                             max_length=24, prefill_lengths=(1, 8),
                             quantization="int4", sample_prompts=[])
    assert report.quantization == "int4"
    assert runtime_litertlm.read_description(report.path)["litert_lm"][
        "int4"] == {"block_size": 32,
                    "components": ["attention", "ffn", "embedding"]}
    with runtime_litertlm.LiteRTLMGenerator(report.path) as generator:
        text = generator.generate("w5 w6 w7", 8)
    assert 1 <= len(_ids(text)) <= 8


def test_bundle_write_is_atomic(rotary_gqa, tmp_path, monkeypatch):
    import litert_lm_builder

    _, report = rotary_gqa
    sections = _sections(report.path)
    path = tmp_path / "lm.litertlm"
    path.write_bytes(b"old")

    def fail(self, stream, **kwargs):
        stream.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(litert_lm_builder.LitertLmFileBuilder, "build", fail)
    with pytest.raises(OSError, match="disk full"):
        litertlm.write_bundle(path, sections["TFLiteModel"], "{}",
                              litertlm.llm_metadata(BOS, [EOS], M))
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["lm.litertlm"]


def test_bad_arguments(tmp_path):
    model = _lm()
    path = tmp_path / "lm.litertlm"
    translator = models.seq2seq(30, 30, 8, 8, num_layers=1, hidden_dim=16,
                                num_heads=2)
    with pytest.raises(ValueError, match="seq2seq is not a LiteRT-LM model "
                                         "type.*export_generator_tflite"):
        export_litertlm(translator, path, VOCABULARY[:30])
    classifier = models.encoder_classifier(V, 8, 2, num_layers=1,
                                           hidden_dim=16, num_heads=2)
    with pytest.raises(ValueError, match="expected a decoder_lm"):
        export_litertlm(classifier, path, VOCABULARY)
    cases = [
        (dict(prefill_lengths=(8, 32)), "expected 1 among them"),
        (dict(prefill_lengths=(1, 64)), r"\[1, max_length=48\]"),
        (dict(max_length=64), "exceeds the model's learned positions"),
        (dict(stop_tokens=()), "Stop tokens are required"),
        (dict(stop_tokens=("[END]",)), "`stop_tokens`.*'\\[END\\]'"),
        (dict(start_token="<s>"), "`start_token`"),
        (dict(quantization="float16"), "`quantization`"),
        (dict(quantization="int4", int4_block_size=64),
         r"divisor of the model width \(32\)"),
        (dict(int4_block_size=48), "`int4_block_size`"),
        (dict(int4_components=("attention", "mlp")), "`int4_components`"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            export_litertlm(model, path, VOCABULARY, **kwargs)
    with pytest.raises(TypeError, match="sequence of positive integers"):
        export_litertlm(model, path, VOCABULARY, prefill_lengths="1,8")
    with pytest.raises(ValueError, match="`vocabulary`.*expected 40"):
        export_litertlm(model, path, VOCABULARY[:30])
    with pytest.raises(ValueError, match="`vocabulary`.*Received: "
                                         "vocabulary=None"):
        export_litertlm(model, path, None)
    assert not path.exists()


FENCE = re.compile(r"```python\n(.*?)```", re.S)


@pytest.mark.parametrize("obj", [
    LiteRTLMReport, hf_tokenizer.tokenizer_json,
    pytest.param(export_litertlm, marks=pytest.mark.large),
], ids=lambda obj: obj.__name__)
def test_docstring_example_runs(obj):
    (code,) = FENCE.findall(inspect.getdoc(obj))
    exec(compile(code, "<example>", "exec"), {})
