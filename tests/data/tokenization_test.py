"""Vocabulary training, vocabulary files and tokenizers, on generated text."""

import os

import keras_hub
import numpy as np
import pytest
import tensorflow as tf

from keras_attn.data import tokenization
from keras_attn.data.tokenization import load_vocabulary
from keras_attn.data.tokenization import make_tokenizer
from keras_attn.data.tokenization import save_vocabulary
from keras_attn.data.tokenization import tokenize_with_bos_eos
from keras_attn.data.tokenization import train_vocabulary

RESERVED = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]
# Each word is seen at least 10 times, the learner's floor for a subword.
TEXTS = [
    "The cat sat on the mat.",
    "A dog sat on a log!",
    "the Cat and the dog, on the mat?",
] * 12


@pytest.fixture(scope="module")
def vocabulary():
    return train_vocabulary(TEXTS, 200)


def test_vocabulary_starts_with_the_reserved_tokens(vocabulary):
    assert vocabulary[:4] == RESERVED
    assert tokenization.RESERVED_TOKENS == tuple(RESERVED)
    assert vocabulary.index("[PAD]") == tokenization.PAD_ID == 0
    assert len(vocabulary) == len(set(vocabulary)) <= 200
    words = {"the", "cat", "sat", "on", "mat", "a", "dog", "log", "and"}
    assert words <= set(vocabulary)
    # Lowercased, and every character of the texts is a token.
    assert "The" not in vocabulary and "Cat" not in vocabulary
    characters = set("".join(TEXTS).lower()) - {" "}
    assert characters <= set(vocabulary)


def test_vocabulary_keeps_case_when_asked():
    vocabulary = train_vocabulary(TEXTS, 200, lowercase=False)
    assert {"The", "the", "cat", "Cat"} <= set(vocabulary)


def test_rare_words_are_left_out_of_training():
    texts = TEXTS + ["zebra"]  # Seen once: its z only occurs there.
    assert "z" not in train_vocabulary(texts, 200)
    assert "z" in train_vocabulary(texts, 200, min_word_count=1)


def test_train_vocabulary_bad_arguments():
    with pytest.raises(TypeError, match="texts='the cat'"):
        train_vocabulary("the cat", 100)
    with pytest.raises(TypeError, match=r"texts\[1\]=3"):
        train_vocabulary(["the cat", 3], 100)
    with pytest.raises(ValueError, match="vocabulary_size=4"):
        train_vocabulary(TEXTS, 4)
    with pytest.raises(ValueError, match="are blank"):
        train_vocabulary(["  ", ""], 100)
    with pytest.raises(ValueError, match="min_word_count=2 times"):
        train_vocabulary(["every word once"], 100)
    with pytest.raises(ValueError, match="lowercase='yes'"):
        train_vocabulary(TEXTS, 100, lowercase="yes")


def test_tokenizer_ids_padding_and_unknown_words(vocabulary):
    tokenizer = make_tokenizer(vocabulary, sequence_length=8)
    assert isinstance(tokenizer, keras_hub.tokenizers.WordPieceTokenizer)
    ids = np.asarray(tokenizer(["The CAT sat.", "zebra dog"]))
    expected = [
        [vocabulary.index(t) for t in ["the", "cat", "sat", "."]] + [0] * 4,
        [1, vocabulary.index("dog")] + [0] * 6,  # z was never seen: [UNK].
    ]
    assert ids.dtype == np.int32
    assert ids.tolist() == expected


def test_tokenizer_round_trip_on_both_paths(vocabulary):
    tokenizer = make_tokenizer(vocabulary)
    texts = ["The cat, on the MAT!", "a dog sat on a log?"]
    normalized = ["the cat , on the mat !", "a dog sat on a log ?"]
    # Eager calls take keras-hub's Python path, tf.data its TF path.
    eager = [tokenizer.detokenize(tokenizer.tokenize(t)) for t in texts]
    assert eager == normalized
    dataset = tf.data.Dataset.from_tensor_slices(texts).batch(2)
    ids = next(iter(dataset.map(tokenizer.tokenize)))
    assert ids.to_list() == [tokenizer.tokenize(t).tolist() for t in texts]
    round_trip = dataset.map(lambda t: tokenizer.detokenize(tokenizer(t)))
    graph = next(iter(round_trip)).numpy().tolist()
    assert [t.decode("utf-8") for t in graph] == normalized


def test_tokenizer_lowercase_false_keeps_case():
    vocabulary = RESERVED + ["cat", "Cat"]
    lower = make_tokenizer(vocabulary)
    cased = make_tokenizer(vocabulary, lowercase=False)
    assert lower.tokenize("Cat cat").tolist() == [4, 4]
    assert cased.tokenize("Cat cat").tolist() == [5, 4]


def test_make_tokenizer_bad_vocabularies(tmp_path):
    with pytest.raises(ValueError, match="must be '\\[PAD\\]'"):
        make_tokenizer(["[UNK]", "[PAD]", "cat"])
    with pytest.raises(ValueError, match="lacks the out-of-vocabulary"):
        make_tokenizer(["[PAD]", "cat"])
    with pytest.raises(ValueError, match="repeats tokens"):
        make_tokenizer(["[PAD]", "[UNK]", "cat", "cat"])
    with pytest.raises(ValueError, match="sequence_length=0"):
        make_tokenizer(RESERVED, sequence_length=0)
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        make_tokenizer(str(tmp_path / "missing.txt"))


def test_save_and_load_round_trip(tmp_path, vocabulary):
    path = tmp_path / "vocabulary.txt"
    tokens = vocabulary + ["schön", "##ß", "line\u2028separator"]
    save_vocabulary(tokens, path)
    assert path.read_bytes() == "".join(t + "\n" for t in tokens).encode()
    assert load_vocabulary(path) == tokens
    tokenizer = make_tokenizer(str(path), sequence_length=3)
    assert np.asarray(tokenizer(["the"])).tolist() == [
        [vocabulary.index("the"), 0, 0]
    ]
    assert sorted(os.listdir(tmp_path)) == ["vocabulary.txt"]


def test_failed_save_leaves_the_old_file_and_no_temporary(
    tmp_path, monkeypatch
):
    path = tmp_path / "vocabulary.txt"
    save_vocabulary(RESERVED, path)

    def fail(source, destination):
        raise OSError("disk full")

    monkeypatch.setattr(tokenization.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        save_vocabulary(RESERVED + ["new"], path)
    with pytest.raises(OSError, match="disk full"):
        save_vocabulary(RESERVED, tmp_path / "other.txt")
    assert sorted(os.listdir(tmp_path)) == ["vocabulary.txt"]
    assert load_vocabulary(path) == RESERVED


def test_save_rejects_bad_vocabularies(tmp_path):
    path = tmp_path / "vocabulary.txt"
    with pytest.raises(ValueError, match="first token"):
        save_vocabulary(["cat", "[PAD]", "[UNK]"], path)
    with pytest.raises(ValueError, match="line break"):
        save_vocabulary(RESERVED + ["two\nlines"], path)
    with pytest.raises(TypeError, match="list of str"):
        save_vocabulary(RESERVED + [7], path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        save_vocabulary(RESERVED, tmp_path / "no" / "vocabulary.txt")
    assert os.listdir(tmp_path) == []


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        load_vocabulary(tmp_path / "missing.txt")
    cases = {
        "empty.txt": (b"", "is empty"),
        "blank.txt": (b"[PAD]\n[UNK]\n\ncat\n", "Token 2 .* empty"),
        "first.txt": (b"[UNK]\n[PAD]\n", "Received: '\\[UNK\\]'"),
        "binary.txt": (b"[PAD]\n[UNK]\n\xff\n", "not UTF-8"),
    }
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValueError, match=message):
            load_vocabulary(tmp_path / name)
    windows = tmp_path / "windows.txt"
    windows.write_bytes(b"[PAD]\r\n[UNK]\r\ncat\r\n")
    assert load_vocabulary(windows) == ["[PAD]", "[UNK]", "cat"]


def test_tokenize_with_bos_eos_eager_and_in_graph(vocabulary):
    tokenizer = make_tokenizer(vocabulary)
    the, cat = vocabulary.index("the"), vocabulary.index("cat")
    expected = [[2, the, cat, 3], [2, 3]]
    ids = tokenize_with_bos_eos(["the cat", ""], tokenizer)
    assert isinstance(ids, tf.RaggedTensor) and ids.dtype == tf.int32
    assert ids.to_list() == expected
    graph = tf.function(lambda t: tokenize_with_bos_eos(t, tokenizer))
    assert graph(tf.constant(["the cat", ""])).to_list() == expected
    # A dense tokenizer's padding is dropped before [EOS].
    dense = make_tokenizer(vocabulary, sequence_length=1)
    assert tokenize_with_bos_eos(["the cat"], dense).to_list() == [[2, the, 3]]


def test_tokenize_with_bos_eos_needs_the_reserved_tokens():
    with pytest.raises(ValueError, match="lacks '\\[BOS\\]'"):
        tokenize_with_bos_eos(["x"], make_tokenizer(["[PAD]", "[UNK]"]))
    shifted = keras_hub.tokenizers.WordPieceTokenizer(
        vocabulary=["[UNK]", "[PAD]", "[BOS]", "[EOS]"]
    )
    with pytest.raises(ValueError, match="id 0"):
        tokenize_with_bos_eos(["x"], shifted)
