"""TFLite latency and size: our encoder classifier against the same model
built from keras-hub layers, side by side in one run.

Ours is `keras_attn.models.encoder_classifier`, exported with
`keras_attn.export.export_tflite`. Theirs is the same model from keras-hub
layers (`common.keras_hub_encoder_classifier`: TokenAndPositionEmbedding, 4
TransformerEncoder blocks, masked mean pooling, Dense), exported with
`model.export(format="litert")`, Keras's own path. Both hold the same
random weights (every bias and layer-norm scale live, so the converter
folds nothing away) and give the same logits in Keras. Each quantization
exports both files the same way: float16 weights, dynamic-range int8, or
full int8 calibrated on the same 64 inputs (ours keeps attention scores,
layer norms and the head in float32; keras-hub's converter quantizes
everything it can). Both run with ai-edge-litert on one thread, batch 1,
taking turns; the table gives medians, and the ratio is the median of the
per-round ratios.

Run: `python benchmarks/tflite_vs_keras_hub.py` (about 5 minutes on 2
cores); `--tiny` runs a 1-layer toy in seconds (CI).
"""

import argparse
import os
import sys
import tempfile

import common
import numpy as np

QUANTIZATIONS = ("float32", "float16", "dynamic_int8", "int8")


def keras_hub_export(model, path, quantization, calibration):
    """`model.export(format="litert")` with the converter options that give
    the same kind of file as our `export_tflite(quantization=...)`."""
    import tensorflow as tf

    kwargs = {}
    if quantization != "float32":
        kwargs["optimizations"] = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        kwargs["target_spec"] = {"supported_types": [tf.float16]}
    elif quantization == "int8":
        kwargs["representative_dataset"] = lambda: (
            [row[None]] for row in calibration)
        kwargs["target_spec"] = {"supported_ops": [
            tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
            tf.lite.OpsSet.TFLITE_BUILTINS]}
    model.export(path, format="litert", verbose=False, **kwargs)
    return path


def runner(path):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path, num_threads=1)
    run = interpreter.get_signature_runner()
    (name,) = run.get_input_details()
    return lambda ids: next(iter(run(**{name: ids}).values()))


def measure(ours, theirs, quantization, sample, calibration, args,
            directory):
    from keras_attn.export import export_tflite

    ours_path = export_tflite(
        ours, os.path.join(directory, f"ours_{quantization}.tflite"),
        quantization=None if quantization == "float32" else quantization,
        representative_data=calibration).path
    theirs_path = keras_hub_export(
        theirs, os.path.join(directory, f"keras_hub_{quantization}.tflite"),
        quantization, calibration)
    expected = np.asarray(ours(sample, training=False))
    runs = {"ours": runner(ours_path), "keras_hub": runner(theirs_path)}
    diffs = {name: float(np.max(np.abs(
        np.concatenate([run(row[None]) for row in sample]) - expected)))
        for name, run in runs.items()}
    one = sample[:1]
    timing = common.interleaved(
        {name: (lambda run=run: run(one)) for name, run in runs.items()},
        rounds=args.rounds, calls_per_round=args.calls)
    sizes = {"ours": os.path.getsize(ours_path),
             "keras_hub": os.path.getsize(theirs_path)}
    return [
        quantization,
        f"{1e3 * timing.median('ours'):.3g} ms",
        f"{1e3 * timing.median('keras_hub'):.3g} ms",
        f"**{timing.ratio('ours', 'keras_hub'):.2f}x**",
        f"{sizes['ours'] / 1e6:.2f} MB",
        f"{sizes['keras_hub'] / 1e6:.2f} MB",
        f"{diffs['ours']:.1e} / {diffs['keras_hub']:.1e}",
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quantizations", default=",".join(QUANTIZATIONS),
                        help="comma-separated subset of %(default)s")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--calls", type=int, default=5,
                        help="calls per model per round")
    parser.add_argument("--tiny", action="store_true",
                        help="a 1-layer toy model, few rounds (CI)")
    args = parser.parse_args(argv)
    quantizations = args.quantizations.split(",")
    for q in quantizations:
        if q not in QUANTIZATIONS:
            parser.error(f"unknown quantization {q!r}")
    shapes = common.TINY_SHAPES if args.tiny else common.EDGE_SHAPES
    if args.tiny:
        args.rounds, args.calls = min(args.rounds, 3), 1

    import keras

    from keras_attn import models

    ours = models.encoder_classifier(num_classes=2, dropout=0.0, **shapes)
    theirs = common.keras_hub_encoder_classifier(**shapes)
    common.randomize_weights(ours)
    common.copy_weights(ours, theirs)
    sample = common.token_batch(8, shapes["sequence_length"],
                                shapes["vocabulary_size"])
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(theirs(sample)),
        keras.ops.convert_to_numpy(ours(sample)), atol=1e-4)
    calibration = common.token_batch(64, shapes["sequence_length"],
                                     shapes["vocabulary_size"], seed=1)

    start = os.getloadavg()[0]
    print(common.machine_line())
    print(f"encoder classifier {shapes}, batch 1, ai-edge-litert 1 thread, "
          f"{args.rounds} rounds x {args.calls} calls each\n")
    header = ["weights", "ours", "keras-hub", "ratio", "ours file",
              "keras-hub file", "max abs diff to Keras (ours / keras-hub)"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="keras_attn_bench_") as tmp:
        for q in quantizations:
            rows.append(measure(ours, theirs, q, sample, calibration, args,
                                tmp))
            print(common.markdown_table(header, rows[-1:]).splitlines()[-1],
                  flush=True)
    print()
    print(common.markdown_table(header, rows))
    print(common.load_note(start))
    return rows


if __name__ == "__main__":
    sys.exit(main() and 0)
