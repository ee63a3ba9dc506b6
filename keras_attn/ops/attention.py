"""Scaled dot-product attention as a pure function on tensors.

Shape legend, used in every shape comment of the package:
    B batch, T query length, S key length, N query heads,
    K key/value heads (N is a multiple of K; K < N is grouped-query
    attention), H query/key head size, V value head size, D model width.

Masks are boolean, `True` meaning "may attend", and broadcast to
`(B, N, T, S)`. Everything here uses `keras.ops` so it runs on every Keras
backend.
"""

import math
import warnings

import keras
import numpy as np
from keras import ops

# A finite fill for masked logits: softmax gives them weight exp(-1e9) == 0,
# and unlike -inf it keeps gradients finite when a whole row is masked.
_MASKED_LOGIT = -1e9

IMPLEMENTATIONS = ("fused", "explicit")
# Key/value layouts: sequence first (the query's own layout) or heads first
# (the KV cache's, `keras_attn.layers.KVCache`).
KV_LAYOUTS = ("BSKH", "BKSH")


def causal_mask(query_length, key_length, offset=None):
    """Boolean causal mask of shape `(T, S)`, aligned bottom-right.

    Query `i` sits at absolute position `offset + i` and may attend to every
    key `j <= offset + i`. The default `offset = S - T` aligns the last query
    with the last key, which is what cached decoding needs: a query at the end
    of a cache sees every earlier key. For `T == S` this is the usual lower
    triangle.

    Args:
        query_length: int or scalar tensor. `T`.
        key_length: int or scalar tensor. `S`.
        offset: int, scalar tensor or `None`. Absolute position of the first
            query. Defaults to `key_length - query_length`.

    Returns:
        A boolean tensor of shape `(query_length, key_length)`.
    """
    if offset is None:
        offset = key_length - query_length
    rows = ops.arange(query_length, dtype="int32") + ops.cast(offset, "int32")
    cols = ops.arange(key_length, dtype="int32")
    return ops.expand_dims(rows, 1) >= ops.expand_dims(cols, 0)  # (T, S)


def sliding_window_mask(query_length, key_length, window, offset=None):
    """Boolean sliding-window mask of shape `(T, S)`.

    Query `i` sits at absolute position `offset + i` and may attend to key
    `j` when `|offset + i - j| < window`: a symmetric band, as in
    `keras.layers.MultiHeadAttention(sliding_window=...)`. Combined with a
    causal mask it leaves each query itself and the `window - 1` keys before
    it (Mistral, Gemma, Phi-3). Absolute positions make cached decoding with
    a window equal the full pass with the same window.

    Args:
        query_length: int or scalar tensor. `T`.
        key_length: int or scalar tensor. `S`.
        window: positive int. The band's width on each side, counting the
            query's own position.
        offset: int, scalar tensor or `None`. Absolute position of the first
            query. Defaults to `key_length - query_length` (bottom-right, as
            `causal_mask`).

    Returns:
        A boolean tensor of shape `(query_length, key_length)`.

    Example:

    ```python
    import numpy as np
    from keras import ops
    from keras_attn.ops import causal_mask, sliding_window_mask
    mask = ops.logical_and(causal_mask(4, 4), sliding_window_mask(4, 4, 2))
    assert ops.convert_to_numpy(mask).tolist() == [
        [True, False, False, False],
        [True, True, False, False],
        [False, True, True, False],
        [False, False, True, True],
    ]
    ```
    """
    if offset is None:
        offset = key_length - query_length
    rows = ops.arange(query_length, dtype="int32") + ops.cast(offset, "int32")
    cols = ops.arange(key_length, dtype="int32")
    distance = ops.expand_dims(rows, 1) - ops.expand_dims(cols, 0)  # (T, S)
    return ops.less(ops.abs(distance), window)


def static_size(dim):
    """A dimension as a Python int, or None if unknown at trace time (None,
    or a symbolic size such as JAX's shape-polymorphic batch)."""
    return int(dim) if isinstance(dim, (int, np.integer)) else None


def _static_dim(x, axis):
    return static_size(x.shape[axis])


def _validate_inputs(query, key, value, kv_layout):
    if kv_layout not in KV_LAYOUTS:
        raise ValueError(
            "Received an invalid value for argument `kv_layout`, expected "
            f"one of {KV_LAYOUTS}. Received: kv_layout={kv_layout!r}"
        )
    kv_axes = ("(batch, length, heads, head_dim)" if kv_layout == "BSKH"
               else "(batch, heads, length, head_dim)")
    for name, x, axes in (
        ("query", query, "(batch, length, heads, head_dim)"),
        ("key", key, kv_axes),
        ("value", value, kv_axes),
    ):
        if len(x.shape) != 4:
            raise ValueError(
                f"`{name}` must have rank 4, shaped {axes}. "
                f"Received: {name}.shape={tuple(x.shape)}"
            )
    q_dim, k_dim = _static_dim(query, -1), _static_dim(key, -1)
    if q_dim is not None and k_dim is not None and q_dim != k_dim:
        raise ValueError(
            "The last dimension of `query` and `key` must be equal. Received: "
            f"query.shape={tuple(query.shape)}, key.shape={tuple(key.shape)}"
        )
    length_axis, heads_axis = _kv_axes(kv_layout)
    for axis, what in ((0, "batch"), (length_axis, "length"),
                       (heads_axis, "heads")):
        k_d, v_d = _static_dim(key, axis), _static_dim(value, axis)
        if k_d is not None and v_d is not None and k_d != v_d:
            raise ValueError(
                f"`key` and `value` must have the same {what} dimension. "
                f"Received: key.shape={tuple(key.shape)}, "
                f"value.shape={tuple(value.shape)}"
            )
    n, k = _static_dim(query, 2), _static_dim(key, heads_axis)
    if n is not None and k is not None and n % k != 0:
        raise ValueError(
            "The number of query heads must be a multiple of the number of "
            f"key/value heads. Received: query heads={n}, key/value heads={k}"
        )


def _kv_axes(kv_layout):
    """`(length axis, heads axis)` of keys and values in `kv_layout`."""
    return (1, 2) if kv_layout == "BSKH" else (2, 1)


def _as_rank4_mask(mask, name, query_length, key_length):
    """Casts a mask to bool and gives it rank 4, broadcastable to (B,N,T,S)."""
    mask = ops.convert_to_tensor(mask)
    rank = len(mask.shape)
    if rank == 2:  # (T, S)
        mask = mask[None, None, :, :]
    elif rank == 3:  # (B, T, S)
        mask = mask[:, None, :, :]
    elif rank != 4:
        raise ValueError(
            f"`{name}` must have rank 2 (T, S), 3 (B, T, S) or 4 (B, N, T, S)."
            f" Received: {name}.shape={tuple(mask.shape)}"
        )
    for got, want, what in (
        (static_size(mask.shape[-2]), static_size(query_length),
         "query length"),
        (static_size(mask.shape[-1]), static_size(key_length), "key length"),
    ):
        if got is not None and want is not None and got not in (1, want):
            raise ValueError(
                f"The last two axes of `{name}` must be (query length, key "
                f"length) = ({query_length}, {key_length}), or 1 to broadcast;"
                f" the {what} does not match. "
                f"Received: {name}.shape={tuple(mask.shape)}"
            )
    if mask.dtype != "bool":
        mask = ops.not_equal(mask, 0)
    return mask


def select_implementation(
    dtype,
    return_weights=False,
    dropout_rate=0.0,
    training=None,
    implementation=None,
    key_head_dim=None,
    value_head_dim=None,
    flash_attention=None,
    kv_layout="BSKH",
):
    """Which attention path `scaled_dot_product_attention` takes.

    The fused path, `keras.ops.dot_product_attention`, runs cuDNN/flash
    kernels on GPU and fused kernels on TPU. It cannot return the weights or
    apply dropout to them, and for float16 inputs some backends compute the
    logits in float16, where they overflow, so those cases take the explicit
    path, which computes logits and softmax in float32. Heads-first keys
    and values (`kv_layout="BKSH"`, a KV cache) take the explicit path
    unless the fused one is asked for: the explicit path reads them in
    place, the fused op would need them transposed (a copy of the cache).

    Args:
        dtype: the compute dtype of the query.
        return_weights: bool. Whether the weights are requested.
        dropout_rate: float. Dropout on the attention weights.
        training: bool or `None`. Dropout applies only when truthy.
        implementation: `None`, `"fused"` or `"explicit"`. Forces a path;
            `"fused"` raises if the fused path cannot honour the request.
        key_head_dim, value_head_dim: int or `None`. Head sizes `H` and `V`;
            Keras's fused op on JAX needs them equal.
        flash_attention: `None`, `True` or `False`, passed to
            `keras.ops.dot_product_attention`. `True` needs the fused path
            (flash kernels keep float16 logits safe: they accumulate in
            float32), so it raises where `implementation="fused"` would.
        kv_layout: `"BSKH"` or `"BKSH"`, the layout of the keys and values
            (see `scaled_dot_product_attention`). Defaults to `"BSKH"`.

    Returns:
        `"fused"` or `"explicit"`.
    """
    if flash_attention not in (None, True, False):
        raise ValueError(
            "Received an invalid value for argument `flash_attention`, "
            "expected None, True or False. "
            f"Received: flash_attention={flash_attention!r}"
        )
    if flash_attention:
        if implementation == "explicit":
            raise ValueError(
                "`flash_attention=True` needs the fused path. Received: "
                "implementation='explicit'"
            )
        implementation = "fused"
    if implementation not in (None,) + IMPLEMENTATIONS:
        raise ValueError(
            "Received an invalid value for argument `implementation`, "
            f"expected one of None, 'fused', 'explicit'. "
            f"Received: implementation={implementation!r}"
        )
    reasons = []
    if return_weights:
        reasons.append("return_weights=True")
    if dropout_rate > 0.0 and training:
        reasons.append("dropout in training")
    if keras.backend.standardize_dtype(dtype) == "float16" and not (
        flash_attention
    ):
        reasons.append("float16 logits could overflow")
    if None not in (key_head_dim, value_head_dim) and (
        key_head_dim != value_head_dim
    ):
        reasons.append("value head size differs from key head size")
    if implementation == "fused" and reasons:
        what = ("`flash_attention=True`" if flash_attention
                else "`implementation='fused'`")
        raise ValueError(
            f"{what} cannot be used here: " + ", ".join(reasons)
        )
    if implementation is not None:
        return implementation
    return "explicit" if reasons or kv_layout == "BKSH" else "fused"


def scaled_dot_product_attention(
    query,
    key,
    value,
    mask=None,
    bias=None,
    is_causal=False,
    scale=None,
    dropout_rate=0.0,
    training=None,
    seed=None,
    return_weights=False,
    implementation=None,
    sliding_window=None,
    query_offset=None,
    flash_attention=None,
    kv_layout="BSKH",
):
    """softmax(Q K^T / sqrt(d_k)) V, exactly as the textbook writes it.

    `key` and `value` may have fewer heads than `query` (grouped-query
    attention, or multi-query with one head): query head `n` uses key/value
    head `n // (N // K)`. They are laid out as the query, `(B, S, K, H)`,
    or heads first, `(B, K, S, H)` with `kv_layout="BKSH"`: the layout of
    a KV cache (`keras_attn.layers.KVCache`), which the explicit path reads
    without transposing it.

    Masking: `mask` is boolean, `True` where a query may attend to a key,
    broadcastable to `(B, N, T, S)`; rank 2 `(T, S)` and rank 3 `(B, T, S)`
    masks are accepted too. `is_causal=True` adds a causal mask and
    `sliding_window=w` a band `|position of query - position of key| < w`.
    Both use absolute positions: query `i` sits at `query_offset + i`, key `j`
    at `j`. The default `query_offset = S - T` aligns them bottom-right, so
    the last query sees every key (the layout of cached decoding); pass the
    cache write index for decoding, `0` for Keras's top-left alignment. A
    query row with no key to attend to returns zeros (and finite
    gradients), never NaN.

    Numerics: whatever the compute dtype, the explicit path multiplies the
    query by the scale and computes logits and softmax in float32, so float16
    inputs cannot overflow. Weights and output come back in the input dtype.

    Args:
        query: tensor of shape `(B, T, N, H)`.
        key: tensor of shape `(B, S, K, H)` (`(B, K, S, H)` heads first).
        value: tensor of shape `(B, S, K, V)` (`(B, K, S, V)` heads first).
        mask: optional boolean tensor broadcastable to `(B, N, T, S)`.
        bias: optional additive float tensor broadcastable to `(B, N, T, S)`.
        is_causal: bool. Whether to apply a causal mask. Defaults to `False`.
        scale: float or `None`. Multiplies the logits. Defaults to
            `1 / sqrt(H)`.
        dropout_rate: float in `[0, 1)`. Dropout on the attention weights,
            applied when `training` is truthy. Defaults to `0.0`.
        training: bool or `None`. Defaults to `None` (inference).
        seed: int, `keras.random.SeedGenerator` or `None`, for the dropout.
        return_weights: bool. Also return the attention weights.
            Defaults to `False`.
        implementation: `None` (choose), `"fused"` or `"explicit"`; see
            `select_implementation`.
        sliding_window: positive int or `None`. If set, query and key must
            be less than `sliding_window` positions apart. Defaults to
            `None` (no window).
        query_offset: int, scalar tensor or `None`. Absolute position of the
            first query, for `is_causal` and `sliding_window`. Defaults to
            `S - T`.
        flash_attention: `None`, `True` or `False`, passed to
            `keras.ops.dot_product_attention` on the fused path; `True`
            forces that path (see `select_implementation`). Defaults to
            `None` (the backend decides).
        kv_layout: `"BSKH"` (keys and values `(B, S, K, H)`) or `"BKSH"`
            (heads first, `(B, K, S, H)`). Defaults to `"BSKH"`.

    Returns:
        The output of shape `(B, T, N, V)`; with `return_weights=True`, the
        tuple `(output, weights)` with weights of shape `(B, N, T, S)`.

    Example:

    ```python
    import numpy as np
    from keras_attn.ops import scaled_dot_product_attention
    q = np.random.rand(2, 4, 8, 16).astype("float32")  # (B, T, N, H)
    k = v = np.random.rand(2, 6, 8, 16).astype("float32")  # (B, S, N, H)
    out, w = scaled_dot_product_attention(q, k, v, is_causal=True,
                                          return_weights=True)
    assert out.shape == (2, 4, 8, 16) and w.shape == (2, 8, 4, 6)
    ```

    References:
        Vaswani et al., "Attention Is All You Need", 2017.
        https://arxiv.org/abs/1706.03762
    """
    query = ops.convert_to_tensor(query)
    key = ops.convert_to_tensor(key)
    value = ops.convert_to_tensor(value)
    _validate_inputs(query, key, value, kv_layout)
    if not 0.0 <= dropout_rate < 1.0:
        raise ValueError(
            "Received an invalid value for argument `dropout_rate`, expected "
            f"a float in [0, 1). Received: dropout_rate={dropout_rate}"
        )
    head_dim = _static_dim(query, -1)
    if scale is None:
        if head_dim is None:
            raise ValueError(
                "`scale` must be given when the head size of `query` is not "
                f"known statically. Received: query.shape={query.shape}"
            )
        scale = 1.0 / math.sqrt(head_dim)
    compute_dtype = query.dtype
    batch, query_length, num_heads = ops.shape(query)[:3]
    length_axis, heads_axis = _kv_axes(kv_layout)
    key_length = ops.shape(key)[length_axis]
    num_kv_heads = ops.shape(key)[heads_axis]

    if mask is not None:
        mask = _as_rank4_mask(mask, "mask", query_length, key_length)
    if is_causal:
        causal = causal_mask(query_length, key_length, query_offset)
        causal = causal[None, None]  # (1, 1, T, S)
        mask = causal if mask is None else ops.logical_and(mask, causal)
    if sliding_window is not None:
        if not (isinstance(sliding_window, (int, np.integer))
                and not isinstance(sliding_window, bool)
                and sliding_window > 0):
            raise ValueError(
                "Received an invalid value for argument `sliding_window`, "
                "expected a positive integer or None. "
                f"Received: sliding_window={sliding_window!r}"
            )
        window = sliding_window_mask(
            query_length, key_length, sliding_window, query_offset
        )[None, None]  # (1, 1, T, S)
        mask = window if mask is None else ops.logical_and(mask, window)

    path = select_implementation(
        compute_dtype,
        return_weights,
        dropout_rate,
        training,
        implementation,
        key_head_dim=head_dim,
        value_head_dim=_static_dim(value, -1),
        flash_attention=flash_attention,
        kv_layout=kv_layout,
    )
    if path == "fused":
        if kv_layout == "BKSH":  # the fused op takes (B, S, K, H)
            key = ops.transpose(key, (0, 2, 1, 3))
            value = ops.transpose(value, (0, 2, 1, 3))
        if keras.backend.backend() == "tensorflow" and (
            _static_dim(key, 2) == 1 and _static_dim(query, 2) != 1
        ):
            # Keras 3.15's TensorFlow `dot_product_attention` repeats
            # key/value heads only when K > 1, and its einsum cannot
            # broadcast K == 1 (multi-query): repeat here.
            key = ops.repeat(key, _static_dim(query, 2), axis=2)
            value = ops.repeat(value, _static_dim(query, 2), axis=2)
        fused_mask = mask
        if mask is not None and keras.backend.backend() == "tensorflow":
            # The mask as an additive bias: Keras's TensorFlow op would AND
            # it with a (B, N, T, S) constant of ones and SELECT; on TFLite
            # that constant is stored in the file and SELECT_V2 splits the
            # XNNPACK partition at every layer, while ADD stays inside it.
            # Same weights: exp(logit - 1e9) is 0 in float32.
            mask_bias = ops.cast(
                ops.where(mask, 0.0, _MASKED_LOGIT), query.dtype
            )  # (B|1, N|1, T, S); float16 never takes the fused path
            bias = mask_bias if bias is None else bias + mask_bias
            fused_mask = None
        output = ops.dot_product_attention(
            query, key, value, bias=bias, mask=fused_mask, scale=scale,
            flash_attention=flash_attention,
        )  # (B, T, N, V)
        if mask is not None:
            has_key = ops.any(mask, axis=-1)  # (B|1, N|1, T)
            has_key = ops.transpose(has_key, (0, 2, 1))[..., None]
            # A multiply, not a select (same values: the output is finite):
            # it stays inside the XNNPACK partition on TFLite.
            output = output * ops.cast(has_key, output.dtype)
        return output

    # Explicit path. Heads are grouped as N = K * G so grouped-query attention
    # needs no copies of the keys and values. `kv` names the key/value axes
    # in their layout: heads-first keys are contracted in place (a batched
    # matmul over B * K), only the query and the output move.
    kv = "bskh" if kv_layout == "BSKH" else "bksh"
    groups = num_heads // num_kv_heads
    q = ops.cast(query, "float32") * ops.cast(scale, "float32")
    q = ops.reshape(
        q, (batch, query_length, num_kv_heads, groups, -1)
    )  # (B, T, K, G, H)
    q_axes = "btkgh"
    if kv_layout == "BKSH":
        # Laid out as the logits: one batched matmul, no transposed logits.
        q = ops.transpose(q, (0, 2, 3, 1, 4))  # (B, K, G, T, H)
        q_axes = "bkgth"
    k = ops.cast(key, "float32")  # (B, S, K, H) or (B, K, S, H)
    logits = ops.einsum(f"{q_axes},{kv}->bkgts", q, k)  # (B, K, G, T, S)
    logits = ops.reshape(
        logits, (batch, num_heads, query_length, key_length)
    )  # (B, N, T, S)
    if bias is not None:
        logits = logits + ops.cast(bias, "float32")
    if mask is not None:
        logits = ops.where(mask, logits, _MASKED_LOGIT)
    with warnings.catch_warnings():
        # A single key (S == 1) is a valid attention, not a misused softmax.
        warnings.filterwarnings("ignore", message=".*softmax over axis")
        weights = ops.softmax(logits, axis=-1)  # (B, N, T, S)
    if mask is not None:
        # A fully masked row would otherwise get uniform weights.
        has_key = ops.any(mask, axis=-1, keepdims=True)  # (B|1, N|1, T, 1)
        weights = ops.where(has_key, weights, ops.zeros_like(weights))
    weights = ops.cast(weights, compute_dtype)
    attended = weights
    if dropout_rate > 0.0 and training:
        attended = keras.random.dropout(weights, dropout_rate, seed=seed)
    attended = ops.reshape(
        attended, (batch, num_kv_heads, groups, query_length, key_length)
    )  # (B, K, G, T, S)
    output = ops.einsum(
        f"bkgts,{kv[:-1]}v->btkgv", attended, ops.cast(value, compute_dtype)
    )  # (B, T, K, G, V)
    output = ops.reshape(
        output, (batch, query_length, num_heads, -1)
    )  # (B, T, N, V)
    if return_weights:
        return output, weights
    return output
