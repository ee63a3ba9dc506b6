"""Argument checks shared by the layers (private to the package).

Errors follow Keras's style: "Received an invalid value for argument
`name`, expected ... Received: name=value".
"""


def _invalid(name, expected, value):
    return ValueError(
        f"Received an invalid value for argument `{name}`, expected "
        f"{expected}. Received: {name}={value!r}"
    )


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def positive_int(value, name, allow_none=False):
    """Returns `value` if it is a positive int (or None when allowed)."""
    if allow_none and value is None:
        return None
    if not (_is_number(value) and int(value) == value and value > 0):
        raise _invalid(name, "a positive integer", value)
    return int(value)


def positive_number(value, name, allow_none=False):
    """Returns `value` if it is a positive int or float (or allowed None)."""
    if allow_none and value is None:
        return None
    if not (_is_number(value) and value > 0):
        raise _invalid(name, "a positive number", value)
    return value


def rate(value, name):
    """Returns `value` as a float if it lies in [0, 1)."""
    if not (_is_number(value) and 0.0 <= value < 1.0):
        raise _invalid(name, "a float in [0, 1)", value)
    return float(value)


def int_tuple(value, name, allow_none=False):
    """Returns `value` as a tuple of ints: an int becomes a 1-tuple, a list
    or tuple of ints a tuple (or None when allowed)."""
    if allow_none and value is None:
        return None
    items = (value,) if isinstance(value, int) else value
    if not (
        isinstance(items, (tuple, list))
        and items
        and all(isinstance(a, int) and not isinstance(a, bool)
                for a in items)
    ):
        raise _invalid(name, "an int, or a list or tuple of ints", value)
    return tuple(items)


def optional_bool(value, name):
    """Returns `value` if it is `None`, `True` or `False`."""
    if value is not None and not isinstance(value, bool):
        raise _invalid(name, "None, True or False", value)
    return value
