"""The device command line, `python -m keras_attn_runtime`: defaults in
--help, one-line errors, batch and stdin input, the max-new-tokens cap,
what an empty answer prints, and the timing table."""

import io
import shutil
import sys

import numpy as np
import pytest

from keras_attn import models
from keras_attn.export import metadata
from keras_attn_runtime import Classifier
from keras_attn_runtime import Generator
from keras_attn_runtime import cli
from tests.runtime.helpers import MAX_LENGTH
from tests.runtime.helpers import TRANSLATOR_LENGTH
from tests.runtime.helpers import keras_hub_ids
from tests.runtime.helpers import needs_tensorflow

PROG = "python -m keras_attn_runtime"
PROMPT = "Self-driving cars!"


def run(capsys, *argv):
    """(exit status, stdout lines, stderr lines) of one command."""
    status = cli.main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out.splitlines(), captured.err.splitlines()


def table(lines):
    """The rows of the timing table printed on stderr."""
    start = next(i for i, line in enumerate(lines) if line.startswith("|--"))
    return dict([cell.strip() for cell in line.strip("|").split("|")]
                for line in lines[start + 1:] if line.startswith("|"))


def test_help_lists_every_flag_and_its_default(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["generate", "--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for flag, default in (
        ("--sampler", "the model's, else top_p for language models, greedy "
                      "for translators"),
        ("--temperature", "else 0.8 for language models, 1.0 for "
                          "translators"),
        ("--top-k", "else 40"), ("--top-p", "else 0.9"),
        ("--repetition-penalty", "else 1.2 for language models, 1.0"),
        ("--no-repeat-ngram-size", "else 0"),
        ("--max-new-tokens", "all the room left"),
        ("--threads", "(default: 1)"),
        ("--vocabulary", "the one embedded in the model"),
    ):
        assert flag in text and default in text, (flag, default)
    for flag in ("--input-file", "--prompt", "--source", "--seed",
                 "--no-stop", "--no-timings", "--verbose", "--debug",
                 "random"):
        assert flag in text
    with pytest.raises(SystemExit):
        cli.main(["classify", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--class-names" in text and "--input-file" in text


@needs_tensorflow
def test_errors_are_one_line_with_status_2(exported, capsys, tmp_path):
    missing = str(tmp_path / "no.tflite")
    alone = shutil.copy(exported["lm_path"], tmp_path / "alone.tflite")
    cases = [
        (["generate", missing], f"{PROG} generate: error: No model file. "
                                f"Received: model_path='{missing}'"),
        (["generate", exported["classifier_path"], "--vocabulary",
          exported["vocabulary"]], "no signature 'prefill'"),
        (["generate", str(alone)], "carries no vocabulary"),
        (["generate", exported["lm_meta"], "--top-p", "1.5"], "top_p=1.5"),
        (["generate", exported["lm_meta"], "--source", "x"],
         "--source is for translators"),
        (["generate", exported["translator_meta"]], "pass --source TEXT"),
        (["generate", exported["lm_meta"], "--prompt", "x", "--input-file",
          "-"], "either inline or with --input-file"),
        (["classify", exported["classifier_meta"]], "pass texts"),
        (["classify", exported["classifier_meta"], "--input-file",
          missing], "No input file"),
    ]
    for argv, message in cases:
        status, out, err = run(capsys, *argv)
        assert status == 2 and out == [], argv
        assert len(err) == 1 and message in err[0], (argv, err)
        assert err[0].startswith(f"{PROG} {argv[0]}: error: ")
    # In a batch, the error says which line.
    lines = tmp_path / "prompts.txt"
    lines.write_text("a fine prompt\n\n" + "the " * 50 + "\n")
    status, out, err = run(capsys, "generate", exported["lm_meta"],
                           "--input-file", str(lines), "--max-new-tokens",
                           "2", "--no-timings")
    assert status == 2 and len(out) == 1 and err == [
        f"{PROG} generate: error: line 3 of {lines}: the prompt has 51 "
        f"tokens ([BOS] included): no room for new tokens in the model's "
        f"max_length={MAX_LENGTH}"]
    with pytest.raises(ValueError, match="top_p=1.5"):
        cli.main(["generate", exported["lm_meta"], "--top-p", "1.5",
                  "--debug"])
    with pytest.raises(SystemExit) as info:
        cli.main(["generate", exported["lm_meta"], "--bogus"])
    assert info.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"{PROG}: error: unrecognized arguments: --bogus (see "
                   f"`{PROG} --help`)"]


@needs_tensorflow
def test_generate_streams_keras_greedy_text_and_a_timing_table(
    exported, vocabulary, capsys
):
    status, out, err = run(
        capsys, "generate", exported["lm_path"], "--vocabulary",
        exported["vocabulary"], "--prompt", PROMPT, "--max-new-tokens", "12",
        "--no-stop", "--sampler", "greedy", "--repetition-penalty", "1")
    assert status == 0
    prompt = [vocabulary.index("[BOS]")] + keras_hub_ids(vocabulary,
                                                          [PROMPT])[0]
    tokens = models.generate(exported["lm"], [prompt], 12)[0]
    words = [vocabulary[i] for i in tokens]
    # The display rule for a continuation: each word after a space, a
    # "##" piece glued on (also to the prompt's last word).
    expected = PROMPT + "".join(w[2:] if w.startswith("##") else " " + w
                                for w in words)
    assert "http" not in words  # no URL to glue in this text
    assert out == [expected]
    report = table(err)
    assert report["prompt tokens"] == str(len(prompt))
    assert report["new tokens"] == "12"
    assert report["cache length (max_length)"] == str(MAX_LENGTH)
    assert float(report["tokens/s (all steps)"]) > 0
    assert report["decode per token (median)"].endswith(" ms")
    status, out, err = run(
        capsys, "generate", exported["lm_path"], "--vocabulary",
        exported["vocabulary"], "--prompt", PROMPT, "--max-new-tokens", "12",
        "--no-stop", "--sampler", "greedy", "--repetition-penalty", "1",
        "--no-timings")
    assert out == [expected] and err == []


@needs_tensorflow
def test_input_file_and_stdin_give_one_line_per_input(exported, capsys,
                                                      tmp_path, monkeypatch):
    prompts = ["self-driving cars", "google is testing", "i love"]
    path = tmp_path / "prompts.txt"
    path.write_text(f"{prompts[0]}\n\n{prompts[1]}\r\n{prompts[2]}\n")
    flags = ["--max-new-tokens", "6", "--sampler", "greedy", "--no-stop"]
    singles = []
    for prompt in prompts:
        status, out, _ = run(capsys, "generate", exported["lm_meta"],
                             "--prompt", prompt, *flags)
        singles += out
    status, out, err = run(capsys, "generate", exported["lm_meta"],
                           "--input-file", str(path), *flags)
    assert status == 0 and out == singles
    assert [line.split(" ")[0] for line in out] == [
        p.split(" ")[0] for p in prompts]
    report = table(err)
    assert report["inputs"] == "3"
    assert report["new tokens (all inputs)"] == "18"
    monkeypatch.setattr(sys, "stdin", io.StringIO(path.read_text()))
    status, out, _ = run(capsys, "generate", exported["lm_meta"],
                         "--input-file", "-", *flags)
    assert status == 0 and out == singles

    texts = ["what a great ride", "", "awful traffic today"]
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(texts)))
    status, out, _ = run(capsys, "classify", exported["classifier_meta"],
                         "--input-file", "-")
    classifier = Classifier(exported["classifier_meta"])
    expected = []
    for text in (t for t in texts if t):
        label, probability = classifier.classify(text)
        expected.append(f"{label}\t{probability:.3f}\t{text}")
    assert status == 0 and out == expected
    status, out, err = run(capsys, "classify", exported["classifier_meta"],
                           "--no-timings", *[t for t in texts if t])
    assert out == expected and err == []


@needs_tensorflow
def test_max_new_tokens_is_cut_to_the_room_left_with_a_notice(exported,
                                                             capsys):
    source = ["--source", "der hund bellt", "--no-stop"]
    status, out, err = run(capsys, "generate", exported["translator_meta"],
                           *source, "--max-new-tokens", "32")
    assert status == 0 and len(out) == 1
    room = TRANSLATOR_LENGTH - 1  # [BOS] is the decoder prompt
    assert err[0] == (
        f"{PROG} generate: notice: --max-new-tokens 32 is more than fits: "
        f"generating at most {room} (the model's max_length="
        f"{TRANSLATOR_LENGTH} minus 1 prompt tokens)")
    assert table(err)["new tokens"] == str(room)
    # The default is the room left, without a notice.
    status, default_out, err = run(capsys, "generate",
                                   exported["translator_meta"], *source)
    assert default_out == out and not any("notice" in e for e in err)
    status, _, err = run(capsys, "generate", exported["translator_meta"],
                         *source, "--max-new-tokens", "3")
    assert table(err)["new tokens"] == "3"


@needs_tensorflow
def test_a_stop_token_first_prints_no_empty_text(exported, vocabulary,
                                                 capsys, tmp_path):
    source = "der hund bellt"
    first = Generator(exported["translator_meta"]).generate(
        None, 1, encoder_text=source)[0]
    # A description whose stop token is the model's first pick.
    path = tmp_path / "stops.tflite"
    model_bytes = open(exported["translator_path"], "rb").read()
    path.write_bytes(metadata.embed(model_bytes, metadata.describe(
        model_bytes, vocabulary=vocabulary,
        source_vocabulary=exported["source_words"],
        generation_config={"stop_token": vocabulary[first]})))
    status, out, err = run(capsys, "generate", str(path), "--source", source)
    assert status == 0 and out == []
    assert err[0] == (f"{PROG} generate: notice: the model's first token was "
                      "the stop token: nothing generated for "
                      f"'{source}'")
    assert table(err)["new tokens"] == "1 (stopped at the stop token)"
    # In a batch every input keeps its output line.
    inputs = tmp_path / "sources.txt"
    inputs.write_text(f"{source}\n{source}\n")
    status, out, err = run(capsys, "generate", str(path), "--input-file",
                           str(inputs))
    assert out == ["", ""] and sum("notice" in e for e in err) == 2


@needs_tensorflow
def test_sampling_defaults_come_from_the_model(exported, capsys):
    argv = ["generate", exported["lm_meta"], "--prompt", PROMPT,
            "--no-timings"]
    runs = [run(capsys, *argv, "--seed", seed)[1] for seed in "112"]
    greedy = run(capsys, *argv, "--sampler", "greedy")[1]
    assert runs[0] == runs[1] != runs[2]
    assert runs[0] != greedy  # the LM default samples (top_p)
    assert Generator(exported["lm_meta"]).generation_defaults["sampler"] == (
        "top_p")


@needs_tensorflow
def test_vocabulary_beside_a_plain_model_is_used_with_a_notice(
    exported, capsys, tmp_path
):
    shutil.copy(exported["lm_path"], tmp_path / "lm.tflite")
    shutil.copy(exported["vocabulary"], tmp_path / "vocabulary.txt")
    status, out, err = run(capsys, "generate", str(tmp_path / "lm.tflite"),
                           "--prompt", PROMPT, "--sampler", "greedy",
                           "--max-new-tokens", "5", "--no-timings")
    assert status == 0
    assert err == [f"{PROG} generate: notice: the model embeds no "
                   f"vocabulary: using {tmp_path / 'vocabulary.txt'}"]
    assert out == run(capsys, "generate", exported["lm_meta"], "--prompt",
                      PROMPT, "--sampler", "greedy", "--max-new-tokens", "5",
                      "--no-timings")[1]
    assert np.all([line.startswith(PROMPT) for line in out])
