"""Argument checks shared by the layers (private to the package).

The common checks are `keras_attn_runtime.checks` (one set for the whole
project); the two here are only the layers'. Errors follow Keras's style:
"Received an invalid value for argument `name`, expected ... Received:
name=value".
"""


from keras_attn_runtime.checks import invalid as _invalid
from keras_attn_runtime.checks import positive_int
from keras_attn_runtime.checks import positive_number
from keras_attn_runtime.checks import rate

__all__ = ["int_tuple", "optional_bool", "positive_int", "positive_number",
           "rate"]


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
