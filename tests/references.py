"""Independent NumPy float64 references, written for the tests only.

Nothing here imports keras_attn: these are the textbook formulas the
package is checked against.
"""

import numpy as np


def softmax(x, axis=-1):
    x = x - x.max(axis=axis, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


def attention(q, k, v, mask=None, bias=None, causal=False, scale=None):
    """softmax(q k^T * scale + bias, masked) v on (B, T, N, H) / (B, S, K, H).

    Returns (output (B, T, N, V), weights (B, N, T, S)); fully masked rows
    give zero weights."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    b, t, n, h = q.shape
    s, kv = k.shape[1], k.shape[2]
    scale = 1.0 / np.sqrt(h) if scale is None else scale
    k = np.repeat(k, n // kv, axis=2)  # head i uses kv head i // (n // kv)
    v = np.repeat(v, n // kv, axis=2)
    logits = np.einsum("btnh,bsnh->bnts", q, k) * scale
    if bias is not None:
        logits = logits + bias
    allowed = np.ones((b, n, t, s), bool)
    if mask is not None:
        mask = np.asarray(mask, bool)
        if mask.ndim == 2:
            mask = mask[None, None]
        elif mask.ndim == 3:
            mask = mask[:, None]
        allowed &= mask
    if causal:
        rows = np.arange(t)[:, None] + (s - t)
        allowed &= np.arange(s)[None, :] <= rows
    logits = np.where(allowed, logits, -np.inf)
    row_ok = allowed.any(-1, keepdims=True)
    logits = np.where(row_ok, logits, 0.0)
    weights = np.where(row_ok, softmax(logits), 0.0)
    return np.einsum("bnts,bsnv->btnv", weights, v), weights


def sinusoidal(length, width, start=0, base=10000.0):
    """PE(pos, 2i) = sin(pos / base^(2i/d)), PE(pos, 2i+1) = cos(...)."""
    pe = np.zeros((length, width))
    for pos in range(length):
        for d in range(width):
            angle = (pos + start) / base ** ((d // 2 * 2) / width)
            pe[pos, d] = np.sin(angle) if d % 2 == 0 else np.cos(angle)
    return pe


def rotary(x, start=0, base=10000.0):
    """Rotate-half RoPE on (B, L, ..., F): pair f with f + F/2."""
    x = np.asarray(x, np.float64)
    length, f = x.shape[1], x.shape[-1]
    half = f // 2
    out = np.empty_like(x)
    for pos in range(length):
        for i in range(half):
            theta = (pos + start) / base ** (2 * i / f)
            a = x[:, pos, ..., i]
            b = x[:, pos, ..., i + half]
            out[:, pos, ..., i] = a * np.cos(theta) - b * np.sin(theta)
            out[:, pos, ..., i + half] = b * np.cos(theta) + a * np.sin(theta)
    return out


def layer_norm(x, gamma, beta, eps):
    mean = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta
