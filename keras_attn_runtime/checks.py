"""Argument checks shared by keras_attn and its runtime.

Errors follow Keras's style: "Received an invalid value for argument
`name`, expected ... Received: name=value". Integers must be integers:
`3.0` and `True` are rejected wherever an integer is expected (a float
that happens to be whole usually comes from a division that will not be
whole next time), while NumPy integer scalars are accepted.
"""

import math
import numbers


def invalid(name, expected, value):
    """The ValueError for a bad argument, in Keras's words."""
    return ValueError(
        f"Received an invalid value for argument `{name}`, expected "
        f"{expected}. Received: {name}={short(value)}"
    )


def is_int(value):
    """True for an int or a NumPy integer, False for a bool or a float."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value):
    """True for a real number (NumPy scalars included), False for a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def positive_int(value, name, allow_none=False):
    """Returns `value` as an int if it is an integer > 0 (or allowed None)."""
    if allow_none and value is None:
        return None
    if not (is_int(value) and value > 0):
        raise invalid(name, "a positive integer", value)
    return int(value)


def non_negative_int(value, name, allow_none=False):
    """Returns `value` as an int if it is an integer >= 0 (or allowed None)."""
    if allow_none and value is None:
        return None
    if not (is_int(value) and value >= 0):
        raise invalid(name, "a non-negative integer", value)
    return int(value)


def integer(value, name):
    """Returns `value` as an int if it is an integer."""
    if not is_int(value):
        raise invalid(name, "an integer", value)
    return int(value)


def positive_number(value, name, allow_none=False):
    """Returns `value` if it is a number > 0 (or allowed None)."""
    if allow_none and value is None:
        return None
    if not (is_number(value) and value > 0):
        raise invalid(name, "a positive number", value)
    return value


def number_in(value, name, low, high, low_open=False, high_open=False):
    """Returns `value` as a float if it lies in the interval low..high.

    `low_open`/`high_open` exclude the bound; `high=math.inf` with
    `high_open=True` means "finite".
    """
    ok = is_number(value) and not math.isnan(value) and (
        low < value if low_open else low <= value
    ) and (value < high if high_open else value <= high)
    if not ok:
        if high == math.inf:
            expected = f"a finite number {'>' if low_open else '>='} {low:g}"
        else:
            expected = (f"a number in {'(' if low_open else '['}{low:g}, "
                        f"{high:g}{')' if high_open else ']'}")
        raise invalid(name, expected, value)
    return float(value)


def rate(value, name):
    """Returns `value` as a float if it lies in [0, 1)."""
    if not (is_number(value) and 0.0 <= value < 1.0):
        raise invalid(name, "a float in [0, 1)", value)
    return float(value)


def boolean(value, name):
    """Returns `value` if it is a bool."""
    if not isinstance(value, bool):
        raise invalid(name, "a bool", value)
    return value


def one_of(value, name, choices):
    """Returns `value` if it is one of `choices`."""
    if value not in choices:
        raise invalid(name, f"one of {tuple(choices)}", value)
    return value


def text_list(texts, name):
    """Returns `texts` as a list, if it is a non-string sequence of str.

    Raises:
        TypeError: otherwise, naming the argument and the bad element.
    """
    if isinstance(texts, (str, bytes)) or not hasattr(texts, "__len__"):
        raise TypeError(
            f"Expected `{name}` to be a list of str. Received: "
            f"{name}={short(texts)} of type {type(texts).__name__}"
        )
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(
                f"Expected `{name}` to be a list of str. Received: "
                f"{name}[{i}]={short(text)} of type {type(text).__name__}"
            )
    return texts


def token_id(value, vocabulary_size, name):
    """Returns `value` as an int if it is a token id in [0, size)."""
    if not is_int(value):
        raise TypeError(
            f"Expected `{name}` to be an integer token id. Received: "
            f"{name}={short(value)} of type {type(value).__name__}"
        )
    if not 0 <= value < vocabulary_size:
        raise ValueError(
            f"`{name}` must be a token id in [0, {vocabulary_size}) (the "
            f"vocabulary size). Received: {name}={value}"
        )
    return int(value)


def token_ids(ids, vocabulary_size, name):
    """`ids` as a list of int, if all are token ids in [0, size).

    Accepts a list or tuple of integers, or a 1-D integer NumPy array.
    """
    if _is_integer_array(ids):
        values = ids.tolist()
    elif isinstance(ids, (list, tuple)) and all(is_int(i) for i in ids):
        values = [int(i) for i in ids]
    else:
        raise TypeError(
            f"Expected `{name}` to be a 1-D sequence of integer token ids. "
            f"Received: {name}={short(ids)} of type {type(ids).__name__}"
        )
    bad = [i for i in values if not 0 <= i < vocabulary_size]
    if bad:
        raise ValueError(
            f"`{name}` holds ids outside [0, {vocabulary_size}) (the "
            f"vocabulary size). Received: {name}={short(ids)}, e.g. {bad[0]}"
        )
    return values


def token_id_array(ids, vocabulary_size, name):
    """Returns `ids` if it is an integer NumPy array (any shape) of token
    ids in [0, vocabulary_size).

    Raises:
        TypeError: for an array of another dtype (float ids are refused,
            not cast: a cast hides data that is not token ids).
        ValueError: for an id outside the range, naming one.
    """
    kind = getattr(getattr(ids, "dtype", None), "kind", None)
    if kind not in ("i", "u"):
        raise TypeError(
            f"Expected `{name}` to hold integer token ids. Received: "
            f"{name}={short(ids)} of dtype {getattr(ids, 'dtype', None)}"
        )
    if ids.size:
        low, high = ids.min(), ids.max()
        if low < 0 or high >= vocabulary_size:
            bad = low if low < 0 else high
            raise ValueError(
                f"`{name}` holds ids outside [0, {vocabulary_size}) (the "
                f"vocabulary size). Received: {name}={short(ids)}, e.g. "
                f"{int(bad)}"
            )
    return ids


def _is_integer_array(value):
    # Duck-typed so that this module needs no NumPy.
    dtype = getattr(value, "dtype", None)
    if getattr(value, "ndim", None) != 1 or dtype is None:
        return False
    return value.size == 0 or getattr(dtype, "kind", None) in ("i", "u")


def short(value, limit=80):
    """`repr(value)` cut to `limit` characters (arrays shown as lists)."""
    if hasattr(value, "tolist") and getattr(value, "ndim", 0) >= 1:
        value = value.tolist()
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
