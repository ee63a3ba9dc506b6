"""`keras-attn quickstart` end to end on a small generated corpus."""

import os

import keras
import numpy as np
import pytest

from keras_attn import cli

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="the quickstart exports SavedModel/TFLite (TensorFlow backend)",
)

WORDS = {
    "negative": ["awful", "scary", "hate", "crash", "never"],
    "neutral": ["today", "report", "news", "testing", "announced"],
    "positive": ["love", "great", "amazing", "excited", "safer"],
}
FILLER = ["the", "car", "drives", "google", "self", "driving", "road", "a"]


def _corpus(path, rows=600, seed=0):
    """Sentences whose label is given by the words they contain."""
    rng = np.random.default_rng(seed)
    lines = ["sentiment,confidence,text"]
    for _ in range(rows):
        label = rng.choice(list(WORDS))
        words = list(rng.choice(FILLER, size=5)) + list(
            rng.choice(WORDS[label], size=2))
        rng.shuffle(words)
        lines.append(f"{label},1.0,{' '.join(words)}")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_quickstart_trains_exports_and_explains(tmp_path, capsys):
    csv = _corpus(tmp_path / "sentiment.csv")
    out = tmp_path / "out"
    results = cli.quickstart(cli.build_parser().parse_args([
        "quickstart", "--data", csv, "--output-dir", str(out),
        "--epochs", "3", "--sequence-length", "12", "--vocabulary-size",
        "200", "--num-layers", "1", "--hidden-dim", "16",
        "--batch-size", "32",
    ]))
    printed = capsys.readouterr().out
    for name in ("classifier.keras", "vocabulary.txt", "classifier.tflite",
                 "attention.png", os.path.join("saved_model",
                                               "saved_model.pb")):
        assert (out / name).exists(), name
    assert results["accuracy"] > results["baseline"] + 0.3, results
    assert results["tflite_max_abs_diff"] < 1e-4
    assert "held-out accuracy" in printed and "TFLite" in printed
    assert str(out / "classifier.tflite") in printed


def test_bad_flags_exit_with_a_message(capsys):
    with pytest.raises(SystemExit):
        cli.main(["quickstart", "--epochs", "0"])
    assert "--epochs must be positive" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["unknown"])


@pytest.mark.parametrize(
    "fmt, quantize, expected",
    [("tflite", "dynamic_int8", "model.tflite"),
     ("saved_model", "none", os.path.join("model", "saved_model.pb")),
     ("generator", "none", "model.tflite")],
)
def test_export_command(fmt, quantize, expected, tmp_path, capsys):
    from keras_attn import models

    if fmt == "generator":
        model = models.decoder_lm(30, 8, num_layers=1, hidden_dim=8,
                                  num_heads=2)
    else:
        model = models.encoder_classifier(30, 8, num_layers=1, hidden_dim=8,
                                          num_heads=2)
    model.save(tmp_path / "model.keras")
    ids = np.random.default_rng(0).integers(1, 30, size=(4, 8))
    np.save(tmp_path / "ids.npy", ids)
    output = str(tmp_path / ("model" if fmt == "saved_model"
                             else "model.tflite"))
    assert cli.main(["export", str(tmp_path / "model.keras"), output,
                     "--format", fmt, "--quantize", quantize,
                     "--data", str(tmp_path / "ids.npy")]) == 0
    assert (tmp_path / expected).exists()
    printed = capsys.readouterr().out
    assert "max abs diff" in printed or "->" in printed


def test_export_errors(tmp_path):
    with pytest.raises(SystemExit, match="no such model file"):
        cli.main(["export", str(tmp_path / "missing.keras"),
                  str(tmp_path / "x.tflite")])
