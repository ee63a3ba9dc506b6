"""Runs keras_attn .tflite models on a device, with NumPy and LiteRT only.

Copy this file, the .tflite and its `vocabulary.txt` to the device, then
`pip install ai-edge-litert numpy` (or use `tflite_runtime`, the older
package with the same interpreter API). Nothing here imports TensorFlow,
Keras or keras-hub.

- `WordPieceTokenizer` gives the same token ids as the training
  tokenizer (`keras_attn.data.make_tokenizer`: keras-hub's
  `WordPieceTokenizer` with `lowercase=True`, accents kept, splitting on
  whitespace, punctuation and CJK characters, `##` suffixes, `[UNK]`).
- `Classifier` runs a file from `keras_attn.export.export_tflite`
  (signature `serving_default`: `token_ids` (1, L) int32 -> logits (1, C)).
- `Generator` runs a file from `keras_attn.export.export_generator_tflite`
  (signatures `prefill` and `decode`, plus `encode` for seq2seq) with
  greedy, top-k or top-p sampling.

Command line:

    python keras_attn_runner.py classify MODEL.tflite VOCAB.txt "text" ...
    python keras_attn_runner.py generate MODEL.tflite VOCAB.txt \\
        --prompt "text" --max-new-tokens 20 --sampler top_p

Shape legend: N texts, L classifier input length, C classes, M generator
max_length (prompt plus generated tokens), V vocabulary size, E source
length (seq2seq).
"""

import argparse
import os
import sys
import time
import unicodedata

import numpy as np

PAD = "[PAD]"
UNK = "[UNK]"
BOS = "[BOS]"
EOS = "[EOS]"
PAD_ID = 0
SAMPLERS = ("greedy", "top_k", "top_p")

# FastWordpieceTokenizer (tensorflow-text) maps longer words to `[UNK]`.
_MAX_BYTES_PER_WORD = 100
_SUFFIX = "##"

# Character classes for splitting (keras-hub's pretokenize with
# split_on_cjk=True): a word character, a delimiter that is dropped
# (ASCII whitespace as RE2's `\s`, control `Cc` and format `Cf`
# characters), or a delimiter kept as a word of its own (punctuation: all
# non-alphanumeric printable ASCII and Unicode `P*`, and CJK ideographs).
_WORD, _DROP, _KEEP = 0, 1, 2
_ASCII_WHITESPACE = frozenset(" \t\n\r\f")
_CJK_RANGES = (
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F), (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF),
    (0xF900, 0xFAFF), (0x2F800, 0x2FA1F),
)
# Code points NFKC_Casefold (tensorflow-text's case_fold_utf8) deletes.
_DEFAULT_IGNORABLE_RANGES = (
    (0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C),
    (0x115F, 0x1160), (0x17B4, 0x17B5), (0x180B, 0x180F),
    (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x206F),
    (0x3164, 0x3164), (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8), (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF),
)

# Characters newer than the Unicode of Python 3.11's `unicodedata` (14.0)
# that TensorFlow's RE2 and ICU already know; applied only where the
# running Python does not (category "Cn", unassigned), so on a newer
# Python its own tables decide. With them every code point splits and
# folds as in keras-hub.
_NEWER_RANGES = (  # (first, last, class), Unicode 15
    (0x11B00, 0x11B09, _KEEP), (0x11F43, 0x11F4F, _KEEP),  # punctuation
    (0x13439, 0x1343F, _DROP),  # format controls
)
_NEWER_FOLDS = {  # Unicode 16 case pairs and compatibility letters
    0x1C89: "\u1c8a", 0xA7CB: "\u0264", 0xA7CC: "\ua7cd",
    0xA7DA: "\ua7db", 0xA7DC: "\u019b",
    **{0x10D50 + i: chr(0x10D70 + i) for i in range(22)},
    **dict(zip(range(0x1CCD6, 0x1CCFA),
               "abcdefghijklmnopqrstuvwxyz0123456789")),
    **dict(zip(range(0x1E030, 0x1E06E),
               "абвгдежзиклмопрстуфхцчшыэюꚉәіјөүӏ"
               "абвгдежзиклопсуфхцчшъыґіѕџҫꙑұ")),
}
_NEWER_FOLDS = {code: folded for code, folded in _NEWER_FOLDS.items()
                if unicodedata.category(chr(code)) == "Cn"}


def _char_class(char):
    if char in _ASCII_WHITESPACE:
        return _DROP
    category = unicodedata.category(char)
    if category == "Cn":
        code = ord(char)
        for first, last, kind in _NEWER_RANGES:
            if first <= code <= last:
                return kind
    if category in ("Cc", "Cf"):
        return _DROP
    code = ord(char)
    if (0x21 <= code <= 0x2F or 0x3A <= code <= 0x40 or 0x5B <= code <= 0x60
            or 0x7B <= code <= 0x7E or category.startswith("P")):
        return _KEEP
    if any(low <= code <= high for low, high in _CJK_RANGES):
        return _KEEP
    return _WORD


def _is_default_ignorable(char):
    code = ord(char)
    return any(low <= code <= high for low, high in _DEFAULT_IGNORABLE_RANGES)


def _case_fold(word):
    """NFKC_Casefold, as tensorflow-text's `case_fold_utf8`."""
    if word.isascii():
        return word.lower()
    if _NEWER_FOLDS:
        word = word.translate(_NEWER_FOLDS)
    word = unicodedata.normalize("NFKC", word).casefold()
    # casefold() can leave decomposed sequences; NFKC recomposes them.
    word = unicodedata.normalize("NFKC", word)
    return "".join(c for c in word if not _is_default_ignorable(c))


def _split_words(text, char_classes):
    """Splits on delimiters, keeping punctuation and CJK characters."""
    words = []
    start = 0
    for i, char in enumerate(text):
        kind = char_classes.get(char)
        if kind is None:
            kind = char_classes[char] = _char_class(char)
        if kind == _WORD:
            continue
        if i > start:
            words.append(text[start:i])
        if kind == _KEEP:
            words.append(char)
        start = i + 1
    if start < len(text):
        words.append(text[start:])
    return words


def read_vocabulary(path):
    """Reads a vocabulary file: UTF-8, one token per line.

    Args:
        path: str or `os.PathLike`. A file written by
            `keras_attn.data.save_vocabulary`.

    Returns:
        list of str.

    Raises:
        FileNotFoundError: if there is no file at `path`.
        ValueError: if the file is not UTF-8, is empty, repeats a token,
            does not start with `"[PAD]"` or lacks `"[UNK]"`.
    """
    if not isinstance(path, (str, os.PathLike)) or not os.path.isfile(path):
        raise FileNotFoundError(
            f"No vocabulary file. Received: vocabulary_path={path!r}"
        )
    with open(path, "rb") as file:
        data = file.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"The vocabulary file {str(path)!r} is not UTF-8: {error}"
        ) from None
    # Only "\n" ends a line: tokens may hold other Unicode line separators.
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    vocabulary = [line.removesuffix("\r") for line in lines]
    return _check_vocabulary(vocabulary, f"The vocabulary file {str(path)!r}")


def _check_vocabulary(vocabulary, what):
    if not vocabulary or vocabulary[0] != PAD:
        raise ValueError(
            f"{what} must start with {PAD!r} (id 0 is padding). Received "
            f"first token: {(vocabulary or [''])[0]!r}"
        )
    if UNK not in vocabulary:
        raise ValueError(f"{what} lacks {UNK!r}.")
    if not all(isinstance(token, str) and token for token in vocabulary):
        raise ValueError(f"{what} holds an empty or non-str token.")
    if len(set(vocabulary)) != len(vocabulary):
        raise ValueError(f"{what} repeats tokens; each token needs one id.")
    return vocabulary


class WordPieceTokenizer:
    """The training tokenizer of keras_attn, in pure Python.

    Gives the token ids of `keras_attn.data.make_tokenizer(vocabulary)`
    (keras-hub's `WordPieceTokenizer` on tensorflow-text): text is split
    on ASCII whitespace and control/format characters (dropped) and on
    punctuation and CJK ideographs (kept as one-character words); each
    word is case folded (NFKC_Casefold: lowercase plus compatibility
    normalization; accents stay) and split greedily into the longest
    vocabulary pieces, later pieces carrying the `##` prefix. A word that
    cannot be split, or longer than 100 UTF-8 bytes, becomes `[UNK]`.

    Args:
        vocabulary_path: str or `os.PathLike`. The `vocabulary.txt` saved
            with the model; or a list of str tokens.
        sequence_length: int or `None`. Default length for `encode`.
            Defaults to `None`.
        lowercase: bool. Must match the training tokenizer. Defaults to
            `True`.

    Example:

    ```python
    tokenizer = WordPieceTokenizer("vocabulary.txt", sequence_length=64)
    ids = tokenizer.tokenize("Self-driving cars!")   # list of int
    batch = tokenizer.encode("Self-driving cars!")   # int32 (64,)
    text = tokenizer.detokenize(ids)                 # "self - driving cars !"
    ```
    """

    def __init__(self, vocabulary_path, sequence_length=None, lowercase=True):
        if isinstance(vocabulary_path, (list, tuple)):
            vocabulary = _check_vocabulary(list(vocabulary_path),
                                           "The vocabulary")
        else:
            vocabulary = read_vocabulary(vocabulary_path)
        self.vocabulary = vocabulary
        self.sequence_length = _check_positive_int(
            sequence_length, "sequence_length", allow_none=True
        )
        if not isinstance(lowercase, bool):
            raise TypeError(
                "Expected `lowercase` to be a bool. Received: "
                f"lowercase={lowercase!r}"
            )
        self.lowercase = lowercase
        self._ids = {token: i for i, token in enumerate(vocabulary)}
        self.unk_id = self._ids[UNK]
        self._longest = max(len(token) for token in vocabulary)
        self._char_classes = {}
        self._word_cache = {}

    @property
    def vocabulary_size(self):
        return len(self.vocabulary)

    def token_to_id(self, token):
        if token not in self._ids:
            raise ValueError(
                f"Token {token!r} is not in the vocabulary. Received: "
                f"token={token!r}"
            )
        return self._ids[token]

    def id_to_token(self, token_id):
        return self.vocabulary[
            _check_id(token_id, self.vocabulary_size, "token_id")
        ]

    def tokenize(self, text):
        """Token ids of `text`, unpadded.

        Args:
            text: str.

        Returns:
            list of int.
        """
        if not isinstance(text, str):
            raise TypeError(
                f"Expected `text` to be a str. Received: text={text!r} of "
                f"type {type(text).__name__}"
            )
        ids = []
        for word in _split_words(text, self._char_classes):
            pieces = self._word_cache.get(word)
            if pieces is None:
                pieces = self._word_pieces(word)
                if len(self._word_cache) < 100_000:
                    self._word_cache[word] = pieces
            ids.extend(pieces)
        return ids

    def encode(self, text, sequence_length=None):
        """Token ids of `text` truncated or padded with 0 to a length.

        Args:
            text: str.
            sequence_length: int. Defaults to the constructor's.

        Returns:
            int32 array `(sequence_length,)`.
        """
        if sequence_length is None:
            sequence_length = self.sequence_length
        if sequence_length is None:
            raise ValueError(
                "`encode` needs a `sequence_length`, here or in the "
                "constructor. Received: sequence_length=None"
            )
        sequence_length = _check_positive_int(
            sequence_length, "sequence_length"
        )
        ids = self.tokenize(text)[:sequence_length]
        out = np.zeros(sequence_length, np.int32)
        out[:len(ids)] = ids
        return out

    def detokenize(self, ids):
        """Joins the tokens of `ids` with spaces, `##` pieces glued on.

        As keras-hub's `detokenize`, this does not undo the lowercasing or
        the splitting: `"Don't!"` comes back as `"don ' t !"`. Padding ids
        (0) come back as `[PAD]`; strip them first.

        Args:
            ids: 1-D sequence of int token ids.

        Returns:
            str.
        """
        ids = _check_ids(ids, len(self.vocabulary), "ids")
        words = []
        for i, token_id in enumerate(ids):
            token = self.vocabulary[token_id]
            if i > 0 and len(token) > len(_SUFFIX) and token.startswith(
                _SUFFIX
            ):
                words[-1] += token[len(_SUFFIX):]
            else:
                words.append(token)
        return " ".join(words)

    def _word_pieces(self, word):
        if self.lowercase:
            word = _case_fold(word)
        if not word:
            return []
        if len(word.encode("utf-8", "surrogatepass")) > _MAX_BYTES_PER_WORD:
            return [self.unk_id]
        pieces = []
        start = 0
        while start < len(word):
            prefix = _SUFFIX if start else ""
            for end in range(min(len(word), start + self._longest), start,
                             -1):
                token_id = self._ids.get(prefix + word[start:end])
                if token_id is not None:
                    break
            else:
                return [self.unk_id]
            pieces.append(token_id)
            start = end
        return pieces


def _interpreter(model_path, num_threads):
    if not isinstance(model_path, (str, os.PathLike)) or not os.path.isfile(
        model_path
    ):
        raise FileNotFoundError(
            f"No model file. Received: model_path={model_path!r}"
        )
    num_threads = _check_positive_int(num_threads, "num_threads")
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            raise ImportError(
                "Running a .tflite needs the LiteRT runtime: "
                "`pip install ai-edge-litert`."
            ) from None
    try:
        return Interpreter(model_path=os.fspath(model_path),
                           num_threads=num_threads)
    except ValueError as error:
        raise ValueError(
            f"Not a .tflite model: {error}. Received: "
            f"model_path={model_path!r}"
        ) from None


def _signatures(interpreter, model_path, expected, hint):
    signatures = interpreter.get_signature_list()
    missing = [name for name in expected if name not in signatures]
    if missing:
        raise ValueError(
            f"The model file has no signature {missing[0]!r}: {hint} "
            f"Received: model_path={model_path!r} with signatures "
            f"{sorted(signatures)}"
        )
    return signatures


def _softmax(logits):
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


class Classifier:
    """Classifies texts with a .tflite from `keras_attn.export.export_tflite`.

    Each text is tokenized, truncated or padded with 0 to the model's
    length `L` and run alone (the file has batch 1).

    Args:
        model_path: str. The .tflite file (signature `serving_default`,
            input `token_ids` (1, L) int32, output logits (1, C)).
        vocabulary_path: str. The `vocabulary.txt` of the model.
        class_names: list of str or `None`. Names in label-id order;
            `classify` returns the label id when `None`. Defaults to
            `None`.
        num_threads: int. LiteRT CPU threads. Defaults to `1`.

    Example:

    ```python
    classifier = Classifier("classifier.tflite", "vocabulary.txt",
                            class_names=["negative", "neutral", "positive"])
    label, probability = classifier.classify("What a great ride!")
    ```
    """

    def __init__(self, model_path, vocabulary_path, class_names=None,
                 num_threads=1):
        interpreter = _interpreter(model_path, num_threads)
        signatures = _signatures(
            interpreter, model_path, ["serving_default"],
            "a classifier .tflite comes from keras_attn.export.export_tflite "
            "(a prefill/decode file is for `Generator`)."
        )
        inputs = signatures["serving_default"]["inputs"]
        if list(inputs) != ["token_ids"]:
            raise ValueError(
                "A classifier .tflite takes one input, `token_ids`. Received: "
                f"model_path={model_path!r} with inputs {sorted(inputs)}"
            )
        self._runner = interpreter.get_signature_runner("serving_default")
        shape = self._runner.get_input_details()["token_ids"]["shape"]
        outputs = self._runner.get_output_details()
        if len(shape) != 2 or shape[0] != 1 or len(outputs) != 1:
            raise ValueError(
                "A classifier .tflite maps `token_ids` (1, L) to logits "
                f"(1, C). Received: model_path={model_path!r} with token_ids "
                f"shape {list(shape)} and outputs {sorted(outputs)}"
            )
        (self._output, details), = outputs.items()
        self.sequence_length = int(shape[1])
        self.num_classes = int(details["shape"][-1])
        self.tokenizer = WordPieceTokenizer(vocabulary_path,
                                            self.sequence_length)
        if class_names is not None:
            class_names = list(class_names)
            if len(class_names) != self.num_classes:
                raise ValueError(
                    f"The model has {self.num_classes} classes, so "
                    f"`class_names` needs {self.num_classes} names. "
                    f"Received: class_names={class_names!r}"
                )
        self.class_names = class_names

    def predict(self, texts):
        """Class probabilities of each text.

        Args:
            texts: str, or list of N str.

        Returns:
            float32 array `(N, C)`, rows summing to 1.
        """
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, (list, tuple)) or not all(
            isinstance(text, str) for text in texts
        ):
            raise TypeError(
                "Expected `texts` to be a str or a list of str. Received: "
                f"texts={_short(texts)} of type {type(texts).__name__}"
            )
        ids = np.stack([self.tokenizer.encode(text) for text in texts]
                       ) if texts else np.zeros((0, self.sequence_length))
        return self.predict_ids(ids)

    def predict_ids(self, token_ids):
        """Class probabilities of rows of token ids.

        Args:
            token_ids: int array `(N, L)`, padded with 0.

        Returns:
            float32 array `(N, C)`.
        """
        token_ids = np.asarray(token_ids)
        if token_ids.ndim != 2 or token_ids.shape[1] != self.sequence_length:
            raise ValueError(
                f"`token_ids` must have shape (N, {self.sequence_length}). "
                f"Received: token_ids.shape={token_ids.shape}"
            )
        if token_ids.size:
            _check_ids(token_ids.ravel(), self.tokenizer.vocabulary_size,
                       "token_ids")
        logits = np.zeros((len(token_ids), self.num_classes), np.float64)
        for i, row in enumerate(token_ids.astype(np.int32)):
            logits[i] = self._runner(token_ids=row[None])[self._output][0]
        return _softmax(logits).astype(np.float32)

    def classify(self, text):
        """The most likely class of `text` and its probability.

        Returns:
            `(label, probability)`: the class name (or id without
            `class_names`) and a float.
        """
        probabilities = self.predict([text])[0]
        best = int(np.argmax(probabilities))
        label = self.class_names[best] if self.class_names else best
        return label, float(probabilities[best])


class Generator:
    """Generates tokens with a .tflite from `export_generator_tflite`.

    The loop: `prefill` runs the prompt, right-padded with 0 to the cache
    length `M`, and returns the logits after its last token; then each new
    token is picked from the logits and fed to `decode` at the next
    position, which returns the next logits. For seq2seq files, `encode`
    runs the source once first.

    Both cache forms of `export_generator_tflite` work. With
    `kv_cache="variables"` (the default) the KV cache stays inside the
    interpreter, so one `Generator` runs one sequence at a time. With
    `kv_cache="tensors"` `prefill` and `decode` return the cache and
    `decode` takes it back, and `encode`'s outputs go to every call.

    Args:
        model_path: str. The .tflite file (signatures `prefill`, `decode`,
            and `encode` for seq2seq).
        vocabulary_path: str. The (target) `vocabulary.txt`; its size must
            equal the model's vocabulary size `V`.
        num_threads: int. LiteRT CPU threads. Defaults to `1`.
        source_vocabulary_path: str or `None`. The source vocabulary of a
            seq2seq model, for `encoder_text`. Defaults to
            `vocabulary_path`.

    Example:

    ```python
    generator = Generator("lm.tflite", "vocabulary.txt")
    ids = generator.generate("self-driving cars", max_new_tokens=20,
                             sampler="top_p", seed=0)
    print(generator.tokenizer.detokenize(ids))
    ```
    """

    def __init__(self, model_path, vocabulary_path, num_threads=1,
                 source_vocabulary_path=None):
        interpreter = _interpreter(model_path, num_threads)
        signatures = _signatures(
            interpreter, model_path, ["prefill", "decode"],
            "a generator .tflite comes from "
            "keras_attn.export.export_generator_tflite (a serving_default "
            "file is for `Classifier`)."
        )
        self.is_seq2seq = "encode" in signatures
        self._prefill = interpreter.get_signature_runner("prefill")
        self._decode = interpreter.get_signature_runner("decode")
        # kv_cache="tensors" files pass the cache through the signatures.
        self.cache_in_signatures = (
            "cache" in self._decode.get_input_details()
        )
        inputs = self._prefill.get_input_details()
        self.max_length = int(inputs["token_ids"]["shape"][1])
        self.vocabulary_size = int(
            self._prefill.get_output_details()["logits"]["shape"][-1]
        )
        self.tokenizer = WordPieceTokenizer(vocabulary_path)
        if self.tokenizer.vocabulary_size != self.vocabulary_size:
            raise ValueError(
                f"The vocabulary file has {self.tokenizer.vocabulary_size} "
                f"tokens but the model predicts {self.vocabulary_size}: is "
                "it the vocabulary of this model? Received: "
                f"vocabulary_path={vocabulary_path!r}"
            )
        self.source_tokenizer = None
        self.source_length = None
        self.last_timings = None
        self.last_prompt_length = None
        if self.is_seq2seq:
            self._encode = interpreter.get_signature_runner("encode")
            self.source_length = int(
                self._encode.get_input_details()["encoder_token_ids"][
                    "shape"][1]
            )
            self.source_tokenizer = WordPieceTokenizer(
                source_vocabulary_path or vocabulary_path, self.source_length
            )

    def generate(self, prompt, max_new_tokens, sampler="greedy",
                 temperature=1.0, top_k=10, top_p=0.9, seed=None,
                 stop_token_id=None, encoder_text=None, encoder_ids=None,
                 on_token=None):
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
            sampler: `"greedy"`, `"top_k"` or `"top_p"` (see
                `make_sampler`), or a function from float32 logits `(V,)`
                to a token id, which then ignores the sampler settings.
                Defaults to `"greedy"`.
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

        Returns:
            list of int: the generated ids, without the prompt.
        """
        prompt = self._prompt_ids(prompt)
        max_new_tokens = _check_positive_int(max_new_tokens, "max_new_tokens")
        if len(prompt) + max_new_tokens > self.max_length:
            raise ValueError(
                f"The prompt length ({len(prompt)}) plus `max_new_tokens` "
                f"must be at most the model's max_length={self.max_length}. "
                f"Received: max_new_tokens={max_new_tokens}"
            )
        if callable(sampler):
            pick = _checked_picker(sampler, self.vocabulary_size)
        else:
            pick = make_sampler(sampler, temperature, top_k, top_p, seed)
        if stop_token_id is not None:
            stop_token_id = _check_id(stop_token_id, self.vocabulary_size,
                                      "stop_token_id")
        if on_token is not None and not callable(on_token):
            raise TypeError(
                "Expected `on_token` to be a function or None. Received: "
                f"on_token={_short(on_token)}"
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
            token = pick(out["logits"][0])  # logits (1, V)
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

    def _prompt_ids(self, prompt):
        if prompt is None or isinstance(prompt, str):
            ids = [self.tokenizer.token_to_id(BOS)]
            if prompt:
                ids += self.tokenizer.tokenize(prompt)
            return ids
        ids = _check_ids(prompt, self.vocabulary_size, "prompt")
        while ids and ids[-1] == PAD_ID:  # right padding
            ids.pop()
        if not ids:
            raise ValueError(
                "`prompt` needs at least one token (id 0 is padding). "
                f"Received: prompt={_short(prompt)}"
            )
        if PAD_ID in ids:
            raise ValueError(
                "`prompt` holds padding (id 0) between tokens. Received: "
                f"prompt={_short(prompt)}"
            )
        return ids

    def _encoder_state(self, encoder_text, encoder_ids):
        if not self.is_seq2seq:
            if encoder_text is not None or encoder_ids is not None:
                raise ValueError(
                    "`encoder_text`/`encoder_ids` are for seq2seq models; "
                    "this model is a decoder-only language model. Received: "
                    f"encoder_text={_short(encoder_text)}, "
                    f"encoder_ids={_short(encoder_ids)}"
                )
            return {}
        if (encoder_text is None) == (encoder_ids is None):
            raise ValueError(
                "A seq2seq model needs the source: pass exactly one of "
                "`encoder_text` and `encoder_ids`. Received: "
                f"encoder_text={_short(encoder_text)}, "
                f"encoder_ids={_short(encoder_ids)}"
            )
        if encoder_text is not None:
            if not isinstance(encoder_text, str):
                raise TypeError(
                    "Expected `encoder_text` to be a str. Received: "
                    f"encoder_text={_short(encoder_text)}"
                )
            source = self.source_tokenizer.encode(encoder_text)
        else:
            ids = _check_ids(encoder_ids, self.source_tokenizer.vocabulary_size,
                             "encoder_ids")
            if not 0 < len(ids) <= self.source_length:
                raise ValueError(
                    f"`encoder_ids` must hold 1 to {self.source_length} ids "
                    f"(the model's source length). Received: "
                    f"encoder_ids={_short(encoder_ids)} of length {len(ids)}"
                )
            source = np.zeros(self.source_length, np.int32)  # (E,)
            source[:len(ids)] = ids
        if not source.any():
            raise ValueError(
                "The source has no token (all padding). Received: "
                f"encoder_text={_short(encoder_text)}, "
                f"encoder_ids={_short(encoder_ids)}"
            )
        source = source[None]  # (1, E)
        state = self._encode(encoder_token_ids=source)
        if not self.cache_in_signatures:
            return {}  # the interpreter now holds the source's state
        return dict(encoder_token_ids=source, memory=state["memory"],
                    cross_cache=state["cross_cache"])


def make_sampler(sampler="greedy", temperature=1.0, top_k=10, top_p=0.9,
                 seed=None):
    """A function from logits `(V,)` to the next token id, never 0.

    Sampling runs in float64: `softmax(logits / temperature)` over the
    kept tokens (id 0, padding, is never kept).

    Args:
        sampler: `"greedy"` (the most likely token), `"top_k"` (sample
            among the `top_k` most likely) or `"top_p"` (sample among the
            fewest most likely tokens whose probability reaches `top_p`).
        temperature: float >= 0. 0 is greedy whatever `sampler` says.
        top_k: int. Tokens kept by `"top_k"`.
        top_p: float in (0, 1]. Probability mass kept by `"top_p"`.
        seed: int, `numpy.random.Generator` or `None`. An int seed makes
            the draws of a new sampler reproducible.

    Returns:
        A function `pick(logits) -> int`.

    Example:

    ```python
    pick = make_sampler("top_k", temperature=0.8, top_k=5, seed=0)
    next_id = pick(logits)   # logits: float array (V,)
    ```
    """
    if sampler not in SAMPLERS:
        raise ValueError(
            "Received an invalid value for argument `sampler`, expected one "
            f"of {SAMPLERS}. Received: sampler={sampler!r}"
        )
    if isinstance(temperature, bool) or not isinstance(
        temperature, (int, float, np.integer, np.floating)
    ) or not 0 <= temperature < float("inf"):
        raise ValueError(
            "Received an invalid value for argument `temperature`, expected "
            f"a finite number >= 0. Received: temperature={temperature!r}"
        )
    if sampler == "top_k":
        top_k = _check_positive_int(top_k, "top_k")
    if sampler == "top_p" and (
        isinstance(top_p, bool)
        or not isinstance(top_p, (int, float, np.integer, np.floating))
        or not 0 < top_p <= 1
    ):
        raise ValueError(
            "Received an invalid value for argument `top_p`, expected a "
            f"number in (0, 1]. Received: top_p={top_p!r}"
        )
    if seed is not None and not isinstance(seed, np.random.Generator):
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(
                "Expected `seed` to be an integer, a numpy.random.Generator "
                f"or None. Received: seed={seed!r}"
            )
        if seed < 0:
            raise ValueError(
                "Received an invalid value for argument `seed`, expected an "
                f"integer >= 0. Received: seed={seed}"
            )
    rng = np.random.default_rng(seed)

    def greedy(logits):
        return int(np.argmax(logits[1:])) + 1  # id 0 is padding

    if sampler == "greedy" or temperature == 0:
        return greedy

    def sample(logits):
        logits = np.asarray(logits[1:], np.float64) / temperature
        order = np.argsort(-logits, kind="stable")  # best first
        if sampler == "top_k":
            order = order[:top_k]
        probabilities = _softmax(logits[order])
        if sampler == "top_p":
            # The fewest best tokens whose mass reaches top_p.
            kept = np.searchsorted(np.cumsum(probabilities), top_p) + 1
            kept = min(int(kept), len(order))
            order, probabilities = order[:kept], probabilities[:kept]
        cumulative = np.cumsum(probabilities)
        choice = np.searchsorted(cumulative, rng.random() * cumulative[-1],
                                 side="right")
        return int(order[min(int(choice), len(order) - 1)]) + 1

    return sample


def _checked_picker(pick, vocabulary_size):
    def checked(logits):
        token = pick(logits)
        if isinstance(token, bool) or not isinstance(
            token, (int, np.integer)
        ) or not 0 < token < vocabulary_size:
            raise ValueError(
                "A `sampler` function must return a token id in [1, "
                f"{vocabulary_size}). Received: {token!r}"
            )
        return int(token)

    return checked


def _check_positive_int(value, name, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or (
        value <= 0
    ):
        raise ValueError(
            f"Received an invalid value for argument `{name}`, expected a "
            f"positive integer. Received: {name}={value!r}"
        )
    return int(value)


def _check_id(value, vocabulary_size, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(
            f"Expected `{name}` to be an integer token id. Received: "
            f"{name}={value!r} of type {type(value).__name__}"
        )
    if not 0 <= value < vocabulary_size:
        raise ValueError(
            f"`{name}` must be a token id in [0, {vocabulary_size}) (the "
            f"vocabulary size). Received: {name}={value}"
        )
    return int(value)


def _check_ids(ids, vocabulary_size, name):
    """`ids` as a list of int, if all are integers in [0, vocabulary_size)."""
    if isinstance(ids, np.ndarray) and ids.ndim == 1 and (
        ids.size == 0 or np.issubdtype(ids.dtype, np.integer)
    ):
        values = ids.tolist()
    elif isinstance(ids, (list, tuple)) and all(
        isinstance(i, (int, np.integer)) and not isinstance(i, bool)
        for i in ids
    ):
        values = [int(i) for i in ids]
    else:
        raise TypeError(
            f"Expected `{name}` to be a 1-D sequence of integer token ids. "
            f"Received: {name}={_short(ids)} of type {type(ids).__name__}"
        )
    bad = [i for i in values if not 0 <= i < vocabulary_size]
    if bad:
        raise ValueError(
            f"`{name}` holds ids outside [0, {vocabulary_size}) (the "
            f"vocabulary size). Received: {name}={_short(ids)}, e.g. {bad[0]}"
        )
    return values


def _short(value):
    if isinstance(value, np.ndarray):
        value = value.tolist()
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="keras_attn_runner.py",
        description="Run a keras_attn .tflite with LiteRT and NumPy.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    classify = commands.add_parser("classify", help="classify texts")
    classify.add_argument("model")
    classify.add_argument("vocabulary")
    classify.add_argument("texts", nargs="+")
    classify.add_argument("--class-names", default=None,
                          help="comma-separated names in label-id order, "
                          "e.g. negative,neutral,positive")
    generate = commands.add_parser("generate", help="generate text")
    generate.add_argument("model")
    generate.add_argument("vocabulary")
    generate.add_argument("--prompt", default="")
    generate.add_argument("--source", default=None,
                          help="source text of a seq2seq model")
    generate.add_argument("--source-vocabulary", default=None)
    generate.add_argument("--max-new-tokens", type=int, default=20)
    generate.add_argument("--sampler", choices=SAMPLERS, default="greedy")
    generate.add_argument("--temperature", type=float, default=1.0)
    generate.add_argument("--top-k", type=int, default=10)
    generate.add_argument("--top-p", type=float, default=0.9)
    generate.add_argument("--seed", type=int, default=None)
    generate.add_argument("--no-stop", action="store_true",
                          help=f"do not stop at {EOS}")
    for command in (classify, generate):
        command.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    try:
        if args.command == "classify":
            names = args.class_names.split(",") if args.class_names else None
            model = Classifier(args.model, args.vocabulary, names,
                               args.threads)
            for text, row in zip(args.texts, model.predict(args.texts)):
                best = int(np.argmax(row))
                label = names[best] if names else best
                print(f"{label}\t{row[best]:.3f}\t{text}")
            return 0
        model = Generator(args.model, args.vocabulary, args.threads,
                          args.source_vocabulary)
        vocabulary = model.tokenizer.vocabulary
        stop = None if args.no_stop or EOS not in vocabulary else (
            vocabulary.index(EOS))
        prompt = None if model.is_seq2seq and not args.prompt else args.prompt
        ids = model.generate(
            prompt, args.max_new_tokens, sampler=args.sampler,
            temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
            seed=args.seed, stop_token_id=stop, encoder_text=args.source,
        )
        if ids and ids[-1] == stop:
            ids = ids[:-1]
        print(model.tokenizer.detokenize(ids))
        return 0
    except (ValueError, TypeError, FileNotFoundError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
