"""WordPiece vocabularies and tokenizers (keras-hub on tensorflow-text).

Every vocabulary made here starts with the reserved tokens
`[PAD] [UNK] [BOS] [EOS]`, so `[PAD]` is id 0: the embedding layers use
`mask_zero=True` and the pipelines pad with 0.

The vocabulary constants and files (`load_vocabulary`, `save_vocabulary`)
are `keras_attn_runtime.vocabulary`'s, re-exported here.

Shape legend: B batch, L sequence length.
"""

import collections
import os

import keras_hub
import tensorflow as tf

from keras_attn_runtime import checks
from keras_attn_runtime.vocabulary import BOS
from keras_attn_runtime.vocabulary import EOS
from keras_attn_runtime.vocabulary import PAD
from keras_attn_runtime.vocabulary import PAD_ID
from keras_attn_runtime.vocabulary import RESERVED_TOKENS
from keras_attn_runtime.vocabulary import UNK
from keras_attn_runtime.vocabulary import check_vocabulary
from keras_attn_runtime.vocabulary import load_vocabulary
from keras_attn_runtime.vocabulary import save_vocabulary  # noqa: F401

# Shared by training and tokenizing so both split and normalize text the
# same way. Accents stay: in German they tell words apart ("schon", "schön").
_PRETOKENIZATION = dict(
    strip_accents=False, split=True, split_on_cjk=True, suffix_indicator="##"
)


def train_vocabulary(texts, vocabulary_size, lowercase=True, min_word_count=2):
    """Learns a WordPiece vocabulary that starts with the reserved tokens.

    Uses `keras_hub.tokenizers.compute_word_piece_vocabulary` (the
    tensorflow-text learner) with the same text normalization as
    `make_tokenizer`. The learner is pure Python and its time grows with the
    number of distinct words; on tweets most distinct words are seen once
    (link hashes, typos), so whitespace-separated words seen fewer than
    `min_word_count` times (case-insensitively when `lowercase`) are left out
    of training. On 30k tweets and 2 CPU cores this cuts the time from about
    210 s to about 30 s; the tokenizer still splits such words into known
    pieces.

    `vocabulary_size` is an upper bound: the learner keeps only subwords
    seen at least 10 times, so a small corpus gives a smaller vocabulary.

    Args:
        texts: list of str. Training texts.
        vocabulary_size: int. Largest vocabulary size, reserved tokens
            included; must exceed `len(RESERVED_TOKENS)`.
        lowercase: bool. Whether text is lowercased before learning. Pass
            the same value to `make_tokenizer`. Defaults to `True`.
        min_word_count: int. Words seen fewer times are left out of
            training. `1` keeps every word. Defaults to `2`.

    Returns:
        list of str: `RESERVED_TOKENS`, then characters, then subwords
        (suffix pieces start with `##`).

    Raises:
        TypeError: if `texts` is not a list of str.
        ValueError: for a bad `vocabulary_size`, `lowercase` or
            `min_word_count`, or if no word is left to learn from.

    Example:

    ```python
    import keras_attn
    texts = ["the cat sat on the mat."] * 20
    vocabulary = keras_attn.data.train_vocabulary(texts, 100)
    assert vocabulary[:4] == ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]
    assert "cat" in vocabulary
    ```
    """
    texts = checks.text_list(texts, "texts")
    vocabulary_size = checks.positive_int(vocabulary_size, "vocabulary_size")
    if vocabulary_size <= len(RESERVED_TOKENS):
        raise ValueError(
            "Received an invalid value for argument `vocabulary_size`, "
            f"expected an integer above {len(RESERVED_TOKENS)} (the reserved "
            f"tokens). Received: vocabulary_size={vocabulary_size}"
        )
    lowercase = checks.boolean(lowercase, "lowercase")
    min_word_count = checks.positive_int(min_word_count, "min_word_count")
    if not any(text.strip() for text in texts):
        raise ValueError(
            f"No word to learn a vocabulary from: the {len(texts)} `texts` "
            "are blank."
        )
    if min_word_count > 1:
        texts = _drop_rare_words(texts, min_word_count, lowercase)
        if not any(texts):
            raise ValueError(
                "No word to learn a vocabulary from: no word occurs "
                f"min_word_count={min_word_count} times in `texts`. Pass "
                "more texts or a smaller `min_word_count`."
            )
    # Batches let the TF pretokenizer run vectorized.
    dataset = tf.data.Dataset.from_tensor_slices(texts).batch(1024)
    vocabulary = keras_hub.tokenizers.compute_word_piece_vocabulary(
        dataset,
        vocabulary_size,
        lowercase=lowercase,
        reserved_tokens=list(RESERVED_TOKENS),
        **_PRETOKENIZATION,
    )
    return list(vocabulary)


def make_tokenizer(vocabulary, sequence_length=None, lowercase=True):
    """Builds a `keras_hub.tokenizers.WordPieceTokenizer` for a vocabulary.

    The tokenizer normalizes and splits text as `train_vocabulary` does
    (splits on whitespace and punctuation, keeps accents), maps unknown
    words to `[UNK]` and outputs int32 ids. With `sequence_length`, outputs
    are dense `(B, L)`, truncated or padded with 0 (`[PAD]`); without, a
    batch gives a ragged `(B, None)`. The pipelines accept either.

    Args:
        vocabulary: list of str, or the path of a vocabulary file. Must
            start with `"[PAD]"` and hold `"[UNK]"`.
        sequence_length: int. Length of dense outputs. Defaults to `None`
            (ragged outputs).
        lowercase: bool. Must match the value given to
            `train_vocabulary`. Defaults to `True`.

    Returns:
        A `keras_hub.tokenizers.WordPieceTokenizer`.

    Raises:
        TypeError: if `vocabulary` is not a list of str or a path.
        ValueError: for a vocabulary that breaks the rules above, or a bad
            `sequence_length` or `lowercase`.

    Example:

    ```python
    import keras_attn
    vocabulary = ["[PAD]", "[UNK]", "[BOS]", "[EOS]", "the", "cat", "."]
    tokenizer = keras_attn.data.make_tokenizer(vocabulary, sequence_length=6)
    ids = tokenizer(["The cat."])
    assert ids.tolist() == [[4, 5, 6, 0, 0, 0]]
    ```
    """
    if isinstance(vocabulary, (str, os.PathLike)):
        vocabulary = load_vocabulary(vocabulary)
    else:
        vocabulary = check_vocabulary(vocabulary, "`vocabulary`")
    sequence_length = checks.positive_int(
        sequence_length, "sequence_length", allow_none=True
    )
    lowercase = checks.boolean(lowercase, "lowercase")
    return keras_hub.tokenizers.WordPieceTokenizer(
        vocabulary=vocabulary,
        sequence_length=sequence_length,
        lowercase=lowercase,
        oov_token=UNK,
        dtype="int32",
        **_PRETOKENIZATION,
    )


def tokenize_with_bos_eos(texts, tokenizer):
    """Tokenizes texts into `[BOS] tokens [EOS]` rows of ids.

    Runs the tokenizer's TensorFlow path (the one `tf.data` uses), eagerly
    or inside a `tf.function`. A dense tokenizer output (from a tokenizer
    with `sequence_length`) loses its trailing padding first, so its
    truncation applies before `[EOS]` is added.

    Args:
        texts: 1-D string tensor, or list of str, of B texts.
        tokenizer: a tokenizer from `make_tokenizer`, or any keras-hub
            tokenizer whose vocabulary holds `[PAD]` at id 0, `[BOS]` and
            `[EOS]`.

    Returns:
        int32 `tf.RaggedTensor` of shape `(B, None)`.

    Raises:
        ValueError: if the tokenizer's vocabulary lacks a needed token.

    Example:

    ```python
    import keras_attn
    vocabulary = ["[PAD]", "[UNK]", "[BOS]", "[EOS]", "hi", "there"]
    tokenizer = keras_attn.data.make_tokenizer(vocabulary)
    ids = keras_attn.data.tokenize_with_bos_eos(["hi there", "hi"], tokenizer)
    assert ids.to_list() == [[2, 4, 5, 3], [2, 4, 3]]
    ```
    """
    bos_id, eos_id = special_token_ids(tokenizer, (BOS, EOS))
    if tf.inside_function():
        return add_bos_eos(ragged_token_ids(texts, tokenizer), bos_id, eos_id)

    @tf.function
    def tokenize(texts):
        return add_bos_eos(ragged_token_ids(texts, tokenizer), bos_id, eos_id)

    return tokenize(tf.convert_to_tensor(texts, dtype=tf.string))


def special_token_ids(tokenizer, tokens):
    """Returns the ids of `tokens`, checking that `[PAD]` is id 0.

    Raises:
        TypeError: if `tokenizer` has no `tokenize` and `token_to_id`.
        ValueError: if a token is missing or `[PAD]` is not id 0.
    """
    if not (
        hasattr(tokenizer, "tokenize") and hasattr(tokenizer, "token_to_id")
    ):
        raise TypeError(
            "Expected `tokenizer` to be a keras-hub tokenizer, e.g. from "
            f"make_tokenizer(). Received: {type(tokenizer).__name__}"
        )
    ids = []
    for token in (PAD,) + tuple(tokens):
        try:
            ids.append(tokenizer.token_to_id(token))
        except (ValueError, KeyError):
            raise ValueError(
                f"The tokenizer's vocabulary lacks {token!r}; build it with "
                "train_vocabulary(), which reserves "
                f"{list(RESERVED_TOKENS)}."
            ) from None
    if ids[0] != PAD_ID:
        raise ValueError(
            f"The tokenizer must map {PAD!r} to id {PAD_ID} (padding). "
            f"Received: id {ids[0]}"
        )
    return tuple(ids[1:])


def ragged_token_ids(texts, tokenizer):
    """Tokenizes a 1-D string tensor to int32 ids `(B, None)`, in graph."""
    ids = tokenizer.tokenize(texts)
    if not isinstance(ids, tf.RaggedTensor):
        # Real tokens are never id 0, so trailing zeros are all padding.
        ids = tf.RaggedTensor.from_tensor(ids, padding=PAD_ID)
    return tf.cast(ids, tf.int32)


def add_bos_eos(ids, bos_id, eos_id):
    batch = ids.nrows()
    bos = tf.fill([batch, 1], tf.constant(bos_id, tf.int32))
    eos = tf.fill([batch, 1], tf.constant(eos_id, tf.int32))
    return tf.concat([bos, ids, eos], axis=1)  # (B, None)


def _drop_rare_words(texts, min_word_count, lowercase):
    def key(word):
        return word.lower() if lowercase else word

    counts = collections.Counter(key(w) for text in texts for w in text.split())
    return [
        " ".join(w for w in text.split() if counts[key(w)] >= min_word_count)
        for text in texts
    ]
