"""Properties of attention that hold for every shape, checked by Hypothesis.

Over batch sizes, lengths, head counts (grouped-query included), head
sizes, dtypes, masks, query offsets (the write index of a cache), sliding
windows, and both paths of the op (fused and explicit):

- causal attention never reads the future: changing keys and values at
  positions after a query leaves its output unchanged;
- padding never reaches real outputs: changing padded keys and values (or
  padded tokens of an encoder block) leaves the outputs at real positions
  unchanged;
- cached decoding equals the full pass, token by token or in chunks;
- a query row with nothing to attend to gives zeros and finite gradients;
- a sliding window never sees past the window.

"Unchanged" is bit for bit: a masked position gets weight exactly 0.
The file runs on every backend (`KERAS_BACKEND=jax python -m pytest
tests/reliability/property_test.py`). The default run checks a few
examples per property; the `large` variants sweep many more.
"""

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from keras_attn import layers
from keras_attn.ops import scaled_dot_product_attention
from tests.test_case import assert_allclose
from tests.test_case import gradient_of_sum
from tests.test_case import to_numpy

FEW = settings(max_examples=8, deadline=None, database=None,
               suppress_health_check=[HealthCheck.too_slow])
MANY = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])


@st.composite
def attention_setups(draw, min_extra=0):
    """Shapes, dtype, path and seed of one op call: `(B, T, N, H)`
    queries over `(B, S, K, H)` keys, S >= T, N a multiple of K."""
    kv_heads = draw(st.sampled_from([1, 2]))
    dtype = draw(st.sampled_from(["float32", "bfloat16", "float16"]))
    # The fused path refuses float16 (its logits could overflow).
    paths = ["explicit"] if dtype == "float16" else ["fused", "explicit"]
    query_length = draw(st.integers(1, 5))
    return dict(
        batch=draw(st.integers(1, 2)),
        query_length=query_length,
        key_length=query_length + draw(st.integers(min_extra, 4)),
        heads=kv_heads * draw(st.sampled_from([1, 2, 3])),
        kv_heads=kv_heads,
        head_dim=draw(st.sampled_from([2, 4, 8])),
        dtype=dtype,
        implementation=draw(st.sampled_from(paths)),
        seed=draw(st.integers(0, 2**16)),
    )


def _tensors(setup, rng):
    b, t, s = setup["batch"], setup["query_length"], setup["key_length"]
    n, k, h = setup["heads"], setup["kv_heads"], setup["head_dim"]
    q = rng.normal(size=(b, t, n, h))
    key = rng.normal(size=(b, s, k, h))
    value = rng.normal(size=(b, s, k, h))
    return [a.astype("float32") for a in (q, key, value)]


def _attend(setup, q, k, v, **kwargs):
    dtype = setup["dtype"]
    out = scaled_dot_product_attention(
        keras.ops.cast(q, dtype), keras.ops.cast(k, dtype),
        keras.ops.cast(v, dtype), implementation=setup["implementation"],
        **kwargs,
    )
    if isinstance(out, tuple):
        return tuple(to_numpy(keras.ops.cast(o, "float32")) for o in out)
    return to_numpy(keras.ops.cast(out, "float32"))


def _replace(array, where, rng):
    """`array` with new random values at the key positions `where` (S,)
    of every batch row and head."""
    changed = array.copy()
    changed[:, where] = rng.normal(size=changed[:, where].shape) * 3.0
    return changed


# Causal attention never reads the future.


def _no_future_leak(setup, data):
    rng = np.random.default_rng(setup["seed"])
    t, s = setup["query_length"], setup["key_length"]
    offset = data.draw(st.integers(0, s - t), label="query_offset")
    cut = data.draw(st.integers(0, s - 1), label="first changed key")
    q, k, v = _tensors(setup, rng)
    future = np.arange(s) >= cut
    before = _attend(setup, q, k, v, is_causal=True, query_offset=offset)
    after = _attend(setup, q, _replace(k, future, rng),
                    _replace(v, future, rng), is_causal=True,
                    query_offset=offset)
    positions = offset + np.arange(t)  # absolute position of each query
    past = positions < cut
    np.testing.assert_array_equal(after[:, past], before[:, past])
    if positions[-1] >= cut:  # the last query sees a changed key
        assert not np.array_equal(after[:, -1], before[:, -1])


@FEW
@given(setup=attention_setups(), data=st.data())
def test_causal_attention_never_reads_the_future(setup, data):
    _no_future_leak(setup, data)


@pytest.mark.large
@MANY
@given(setup=attention_setups(), data=st.data())
def test_causal_attention_never_reads_the_future_sweep(setup, data):
    _no_future_leak(setup, data)


# Padding never reaches real outputs.


def _padding_is_invisible(setup, data):
    rng = np.random.default_rng(setup["seed"])
    b, s = setup["batch"], setup["key_length"]
    real = rng.random((b, s)) < 0.6
    real[:, data.draw(st.integers(0, s - 1), label="a real key")] = True
    q, k, v = _tensors(setup, rng)
    mask = real[:, None, None, :]  # (B, 1, 1, S)
    causal = data.draw(st.booleans(), label="causal")
    before = _attend(setup, q, k, v, mask=mask, is_causal=causal)
    k2, v2 = k.copy(), v.copy()
    for row in range(b):
        pad = ~real[row]
        k2[row, pad] = rng.normal(size=k2[row, pad].shape) * 3.0
        v2[row, pad] = rng.normal(size=v2[row, pad].shape) * 3.0
    after = _attend(setup, q, k2, v2, mask=mask, is_causal=causal)
    np.testing.assert_array_equal(after, before)


@FEW
@given(setup=attention_setups(), data=st.data())
def test_padded_keys_never_change_outputs(setup, data):
    _padding_is_invisible(setup, data)


@pytest.mark.large
@MANY
@given(setup=attention_setups(), data=st.data())
def test_padded_keys_never_change_outputs_sweep(setup, data):
    _padding_is_invisible(setup, data)


def _encoder_padding(heads, head_dim, length, normalize_first, seed):
    rng = np.random.default_rng(seed)
    width = heads * head_dim
    encoder = layers.TransformerEncoder(
        2 * width, heads, normalize_first=normalize_first,
        num_key_value_heads=max(1, heads // 2),
    )
    x = rng.normal(size=(2, length, width)).astype("float32")
    real = rng.random((2, length)) < 0.6
    real[:, 0] = True
    before = to_numpy(encoder(x, padding_mask=real))
    changed = x.copy()
    changed[~real] = rng.normal(size=changed[~real].shape) * 3.0
    after = to_numpy(encoder(changed, padding_mask=real))
    np.testing.assert_array_equal(after[real], before[real])


@FEW
@given(heads=st.sampled_from([1, 2, 4]), head_dim=st.sampled_from([2, 4]),
       length=st.integers(1, 6), normalize_first=st.booleans(),
       seed=st.integers(0, 2**16))
def test_padded_tokens_never_change_an_encoder_block(heads, head_dim, length,
                                                     normalize_first, seed):
    _encoder_padding(heads, head_dim, length, normalize_first, seed)


# Cached decoding equals the full pass.


def _decode_with_cache(layer, x, chunks):
    """Runs `layer` over `x` `(B, L, D)` in consecutive chunks of the
    given lengths through its KV cache; returns the outputs, joined. (The
    one place these tests know the cache's form.)"""
    batch, length, _ = x.shape
    cache = np.zeros((batch, 2, length, layer._kv_heads, layer.key_dim),
                     "float32")  # (B, 2, S, K, H)
    outputs, start = [], 0
    for size in chunks:
        chunk = x[:, start:start + size]
        out, cache = layer(chunk, chunk, use_causal_mask=True, cache=cache,
                           cache_update_index=start)
        outputs.append(to_numpy(out))
        start += size
    return np.concatenate(outputs, axis=1)


def _cached_equals_full(kv_heads, groups, head_dim, length, rotary, window,
                        data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    chunks, left = [], length
    while left:
        chunks.append(data.draw(st.integers(1, left), label="chunk"))
        left -= chunks[-1]
    layer = layers.MultiHeadAttention(
        num_heads=kv_heads * groups, key_dim=head_dim,
        num_key_value_heads=kv_heads,
        rotary_max_wavelength=10000 if rotary else None,
        sliding_window=window,
    )
    x = rng.normal(size=(2, length, 12)).astype("float32")
    full = to_numpy(layer(x, x, use_causal_mask=True))
    assert_allclose(_decode_with_cache(layer, x, chunks), full, atol=2e-5)


@FEW
@given(kv_heads=st.sampled_from([1, 2]), groups=st.sampled_from([1, 2]),
       head_dim=st.sampled_from([2, 4]), length=st.integers(1, 7),
       rotary=st.booleans(), window=st.one_of(st.none(), st.integers(1, 4)),
       data=st.data())
def test_cached_decoding_equals_the_full_pass(kv_heads, groups, head_dim,
                                              length, rotary, window, data):
    _cached_equals_full(kv_heads, groups, head_dim, length, rotary, window,
                        data)


@pytest.mark.large
@MANY
@given(kv_heads=st.sampled_from([1, 2, 4]), groups=st.sampled_from([1, 2]),
       head_dim=st.sampled_from([2, 4, 8]), length=st.integers(1, 12),
       rotary=st.booleans(), window=st.one_of(st.none(), st.integers(1, 6)),
       data=st.data())
def test_cached_decoding_equals_the_full_pass_sweep(kv_heads, groups,
                                                    head_dim, length, rotary,
                                                    window, data):
    _cached_equals_full(kv_heads, groups, head_dim, length, rotary, window,
                        data)


# A row with nothing to attend to: zeros, finite gradients.


def _masked_rows(setup, data):
    rng = np.random.default_rng(setup["seed"])
    b, t, s = setup["batch"], setup["query_length"], setup["key_length"]
    mask = rng.random((b, t, s)) < 0.7
    empty = np.zeros((b, t), bool)
    empty[data.draw(st.integers(0, b - 1)), data.draw(st.integers(0, t - 1))] \
        = True
    empty |= rng.random((b, t)) < 0.2
    mask[empty] = False
    q, k, v = _tensors(setup, rng)
    out = _attend(setup, q, k, v, mask=mask)
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out[empty], np.zeros_like(out[empty]))
    for position in range(3):  # the gradient wrt q, k and v
        def loss(tensor, position=position):
            args = [q, k, v]
            args[position] = tensor
            return scaled_dot_product_attention(
                *(keras.ops.cast(a, setup["dtype"]) for a in args),
                mask=mask, implementation=setup["implementation"])

        grad = gradient_of_sum(loss, [q, k, v][position])
        assert np.isfinite(grad).all()
        if position == 0:  # an empty row's query changes nothing
            np.testing.assert_array_equal(grad[empty],
                                          np.zeros_like(grad[empty]))


@FEW
@given(setup=attention_setups(), data=st.data())
def test_fully_masked_rows_give_zeros_and_finite_gradients(setup, data):
    _masked_rows(setup, data)


@pytest.mark.large
@MANY
@given(setup=attention_setups(), data=st.data())
def test_fully_masked_rows_give_zeros_and_finite_gradients_sweep(setup,
                                                                 data):
    _masked_rows(setup, data)


# A sliding window never sees past the window.


def _window_is_a_wall(setup, data):
    rng = np.random.default_rng(setup["seed"])
    t, s = setup["query_length"], setup["key_length"]
    window = data.draw(st.integers(1, s), label="sliding_window")
    offset = data.draw(st.integers(0, s - t), label="query_offset")
    causal = data.draw(st.booleans(), label="causal")
    query = data.draw(st.integers(0, t - 1), label="query")
    q, k, v = _tensors(setup, rng)
    kwargs = dict(is_causal=causal, sliding_window=window,
                  query_offset=offset)
    position = offset + query
    outside = np.abs(np.arange(s) - position) >= window
    if not outside.any():
        return
    before = _attend(setup, q, k, v, **kwargs)
    after = _attend(setup, q, _replace(k, outside, rng),
                    _replace(v, outside, rng), **kwargs)
    np.testing.assert_array_equal(after[:, query], before[:, query])
    if setup["implementation"] == "explicit":
        _, weights = _attend(setup, q, k, v, return_weights=True, **kwargs)
        assert not weights[:, :, query, outside].any()


@FEW
@given(setup=attention_setups(min_extra=1), data=st.data())
def test_a_sliding_window_never_sees_past_the_window(setup, data):
    _window_is_a_wall(setup, data)


@pytest.mark.large
@MANY
@given(setup=attention_setups(min_extra=1), data=st.data())
def test_a_sliding_window_never_sees_past_the_window_sweep(setup, data):
    _window_is_a_wall(setup, data)
