"""Mask helpers shared by the layers (private to the package).

Masks are boolean, `True` meaning "real token" (padding masks, `(B, L)`) or
"may attend" (attention masks, `(B, T, S)`).
"""

from keras import ops

from keras_attn.ops.attention import static_size


def get_keras_mask(x):
    """The Keras mask attached to `x` by a masking layer, or `None`.

    Keras stores it as the `_keras_mask` attribute of the tensor; Keras 3 has
    no public accessor, and importing one from `keras.src` would break
    between versions.
    """
    return getattr(x, "_keras_mask", None)


def merge_masks(*masks):
    """Logical AND of the masks that are not `None` (broadcasting), or None."""
    merged = None
    for mask in masks:
        if mask is None:
            continue
        mask = ops.cast(mask, "bool")
        merged = mask if merged is None else ops.logical_and(merged, mask)
    return merged


def check_mask_shape(mask, name, expected):
    """Raises a ValueError if a mask's static shape contradicts `expected`.

    `expected` is a tuple of ints or `None` (unknown); a mask axis of size 1
    broadcasts and is accepted.
    """
    if mask is None:
        return
    shape = tuple(static_size(d) for d in mask.shape)
    expected = tuple(static_size(d) for d in expected)
    if len(shape) != len(expected) or any(
        got is not None and want is not None and got not in (1, want)
        for got, want in zip(shape, expected)
    ):
        raise ValueError(
            f"`{name}` must have shape {expected} (None: any size). "
            f"Received: {name}.shape={shape}"
        )


def expand_to_scores_rank(mask, rank, num_attention_axes, name):
    """Gives an attention mask the rank of the attention scores.

    Scores are laid out `(B, *A, N, *Tq, *Sk)` (A: non-attention axes, Tq
    and Sk: the query and key attention axes, `num_attention_axes` each).
    As in Keras, a mask of lower rank gets size-1 axes inserted just before
    its query attention axes, so `(T, S)`, `(B, T, S)` and `(B, N, T, S)`
    all broadcast against `(B, N, T, S)`.
    """
    mask = ops.convert_to_tensor(mask)
    if mask.dtype != "bool":
        mask = ops.cast(mask, "bool")
    if not 2 * num_attention_axes <= len(mask.shape) <= rank:
        raise ValueError(
            f"`{name}` must have rank {2 * num_attention_axes} to {rank} "
            "(query and key attention axes, optionally preceded by batch, "
            f"heads and other axes). Received: {name}.shape="
            f"{tuple(mask.shape)}"
        )
    axis = -2 * num_attention_axes - 1
    while len(mask.shape) < rank:
        mask = ops.expand_dims(mask, axis)
    return mask
