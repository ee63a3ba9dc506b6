"""`WordPieceTokenizer` gives the token ids of keras-hub's tokenizer (the
training tokenizer) on the real corpora and on text they lack, and
detokenizes as keras-hub does."""

import os
import time

import numpy as np
import pytest

from keras_attn import data
from keras_attn_runtime import WordPieceTokenizer
from tests.runtime.helpers import keras_hub_ids
from tests.runtime.helpers import needs_tensorflow

pytestmark = needs_tensorflow

# Text the corpora may lack: whitespace that RE2's `\s` misses, format and
# control characters, case folding that changes length, ligatures, CJK,
# emoji sequences, mojibake, the 100-byte word limit (counted after case
# folding: "İ" folds to 3 bytes), and characters newer than Python 3.11's
# Unicode tables.
TRICKY = [
    "", " ", "a\u00a0b", "x\u2028y", "Straße STRASSE", "İstanbul ıI",
    "ﬁne ﬂy", "ＦＵＬＬ ｗｉｄｔｈ！", "½ ² ⅷ ™ ℌ Ω K Å", "😀👍🏽 👨‍👩‍👧 ❤️ ❤",
    "e\u0301 é", "Ã¤Ã¶Ã¼ â€™ â€œ ðŸ˜‚", "中文字符 日本語 한국어",
    "\ufeffbom \u200bzw\u200d \u00adsoft\u00adhy", "a\x0bb\x85c\td",
    "a" * 100, "a" * 101, "é" * 50, "é" * 51, "İ" * 34, "İ" * 33,
    "#tag @user http://t.co/x_y", "ΣΊΣΥΦΟΣ ς", "\ufffd\ufffd", "ǅ ǈ Ꭰ",
    "x\u034fy \u115f \u3164", "\U0001d400\U0001d41a", "ﾊﾟ ﷺ", "...!?",
    "\u0300start end\u0301", "\U0001ccd6\U0001ccf9 \U00010d50 a\U00011b00b "
    "c\U00013439d \ua7cb",
]


def assert_same_ids(vocabulary, texts, lowercase=True):
    tokenizer = WordPieceTokenizer(vocabulary, lowercase=lowercase)
    expected = keras_hub_ids(vocabulary, texts, lowercase)
    mismatches = [
        (text, want, got) for text, want in zip(texts, expected)
        if (got := tokenizer.tokenize(text)) != want
    ]
    assert not mismatches, (len(mismatches), mismatches[:3])


def test_tokenizer_ids_equal_keras_hub_on_every_tweet(tweets, vocabulary):
    start = time.perf_counter()
    texts = tweets + TRICKY
    for lowercase in (True, False):
        assert_same_ids(vocabulary, texts, lowercase)
    assert time.perf_counter() - start < 40


def test_tokenizer_ids_equal_keras_hub_on_every_translation_sentence():
    if not os.path.exists(data.TRANSLATION_PATH):
        pytest.skip(f"no translation dictionary at {data.TRANSLATION_PATH}")
    sentences = [s for pair in data.read_translation_pairs() for s in pair]
    vocabulary = data.train_vocabulary(sentences[:5000], 2000)
    start = time.perf_counter()
    assert_same_ids(vocabulary, sentences + TRICKY)
    assert time.perf_counter() - start < 40


def test_encode_truncates_and_pads_like_keras_hub(tweets, vocabulary):
    texts = tweets[:2000] + TRICKY
    expected = np.array(keras_hub_ids(vocabulary, texts, sequence_length=12))
    tokenizer = WordPieceTokenizer(vocabulary, sequence_length=12)
    got = np.stack([tokenizer.encode(text) for text in texts])
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, expected)
    assert (expected == 0).any() and (expected[:, -1] != 0).any()


def test_detokenize_equals_keras_hub_and_round_trips(tweets, vocabulary):
    import tensorflow as tf

    texts = tweets[:2000] + TRICKY
    ids = keras_hub_ids(vocabulary, texts)
    hub = data.make_tokenizer(vocabulary)
    expected = tf.function(hub.detokenize)(tf.ragged.constant(ids, tf.int32))
    tokenizer = WordPieceTokenizer(vocabulary)
    got = [tokenizer.detokenize(row) for row in ids]
    assert got == [text.decode("utf-8") for text in expected.numpy()]
    # Detokenized text tokenizes back to the same ids, where no word was
    # unknown ("[UNK]" reads back as "[", "unk", "]").
    unk = vocabulary.index("[UNK]")
    known = [row for row in ids if unk not in row]
    assert len(known) > 1000
    assert all(tokenizer.tokenize(tokenizer.detokenize(row)) == row
               for row in known)


def test_to_text_glues_urls_and_a_leading_suffix_piece(vocabulary):
    tokenizer = WordPieceTokenizer(vocabulary)
    url = "http://t.co/x_y"
    ids = tokenizer.tokenize(f"{url} so cool")
    # keras-hub's form spaces every piece; `to_text` reads as typed.
    assert tokenizer.detokenize(ids).startswith("http : / / t . co / x _ y")
    assert tokenizer.to_text(ids) == f"{url} so cool"
    suffix = next(i for i, t in enumerate(vocabulary)
                  if t.startswith("##") and len(t) > 3)
    word = vocabulary[suffix][2:]
    assert tokenizer.detokenize([suffix]) == vocabulary[suffix]
    assert tokenizer.to_text([suffix]) == word
    assert tokenizer.to_text([suffix], after_text=True) == word
    assert tokenizer.to_text(ids, after_text=True) == f" {url} so cool"


def test_tokenizer_bad_arguments(tmp_path, vocabulary):
    bad = tmp_path / "bad.txt"
    bad.write_text("[UNK]\n[PAD]\n")
    with pytest.raises(ValueError, match="must start with '\\[PAD\\]'"):
        WordPieceTokenizer(bad)
    with pytest.raises(FileNotFoundError, match="nowhere.txt"):
        WordPieceTokenizer(str(tmp_path / "nowhere.txt"))
    with pytest.raises(ValueError, match="lowercase='yes'"):
        WordPieceTokenizer(vocabulary, lowercase="yes")
    with pytest.raises(ValueError, match="sequence_length=3.0"):
        WordPieceTokenizer(vocabulary, sequence_length=3.0)
    tokenizer = WordPieceTokenizer(vocabulary)
    size = tokenizer.vocabulary_size
    with pytest.raises(TypeError, match="text=None"):
        tokenizer.tokenize(None)
    with pytest.raises(ValueError, match=f"ids=\\[{size}\\]"):
        tokenizer.detokenize([size])
    with pytest.raises(ValueError, match=f"ids=\\[{size}\\]"):
        tokenizer.to_text([size])
    with pytest.raises(ValueError, match="sequence_length=None"):
        tokenizer.encode("hello")
    with pytest.raises(ValueError, match="'zzz-not-a-token'"):
        tokenizer.token_to_id("zzz-not-a-token")
