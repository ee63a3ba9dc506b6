"""The device command line: `python -m keras_attn_runtime`.

    python -m keras_attn_runtime generate MODEL.tflite --prompt TEXT
    python -m keras_attn_runtime generate MODEL.tflite --source TEXT
    python -m keras_attn_runtime generate MODEL.tflite --input-file -
    python -m keras_attn_runtime generate MODEL.litertlm --prompt TEXT
    python -m keras_attn_runtime classify MODEL.tflite TEXT [TEXT ...]

`keras-attn generate` and `keras-attn classify` are these same commands
(same flags, same defaults). A model exported with its description
(`keras_attn.export.metadata`) needs only its path: vocabularies, class
names and generation defaults come from the file; `--vocabulary`,
`--source-vocabulary`, `--class-names` and the sampler flags override
them. A LiteRT-LM bundle (`export_litertlm`) runs through LiteRT-LM's
engine (`pip install litert-lm-api`), which carries its own tokenizer and
samples with top-k, top-p, temperature and seed only. Text goes to
stdout, one line per input; notices and the timing table go to stderr.
An error is one line, `PROG CMD: error: ...`, with exit status 2
(`--debug` shows the traceback).
"""

import argparse
import contextlib
import os
import sys
import time

from keras_attn_runtime import samplers

_GENERATION_FLAGS = ("sampler", "temperature", "top_k", "top_p",
                     "repetition_penalty", "no_repeat_ngram_size")


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors: `PROG: error: MESSAGE (see --help)`."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} "
                     "--help`)\n")


def _model_default(flag):
    lm = samplers.GENERATION_DEFAULTS["decoder_lm"][flag]
    s2s = samplers.GENERATION_DEFAULTS["seq2seq"][flag]
    if lm == s2s:
        return f"(default: the model's, else {lm})"
    return (f"(default: the model's, else {lm} for language models, {s2s} "
            "for translators)")


def add_common_arguments(parser):
    """Flags every model command takes: threads, logs, timings, debug."""
    parser.add_argument("--threads", type=int, default=1, metavar="N",
                        help="LiteRT CPU threads (default: %(default)s)")
    parser.add_argument("--no-timings", dest="timings",
                        action="store_false",
                        help="do not print the timing table (stderr)")
    parser.add_argument("--verbose", action="store_true",
                        help="show the backends' own log lines (LiteRT, "
                             "XNNPACK, TensorFlow)")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error")


def _add_inputs(parser, lines, vocabulary):
    parser.add_argument("--input-file", default=None, metavar="FILE",
                        help=f"{lines}, '-' for stdin; one output line each, "
                             "blank lines skipped")
    parser.add_argument("--vocabulary", default=None, metavar="FILE",
                        help=f"{vocabulary} (default: the one embedded in the "
                             "model)")


def add_generate_arguments(parser):
    """The flags of `generate` (shared by keras-attn and the runtime)."""
    parser.add_argument("model", help="a generator .tflite (prefill/decode "
                        "signatures), or a .litertlm bundle (LiteRT-LM; "
                        "--repetition-penalty, --no-repeat-ngram-size, "
                        "--no-stop, --source and the vocabulary flags do "
                        "not apply to it)")
    parser.add_argument("--prompt", default=None, metavar="TEXT",
                        help="text to continue; for a translator, the start "
                             "of the translation (default: none)")
    parser.add_argument("--source", default=None, metavar="TEXT",
                        help="the text to translate (seq2seq models)")
    _add_inputs(parser, "one prompt (language model) or source "
                        "(translator) per line", "the (target) vocabulary.txt")
    parser.add_argument("--source-vocabulary", default=None, metavar="FILE",
                        help="the source vocabulary of a translator "
                             "(default: the embedded one, else "
                             "--vocabulary)")
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        metavar="N",
                        help="at most this many new tokens (default: all "
                             "the room left, max_length minus the prompt; "
                             "a larger N is cut to that room, with a "
                             "notice)")
    parser.add_argument("--sampler", default=None, choices=samplers.SAMPLERS,
                        help=_model_default("sampler"))
    parser.add_argument("--temperature", type=float, default=None,
                        metavar="T", help=_model_default("temperature"))
    parser.add_argument("--top-k", type=int, default=None, metavar="K",
                        help="tokens kept by top_k " + _model_default("top_k"))
    parser.add_argument("--top-p", type=float, default=None, metavar="P",
                        help="probability mass kept by top_p "
                             + _model_default("top_p"))
    parser.add_argument("--repetition-penalty", type=float, default=None,
                        metavar="R",
                        help="divides the logits of tokens already in the "
                             "text (1 = off) "
                             + _model_default("repetition_penalty"))
    parser.add_argument("--no-repeat-ngram-size", type=int, default=None,
                        metavar="N",
                        help="never repeat an N-gram (0 = off) "
                             + _model_default("no_repeat_ngram_size"))
    parser.add_argument("--seed", type=int, default=None, metavar="N",
                        help="seed of the sampler, for reproducible text "
                             "(default: random)")
    parser.add_argument("--no-stop", action="store_true",
                        help="do not stop at the stop token ([EOS])")
    add_common_arguments(parser)


def add_classify_arguments(parser):
    """The flags of `classify` (shared by keras-attn and the runtime)."""
    parser.add_argument("model", help="a classifier .tflite "
                        "(serving_default signature)")
    parser.add_argument("texts", nargs="*", metavar="TEXT",
                        help="texts to classify")
    _add_inputs(parser, "one text per line", "the vocabulary.txt")
    parser.add_argument("--class-names", default=None, metavar="NAMES",
                        help="comma-separated names in label-id order, e.g. "
                             "negative,neutral,positive (default: the "
                             "embedded ones, else label ids)")
    add_common_arguments(parser)


class _CommandError(ValueError):
    """A user error found by the command line itself."""


# Errors whose message is the whole story (they name the culprit).
_USER_ERRORS = (ValueError, TypeError, OSError, ImportError)


class _Output:
    """stdout that remembers whether a line is open, so that an error
    never lands glued to half a line of generated text."""

    def __init__(self):
        self.open_line = False

    def write(self, text, end=""):
        text += end
        if text:
            sys.stdout.write(text)
            sys.stdout.flush()
            self.open_line = not text.endswith("\n")

    def close_line(self):
        if self.open_line:
            self.write("\n")


def _texts(args, inline, what):
    """`(where, text)` of each input: the inline ones (`where` is `None`),
    or the lines of --input-file (`where` is `"line N of FILE"`)."""
    if args.input_file is None:
        return ((None, text) for text in inline)
    if any(text is not None for text in inline):
        raise _CommandError(
            f"pass the {what} either inline or with --input-file, not both")
    if args.input_file != "-" and not os.path.isfile(args.input_file):
        raise FileNotFoundError(
            f"No input file. Received: --input-file {args.input_file}")
    return _lines(args.input_file)


def _lines(path):
    """The non-blank lines of a UTF-8 file ('-': stdin), read lazily so
    that stdin answers line by line."""
    name = "stdin" if path == "-" else path
    with (open(path, encoding="utf-8") if path != "-"
          else contextlib.nullcontext(sys.stdin)) as lines:
        for number, line in enumerate(lines, 1):
            if line.strip():
                yield f"line {number} of {name}", line.rstrip("\r\n")


@contextlib.contextmanager
def _naming(where):
    """Prefixes a ValueError raised inside with where the input was."""
    try:
        yield
    except ValueError as error:
        if where is None:
            raise
        raise ValueError(f"{where}: {error}") from None


def run_generate(args, prog="keras_attn_runtime generate", out=None):
    """Runs `generate`; returns the list of per-input results."""
    out = out or _Output()
    from keras_attn_runtime import litertlm

    if litertlm.is_bundle(args.model):
        return _run_litertlm(args, prog, out)
    from keras_attn_runtime.generator import Generator

    vocabulary, source_vocabulary = _vocabulary_files(args, prog)
    generator = Generator(args.model, vocabulary, args.threads,
                          source_vocabulary, quiet=not args.verbose)
    if generator.is_seq2seq:
        if args.input_file is None and args.source is None:
            raise _CommandError(
                f"{args.model} is a translator (seq2seq): pass --source "
                "TEXT or --input-file FILE")
        inputs = _texts(args, [args.source], "sources")
    else:
        if args.source is not None:
            raise _CommandError(
                f"--source is for translators; {args.model} is a language "
                "model: pass --prompt")
        inputs = _texts(args, [args.prompt], "prompts")
    settings = _generation_settings(args, generator.generation_defaults)
    stop = None if args.no_stop else generator.stop_token_id
    results = []
    for where, text in inputs:
        with _naming(where):
            results.append(_generate_one(args, prog, out, generator, text,
                                         settings, stop))
    if not results:
        _notice(prog, "no input: the input file has no text line")
    elif args.timings:
        _print_table(_generation_rows(args.model, generator, results))
    return results


def _generate_one(args, prog, out, generator, text, settings, stop):
    """Generates for one input, streaming the text; returns its record."""
    from keras_attn_runtime.text_stream import TextStream

    vocabulary = generator.tokenizer.vocabulary
    source, prompt = (text, args.prompt) if generator.is_seq2seq else (
        None, text)
    prompt_ids = generator.prompt_ids(prompt)
    max_new_tokens = _new_tokens(args, prog, len(prompt_ids),
                                 generator.max_length, "[BOS]")
    if prompt:
        out.write(prompt)
    stream = TextStream(after_text=bool(prompt))

    def show(token):
        if token != stop:
            out.write(stream.push(vocabulary[token]))

    ids = generator.generate(
        prompt_ids, max_new_tokens, stop_token_id=stop,
        encoder_text=source, on_token=show, **settings)
    stopped = bool(ids) and ids[-1] == stop
    nothing = stopped and len(ids) == 1
    # An output line per input line; a lone answer that is empty
    # prints no empty line, only the notice.
    if not (nothing and not prompt and args.input_file is None):
        out.write(stream.finish(), end="\n")
    if nothing:
        _notice(prog, "the model's first token was the stop token: "
                      "nothing generated" + (
                          f" for {_quote(text)}" if text else ""))
    return dict(ids=ids, stopped=stopped,
                prompt_length=generator.last_prompt_length,
                timings=generator.last_timings)


# Flags of `generate` that LiteRT-LM's engine cannot honour, and why.
_NOT_FOR_LITERTLM = {
    "source": "LiteRT-LM runs language models (a translator is a "
              "generator .tflite)",
    "vocabulary": "the bundle carries its tokenizer",
    "source_vocabulary": "the bundle carries its tokenizer",
    "repetition_penalty": "LiteRT-LM's engine samples with --top-k, "
                          "--top-p, --temperature and --seed only",
    "no_repeat_ngram_size": "LiteRT-LM's engine samples with --top-k, "
                            "--top-p, --temperature and --seed only",
}


def _run_litertlm(args, prog, out):
    """`generate` for a .litertlm bundle, through LiteRT-LM's engine."""
    from keras_attn_runtime.litertlm import LiteRTLMGenerator

    for name, why in _NOT_FOR_LITERTLM.items():
        if getattr(args, name, None) is not None:
            raise _CommandError(
                f"--{name.replace('_', '-')} does not apply to a .litertlm "
                f"bundle: {why}")
    if args.no_stop:
        raise _CommandError(
            "--no-stop does not apply to a .litertlm bundle: LiteRT-LM "
            "always stops at the bundle's stop tokens")
    with LiteRTLMGenerator(args.model, args.threads,
                           quiet=not args.verbose) as generator:
        settings = {
            name: generator.generation_defaults[name]
            if getattr(args, name) is None else getattr(args, name)
            for name in ("sampler", "temperature", "top_k", "top_p")}
        samplers.check_generation_config(settings)
        # Our default seed is fresh randomness; the engine's would be 0.
        seed = args.seed if args.seed is not None else int.from_bytes(
            os.urandom(4), "little") >> 1
        results = []
        for number, (where, text) in enumerate(
                _texts(args, [args.prompt], "prompts")):
            with _naming(where):
                results.append(_engine_generate_one(
                    args, prog, out, generator, text or "", settings,
                    seed + number))
    if not results:
        _notice(prog, "no input: the input file has no text line")
    elif args.timings:
        _print_table(_engine_rows(args.model, generator, results))
    return results


def _new_tokens(args, prog, prompt_tokens, max_length, start):
    """`--max-new-tokens`, or all the room left, capped by the room left
    (with a notice); a prompt that fills the model is an error."""
    room = max_length - prompt_tokens
    if room <= 0:
        raise _CommandError(
            f"the prompt has {prompt_tokens} tokens ({start} included): "
            f"no room for new tokens in the model's max_length={max_length}")
    if args.max_new_tokens is None:
        return room
    if args.max_new_tokens > room:
        _notice(prog, f"--max-new-tokens {args.max_new_tokens} is more than "
                      f"fits: generating at most {room} (the model's "
                      f"max_length={max_length} minus {prompt_tokens} prompt "
                      "tokens)")
        return room
    return args.max_new_tokens


def _engine_generate_one(args, prog, out, generator, text, settings, seed):
    prompt_tokens = 1 + len(generator.tokenize(text))  # the start token
    max_new_tokens = _new_tokens(
        args, prog, prompt_tokens,
        generator.max_length or prompt_tokens + 1, "the start token")
    first = [True]

    def show(piece):
        if first[0]:
            first[0] = False
            if piece.startswith("##"):  # a word piece continues the prompt
                piece = piece[2:]
            elif text:
                piece = " " + piece
        out.write(piece)

    out.write(text)
    generator.generate(text, max_new_tokens, seed=seed, on_text=show,
                       **settings)
    out.write("", end="\n")
    timings = generator.last_timings
    stopped = (timings["new_tokens"] < max_new_tokens
               and timings["prompt_tokens"] + timings["new_tokens"]
               < (generator.max_length or 0))
    return dict(timings=timings, stopped=stopped)


def _engine_rows(model, generator, results):
    """The timing table of `generate` for a bundle (the engine's timer)."""
    def median(values):
        values = sorted(values)
        return values[len(values) // 2]

    timings = [r["timings"] for r in results]
    new_tokens = sum(t["new_tokens"] for t in timings)
    rows = [("model", os.path.abspath(model) + " (LiteRT-LM engine)"),
            ("cache length (max_length)", str(generator.max_length))]
    if len(results) == 1:
        stopped = (" (stopped at the stop token)" if results[0]["stopped"]
                   else "")
        rows += [("prompt tokens", str(timings[0]["prompt_tokens"])),
                 ("new tokens", f"{new_tokens}{stopped}")]
    else:
        prompts = [t["prompt_tokens"] for t in timings]
        rows += [("inputs", str(len(results))),
                 ("prompt tokens (mean)", f"{sum(prompts) / len(prompts):.1f}"),
                 ("new tokens (all inputs)", str(new_tokens))]
    per = "" if len(results) == 1 else " (median)"
    rows.append((f"prefill{per}",
                 f"{median(t['prefill_ms'] for t in timings):.1f} ms"))
    decode = [t["decode_ms"] for t in timings if t["decode_ms"] is not None]
    if decode:
        rows.append(("decode per token (engine's mean" + (
            ", median over inputs)" if len(decode) > 1 else ")"),
            f"{median(decode):.2f} ms"))
    total = sum(t["seconds"] for t in timings)
    rows.append(("tokens/s (all steps)", f"{new_tokens / total:.1f}"))
    return rows


def _vocabulary_files(args, prog):
    """The vocabulary files to pass on: the flags, else none where the
    model embeds its own, else the files `keras_attn` examples save beside
    the model (with a notice)."""
    from keras_attn_runtime.tflite_file import TFLiteFile

    model = TFLiteFile(args.model)
    description = model.description or {}
    vocabulary = args.vocabulary
    if vocabulary is None and "vocabulary" not in description:
        vocabulary = _beside(args.model, ("vocabulary.txt",
                                          "target_vocabulary.txt"), prog)
    source = getattr(args, "source_vocabulary", None)
    if source is None and "encode" in model.signatures and (
        "source_vocabulary" not in description
    ):
        source = _beside(args.model, ("source_vocabulary.txt",), prog)
    return vocabulary, source


def _beside(model, names, prog):
    directory = os.path.dirname(os.path.abspath(model))
    for name in names:
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            _notice(prog, f"the model embeds no vocabulary: using {path}")
            return path
    return None


def _generation_settings(args, defaults):
    """The sampler settings: the flags given, else the model's defaults;
    checked before any text is printed."""
    settings = {name: getattr(args, name) for name in _GENERATION_FLAGS}
    settings = samplers.check_generation_config({
        name: defaults[name] if value is None else value
        for name, value in settings.items()
    })
    # One random generator draws for every input: reproducible with
    # --seed, and not the same draws for every line.
    settings["seed"] = samplers.make_rng(args.seed)
    return settings


def _generation_rows(model, generator, results):
    def median(values):
        values = sorted(values)
        return values[len(values) // 2]

    new_tokens = sum(len(r["ids"]) for r in results)
    timings = [r["timings"] for r in results]
    decode = [t for timing in timings for t in timing["decode"]]
    total = sum(t["prefill"] + sum(t["decode"]) + (t["encode"] or 0.0)
                for t in timings)
    prompts = [r["prompt_length"] for r in results]
    rows = [("model", os.path.abspath(model)),
            ("cache length (max_length)", str(generator.max_length))]
    if len(results) == 1:
        stopped = " (stopped at the stop token)" if results[0]["stopped"] \
            else ""
        rows += [("prompt tokens", str(prompts[0])),
                 ("new tokens", f"{new_tokens}{stopped}")]
    else:
        rows += [("inputs", str(len(results))),
                 ("prompt tokens (mean)", f"{sum(prompts) / len(prompts):.1f}"),
                 ("new tokens (all inputs)", str(new_tokens))]
    per = "" if len(results) == 1 else " (median)"
    if timings[0]["encode"] is not None:
        encode = median(t["encode"] for t in timings)
        rows.append((f"encode{per}", f"{1e3 * encode:.1f} ms"))
    prefill = median(t["prefill"] for t in timings)
    rows.append((f"prefill{per}", f"{1e3 * prefill:.1f} ms"))
    if decode:
        rows.append(("decode per token (median)",
                     f"{1e3 * median(decode):.2f} ms"))
    rows.append(("tokens/s (all steps)", f"{new_tokens / total:.1f}"))
    return rows


def run_classify(args, prog="keras_attn_runtime classify", out=None):
    """Runs `classify`; returns `[(text, label, probability)]`."""
    out = out or _Output()
    from keras_attn_runtime.classifier import Classifier

    names = args.class_names.split(",") if args.class_names else None
    vocabulary, _ = _vocabulary_files(args, prog)
    classifier = Classifier(args.model, vocabulary, names, args.threads,
                            quiet=not args.verbose)
    if args.input_file is None and not args.texts:
        raise _CommandError("pass texts to classify, or --input-file FILE")
    texts = _texts(args, args.texts or [None], "texts")
    results, seconds = [], []
    for where, text in texts:
        start = time.perf_counter()
        with _naming(where):
            label, probability = classifier.classify(text)
        seconds.append(time.perf_counter() - start)
        out.write(f"{label}\t{probability:.3f}\t{text}", end="\n")
        results.append((text, label, probability))
    if not results:
        _notice(prog, "no input: the input file has no text line")
    elif args.timings:
        seconds.sort()
        _print_table([
            ("model", os.path.abspath(args.model)),
            ("input length", str(classifier.sequence_length)),
            ("texts", str(len(results))),
            ("per text (median, tokenizer included)",
             f"{1e3 * seconds[len(seconds) // 2]:.2f} ms"),
        ])
    return results


def _quote(text, limit=40):
    return repr(text if len(text) <= limit else text[:limit - 3] + "...")


def _notice(prog, message):
    sys.stdout.flush()
    print(f"{prog}: notice: {message}", file=sys.stderr, flush=True)


def _print_table(rows):
    width = max(len(name) for name, _ in rows)
    lines = [f"| {'':<{width}} | |", f"|{'-' * (width + 2)}|---|"]
    lines += [f"| {name:<{width}} | {value} |" for name, value in rows]
    print("\n".join(lines), file=sys.stderr, flush=True)


def run_command(run, args, prog):
    """Runs `run(args, prog)` the command-line way; returns the exit status.

    Every failure prints one line, `PROG: error: MESSAGE`, and returns 2:
    a user error (bad value, missing or corrupt file, no LiteRT) as its
    message, anything else with its exception type and a pointer to
    `--debug`, which re-raises it for the traceback.
    """
    out = _Output()
    if not getattr(args, "verbose", True):
        # LiteRT's C++ logging reads it (as TensorFlow's does).
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        run(args, prog, out)
    except BrokenPipeError:  # `... | head`: the reader has what it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception as error:
        out.close_line()
        if getattr(args, "debug", False):
            raise
        message = " ".join(str(error).split())
        if not isinstance(error, _USER_ERRORS):
            # Not one of ours: say what it is, and where to see more.
            message = (f"{type(error).__name__}: {message} (run with "
                       "--debug for the traceback)")
        print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        out.close_line()
        return 130
    return 0


def build_parser(prog=None):
    parser = ArgumentParser(
        prog=prog or _default_prog(),
        description="Run keras_attn .tflite models with LiteRT and NumPy "
                    "(no TensorFlow).",
    )
    commands = parser.add_subparsers(dest="command", required=True,
                                     metavar="COMMAND")
    add_generate_arguments(commands.add_parser(
        "generate", help="generate text (language model or translator)",
        description=__doc__.split("\n\n")[2]))
    add_classify_arguments(commands.add_parser(
        "classify", help="classify texts",
        description=__doc__.split("\n\n")[2]))
    return parser


def _default_prog():
    if sys.argv and sys.argv[0].endswith(".pyz"):
        return f"python {os.path.basename(sys.argv[0])}"
    return "python -m keras_attn_runtime"


def parse_args(parser, argv=None):
    """`parser.parse_args`, but texts may also follow the options.

    argparse gives a trailing `nargs="*"` positional only the words
    before the first option; `classify MODEL --vocabulary V "a" "b"`
    leaves `"a" "b"` over, and they are texts.
    """
    args, extras = parser.parse_known_args(argv)
    if extras and getattr(args, "texts", None) is not None and not any(
        extra.startswith("-") for extra in extras
    ):
        args.texts += extras
    elif extras:
        parser.error(f"unrecognized arguments: {' '.join(extras)}")
    return args


def main(argv=None, prog=None):
    """The entry point of `python -m keras_attn_runtime` and the zipapp."""
    parser = build_parser(prog)
    args = parse_args(parser, argv)
    run = run_generate if args.command == "generate" else run_classify
    return run_command(run, args, f"{parser.prog} {args.command}")
