"""Argument checks shared by the layers (private to the package).

The common checks are `keras_attn_runtime.checks` (one set for the whole
project); the ones here are only the layers'. Errors follow Keras's style:
"Received an invalid value for argument `name`, expected ... Received:
name=value".
"""


from keras_attn.ops.attention import static_size
from keras_attn_runtime.checks import invalid as _invalid
from keras_attn_runtime.checks import positive_int
from keras_attn_runtime.checks import positive_number
from keras_attn_runtime.checks import rate

__all__ = ["check_feature_size", "int_tuple", "optional_bool",
           "positive_int", "positive_number", "rate"]


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


def check_feature_size(x, name, built_size):
    """Raises unless the last axis of `x` has `built_size` features (the
    size the layer's weights were built for); an unknown size passes."""
    got, want = static_size(x.shape[-1]), static_size(built_size)
    if got is not None and want is not None and got != want:
        raise ValueError(
            f"The last axis of `{name}` must have size {want}, the size this "
            "layer was built with (its weights have that shape). Received: "
            f"{name}.shape={tuple(x.shape)}"
        )
