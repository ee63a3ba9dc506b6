"""Quantized TFLite sentiment model: size and held-out accuracy vs Keras.

Takes the tweet-sentiment classifier of `keras-attn quickstart` (trained
here first if `--quickstart-dir` holds none), exports it to TFLite as
float32, float16, dynamic-range int8 and full int8 (calibrated on 500
training tweets), and classifies every held-out test tweet with each file
through ai-edge-litert at batch 1. The Keras model classifies the same
tweets in the same run. The split is the quickstart's own (same corpus,
same seed), so the test tweets were never seen in training or
calibration.

Reported per file: size and its share of float32, held-out accuracy and
its difference to Keras in points, agreement of the predicted class with
Keras, and median latency at batch 1 with 1 thread.

Run: `python benchmarks/tflite_quantization.py` (about 4 minutes on 2 cores
with training, 1 minute without).
"""

import argparse
import os
import platform
import statistics
import tempfile
import time

import keras
import numpy as np
from ai_edge_litert.interpreter import Interpreter

from keras_attn import cli
from keras_attn import data
from keras_attn.export import export_tflite

QUANTIZATIONS = (None, "float16", "dynamic_int8", "int8")


def quickstart_model(directory, seed):
    """The quickstart's model and vocabulary, training them if missing."""
    model_path = os.path.join(directory, "classifier.keras")
    vocabulary_path = os.path.join(directory, "vocabulary.txt")
    if not (os.path.exists(model_path) and os.path.exists(vocabulary_path)):
        args = cli.build_parser().parse_args(
            ["quickstart", "--output-dir", directory, "--seed", str(seed)])
        args.run(args)
    keras.config.set_dtype_policy("float32")
    model = keras.saving.load_model(model_path)
    return model, data.load_vocabulary(vocabulary_path)


def tflite_predictions(path, ids):
    """Predicted classes of a .tflite classifier, one tweet at a time."""
    interpreter = Interpreter(model_path=path, num_threads=1)
    runner = interpreter.get_signature_runner()
    (name,) = runner.get_input_details()
    predictions, seconds = [], []
    for row in ids:
        start = time.perf_counter()
        (logits,) = runner(**{name: row[None]}).values()
        seconds.append(time.perf_counter() - start)
        predictions.append(int(np.argmax(logits[0])))
    return np.array(predictions), 1e3 * statistics.median(seconds)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quickstart-dir", default="keras_attn_quickstart",
                        help="output of `keras-attn quickstart`; trained "
                             "there if missing (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="the quickstart's seed: fixes the split")
    parser.add_argument("--calibration-size", type=int, default=500)
    args = parser.parse_args()

    model, vocabulary = quickstart_model(args.quickstart_dir, args.seed)
    sequence_length = model.inputs[0].shape[1]
    tokenizer = data.make_tokenizer(vocabulary, sequence_length)
    corpus = data.read_sentiment_csv()
    train, _, test = data.train_val_test_split(
        list(zip(corpus.texts, corpus.labels)), seed=args.seed)
    test_ids = cli.tokenizer_ids(tokenizer, [t for t, _ in test])
    test_labels = np.array([label for _, label in test])
    calibration = cli.tokenizer_ids(
        tokenizer, [t for t, _ in train[: args.calibration_size]])

    keras_predictions = np.argmax(model.predict(test_ids, verbose=0), -1)
    keras_accuracy = float(np.mean(keras_predictions == test_labels))

    with tempfile.TemporaryDirectory(prefix="keras_attn_quant_") as tmp:
        compare(model, test_ids, test_labels, calibration, keras_predictions,
                keras_accuracy, tmp)


def compare(model, test_ids, test_labels, calibration, keras_predictions,
            keras_accuracy, directory):
    """Exports each quantization into `directory` and prints its row."""
    print(f"date {time.strftime('%Y-%m-%d')}, {platform.machine()}, "
          f"{os.cpu_count()} cores; {len(test_ids)} held-out tweets, "
          f"{len(calibration)} calibration tweets; Keras float32 accuracy "
          f"{keras_accuracy:.4f}\n")
    print("| TFLite | size | of float32 | accuracy | vs Keras | "
          "same class as Keras | latency |")
    print("|---|---|---|---|---|---|---|")
    float32_size = None
    for quantization in QUANTIZATIONS:
        name = quantization or "float32"
        report = export_tflite(
            model, os.path.join(directory, f"{name}.tflite"),
            quantization=quantization,
            representative_data=calibration if name == "int8" else None,
        )
        float32_size = float32_size or report.size_bytes
        predictions, latency = tflite_predictions(report.path, test_ids)
        accuracy = float(np.mean(predictions == test_labels))
        agreement = float(np.mean(predictions == keras_predictions))
        print(f"| {name} | {report.size_bytes / 1e6:.2f} MB | "
              f"{100 * report.size_bytes / float32_size:.1f}% | "
              f"{accuracy:.4f} | {100 * (accuracy - keras_accuracy):+.2f} "
              f"points | {100 * agreement:.2f}% | {latency:.2f} ms |",
              flush=True)


if __name__ == "__main__":
    main()
