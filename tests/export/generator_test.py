"""On-device generation: the prefill/decode TFLite file, run with
ai-edge-litert and NumPy only, returns exactly Keras's greedy tokens."""

import inspect
import os
import re

import keras
import numpy as np
import pytest

from keras_attn import models
from keras_attn.export import GENERATOR_QUANTIZATIONS
from keras_attn.export import GeneratorReport
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


def _transposed_shapes(path, signature):
    """Input shapes of the TRANSPOSE ops of one signature's subgraph, read
    with LiteRT's flatbuffer schema."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(open(path, "rb").read(), 0)
    transpose = schema.BuiltinOperator.TRANSPOSE
    for i in range(model.SignatureDefsLength()):
        if model.SignatureDefs(i).SignatureKey().decode() == signature:
            graph = model.Subgraphs(model.SignatureDefs(i).SubgraphIndex())
    shapes = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        if max(code.BuiltinCode(), code.DeprecatedBuiltinCode()) == transpose:
            shapes.append(graph.Tensors(op.Inputs(0)).ShapeAsNumpy().tolist())
    return shapes


def _check_ops(path, kv_cache, max_length):
    ops = tflite_ops(path)
    assert "DYNAMIC_UPDATE_SLICE" in ops
    assert not [op for op in ops if op.startswith("FLEX")
                or op in ("CUSTOM", "WHILE")], ops
    # The cache is never sliced element by element (rank-5/6
    # STRIDED_SLICE is a slow per-element copy on TFLite).
    if kv_cache == "variables":
        assert {"READ_VARIABLE", "ASSIGN_VARIABLE"} <= set(ops), ops
    # The heads-first cache is attended in place: no tensor as long as the
    # cache (M is no other size of the test models) is transposed per token.
    assert not [shape for shape in _transposed_shapes(path, "decode")
                if max_length in shape]


@pytest.mark.parametrize("kv_cache", ["variables", "tensors"])
def test_decoder_lm_on_device_equals_keras_greedy(kv_cache, tmp_path):
    lm = models.decoder_lm(60, 40, num_layers=2, hidden_dim=32, num_heads=4,
                           num_key_value_heads=2, dropout=0.0)
    # sample_prompts=[]: this test checks the parity itself.
    path = export_generator_tflite(lm, tmp_path / "lm.tflite", max_length=40,
                                   kv_cache=kv_cache, sample_prompts=[]).path
    _check_ops(path, kv_cache, 40)
    prompt = [3, 4, 5, 6, 7]
    expected = recompute_greedy(lm, prompt, 32)
    assert _device_greedy(path, prompt, 32) == expected
    # A second sequence in the same file starts afresh.
    assert _device_greedy(path, [9, 8], 32) == recompute_greedy(
        lm, [9, 8], 32)


@pytest.mark.large
def test_sliding_window_lm_on_device_equals_keras_greedy(tmp_path):
    """A windowed decoder_lm keeps its window on the device: the cached
    decode steps equal the Keras model re-run over the whole window."""
    lm = models.decoder_lm(60, 24, num_layers=2, hidden_dim=16, num_heads=4,
                           num_key_value_heads=2, dropout=0.0,
                           position="rotary", sliding_window=4)
    path = export_generator_tflite(lm, tmp_path / "lm.tflite", max_length=24,
                                   sample_prompts=[]).path
    _check_ops(path, "variables", 24)
    prompt = [3, 4, 5, 6, 7, 8]
    assert _device_greedy(path, prompt, 18) == recompute_greedy(
        lm, prompt, 18)


@pytest.mark.parametrize("kv_cache", ["variables", "tensors"])
def test_seq2seq_on_device_equals_keras_greedy(kv_cache, tmp_path):
    model = models.seq2seq(30, 40, 8, 20, num_layers=1, hidden_dim=16,
                           num_heads=2, dropout=0.0, position="rotary")
    path = export_generator_tflite(model, tmp_path / "s2s.tflite",
                                   max_length=20, kv_cache=kv_cache,
                                   sample_prompts=[]).path
    _check_ops(path, kv_cache, 20)
    for source in ([5, 6, 7, 8, 9, 0, 0, 0], [11, 12, 0, 0, 0, 0, 0, 0]):
        expected = recompute_greedy(model, [1], 19, source)
        assert _device_greedy(path, [1], 19, source) == expected


def test_quantized_stateful_generator_converts(tmp_path):
    lm = models.decoder_lm(60, 16, num_layers=1, hidden_dim=16, num_heads=2,
                           dropout=0.0)
    for quantization in ("float16", "dynamic_int8"):
        path = export_generator_tflite(lm, tmp_path / f"{quantization}.tflite",
                                       max_length=16,
                                       quantization=quantization,
                                       sample_prompts=[]).path
        _check_ops(path, "variables", 16)
        assert len(_device_greedy(path, [3, 4], 8)) == 8


def test_int4_generator_is_small_and_runs(tmp_path):
    """int4 weights (block 32) with the token table read by
    EMBEDDING_LOOKUP: one int4 table for the lookup and the output layer."""
    lm = models.decoder_lm(1000, 24, num_layers=2, hidden_dim=128,
                           num_heads=4, dropout=0.0)
    reports = {q: export_generator_tflite(lm, tmp_path / f"{q}.tflite",
                                          quantization=q, sample_prompts=[])
               for q in (None, "int4")}
    assert reports["int4"].size_bytes < 0.25 * reports[None].size_bytes
    assert "EMBEDDING_LOOKUP" in reports["int4"].ops
    assert "EMBEDDING_LOOKUP" not in reports[None].ops
    _check_ops(reports["int4"].path, "variables", 24)
    assert reports["int4"].description["quantization"] == "int4"
    assert len(_device_greedy(reports["int4"].path, [3, 4], 8)) == 8


def test_bad_arguments(tmp_path):
    lm = models.decoder_lm(60, 16, num_layers=1, hidden_dim=16, num_heads=2)
    with pytest.raises(ValueError, match="sequence_length=16"):
        export_generator_tflite(lm, tmp_path / "x.tflite", max_length=32)
    with pytest.raises(ValueError, match="max_length=0"):
        export_generator_tflite(lm, tmp_path / "x.tflite", max_length=0)
    with pytest.raises(ValueError, match="quantization='int2'"):
        export_generator_tflite(lm, tmp_path / "x.tflite", max_length=8,
                                quantization="int2")
    with pytest.raises(ValueError, match=r"divisor of the model width \(16\)"):
        export_generator_tflite(lm, tmp_path / "x.tflite", max_length=8,
                                quantization="int4")
    translator = models.seq2seq(30, 30, 8, 8, num_layers=1, hidden_dim=32,
                                num_heads=2)
    with pytest.raises(ValueError, match="implemented for decoder_lm"):
        export_generator_tflite(translator, tmp_path / "x.tflite",
                                quantization="int4")
    with pytest.raises(ValueError, match="kv_cache='state'"):
        export_generator_tflite(lm, tmp_path / "x.tflite", max_length=8,
                                kv_cache="state")
    # Static int8 is export_tflite's; the error lists what generators take.
    assert "int8" not in GENERATOR_QUANTIZATIONS
    with pytest.raises(ValueError, match="quantization='int8'") as error:
        export_generator_tflite(lm, tmp_path / "x.tflite", max_length=8,
                                quantization="int8")
    for choice in GENERATOR_QUANTIZATIONS:
        assert repr(choice) in str(error.value)
    assert "dynamic_int8" in str(error.value)
    assert not (tmp_path / "x.tflite").exists()


VOCABULARY = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"] + [f"w{i}" for i in range(56)]


@pytest.fixture(scope="module")
def lm_export(tmp_path_factory):
    """A float32 LM file exported with its vocabulary and sample prompts
    of the model's full length (N=4, L=24): some padded, one unpadded."""
    lm = models.decoder_lm(60, 24, num_layers=1, hidden_dim=16, num_heads=2,
                           dropout=0.0)
    rng = np.random.default_rng(3)
    prompts = rng.integers(1, 60, (4, 24)).astype("int32")
    for row, length in zip(prompts, (3, 7, 24, 1)):
        row[length:] = 0
    path = tmp_path_factory.mktemp("generator") / "lm.tflite"
    report = export_generator_tflite(lm, path, vocabulary=VOCABULARY,
                                     sample_prompts=prompts)
    return dict(lm=lm, prompts=prompts, report=report, path=str(path))


def _cut(prompts, room):
    """The prompts the report runs: tokens before the padding, at most
    `room` of them."""
    return [[int(t) for t in row[:room] if t] for row in prompts]


def test_report_describes_the_file_and_its_greedy_parity(lm_export):
    report, path, lm = lm_export["report"], lm_export["path"], lm_export["lm"]
    assert report.path == os.path.abspath(path)
    assert os.fspath(report) == report.path  # path-like
    assert report.size_bytes == os.path.getsize(path)
    assert report.ops == tflite_ops(report)
    assert (report.model_type, report.max_length, report.kv_cache,
            report.source_length) == ("decoder_lm", 24, "variables", None)
    # max_length 24: 12 new tokens, so prompts are cut to 12 tokens.
    assert report.new_tokens == 12
    assert (report.prompts, report.prompts_from) == (4, "sample_prompts")
    expected = 0
    for prompt in _cut(lm_export["prompts"], 12):
        expected += _device_greedy(path, prompt, 12) == recompute_greedy(
            lm, prompt, 12)
    assert report.identical == expected == 4
    assert report.prefill_ms > 0 and report.decode_ms > 0
    assert report.encode_ms is None
    table = report.table()
    for text in (report.path, "4/4 prompts (sample_prompts)",
                 "12 new tokens", "max_length 24", "ms/token",
                 report.next_command):
        assert text in table, table


def test_next_command_runs_the_file_with_what_it_lacks(lm_export):
    report = lm_export["report"]
    command = f"keras-attn generate {report.path} --prompt Hello"
    if report.description is None:  # no metadata writer: no vocabulary
        command += " --vocabulary vocabulary.txt"
    assert report.next_command == command


def test_parity_counts_prompts_where_keras_disagrees(lm_export):
    """The report's comparison against a model with other weights: its
    count equals an independent recount, and is below the prompt count."""
    from keras_attn.export import report as report_lib

    other = models.decoder_lm(60, 24, num_layers=1, hidden_dim=16,
                              num_heads=2, dropout=0.0)
    prompts = _cut(lm_export["prompts"], 12)
    found = report_lib.generator_parity(other, lm_export["path"], prompts,
                                        None, 12)
    expected = sum(
        _device_greedy(lm_export["path"], prompt, 12) == recompute_greedy(
            other, prompt, 12) for prompt in prompts)
    assert found["identical"] == expected < len(prompts)


def test_sample_prompts_are_integer_ids_of_the_vocabulary(tmp_path):
    lm = models.decoder_lm(60, 16, num_layers=1, hidden_dim=16, num_heads=2)
    path = tmp_path / "x.tflite"
    with pytest.raises(TypeError, match=r"`sample_prompts` to hold "
                       r"integer token ids\. Received: .*dtype float32"):
        export_generator_tflite(lm, path, sample_prompts=np.ones(
            (2, 4), "float32"))
    with pytest.raises(ValueError, match=r"ids outside \[0, 60\).*e\.g\. 60"):
        export_generator_tflite(lm, path, sample_prompts=[[5, 60]])
    with pytest.raises(ValueError, match=r"empty rows: \[1\]"):
        export_generator_tflite(lm, path, sample_prompts=[[5, 6], [0, 7]])
    with pytest.raises(ValueError, match=r"shape \(N, L\)"):
        export_generator_tflite(lm, path, sample_prompts=np.ones((1, 2, 3),
                                                                 int))
    assert os.listdir(tmp_path) == []


def test_vocabularies_are_checked_against_both_embeddings(tmp_path):
    model = models.seq2seq(30, 40, 8, 20, num_layers=1, hidden_dim=16,
                           num_heads=2)
    path = tmp_path / "x.tflite"
    target = [f"t{i}" for i in range(40)]
    with pytest.raises(ValueError, match=r"`source_vocabulary`, expected "
                       r"30 entries .*Received: source_vocabulary with 40"):
        export_generator_tflite(model, path, vocabulary=target,
                                source_vocabulary=target)
    with pytest.raises(ValueError, match=r"`vocabulary`, expected 40 "
                       r"entries .*Received: vocabulary with 30"):
        export_generator_tflite(model, path, vocabulary=target[:30])
    with pytest.raises(TypeError, match="`vocabulary`, expected a list"):
        export_generator_tflite(model, path, vocabulary="vocabulary.txt")
    lm = models.decoder_lm(40, 16, num_layers=1, hidden_dim=16, num_heads=2)
    with pytest.raises(ValueError, match="no `encoder_token_ids` input"):
        export_generator_tflite(lm, path, source_vocabulary=target)
    assert os.listdir(tmp_path) == []


@pytest.mark.large
def test_seq2seq_report_translates_sample_sources_like_keras(tmp_path):
    """`sample_prompts` of a seq2seq model are sources, cut or padded to
    the encoder length; the decoder starts from [BOS] (id 2 here)."""
    model = models.seq2seq(30, 40, 8, 12, num_layers=1, hidden_dim=16,
                           num_heads=2, dropout=0.0)
    sources = [[5, 6, 7], list(range(1, 12))]
    report = export_generator_tflite(
        model, tmp_path / "s2s.tflite", kv_cache="tensors",
        sample_prompts=sources, num_threads=2)
    assert (report.model_type, report.source_length, report.new_tokens,
            report.prompts) == ("seq2seq", 8, 11, 2)
    expected = 0
    for source in sources:
        padded = (source + [0] * 8)[:8]
        expected += _device_greedy(report.path, [2], 11, padded) == (
            recompute_greedy(model, [2], 11, padded))
    assert report.identical == expected == 2
    assert report.encode_ms > 0
    assert report.next_command.startswith(
        f"keras-attn generate {report.path} --source Hello")


def test_empty_sample_prompts_skip_the_parity_check(tmp_path):
    lm = models.decoder_lm(60, 16, num_layers=1, hidden_dim=16, num_heads=2)
    report = export_generator_tflite(lm, tmp_path / "lm.tflite",
                                     sample_prompts=[])
    assert (report.prompts, report.identical) == (0, 0)
    assert report.prefill_ms is None and report.decode_ms is None
    assert "greedy parity  not measured" in report.table()


FENCE = re.compile(r"```python\n(.*?)```", re.S)


@pytest.mark.parametrize("obj", [export_generator_tflite, GeneratorReport],
                         ids=lambda obj: obj.__name__)
def test_docstring_example_runs(obj):
    (code,) = FENCE.findall(inspect.getdoc(obj))
    exec(compile(code, "<example>", "exec"), {})
