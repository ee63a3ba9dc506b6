"""Explicit position ids for the position layers (private to the package).

keras-hub's `positions` call argument: integer (or, for the angle-based
layers, real) positions of shape `(L,)`, shared by the whole batch, or
`(B, L)`, one row per example; they replace `start_index .. start_index +
L - 1`. Shape legend: B batch, L sequence length, D features.
"""

from keras import ops

from keras_attn.ops.attention import static_size


def check_positions(positions, length):
    """`positions` as a tensor `(L,)` or `(B, L)`, checked against the
    input's sequence length `length` (a static int, or None if unknown).

    Raises:
        ValueError: for a rank other than 1 or 2, or a static length other
            than `length`.
    """
    positions = ops.convert_to_tensor(positions)
    shape = tuple(positions.shape)
    if len(shape) not in (1, 2):
        raise ValueError(
            "Received an invalid value for argument `positions`, expected a "
            "tensor of shape (sequence_length,) or (batch_size, "
            f"sequence_length). Received: positions.shape={shape}"
        )
    got, want = static_size(shape[-1]), static_size(length)
    if got is not None and want is not None and got != want:
        raise ValueError(
            "`positions` must give one position per element of the input "
            f"sequence ({want}). Received: positions.shape={shape}"
        )
    return positions


def broadcastable(table, rank):
    """A table of per-position vectors, `(L, D)` or `(B, L, D)`, reshaped to
    broadcast against an input of rank `rank` laid out `(B, ..., L, D)`.

    `(L, D)` already broadcasts (trailing axes align); `(B, L, D)` gets
    size-1 axes between batch and length, so that row `b` of `positions`
    applies to example `b` whatever the number of middle axes.
    """
    if len(table.shape) == 2:
        return table
    for _ in range(rank - 3):
        table = ops.expand_dims(table, axis=1)  # (B, 1, ..., L, D)
    return table
