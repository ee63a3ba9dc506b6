"""The training tokenizer of keras_attn, in pure Python.

Gives the token ids of `keras_attn.data.make_tokenizer` (keras-hub's
`WordPieceTokenizer` on tensorflow-text) with the standard library only,
so that a device needs neither TensorFlow nor keras-hub to prepare a
model's input.
"""

import os
import unicodedata

import numpy as np

from keras_attn_runtime import checks
from keras_attn_runtime import text_stream
from keras_attn_runtime import vocabulary as vocabulary_lib

# FastWordpieceTokenizer (tensorflow-text) maps longer words to `[UNK]`.
_MAX_BYTES_PER_WORD = 100
_SUFFIX = text_stream.SUFFIX

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
        vocabulary: list of str, or str or `os.PathLike`: the tokens, or
            the `vocabulary.txt` saved with the model.
        sequence_length: int or `None`. Default length for `encode`.
            Defaults to `None`.
        lowercase: bool. Must match the training tokenizer. Defaults to
            `True`.

    Example:

    ```python
    from keras_attn_runtime import WordPieceTokenizer
    vocabulary = ["[PAD]", "[UNK]", "[BOS]", "[EOS]", "self", "-", "driv",
                  "##ing", "cars", "!"]
    tokenizer = WordPieceTokenizer(vocabulary, sequence_length=8)
    ids = tokenizer.tokenize("Self-driving cars!")   # [4, 5, 6, 7, 8, 9]
    batch = tokenizer.encode("Self-driving cars!")   # int32 (8,)
    tokenizer.detokenize(ids)                        # "self - driving cars !"
    ```
    """

    def __init__(self, vocabulary, sequence_length=None, lowercase=True):
        if isinstance(vocabulary, (str, os.PathLike)):
            vocabulary = vocabulary_lib.load_vocabulary(vocabulary)
        else:
            vocabulary = vocabulary_lib.check_vocabulary(vocabulary)
        self.vocabulary = vocabulary
        self.sequence_length = checks.positive_int(
            sequence_length, "sequence_length", allow_none=True
        )
        self.lowercase = checks.boolean(lowercase, "lowercase")
        self._ids = {token: i for i, token in enumerate(vocabulary)}
        self.unk_id = self._ids[vocabulary_lib.UNK]
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
            checks.token_id(token_id, self.vocabulary_size, "token_id")
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
        sequence_length = checks.positive_int(
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
        (0) come back as `[PAD]`; strip them first. `to_text` reads
        better.

        Args:
            ids: 1-D sequence of int token ids.

        Returns:
            str.
        """
        ids = checks.token_ids(ids, self.vocabulary_size, "ids")
        words = text_stream.merge_pieces(
            [self.vocabulary[i] for i in ids], keep_leading_suffix=True)
        return " ".join(word for word, _ in words)

    def to_text(self, ids, after_text=False):
        """The text of `ids` for people: `##` pieces and URLs glued.

        The rules are those of `keras_attn_runtime.text_stream`: a leading
        `##` piece loses its `##` (and joins `after_text`), and
        `http : / / t . co` reads `http://t.co`.

        Args:
            ids: 1-D sequence of int token ids.
            after_text: bool. Whether the text continues another (a
                prompt): it then starts with a space, or with nothing
                when its first token is a `##` piece. Defaults to `False`.

        Returns:
            str.
        """
        ids = checks.token_ids(ids, self.vocabulary_size, "ids")
        return text_stream.join_tokens([self.vocabulary[i] for i in ids],
                                       after_text)

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
