"""Readable text from WordPiece tokens, all at once or as they come.

`WordPieceTokenizer.detokenize` matches keras-hub: tokens joined by
spaces, `##` pieces glued on, a leading `##` piece left as it is. For
people, `join_tokens` and `TextStream` apply three rules, left to right:

1. Suffix pieces: a token starting with `##` (and longer than `##`)
   joins the word before it with no space. A suffix piece that comes
   first loses its `##` and joins the text it continues (`after_text`),
   if any.
2. Words are separated by one space, except inside a URL. A text that
   continues another (`after_text`) starts with that space.
3. URLs: the word `http` or `https` followed by the words `:`, `/`, `/`
   starts a URL. Inside it, words join with no space, as long as no two
   plain words meet: a URL character (`: / . ? = & _ - % ~ +`) may follow
   anything, a plain word may follow a URL character. The URL ends
   before a plain word that follows a plain word, and before any other
   punctuation; spacing is then as usual.

So `["http", ":", "/", "/", "t", ".", "co", "/", "ab", "##c", "so", "cool"]`
reads `"http://t.co/abc so cool"`. Lowercasing and the splitting of
punctuation elsewhere are not undone (`"don ' t !"`).
"""

SUFFIX = "##"
URL_SCHEMES = ("http", "https")
URL_START = (":", "/", "/")
URL_CHARACTERS = frozenset(":/.?=&_-%~+")


def merge_pieces(tokens, keep_leading_suffix=False):
    """Tokens merged into words: a list of `[word, glued]` pairs.

    Each `##` piece is appended to the word before it. A leading `##`
    piece becomes a word of its own, marked `glued=True`, that loses its
    `##` unless `keep_leading_suffix` (keras-hub's `detokenize` keeps
    it).
    """
    words = []
    for token in tokens:
        if token.startswith(SUFFIX) and len(token) > len(SUFFIX):
            if words:
                words[-1][0] += token[len(SUFFIX):]
            else:
                words.append([token if keep_leading_suffix
                              else token[len(SUFFIX):], True])
        else:
            words.append([token, False])
    return words


def _is_url_character(word):
    return len(word) == 1 and word in URL_CHARACTERS


def _is_punctuation(word):
    return len(word) == 1 and not word.isalnum()


def _render(words, after_text):
    parts = []
    in_url = False
    previous_plain = False
    for i, (word, glued) in enumerate(words):
        if i == 0:
            separator = "" if glued or not after_text else " "
        elif in_url and (_is_url_character(word) or (
            not previous_plain and not _is_punctuation(word)
        )):
            separator = ""
        else:
            in_url = False
            separator = " "
        if not in_url and word in URL_SCHEMES and tuple(
            w for w, _ in words[i + 1:i + 1 + len(URL_START)]
        ) == URL_START:
            in_url = True
        previous_plain = not _is_punctuation(word)
        parts.append(separator + word)
    return "".join(parts)


def _undecided(words):
    """How many trailing words might still start a URL."""
    for held in range(min(len(words), len(URL_START)), 0, -1):
        tail = [w for w, _ in words[-held:]]
        if tail[0] in URL_SCHEMES and tuple(tail[1:]) == URL_START[
            :held - 1
        ]:
            return held
    return 0


def join_tokens(tokens, after_text=False):
    """Joins token strings into readable text (rules: module docstring).

    Args:
        tokens: list of str, e.g. `tokenizer.id_to_token` of each id.
        after_text: bool. Whether the result continues a text (a prompt):
            it then starts with a space, or with nothing when its first
            token is a suffix piece. Defaults to `False`.

    Returns:
        str.

    Example:

    ```python
    from keras_attn_runtime.text_stream import join_tokens
    join_tokens(["self", "-", "driv", "##ing", "http", ":", "/", "/", "t",
                 ".", "co"])            # "self - driving http://t.co"
    join_tokens(["##ss", "is"], after_text=True)   # "ss is"
    ```
    """
    return _render(merge_pieces(tokens), after_text)


class TextStream:
    """Turns tokens into printable text as they are generated.

    `push` returns the text that the new token settles, to print at
    once; a token that might start a URL (`http`, then `:`, `/`) is held
    until the next tokens decide. `finish` returns what is still held.
    The concatenated outputs equal `join_tokens(all tokens, after_text)`.

    Args:
        after_text: bool. As in `join_tokens`. Defaults to `False`.

    Example:

    ```python
    from keras_attn_runtime.text_stream import TextStream
    stream = TextStream(after_text=True)
    printed = [stream.push(t) for t in ["##s", "http", ":", "/", "/", "x"]]
    printed.append(stream.finish())
    "".join(printed)                    # "s http://x"
    ```
    """

    def __init__(self, after_text=False):
        self.after_text = after_text
        self._tokens = []
        self._shown = ""

    @property
    def text(self):
        """All the text so far, held tokens included."""
        return join_tokens(self._tokens, self.after_text)

    def push(self, token):
        """Adds a token (str); returns the text now safe to print."""
        self._tokens.append(token)
        words = merge_pieces(self._tokens)
        settled = _render(words[:len(words) - _undecided(words)],
                          self.after_text)
        return self._advance(settled)

    def finish(self):
        """Returns the rest of the text (the held tokens)."""
        return self._advance(self.text)

    def _advance(self, text):
        piece = text[len(self._shown):]
        self._shown = text
        return piece
