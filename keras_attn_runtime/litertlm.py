"""Running a `.litertlm` bundle (`keras_attn.export.export_litertlm`) with
LiteRT-LM's engine (`pip install litert-lm-api`, imported only here and
only when a bundle runs).

`read_bundle` reads a bundle's header with the standard library: its
sections and system metadata, where keras_attn keeps its description
(entry `"keras_attn"`, JSON as in a .tflite, less the vocabulary).
`LiteRTLMGenerator` runs the bundle through `litert_lm.Engine` (CPU
backend): the engine tokenizes, prepends the start token, prefills,
samples and detokenizes; this class picks the sampler settings, streams
the text and reads the engine's timings.

LiteRT-LM's Python Session API samples with top_k, top_p, temperature
and seed only (one top-k/top-p sampler; greedy is top_k=1): a repetition
penalty or a no-repeat n-gram size does not apply, and generation always
ends at the bundle's stop tokens or at `max_new_tokens`.
"""

import json
import os
import struct
import time

from keras_attn_runtime import checks
from keras_attn_runtime import description as description_lib
from keras_attn_runtime import litert
from keras_attn_runtime import samplers
from keras_attn_runtime.tflite_file import _Corrupt
from keras_attn_runtime.tflite_file import _Reader

MAGIC = b"LITERTLM"
# The header: magic, version (3 x uint32), at byte 24 the end offset of
# the header flatbuffer (uint64), which starts at byte 32.
_HEADER_END_AT, _HEADER_START = 24, 32
# Field slots of the header schema's tables.
_META = dict(system_metadata=0, section_metadata=1)
_SYSTEM = dict(entries=0)
_KEY_VALUE = dict(key=0, value_type=1, value=2)
_SECTIONS = dict(objects=0)
_SECTION = dict(items=0, begin_offset=1, end_offset=2, data_type=3)
_STRING_VALUE = 9  # VData.StringValue
SECTION_TYPES = {1: "GenericBinaryData", 3: "TFLiteModel",
                 4: "SP_Tokenizer", 5: "LlmMetadataProto",
                 6: "HF_Tokenizer_Zlib", 7: "TFLiteWeights",
                 8: "EmbeddingMetadataProto", 9: "ExecutorMetadataProto"}


def is_bundle(path):
    """Whether the file at `path` starts like a `.litertlm` bundle."""
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def read_bundle(path):
    """The header of a `.litertlm` file, read with the standard library.

    Returns:
        dict: `version` (str), `system_metadata` (`{key: value}` of its
        string entries) and `sections` (list of `{"type", "begin",
        "end", "items"}`, items being the section's string entries).

    Raises:
        FileNotFoundError: if there is no file at `path`.
        ValueError: for a file that is not a bundle, or a corrupt one.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No model file. Received: path={path!r}")
    with open(path, "rb") as f:
        head = f.read(_HEADER_START)
        if len(head) < _HEADER_START or not head.startswith(MAGIC):
            raise ValueError(
                f"Not a .litertlm bundle (no {MAGIC.decode()} header): "
                f"{path}")
        major, minor, patch = struct.unpack_from("<III", head, len(MAGIC))
        end = struct.unpack_from("<Q", head, _HEADER_END_AT)[0]
        if not _HEADER_START < end <= os.path.getsize(path):
            raise ValueError(f"Corrupt .litertlm header: {path}")
        data = f.read(end - _HEADER_START)
    try:
        reader = _Reader(data)
        root = reader.table(reader.indirect(0))
        system = root.table(_META["system_metadata"])
        entries = (system.tables(_SYSTEM["entries"]) if system is not None
                   else [])
        sections = root.table(_META["section_metadata"])
        sections = (sections.tables(_SECTIONS["objects"])
                    if sections is not None else [])
        return {
            "version": f"{major}.{minor}.{patch}",
            "system_metadata": _strings(entries),
            "sections": [{
                "type": SECTION_TYPES.get(
                    section.scalar(_SECTION["data_type"], "B"), "other"),
                "begin": section.scalar(_SECTION["begin_offset"], "Q"),
                "end": section.scalar(_SECTION["end_offset"], "Q"),
                "items": _strings(section.tables(_SECTION["items"])),
            } for section in sections],
        }
    except (_Corrupt, UnicodeDecodeError) as error:
        raise ValueError(f"Corrupt .litertlm header ({error}): {path}") \
            from None


def _strings(entries):
    """`{key: value}` of the string-valued `KeyValuePair`s."""
    values = {}
    for entry in entries:
        if entry.scalar(_KEY_VALUE["value_type"], "B") != _STRING_VALUE:
            continue
        value = entry.table(_KEY_VALUE["value"])
        key = entry.string(_KEY_VALUE["key"])
        if key is not None and value is not None:
            text = value.string(0)
            values[key.decode("utf-8")] = (
                None if text is None else text.decode("utf-8"))
    return values


def read_description(path):
    """The keras_attn description a bundle's header carries (checked;
    without the vocabulary, which the bundle's model and tokenizer hold),
    or `None`."""
    text = read_bundle(path)["system_metadata"].get(
        description_lib.METADATA_NAME)
    if text is None:
        return None
    try:
        description = json.loads(text)
    except ValueError:
        raise ValueError(
            f"The keras_attn description of {path} is not JSON.") from None
    return description_lib.check_description(description)


def import_litert_lm():
    """The `litert_lm` module.

    Raises:
        ImportError: with the package to install.
    """
    try:
        import litert_lm
    except ImportError:
        raise ImportError(
            "Running a .litertlm bundle needs LiteRT-LM's engine: `pip "
            "install litert-lm-api` (part of keras-attn[export])."
        ) from None
    return litert_lm


def sampler_config(litert_lm, sampler="greedy", temperature=1.0, top_k=10,
                   top_p=0.9, seed=None, vocabulary_size=None):
    """Our sampler settings as a `litert_lm.SamplerConfig`.

    The engine runs one sampler (top-k, then top-p, at a temperature):
    `"greedy"` is top_k=1; `"top_k"` keeps top_p at 1; `"top_p"` and
    `"random"` keep every token in top_k (the engine's top_k otherwise
    defaults to 1, i.e. greedy). Temperature 0 is greedy.
    """
    samplers.make_sampler(sampler, temperature, top_k, top_p, seed)  # checks
    if sampler == "greedy" or temperature == 0:
        return litert_lm.SamplerConfig(top_k=1, seed=seed)
    everything = vocabulary_size or 2**31 - 1
    top_k = top_k if sampler == "top_k" else everything
    top_p = top_p if sampler == "top_p" else 1.0
    return litert_lm.SamplerConfig(top_k=int(top_k), top_p=float(top_p),
                                   temperature=float(temperature), seed=seed)


class LiteRTLMGenerator:
    """Generates text with a `.litertlm` bundle through `litert_lm.Engine`.

    The engine takes text and returns text: it tokenizes with the bundle's
    tokenizer, prepends the start token, stops at the stop tokens. Each
    `generate` call is a new session (one turn). Close the generator (or
    use it as a context manager) to release the engine.

    Args:
        model_path: str. A bundle from `export_litertlm`.
        num_threads: int. CPU threads of the engine. Defaults to `1`.
        quiet: bool. Only the engine's errors reach stderr. Defaults to
            `True`.
        cache_dir: str or `None`. Where the engine may keep its XNNPACK
            weight cache (an existing directory); `None` keeps none.

    Attributes:
        description: dict. What the bundle says about itself (`{}` when
            it carries nothing).
        max_length: int or `None`. The context length (start token,
            prompt and generated tokens).
        generation_defaults: dict. The sampler settings of the
            description, else the built-in defaults for language models.
        last_timings: dict or `None`. After `generate`: `prompt_tokens`
            (the start token included), `new_tokens`, `prefill_ms`,
            `decode_ms` (mean per token), `time_to_first_token_ms`,
            `seconds` (wall time of the call).

    Example:

    ```python
    with LiteRTLMGenerator("lm.litertlm") as generator:
        print(generator.generate("self-driving cars", 20))
    ```
    """

    def __init__(self, model_path, num_threads=1, quiet=True,
                 cache_dir=None):
        self.model_path = os.fspath(model_path)
        num_threads = checks.positive_int(num_threads, "num_threads")
        self.description = read_description(self.model_path) or {}
        self.max_length = self.description.get("max_length")
        self.vocabulary_size = self.description.get("litert_lm", {}).get(
            "vocabulary_size")
        defaults = dict(samplers.GENERATION_DEFAULTS["decoder_lm"])
        defaults.update(self.description.get("generation", {}))
        for key in ("start_token", "stop_token"):
            defaults.pop(key, None)
        self.generation_defaults = defaults
        self.last_timings = None
        self._litert_lm = litert_lm = import_litert_lm()
        litert_lm.set_min_log_severity(
            litert_lm.LogSeverity.ERROR if quiet
            else litert_lm.LogSeverity.INFO)
        if cache_dir is not None and not os.path.isdir(cache_dir):
            raise FileNotFoundError(
                "`cache_dir` must be an existing directory. Received: "
                f"cache_dir={cache_dir!r}")
        try:
            with litert.quiet_stderr(quiet):
                self._engine = litert_lm.Engine(
                    self.model_path,
                    backend=litert_lm.Backend.CPU(thread_count=num_threads),
                    cache_dir=":nocache" if cache_dir is None else cache_dir,
                    enable_benchmark=True)
        except RuntimeError as error:
            raise ValueError(
                f"LiteRT-LM could not load {self.model_path} ({error}); "
                "rerun with --verbose (quiet=False) for the engine's "
                "reason.") from None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self):
        """Releases the engine."""
        engine, self._engine = getattr(self, "_engine", None), None
        if engine is not None:
            engine.close()

    def tokenize(self, text):
        """The bundle tokenizer's ids of `text` (no start token)."""
        return list(self._engine.tokenize(text))

    def detokenize(self, ids):
        """The bundle tokenizer's text of `ids`."""
        return self._engine.detokenize(list(map(int, ids)))

    def generate(self, prompt, max_new_tokens, sampler="greedy",
                 temperature=1.0, top_k=10, top_p=0.9, seed=None,
                 on_text=None):
        """Generates up to `max_new_tokens` tokens after `prompt`.

        Args:
            prompt: str. The text to continue ("" starts from the start
                token alone).
            max_new_tokens: int. At most this many new tokens; the
                engine also stops at the end of its context.
            sampler, temperature, top_k, top_p, seed: as for
                `keras_attn_runtime.Generator` (see `sampler_config`).
            on_text: a function called with each piece of text as soon as
                the engine has it, or `None`.

        Returns:
            str: the generated text (the stop token not included).
        """
        if not isinstance(prompt, str):
            raise TypeError(
                "Expected `prompt` to be a str (the engine tokenizes). "
                f"Received: prompt={checks.short(prompt)}")
        max_new_tokens = checks.positive_int(max_new_tokens,
                                             "max_new_tokens")
        if on_text is not None and not callable(on_text):
            raise TypeError(
                "Expected `on_text` to be a function or None. Received: "
                f"on_text={checks.short(on_text)}")
        config = sampler_config(self._litert_lm, sampler, temperature,
                                top_k, top_p, seed, self.vocabulary_size)
        start = time.perf_counter()
        session = self._engine.create_session(
            apply_prompt_template=False, sampler_config=config,
            max_output_tokens=max_new_tokens)
        try:
            session.run_prefill([prompt])
            pieces = []
            for response in session.run_decode_async():
                for piece in response.texts[:1]:
                    pieces.append(piece)
                    if on_text is not None and piece:
                        on_text(piece)
            info = session.get_benchmark_info()
        finally:
            session.close()
        seconds = time.perf_counter() - start
        decode = info.last_decode_token_count
        self.last_timings = {
            "prompt_tokens": int(info.last_prefill_token_count),
            "new_tokens": int(decode),
            "prefill_ms": _ms(info.last_prefill_token_count,
                              info.last_prefill_tokens_per_second),
            "decode_ms": (1e3 / info.last_decode_tokens_per_second
                          if decode and info.last_decode_tokens_per_second
                          else None),
            "time_to_first_token_ms":
                1e3 * info.time_to_first_token_in_second,
            "seconds": seconds,
        }
        return "".join(pieces)


def _ms(count, per_second):
    return 1e3 * count / per_second if count and per_second else 0.0

