"""tf.data pipelines against ids worked out by hand from the vocabulary."""

import keras_hub
import numpy as np
import pytest
import tensorflow as tf

from keras_attn.data.pipelines import classification_dataset
from keras_attn.data.pipelines import lm_dataset
from keras_attn.data.pipelines import translation_dataset
from keras_attn.data.tokenization import make_tokenizer

PAD, UNK, BOS, EOS = 0, 1, 2, 3
WORDS = ["the", "cat", "sat", "dog", "ran", ".", "der", "hund", "lief"]
VOCABULARY = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"] + WORDS
ID = {word: i for i, word in enumerate(VOCABULARY)}


def _ids(text):
    """Token ids of a text of known, space-separated words."""
    return [ID[word] for word in text.split()]


def _batches(dataset):
    return list(dataset.as_numpy_iterator())


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer(VOCABULARY)


def test_classification_shapes_padding_and_labels(tokenizer):
    texts = ["the cat sat .", "the dog", "the dog ran . the cat sat ."]
    dataset = classification_dataset(
        texts, [2, 0, 1], tokenizer, sequence_length=5, batch_size=2
    )
    spec = dataset.element_spec
    assert spec[0].shape.as_list() == [None, 5] and spec[0].dtype == tf.int32
    assert spec[1].shape.as_list() == [None] and spec[1].dtype == tf.int32
    (ids_0, labels_0), (ids_1, labels_1) = _batches(dataset)
    assert ids_0.tolist() == [
        _ids(texts[0]) + [PAD],
        _ids(texts[1]) + [PAD] * 3,
    ]
    assert ids_1.tolist() == [_ids(texts[2])[:5]]  # Truncated.
    assert labels_0.tolist() == [2, 0] and labels_1.tolist() == [1]


def test_classification_accepts_a_dense_tokenizer():
    dense = make_tokenizer(VOCABULARY, sequence_length=2)
    dataset = classification_dataset(["the cat sat"], [0], dense, 4, 1)
    assert _batches(dataset)[0][0].tolist() == [_ids("the cat") + [PAD] * 2]


def test_classification_shuffle_is_seeded_and_static_with_drop(tokenizer):
    texts = [" ".join(["the"] * (i + 1)) for i in range(10)]
    labels = list(range(10))

    def epochs(seed, count=2):
        dataset = classification_dataset(
            texts,
            labels,
            tokenizer,
            10,
            4,
            shuffle=True,
            seed=seed,
            drop_remainder=True,
        )
        assert dataset.element_spec[0].shape.as_list() == [4, 10]
        return [_batches(dataset) for _ in range(count)]

    first, second = epochs(seed=1)
    assert len(first) == 2  # 10 examples, batches of 4, remainder dropped.
    order = [y for _, batch in first for y in batch.tolist()]
    assert len(set(order)) == 8 and order != list(range(8))
    for ids, batch_labels in first:
        # The label of text i is i, and text i has i + 1 tokens.
        assert ((ids != PAD).sum(axis=1) == batch_labels + 1).all()
    again, _ = epochs(seed=1)
    assert [b[1].tolist() for b in again] == [b[1].tolist() for b in first]
    assert [b[1].tolist() for b in second] != [b[1].tolist() for b in first]


def test_lm_windows_by_hand(tokenizer):
    dataset = lm_dataset(
        ["the cat", "dog ran ."], tokenizer, sequence_length=3, batch_size=8
    )
    ((inputs, targets),) = _batches(dataset)
    # Stream: [BOS] the cat [EOS] [BOS] dog ran . [EOS]
    b, e = BOS, EOS
    the, cat, dog, ran, dot = _ids("the cat dog ran .")
    assert inputs.tolist() == [[b, the, cat], [e, b, dog], [ran, dot, e]]
    assert targets.tolist() == [[the, cat, e], [b, dog, ran], [dot, e, PAD]]


def test_lm_packing_properties(tokenizer):
    rng = np.random.default_rng(0)
    texts = [
        " ".join(rng.choice(WORDS, size=rng.integers(0, 9))) for _ in range(40)
    ]
    length = 7
    dataset = lm_dataset(texts, tokenizer, length, batch_size=5)
    assert dataset.element_spec[0].shape.as_list() == [None, length]
    inputs = np.concatenate([x for x, _ in _batches(dataset)])
    targets = np.concatenate([y for _, y in _batches(dataset)])
    assert inputs.dtype == targets.dtype == np.int32
    stream = [i for text in texts for i in [BOS] + _ids(text) + [EOS]]
    # Reading the inputs row by row, then the last target, gives the stream
    # followed by padding only.
    flat = inputs.reshape(-1).tolist() + [int(targets[-1, -1])]
    assert flat[: len(stream)] == stream
    assert (
        set(flat[len(stream) :]) <= {PAD} and len(flat) - len(stream) < length
    )
    # Targets are the inputs shifted by one, across row boundaries too.
    assert targets.reshape(-1).tolist() == flat[1:]
    # BOS opens every text and EOS closes it.
    assert stream.count(BOS) == stream.count(EOS) == len(texts)


def test_lm_shuffle_reorders_whole_windows(tokenizer):
    texts = [f"the cat sat . {'dog ' * i}" for i in range(30)]
    plain = lm_dataset(texts, tokenizer, 6, batch_size=4)
    shuffled = lm_dataset(texts, tokenizer, 6, 4, shuffle=True, seed=5)

    def rows(dataset):
        return [
            (tuple(x), tuple(y))
            for xs, ys in _batches(dataset)
            for x, y in zip(xs.tolist(), ys.tolist())
        ]

    assert sorted(rows(shuffled)) == sorted(rows(plain))
    assert rows(shuffled) != rows(plain)


def test_translation_by_hand(tokenizer):
    pairs = [("der hund lief", "the dog ran ."), ("der hund", "the dog")]
    dataset = translation_dataset(
        pairs,
        tokenizer,
        tokenizer,
        source_length=2,
        target_length=4,
        batch_size=2,
    )
    spec = dataset.element_spec
    assert spec[0]["encoder_token_ids"].shape.as_list() == [None, 2]
    assert spec[0]["decoder_token_ids"].shape.as_list() == [None, 4]
    assert spec[1].shape.as_list() == [None, 4]
    ((inputs, targets),) = _batches(dataset)
    der, hund, the, dog, ran, dot = _ids("der hund the dog ran .")
    assert inputs["encoder_token_ids"].tolist() == [[der, hund], [der, hund]]
    # "the dog ran ." fills Lt = 4: the decoder sees [BOS] and three words,
    # the targets are the four words, and [EOS] is cut.
    assert inputs["decoder_token_ids"].tolist() == [
        [BOS, the, dog, ran],
        [BOS, the, dog, PAD],
    ]
    assert targets.tolist() == [[the, dog, ran, dot], [the, dog, EOS, PAD]]
    assert targets.dtype == np.int32


def test_translation_static_shapes_with_drop_remainder(tokenizer):
    pairs = [("der hund", "the dog")] * 5
    dataset = translation_dataset(
        pairs,
        tokenizer,
        tokenizer,
        3,
        4,
        batch_size=2,
        shuffle=True,
        drop_remainder=True,
    )
    assert dataset.element_spec[0]["encoder_token_ids"].shape == (2, 3)
    assert dataset.element_spec[1].shape == (2, 4)
    assert len(_batches(dataset)) == 2


def test_bad_arguments(tokenizer):
    with pytest.raises(TypeError, match="texts='the cat'"):
        classification_dataset("the cat", [0], tokenizer, 4, 2)
    with pytest.raises(ValueError, match="one label per text"):
        classification_dataset(["the", "cat"], [0], tokenizer, 4, 2)
    with pytest.raises(ValueError, match="1-D array of integers"):
        classification_dataset(["the"], [0.5], tokenizer, 4, 2)
    with pytest.raises(ValueError, match="batch_size=0"):
        classification_dataset(["the"], [0], tokenizer, 4, 0)
    with pytest.raises(ValueError, match="sequence_length=-1"):
        lm_dataset(["the"], tokenizer, -1, 2)
    with pytest.raises(ValueError, match="seed='0'"):
        lm_dataset(["the"], tokenizer, 4, 2, shuffle=True, seed="0")
    with pytest.raises(ValueError, match="shuffle=1"):
        lm_dataset(["the"], tokenizer, 4, 2, shuffle=1)
    with pytest.raises(ValueError, match="make no batch"):
        classification_dataset(
            ["the"], [0], tokenizer, 4, 2, drop_remainder=True
        )
    with pytest.raises(ValueError, match="is empty"):
        lm_dataset([], tokenizer, 4, 2)
    with pytest.raises(TypeError, match=r"pairs\[0\]=\('der',\)"):
        translation_dataset([("der",)], tokenizer, tokenizer, 4, 4, 2)
    with pytest.raises(TypeError, match="keras-hub tokenizer"):
        lm_dataset(["the"], VOCABULARY, 4, 2)
    no_bos = make_tokenizer(["[PAD]", "[UNK]", "the"])
    with pytest.raises(ValueError, match="lacks '\\[BOS\\]'"):
        lm_dataset(["the"], no_bos, 4, 2)
    with pytest.raises(ValueError, match="lacks '\\[BOS\\]'"):
        translation_dataset([("a", "b")], tokenizer, no_bos, 4, 4, 2)
    pad_not_zero = keras_hub.tokenizers.WordPieceTokenizer(
        vocabulary=["[UNK]", "[PAD]", "the"]
    )
    with pytest.raises(ValueError, match="id 0"):
        classification_dataset(["the"], [0], pad_not_zero, 4, 2)
