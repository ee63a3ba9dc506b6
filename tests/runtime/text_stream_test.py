"""Readable text from tokens: `##` pieces and URLs glued, the same text
whether it is joined at once or streamed token by token."""

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keras_attn_runtime.text_stream import TextStream
from keras_attn_runtime.text_stream import join_tokens

URL = ["http", ":", "/", "/", "t", ".", "co", "/", "ab", "##c"]


@pytest.mark.parametrize("tokens, after_text, expected", [
    # Suffix pieces join the word before; a leading one loses its "##".
    (["self", "-", "driv", "##ing", "cars", "!"], False,
     "self - driving cars !"),
    (["##ss", "is", "fun"], False, "ss is fun"),
    (["##ss", "is"], True, "ss is"),
    (["cars"], True, " cars"),
    (["##"], False, "##"),  # "##" alone is a token, not a suffix piece
    # URLs: no spaces inside, until two plain words meet.
    (URL + ["so", "cool"], False, "http://t.co/abc so cool"),
    (["see"] + URL, True, " see http://t.co/abc"),
    (["https", ":", "/", "/", "a", "-", "b", ".", "org", "/", "?", "q", "=",
      "1", "&", "r", "=", "2"], False, "https://a-b.org/?q=1&r=2"),
    (["http", ":", "/", "/", "x", "!", "wow"], False, "http://x ! wow"),
    (["http", ":", "/", "/", "x", "#", "tag"], False, "http://x # tag"),
    # Not a URL: the scheme must be followed by ":", "/", "/".
    (["http", ":", "/", "x"], False, "http : / x"),
    (["my", "http", "server", "."], False, "my http server ."),
    (["t", ".", "co"], False, "t . co"),
    # Two URLs, the second after ordinary words.
    (URL[:5] + ["and"] + URL[:5], False, "http://t and http://t"),
])
def test_join_tokens_rules(tokens, after_text, expected):
    assert join_tokens(tokens, after_text) == expected


def reference(tokens, after_text):
    """The rules, written another way: words from a regular expression
    over keras-hub's spaced text, URLs from a regular expression over a
    string with one class letter per word."""
    text = re.sub(r" ##(?=\S)", "", " ".join(tokens))  # suffix pieces
    leading = re.match(r"##\S", text) is not None
    words = re.sub(r"^##(?=\S)", "", text).split(" ") if tokens else []

    def letter(word):
        if word in ("http", "https"):
            return "S"  # a scheme (a plain word inside a URL)
        if word in (":", "/"):
            return word.replace(":", "C").replace("/", "L")
        if len(word) == 1 and word in ".?=&_-%~+":
            return "U"
        if len(word) == 1 and not word.isalnum():
            return "P"  # other punctuation
        return "W"

    classes = "".join(letter(word) for word in words)
    glued = set()  # indices of words joined to the word before them
    for match in re.finditer(r"SCLL(?:[CLU]|(?<=[CLU])[WS])*", classes):
        glued.update(range(match.start() + 1, match.end()))
    out = ""
    for i, word in enumerate(words):
        if i == 0:
            out += word if leading or not after_text else " " + word
        else:
            out += word if i in glued else " " + word
    return out


TOKENS = st.lists(st.sampled_from(
    ["http", "https", ":", "/", ".", "?", "=", "t", "co", "##s", "##ing",
     "a", "!", ",", "##", "x", "_", "-"]), max_size=14)


@given(tokens=TOKENS, after_text=st.booleans())
def test_streamed_text_equals_joined_text(tokens, after_text):
    stream = TextStream(after_text)
    printed = "".join(stream.push(token) for token in tokens)
    printed += stream.finish()
    assert printed == join_tokens(tokens, after_text)
    assert printed == reference(tokens, after_text)


def test_stream_holds_only_a_possible_url_start():
    stream = TextStream()
    assert stream.push("see") == "see"
    assert stream.push("http") == ""  # might start a URL
    assert stream.push(":") == ""
    assert stream.push("/") == ""
    assert stream.push("/") == " http://"
    assert stream.push("x") == "x"
    assert stream.push("##y") == "y"
    assert stream.push("ok") == " ok"
    assert stream.push("http") == ""
    assert stream.push("!") == " http !"  # decided: not a URL
    assert stream.finish() == ""
