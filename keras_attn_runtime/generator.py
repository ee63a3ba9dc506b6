"""Text generation with a .tflite from `export_generator_tflite`.

Shape legend: M max_length (prompt plus generated tokens), V vocabulary
size, E source length (seq2seq).
"""

import time

import numpy as np

from keras_attn_runtime import checks
from keras_attn_runtime import litert
from keras_attn_runtime import samplers
from keras_attn_runtime import vocabulary as vocabulary_lib
from keras_attn_runtime.tflite_file import TFLiteFile
from keras_attn_runtime.tokenizer import WordPieceTokenizer


class Generator:
    """Generates tokens with a .tflite from `export_generator_tflite`.

    The loop: `prefill` runs the prompt, right-padded with 0 to the cache
    length `M`, and returns the logits after its last token; then each new
    token is picked from the logits (`keras_attn_runtime.samplers`) and
    fed to `decode` at the next position, which returns the next logits.
    For seq2seq files, `encode` runs the source once first.

    Both cache forms of `export_generator_tflite` work. With
    `kv_cache="variables"` (the default) the KV cache stays inside the
    interpreter, so one `Generator` runs one sequence at a time. With
    `kv_cache="tensors"` `prefill` and `decode` return the cache and
    `decode` takes it back, and `encode`'s outputs go to every call.

    A file exported with its vocabularies (`keras_attn.export.metadata`)
    needs nothing else; arguments given here override what it carries.

    Args:
        model_path: str. The .tflite file (signatures `prefill`, `decode`,
            and `encode` for seq2seq).
        vocabulary_path: str, list of str or `None`. The (target)
            `vocabulary.txt` or its tokens; its size must equal the
            model's vocabulary size `V`. Defaults to the embedded one.
        num_threads: int. LiteRT CPU threads. Defaults to `1`.
        source_vocabulary_path: str, list of str or `None`. The source
            vocabulary of a seq2seq model, for `encoder_text`. Defaults to
            the embedded source vocabulary, else to the (target)
            vocabulary.
        lowercase: bool or `None`. The tokenizers' normalization.
            Defaults to the embedded setting, else `True`.
        quiet: bool. Silence LiteRT's native log lines (XNNPACK) while
            loading and on the first call of each signature. Defaults to
            `False`.

    Attributes:
        generation_defaults: dict. The sampler settings the model's
            description asks for (or the built-in defaults of its type,
            `samplers.GENERATION_DEFAULTS`); `generate` itself defaults
            to greedy decoding, so pass them on:
            `generate(prompt, n, **generator.generation_defaults)`.
        start_token_id, stop_token_id: int or `None`. The ids of the
            start (`[BOS]`) and stop (`[EOS]`) tokens.

    Example:

    ```python
    generator = Generator("lm.tflite", "vocabulary.txt")
    ids = generator.generate("self-driving cars", max_new_tokens=20,
                             sampler="top_p", seed=0)
    print(generator.tokenizer.to_text(ids))
    ```
    """

    def __init__(self, model_path, vocabulary_path=None, num_threads=1,
                 source_vocabulary_path=None, lowercase=None, quiet=False):
        interpreter = litert.load_interpreter(model_path, num_threads, quiet)
        signatures = litert.check_signatures(
            interpreter, model_path, ["prefill", "decode"],
            "a generator .tflite comes from "
            "keras_attn.export.export_generator_tflite (a serving_default "
            "file is for `Classifier`)."
        )
        self.is_seq2seq = "encode" in signatures
        self._prefill = litert.SignatureRunner(interpreter, "prefill", quiet)
        self._decode = litert.SignatureRunner(interpreter, "decode", quiet)
        # kv_cache="tensors" files pass the cache through the signatures.
        self.cache_in_signatures = (
            "cache" in self._decode.get_input_details()
        )
        inputs = self._prefill.get_input_details()
        self.max_length = int(inputs["token_ids"]["shape"][1])
        self.vocabulary_size = int(
            self._prefill.get_output_details()["logits"]["shape"][-1]
        )
        model_file = TFLiteFile(model_path)
        self.description = model_file.description or {}
        self.model_type = self.description.get(
            "model_type", "seq2seq" if self.is_seq2seq else "decoder_lm")
        if lowercase is None:
            lowercase = self.description.get("lowercase", True)
        vocabulary, name = vocabulary_lib.model_vocabulary(
            vocabulary_path, self.description.get("vocabulary"),
            "vocabulary_path", model_path=model_path)
        vocabulary_lib.check_vocabulary_size(
            vocabulary, name, self.vocabulary_size,
            f"the model {str(model_path)!r} predicts")
        self.tokenizer = WordPieceTokenizer(vocabulary, lowercase=lowercase)
        self.source_tokenizer = None
        self.source_length = None
        self.last_timings = None
        self.last_prompt_length = None
        if self.is_seq2seq:
            self._encode = litert.SignatureRunner(interpreter, "encode",
                                                  quiet)
            self.source_length = int(
                self._encode.get_input_details()["encoder_token_ids"][
                    "shape"][1]
            )
            source, source_name = vocabulary_lib.model_vocabulary(
                source_vocabulary_path,
                self.description.get("source_vocabulary"),
                "source_vocabulary_path", "source vocabulary")
            if source is None:
                source, source_name = vocabulary, name
            vocabulary_lib.check_vocabulary_size(
                source, source_name,
                model_file.embedding_rows("encode", "encoder_token_ids"),
                f"the encoder of {str(model_path)!r} embeds")
            self.source_tokenizer = WordPieceTokenizer(
                source, self.source_length, lowercase)
        self.generation_defaults, self.start_token_id, self.stop_token_id = (
            self._generation_settings())

    def _generation_settings(self):
        config = dict(samplers.GENERATION_DEFAULTS.get(
            self.model_type, samplers.GENERATION_DEFAULTS["decoder_lm"]))
        config.update(self.description.get("generation", {}))
        special = self.description.get("special_tokens", {})
        start = config.pop("start_token", special.get("bos",
                                                      vocabulary_lib.BOS))
        stop = config.pop("stop_token", special.get("eos",
                                                    vocabulary_lib.EOS))
        return (config, _token_id_or_none(self.tokenizer, start),
                _token_id_or_none(self.tokenizer, stop))

    def prompt_ids(self, prompt):
        """The token ids `generate` starts from for `prompt`.

        Args:
            prompt: str, 1-D sequence of int token ids, or `None` (see
                `generate`).

        Returns:
            list of int.
        """
        if prompt is None or isinstance(prompt, str):
            if self.start_token_id is None:
                raise ValueError(
                    "The vocabulary has no start token "
                    f"({vocabulary_lib.BOS!r}); pass the prompt as token "
                    f"ids. Received: prompt={checks.short(prompt)}"
                )
            ids = [self.start_token_id]
            if prompt:
                ids += self.tokenizer.tokenize(prompt)
            return ids
        ids = checks.token_ids(prompt, self.vocabulary_size, "prompt")
        while ids and ids[-1] == vocabulary_lib.PAD_ID:  # right padding
            ids.pop()
        if not ids:
            raise ValueError(
                "`prompt` needs at least one token (id 0 is padding). "
                f"Received: prompt={checks.short(prompt)}"
            )
        if vocabulary_lib.PAD_ID in ids:
            raise ValueError(
                "`prompt` holds padding (id 0) between tokens. Received: "
                f"prompt={checks.short(prompt)}"
            )
        return ids

    def generate(self, prompt, max_new_tokens, sampler="greedy",
                 temperature=1.0, top_k=10, top_p=0.9, seed=None,
                 stop_token_id=None, encoder_text=None, encoder_ids=None,
                 on_token=None, repetition_penalty=1.0,
                 no_repeat_ngram_size=0):
        """Generates up to `max_new_tokens` token ids after `prompt`.

        Id 0 (padding) is never generated. Afterwards `last_timings` holds
        the seconds spent in `encode` (or `None`), in `prefill`, and in
        each `decode` call, and `last_prompt_length` the prompt's length.

        Args:
            prompt: str, or 1-D sequence of int token ids. A str becomes
                `[BOS]` and its tokens, as in training. `None` is `[BOS]`
                alone (the usual seq2seq decoder prompt).
            max_new_tokens: int. Prompt length plus this must be at most
                the model's `max_length` `M`.
            sampler: `"greedy"`, `"random"`, `"top_k"` or `"top_p"` (see
                `samplers.make_sampler`), or a function from float logits
                `(V,)` to a token id, which then ignores the sampler
                settings. Defaults to `"greedy"`.
            temperature: float >= 0. Logits are divided by it before the
                softmax; 0 is greedy. Defaults to `1.0`.
            top_k: int. `"top_k"` samples among the `top_k` most likely
                tokens. Defaults to `10`.
            top_p: float in (0, 1]. `"top_p"` samples among the fewest most
                likely tokens whose probability adds up to at least
                `top_p`. Defaults to `0.9`.
            seed: int or `None`. The same seed gives the same tokens.
                Defaults to `None` (fresh randomness).
            stop_token_id: int or `None`. Generation ends after this token
                (which is returned). Defaults to `None`.
            encoder_text: str. The source text (seq2seq only), tokenized
                and truncated to the source length `E`.
            encoder_ids: 1-D int sequence of at most `E` ids (seq2seq
                only), instead of `encoder_text`.
            on_token: a function called with each new token id as soon as
                it is picked (to stream the text), or `None`.
            repetition_penalty: float > 0. Tokens already in the sequence
                (prompt included) have positive logits divided and
                negative ones multiplied by it, before any sampler; 1 is
                off. Defaults to `1.0`.
            no_repeat_ngram_size: int >= 0. With n > 0, no n-gram of the
                sequence is generated twice; 0 is off. Defaults to `0`.

        Returns:
            list of int: the generated ids, without the prompt.
        """
        prompt = self.prompt_ids(prompt)
        max_new_tokens = checks.positive_int(max_new_tokens, "max_new_tokens")
        room = self.max_length - len(prompt)
        if max_new_tokens > room:
            raise ValueError(
                f"The prompt length ({len(prompt)}) plus `max_new_tokens` "
                f"must be at most the model's max_length={self.max_length}, "
                f"so at most {max(room, 0)} new tokens fit. Received: "
                f"max_new_tokens={max_new_tokens}"
            )
        if callable(sampler):
            pick = _checked_picker(sampler, self.vocabulary_size)
        else:
            pick = samplers.make_sampler(sampler, temperature, top_k, top_p,
                                         seed)
        repetition_penalty = samplers.check_repetition_penalty(
            repetition_penalty)
        no_repeat_ngram_size = checks.non_negative_int(
            no_repeat_ngram_size, "no_repeat_ngram_size")
        process = repetition_penalty != 1.0 or no_repeat_ngram_size > 0
        if stop_token_id is not None:
            stop_token_id = checks.token_id(
                stop_token_id, self.vocabulary_size, "stop_token_id")
        if on_token is not None and not callable(on_token):
            raise TypeError(
                "Expected `on_token` to be a function or None. Received: "
                f"on_token={checks.short(on_token)}"
            )
        timings = {"encode": None, "prefill": None, "decode": []}
        start = time.perf_counter()
        encoder = self._encoder_state(encoder_text, encoder_ids)
        if self.is_seq2seq:
            timings["encode"] = time.perf_counter() - start
        buffer = np.zeros((1, self.max_length), np.int32)  # (1, M)
        buffer[0, :len(prompt)] = prompt
        start = time.perf_counter()
        out = self._prefill(token_ids=buffer,
                            length=np.array(len(prompt), np.int32), **encoder)
        timings["prefill"] = time.perf_counter() - start
        tokens = []
        for index in range(len(prompt), len(prompt) + max_new_tokens):
            logits = out["logits"][0]  # (V,)
            if process:
                logits = samplers.process_logits(
                    logits, prompt + tokens, repetition_penalty,
                    no_repeat_ngram_size)
            token = pick(logits)
            tokens.append(token)
            if on_token is not None:
                on_token(token)
            if token == stop_token_id or len(tokens) == max_new_tokens:
                break
            start = time.perf_counter()
            cache = {"cache": out["cache"]} if self.cache_in_signatures \
                else {}
            out = self._decode(token_id=np.array([[token]], np.int32),
                               index=np.array(index, np.int32), **encoder,
                               **cache)
            timings["decode"].append(time.perf_counter() - start)
        self.last_timings = timings
        self.last_prompt_length = len(prompt)
        return tokens

    def _encoder_state(self, encoder_text, encoder_ids):
        if not self.is_seq2seq:
            if encoder_text is not None or encoder_ids is not None:
                raise ValueError(
                    "`encoder_text`/`encoder_ids` are for seq2seq models; "
                    "this model is a decoder-only language model. Received: "
                    f"encoder_text={checks.short(encoder_text)}, "
                    f"encoder_ids={checks.short(encoder_ids)}"
                )
            return {}
        if (encoder_text is None) == (encoder_ids is None):
            raise ValueError(
                "A seq2seq model needs the source: pass exactly one of "
                "`encoder_text` and `encoder_ids`. Received: "
                f"encoder_text={checks.short(encoder_text)}, "
                f"encoder_ids={checks.short(encoder_ids)}"
            )
        if encoder_text is not None:
            if not isinstance(encoder_text, str):
                raise TypeError(
                    "Expected `encoder_text` to be a str. Received: "
                    f"encoder_text={checks.short(encoder_text)}"
                )
            source = self.source_tokenizer.encode(encoder_text)
        else:
            ids = checks.token_ids(encoder_ids,
                                   self.source_tokenizer.vocabulary_size,
                                   "encoder_ids")
            if not 0 < len(ids) <= self.source_length:
                raise ValueError(
                    f"`encoder_ids` must hold 1 to {self.source_length} ids "
                    f"(the model's source length). Received: "
                    f"encoder_ids={checks.short(encoder_ids)} of length "
                    f"{len(ids)}"
                )
            source = np.zeros(self.source_length, np.int32)  # (E,)
            source[:len(ids)] = ids
        if not source.any():
            raise ValueError(
                "The source has no token (all padding). Received: "
                f"encoder_text={checks.short(encoder_text)}, "
                f"encoder_ids={checks.short(encoder_ids)}"
            )
        source = source[None]  # (1, E)
        state = self._encode(encoder_token_ids=source)
        if not self.cache_in_signatures:
            return {}  # the interpreter now holds the source's state
        return dict(encoder_token_ids=source, memory=state["memory"],
                    cross_cache=state["cross_cache"])


def _token_id_or_none(tokenizer, token):
    try:
        return tokenizer.token_to_id(token)
    except ValueError:
        return None


def _checked_picker(pick, vocabulary_size):
    def checked(logits):
        token = pick(logits)
        if not checks.is_int(token) or not 0 < token < vocabulary_size:
            raise ValueError(
                "A `sampler` function must return a token id in [1, "
                f"{vocabulary_size}). Received: {token!r}"
            )
        return int(token)

    return checked
