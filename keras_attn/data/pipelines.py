"""`tf.data` pipelines of int32 token ids for the three training tasks.

Every pipeline pads with 0 (`[PAD]`) to a fixed length, batches, and
prefetches. `shuffle=True` reshuffles every epoch in an order fixed by
`seed`; `drop_remainder=True` drops the last short batch so that every batch
has the static shape `(batch_size, L)`, as XLA prefers.

Shape legend: B batch, L sequence length, Ls source length, Lt target length.
"""

import numpy as np
import tensorflow as tf

from keras_attn.data.tokenization import add_bos_eos
from keras_attn.data.tokenization import ragged_token_ids
from keras_attn.data.tokenization import special_token_ids
from keras_attn_runtime import checks
from keras_attn_runtime.vocabulary import BOS
from keras_attn_runtime.vocabulary import EOS
from keras_attn_runtime.vocabulary import PAD_ID

# Texts tokenized per map call: large enough to vectorize, small enough to
# keep memory flat.
_TOKENIZE_BATCH = 1024


def classification_dataset(
    texts,
    labels,
    tokenizer,
    sequence_length,
    batch_size,
    shuffle=False,
    seed=0,
    drop_remainder=False,
):
    """Batches of `(token_ids, labels)` for text classification.

    Each text is tokenized, truncated to `sequence_length`, and padded with
    0 at the end.

    Args:
        texts: list of str.
        labels: 1-D integer array-like, one label per text.
        tokenizer: a tokenizer from `make_tokenizer` (`[PAD]` at id 0).
        sequence_length: int. L.
        batch_size: int. B.
        shuffle: bool. Whether to reshuffle the examples every epoch.
            Defaults to `False`.
        seed: int. Shuffle seed. Defaults to `0`.
        drop_remainder: bool. Whether to drop the last short batch.
            Defaults to `False`.

    Returns:
        A `tf.data.Dataset` of `(token_ids, labels)`: int32 `(B, L)` and
        int32 `(B,)`.

    Raises:
        TypeError: if `texts` is not a list of str, or `tokenizer` is not a
            tokenizer.
        ValueError: for labels that are not one integer per text, or a bad
            length, batch size, `shuffle` or `seed`.

    Example:

    ```python
    import keras_attn
    vocabulary = ["[PAD]", "[UNK]", "[BOS]", "[EOS]", "good", "bad", "!"]
    tokenizer = keras_attn.data.make_tokenizer(vocabulary)
    dataset = keras_attn.data.classification_dataset(
        ["good!", "bad"], [1, 0], tokenizer, sequence_length=4, batch_size=2
    )
    token_ids, labels = next(iter(dataset))
    assert token_ids.numpy().tolist() == [[4, 6, 0, 0], [5, 0, 0, 0]]
    assert labels.numpy().tolist() == [1, 0]
    ```
    """
    texts = _check_nonempty(checks.text_list(texts, "texts"), "texts")
    labels = _check_labels(labels, len(texts))
    special_token_ids(tokenizer, ())
    sequence_length = checks.positive_int(sequence_length, "sequence_length")
    options = _BatchOptions(batch_size, shuffle, seed, drop_remainder)

    def encode(texts, labels):
        token_ids = ragged_token_ids(texts, tokenizer)
        return _to_dense(token_ids, sequence_length, options), labels

    dataset = tf.data.Dataset.from_tensor_slices((texts, labels))
    return options.batch(dataset, len(texts), encode)


def lm_dataset(
    texts,
    tokenizer,
    sequence_length,
    batch_size,
    shuffle=False,
    seed=0,
    drop_remainder=False,
):
    """Batches of `(inputs, targets)` for next-token prediction, packed.

    Each text becomes `[BOS] tokens [EOS]`; the texts, in order, are joined
    into one stream of ids and cut into windows of `sequence_length + 1`
    ids that overlap by one, so every id of the stream after the first is a
    target exactly once and no slot is spent on padding, unlike one padded
    text per row. `inputs` is a window without its last id, `targets`
    without its first: `targets[:, t] == inputs[:, t + 1]`. Only the last
    window is padded with 0, in both `inputs` and `targets`, so a loss with
    `ignore_class=0` skips it. Windows cross text boundaries; `[EOS]` then
    `[BOS]` mark where one text ends and the next begins.

    The texts are tokenized once, when the dataset is made; shuffling
    reorders whole windows.

    Args:
        texts: list of str.
        tokenizer: a tokenizer from `make_tokenizer` whose vocabulary holds
            `[BOS]` and `[EOS]`.
        sequence_length: int. L.
        batch_size: int. B.
        shuffle: bool. Whether to reshuffle the windows every epoch.
            Defaults to `False`.
        seed: int. Shuffle seed. Defaults to `0`.
        drop_remainder: bool. Whether to drop the last short batch.
            Defaults to `False`.

    Returns:
        A `tf.data.Dataset` of `(inputs, targets)`, both int32 `(B, L)`.

    Raises:
        TypeError: if `texts` is not a list of str, or `tokenizer` is not a
            tokenizer.
        ValueError: for a vocabulary without `[BOS]`/`[EOS]`, or a bad
            length, batch size, `shuffle` or `seed`.

    Example:

    ```python
    import keras_attn
    vocabulary = ["[PAD]", "[UNK]", "[BOS]", "[EOS]", "a", "b"]
    tokenizer = keras_attn.data.make_tokenizer(vocabulary)
    dataset = keras_attn.data.lm_dataset(
        ["a b", "b"], tokenizer, sequence_length=4, batch_size=2
    )
    inputs, targets = next(iter(dataset))
    # Stream: [BOS] a b [EOS] [BOS] b [EOS] = 2 4 5 3 2 5 3.
    assert inputs.numpy().tolist() == [[2, 4, 5, 3], [2, 5, 3, 0]]
    assert targets.numpy().tolist() == [[4, 5, 3, 2], [5, 3, 0, 0]]
    ```
    """
    texts = _check_nonempty(checks.text_list(texts, "texts"), "texts")
    bos_id, eos_id = special_token_ids(tokenizer, (BOS, EOS))
    sequence_length = checks.positive_int(sequence_length, "sequence_length")
    options = _BatchOptions(batch_size, shuffle, seed, drop_remainder)

    def encode(texts):
        ids = add_bos_eos(ragged_token_ids(texts, tokenizer), bos_id, eos_id)
        return ids.flat_values

    texts_dataset = tf.data.Dataset.from_tensor_slices(texts)
    chunks = texts_dataset.batch(_TOKENIZE_BATCH).map(
        encode, num_parallel_calls=tf.data.AUTOTUNE
    )
    stream = np.concatenate(list(chunks.as_numpy_iterator()))
    num_windows = -(-(len(stream) - 1) // sequence_length)  # ceil
    padded = np.full(num_windows * sequence_length + 1, PAD_ID, "int32")
    padded[: len(stream)] = stream
    inputs = padded[:-1].reshape(num_windows, sequence_length)
    targets = padded[1:].reshape(num_windows, sequence_length)

    dataset = tf.data.Dataset.from_tensor_slices((inputs, targets))
    return options.batch(dataset, num_windows)


def translation_dataset(
    pairs,
    source_tokenizer,
    target_tokenizer,
    source_length,
    target_length,
    batch_size,
    shuffle=False,
    seed=0,
    drop_remainder=False,
):
    """Batches for a sequence-to-sequence model trained with teacher forcing.

    The source is tokenized, truncated to `source_length` and padded with 0
    (no `[BOS]`/`[EOS]`). The target `[BOS] tokens [EOS]` gives the decoder
    input (all but its last id) and the targets (all but its first), each
    truncated to `target_length` and padded with 0, so
    `targets[:, t] == decoder_token_ids[:, t + 1]` wherever both are
    tokens.

    Args:
        pairs: list of `(source, target)` pairs of str, e.g. from
            `read_translation_pairs`.
        source_tokenizer: a tokenizer from `make_tokenizer` for the source
            language.
        target_tokenizer: a tokenizer from `make_tokenizer` for the target
            language; its vocabulary must hold `[BOS]` and `[EOS]`.
        source_length: int. Ls.
        target_length: int. Lt.
        batch_size: int. B.
        shuffle: bool. Whether to reshuffle the pairs every epoch. Defaults
            to `False`.
        seed: int. Shuffle seed. Defaults to `0`.
        drop_remainder: bool. Whether to drop the last short batch.
            Defaults to `False`.

    Returns:
        A `tf.data.Dataset` of `(inputs, targets)`: `inputs` is a dict with
        `"encoder_token_ids"` int32 `(B, Ls)` and `"decoder_token_ids"`
        int32 `(B, Lt)`; `targets` is int32 `(B, Lt)`.

    Raises:
        TypeError: if `pairs` is not a list of pairs of str, or a tokenizer
            is not a tokenizer.
        ValueError: for a target vocabulary without `[BOS]`/`[EOS]`, or a
            bad length, batch size, `shuffle` or `seed`.

    Example:

    ```python
    import keras_attn
    vocabulary = ["[PAD]", "[UNK]", "[BOS]", "[EOS]", "hallo", "hello"]
    tokenizer = keras_attn.data.make_tokenizer(vocabulary)
    dataset = keras_attn.data.translation_dataset(
        [("Hallo", "Hello")], tokenizer, tokenizer, 3, 3, batch_size=1
    )
    inputs, targets = next(iter(dataset))
    assert inputs["encoder_token_ids"].numpy().tolist() == [[4, 0, 0]]
    assert inputs["decoder_token_ids"].numpy().tolist() == [[2, 5, 0]]
    assert targets.numpy().tolist() == [[5, 3, 0]]
    ```
    """
    sources, targets = _check_pairs(pairs)
    special_token_ids(source_tokenizer, ())
    bos_id, eos_id = special_token_ids(target_tokenizer, (BOS, EOS))
    source_length = checks.positive_int(source_length, "source_length")
    target_length = checks.positive_int(target_length, "target_length")
    options = _BatchOptions(batch_size, shuffle, seed, drop_remainder)

    def encode(sources, targets):
        source_ids = ragged_token_ids(sources, source_tokenizer)
        target_ids = add_bos_eos(
            ragged_token_ids(targets, target_tokenizer), bos_id, eos_id
        )  # (B, None): [BOS] tokens [EOS]
        inputs = {
            "encoder_token_ids": _to_dense(source_ids, source_length, options),
            "decoder_token_ids": _to_dense(
                target_ids[:, :-1], target_length, options
            ),
        }
        return inputs, _to_dense(target_ids[:, 1:], target_length, options)

    dataset = tf.data.Dataset.from_tensor_slices((sources, targets))
    return options.batch(dataset, len(sources), encode)


class _BatchOptions:
    """Checked batching options, and the shuffle-batch-map-prefetch tail."""

    def __init__(self, batch_size, shuffle, seed, drop_remainder):
        self.batch_size = checks.positive_int(batch_size, "batch_size")
        self.shuffle = checks.boolean(shuffle, "shuffle")
        self.drop_remainder = checks.boolean(drop_remainder, "drop_remainder")
        self.seed = checks.integer(seed, "seed")

    @property
    def static_batch_size(self):
        return self.batch_size if self.drop_remainder else None

    def batch(self, dataset, size, encode=None):
        """Shuffles, batches, maps `encode` over batches, and prefetches."""
        if self.drop_remainder and size < self.batch_size:
            raise ValueError(
                f"With drop_remainder=True, {size} examples make no batch of "
                f"batch_size={self.batch_size}."
            )
        if self.shuffle:
            dataset = dataset.shuffle(
                size, seed=self.seed, reshuffle_each_iteration=True
            )
        # Batch before tokenizing: the tokenizer is vectorized.
        dataset = dataset.batch(self.batch_size, self.drop_remainder)
        if encode is not None:
            dataset = dataset.map(encode, num_parallel_calls=tf.data.AUTOTUNE)
        return dataset.prefetch(tf.data.AUTOTUNE)


def _to_dense(ids, length, options):
    """Pads with 0 or truncates ragged `(B, None)` ids to `(B, length)`."""
    dense = ids.to_tensor(default_value=PAD_ID, shape=[None, length])
    return tf.ensure_shape(dense, [options.static_batch_size, length])


def _check_nonempty(texts, name):
    if not texts:
        raise ValueError(f"`{name}` is empty; a dataset needs examples.")
    return texts


def _check_labels(labels, num_texts):
    array = np.asarray(labels)
    if array.ndim != 1 or not (
        np.issubdtype(array.dtype, np.integer) or array.size == 0
    ):
        raise ValueError(
            "Received an invalid value for argument `labels`, expected a 1-D "
            f"array of integers. Received: labels with shape {array.shape} "
            f"and dtype {array.dtype}"
        )
    if len(array) != num_texts:
        raise ValueError(
            f"Expected one label per text: {num_texts} texts. Received: "
            f"{len(array)} labels"
        )
    if array.size and array.min() < 0:
        # Sparse categorical losses would read a negative class id as
        # garbage (or NaN), not fail.
        raise ValueError(
            "Received an invalid value for argument `labels`, expected class "
            f"ids >= 0. Received: labels={checks.short(array)}, e.g. "
            f"{int(array.min())}"
        )
    return array.astype("int32")


def _check_pairs(pairs):
    if isinstance(pairs, (str, bytes)) or not hasattr(pairs, "__len__"):
        raise TypeError(
            "Expected `pairs` to be a list of (source, target) pairs of str. "
            f"Received: pairs of type {type(pairs).__name__}"
        )
    for i, pair in enumerate(pairs):
        if not (
            isinstance(pair, (tuple, list))
            and len(pair) == 2
            and all(isinstance(text, str) for text in pair)
        ):
            raise TypeError(
                "Expected `pairs` to be a list of (source, target) pairs of "
                f"str. Received: pairs[{i}]={pair!r}"
            )
    if not pairs:
        raise ValueError("`pairs` is empty; a dataset needs examples.")
    sources, targets = zip(*pairs)
    return list(sources), list(targets)
