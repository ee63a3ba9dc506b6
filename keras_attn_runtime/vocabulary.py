"""WordPiece vocabularies: the reserved tokens, checks and file I/O.

A vocabulary is a list of distinct, non-empty str tokens without line
breaks; its id order is the model's. It starts with `[PAD]` (id 0: the
embeddings mask it and the pipelines pad with it) and holds `[UNK]`.
Vocabularies learned by `keras_attn.data.train_vocabulary` start with
`[PAD] [UNK] [BOS] [EOS]`. On disk: UTF-8, one token per line.
"""

import collections
import os

from keras_attn_runtime import atomic
from keras_attn_runtime.checks import short

PAD = "[PAD]"
UNK = "[UNK]"
BOS = "[BOS]"
EOS = "[EOS]"
RESERVED_TOKENS = (PAD, UNK, BOS, EOS)
PAD_ID = 0


def check_vocabulary(vocabulary, name="`vocabulary`"):
    """Returns `vocabulary` as a list, if it is a valid vocabulary.

    Args:
        vocabulary: list of str.
        name: str. How messages call it, e.g. "the vocabulary file 'x'".

    Raises:
        TypeError: if it is not a list of str.
        ValueError: if it breaks a rule of the module docstring.
    """
    if isinstance(vocabulary, (str, bytes)) or not hasattr(
        vocabulary, "__len__"
    ):
        raise TypeError(
            f"Expected {name} to be a list of str. Received: "
            f"{short(vocabulary)} of type {type(vocabulary).__name__}"
        )
    vocabulary = list(vocabulary)
    capitalized = name[:1].upper() + name[1:]
    if not vocabulary:
        raise ValueError(f"{capitalized} is empty.")
    for i, token in enumerate(vocabulary):
        if not isinstance(token, str):
            raise TypeError(
                f"Expected {name} to be a list of str. Received token {i}: "
                f"{token!r} of type {type(token).__name__}"
            )
        if not token or "\n" in token or "\r" in token:
            raise ValueError(
                f"Token {i} of {name} is empty or holds a line break. "
                f"Received: {token!r}"
            )
    if vocabulary[0] != PAD:
        raise ValueError(
            f"The first token of {name} must be {PAD!r} (a vocabulary must "
            f"start with {PAD!r}: id 0 is padding). Received: "
            f"{vocabulary[0]!r}"
        )
    if UNK not in vocabulary:
        raise ValueError(
            f"{capitalized} lacks the out-of-vocabulary token {UNK!r}."
        )
    repeated = [t for t, n in collections.Counter(vocabulary).items() if n > 1]
    if repeated:
        raise ValueError(
            f"{capitalized} repeats tokens, e.g. {repeated[:5]!r}; each "
            "token needs one id."
        )
    return vocabulary


def save_vocabulary(vocabulary, path):
    """Writes a vocabulary, one token per line, in UTF-8, atomically.

    The tokens go to a temporary file in the same directory, which then
    replaces `path` in one step: a reader sees the old file or the new one,
    never a partial one, and a failed write leaves no file behind.

    Args:
        vocabulary: list of str. Must start with `"[PAD]"`, hold `"[UNK]"`,
            and have distinct non-empty tokens without line breaks.
        path: str or `os.PathLike`. Destination file; its directory must
            exist.

    Raises:
        TypeError: if `vocabulary` is not a list of str.
        ValueError: if `vocabulary` breaks the rules above.
        FileNotFoundError: if the directory of `path` does not exist.

    Example:

    ```python
    import os
    import tempfile
    from keras_attn_runtime import load_vocabulary, save_vocabulary
    path = os.path.join(tempfile.mkdtemp(), "vocabulary.txt")
    vocabulary = ["[PAD]", "[UNK]", "[BOS]", "[EOS]", "hello"]
    save_vocabulary(vocabulary, path)
    assert load_vocabulary(path) == vocabulary
    ```
    """
    vocabulary = check_vocabulary(vocabulary, "`vocabulary`")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            "Expected `path` to be a str or os.PathLike. Received: "
            f"path={path!r} of type {type(path).__name__}"
        )
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            f"The directory {directory!r} does not exist. Received: "
            f"path={str(path)!r}"
        )
    atomic.write_text(path, "".join(token + "\n" for token in vocabulary))


def load_vocabulary(path, argument="path"):
    """Reads a vocabulary written by `save_vocabulary`.

    Lines end at `"\\n"` only (tokens may hold other Unicode line
    separators such as U+2028); a `"\\r"` before it is dropped.

    Args:
        path: str or `os.PathLike`. A UTF-8 file with one token per line.
        argument: str. The argument name that error messages give for
            `path`. Defaults to `"path"`.

    Returns:
        list of str.

    Raises:
        FileNotFoundError: if there is no file at `path`.
        ValueError: if the file is not UTF-8, is empty, has an empty line,
            repeats a token, does not start with `"[PAD]"` or lacks
            `"[UNK]"`.

    Example:

    ```python
    import os
    import tempfile
    from keras_attn_runtime import load_vocabulary
    path = os.path.join(tempfile.mkdtemp(), "vocabulary.txt")
    with open(path, "w") as f:
        f.write("[PAD]\\n[UNK]\\nhello\\n")
    assert load_vocabulary(path) == ["[PAD]", "[UNK]", "hello"]
    ```
    """
    if not isinstance(path, (str, os.PathLike)) or not os.path.isfile(path):
        raise FileNotFoundError(
            f"No vocabulary file. Received: {argument}={str(path)!r}"
        )
    with open(path, "rb") as file:
        data = file.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"The vocabulary file {str(path)!r} is not UTF-8: {error}"
        ) from None
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    vocabulary = [line.removesuffix("\r") for line in lines]
    return check_vocabulary(vocabulary,
                            f"the vocabulary file {str(path)!r}")


def model_vocabulary(given, embedded, argument, what="vocabulary",
                     model_path=None):
    """The vocabulary to run a model with, and how messages name it.

    Args:
        given: list of str, a path, or `None`: what the caller passed
            (it overrides the embedded one).
        embedded: list of str or `None`: the model file's own.
        argument: str. The caller's argument name, for messages.
        what: str. `"vocabulary"` or `"source vocabulary"`.
        model_path: str or `None`. With a path, a model that has no
            vocabulary either way is an error naming it.

    Returns:
        `(tokens, name)`, e.g. `(["[PAD]", ...], "the vocabulary file
        'v.txt'")`, or `(None, None)` if neither is there.

    Raises:
        ValueError: if there is none and `model_path` is given.
    """
    if isinstance(given, (str, os.PathLike)):
        return (load_vocabulary(given, argument),
                f"the {what} file {str(given)!r}")
    if given is not None:
        return check_vocabulary(given, f"`{argument}`"), f"`{argument}`"
    if embedded is not None:
        return embedded, f"the embedded {what}"
    if model_path is not None:
        raise ValueError(
            f"The model file {str(model_path)!r} carries no {what} (it was "
            f"exported without one): pass the {what} file saved with the "
            f"model (command line: --vocabulary). Received: {argument}=None"
        )
    return None, None


def check_vocabulary_size(vocabulary, name, size, model):
    """Raises if a vocabulary's size is not the model's `size`.

    Args:
        vocabulary: list of str.
        name: str. The vocabulary as `model_vocabulary` names it.
        size: int or `None` (unknown: nothing to check).
        model: str. What the model does with `size` tokens, for the
            message, e.g. "the model 'lm.tflite' predicts".
    """
    if size is not None and len(vocabulary) != size:
        raise ValueError(
            f"{name[:1].upper()}{name[1:]} has {len(vocabulary)} tokens but "
            f"{model} {size}: is it the vocabulary of this model?"
        )
