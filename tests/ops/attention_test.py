"""scaled_dot_product_attention against a NumPy float64 reference."""

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from keras_attn.ops import causal_mask
from keras_attn.ops import scaled_dot_product_attention
from keras_attn.ops import select_implementation
from keras_attn.ops import sliding_window_mask
from tests import references
from tests.test_case import assert_allclose
from tests.test_case import gradient_of_sum
from tests.test_case import to_numpy

IMPLS = ["fused", "explicit"]


def _qkv(rng, b, t, s, n, k, h, v=None, scale=1.0):
    q = rng.normal(size=(b, t, n, h)) * scale
    key = rng.normal(size=(b, s, k, h)) * scale
    value = rng.normal(size=(b, s, k, v or h)) * scale
    return [a.astype("float32") for a in (q, key, value)]


@pytest.mark.parametrize("implementation", IMPLS)
@pytest.mark.parametrize("causal", [False, True])
def test_matches_numpy_float64(implementation, causal):
    rng = np.random.default_rng(0)
    q, k, v = _qkv(rng, 2, 5, 7, 4, 4, 8)
    mask = rng.random((2, 5, 7)) > 0.3
    out = scaled_dot_product_attention(
        q, k, v, mask=mask, is_causal=causal, implementation=implementation
    )
    ref, _ = references.attention(q, k, v, mask=mask, causal=causal)
    assert_allclose(out, ref, atol=1e-5)


@settings(deadline=None, max_examples=15)
@given(
    b=st.integers(1, 3),
    t=st.integers(1, 6),
    extra=st.integers(0, 4),
    k=st.sampled_from([1, 2]),
    groups=st.sampled_from([1, 2, 3]),
    h=st.sampled_from([2, 4, 8]),
    causal=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_random_shapes_both_paths_agree_with_reference(
    b, t, extra, k, groups, h, causal, seed
):
    """Grouped-query heads, T <= S, masks, causal: both paths == reference."""
    rng = np.random.default_rng(seed)
    s = t + extra
    q, key, value = _qkv(rng, b, t, s, k * groups, k, h)
    mask = rng.random((b, 1, t, s)) > 0.25
    bias = rng.normal(size=(1, k * groups, t, s)).astype("float32")
    ref, ref_w = references.attention(
        q, key, value, mask=mask, bias=bias, causal=causal
    )
    fused = scaled_dot_product_attention(
        q, key, value, mask=mask, bias=bias, is_causal=causal,
        implementation="fused",
    )
    explicit, weights = scaled_dot_product_attention(
        q, key, value, mask=mask, bias=bias, is_causal=causal,
        return_weights=True,
    )
    assert_allclose(fused, ref, atol=1e-5)
    assert_allclose(explicit, ref, atol=1e-5)
    assert_allclose(weights, ref_w, atol=1e-5)
    assert_allclose(fused, explicit, atol=1e-5)


def test_value_head_size_may_differ_from_key_head_size():
    rng = np.random.default_rng(5)
    q, k, v = _qkv(rng, 2, 3, 4, 2, 2, 8, v=5)
    out = scaled_dot_product_attention(q, k, v)
    assert_allclose(out, references.attention(q, k, v)[0], atol=1e-5)
    assert select_implementation("float32", key_head_dim=8,
                                 value_head_dim=5) == "explicit"


def test_textbook_formula_single_head():
    """softmax(Q K^T / sqrt(d_k)) V written out by hand for one head."""
    q = np.array([[[[1.0, 0.0]], [[0.0, 2.0]]]], "float32")  # (1, 2, 1, 2)
    k = np.array([[[[1.0, 1.0]], [[0.0, -1.0]], [[2.0, 0.0]]]], "float32")
    v = np.array([[[[1.0]], [[2.0]], [[3.0]]]], "float32")
    out, w = scaled_dot_product_attention(q, k, v, return_weights=True)
    logits = np.array([[1, 0, 2], [2, -2, 0]]) / np.sqrt(2.0)
    expected_w = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    assert_allclose(w[0, 0], expected_w, atol=1e-6)
    assert_allclose(out[0, :, 0, 0], expected_w @ [1.0, 2.0, 3.0], atol=1e-6)


def test_causal_mask_is_bottom_right_aligned():
    got = to_numpy(causal_mask(2, 4))
    np.testing.assert_array_equal(
        got, [[True, True, True, False], [True, True, True, True]]
    )
    got = to_numpy(causal_mask(2, 4, offset=0))
    np.testing.assert_array_equal(
        got, [[True, False, False, False], [True, True, False, False]]
    )


@pytest.mark.parametrize("implementation", IMPLS)
def test_changing_keys_after_t_leaves_outputs_up_to_t_unchanged(
    implementation,
):
    rng = np.random.default_rng(1)
    q, k, v = _qkv(rng, 2, 6, 6, 2, 2, 4)
    t = 3
    k2, v2 = k.copy(), v.copy()
    k2[:, t + 1:] = rng.normal(size=k2[:, t + 1:].shape)
    v2[:, t + 1:] = rng.normal(size=v2[:, t + 1:].shape)
    a = scaled_dot_product_attention(
        q, k, v, is_causal=True, implementation=implementation
    )
    b = scaled_dot_product_attention(
        q, k2, v2, is_causal=True, implementation=implementation
    )
    assert_allclose(a[:, : t + 1], b[:, : t + 1], atol=1e-6)
    assert not np.allclose(to_numpy(a[:, t + 1:]), to_numpy(b[:, t + 1:]))


@pytest.mark.parametrize("implementation", IMPLS)
def test_fully_masked_rows_give_zeros_and_finite_gradients(implementation):
    rng = np.random.default_rng(2)
    q, k, v = _qkv(rng, 2, 3, 4, 2, 2, 4)
    mask = np.ones((2, 3, 4), bool)
    mask[0, 1] = False  # query 1 of batch 0 sees nothing
    out = scaled_dot_product_attention(
        q, k, v, mask=mask, implementation=implementation
    )
    assert_allclose(out[0, 1], np.zeros_like(out[0, 1]), atol=0)
    assert np.isfinite(to_numpy(out)).all()

    def fn(query):
        return scaled_dot_product_attention(
            query, k, v, mask=mask, implementation=implementation
        )

    grad = gradient_of_sum(fn, q)
    assert np.isfinite(grad).all()
    assert_allclose(grad[0, 1], np.zeros_like(grad[0, 1]), atol=0)


def test_float16_large_inputs_stay_finite_and_accurate():
    """Logits of 100-scale float16 inputs overflow float16 (65504); ours are
    computed in float32."""
    rng = np.random.default_rng(3)
    q, k, v = _qkv(rng, 2, 8, 8, 2, 2, 64, scale=100.0)
    out = scaled_dot_product_attention(
        q.astype("float16"), k.astype("float16"), v.astype("float16"),
        is_causal=True,
    )
    assert keras.backend.standardize_dtype(out.dtype) == "float16"
    out = to_numpy(out).astype("float32")
    assert np.isfinite(out).all()
    ref, _ = references.attention(
        q.astype("float16"), k.astype("float16"), v.astype("float16"),
        causal=True,
    )
    np.testing.assert_allclose(out, ref, rtol=2e-2, atol=0.5)
    assert select_implementation("float16") == "explicit"
    assert select_implementation("bfloat16") == "fused"


def test_dropout_only_in_training():
    rng = np.random.default_rng(4)
    q, k, v = _qkv(rng, 2, 4, 4, 2, 2, 4)
    base = scaled_dot_product_attention(q, k, v)
    infer = scaled_dot_product_attention(
        q, k, v, dropout_rate=0.5, training=False
    )
    assert_allclose(base, infer, atol=1e-6)
    train = scaled_dot_product_attention(
        q, k, v, dropout_rate=0.5, training=True, seed=1
    )
    assert not np.allclose(to_numpy(base), to_numpy(train))
    assert select_implementation("float32", dropout_rate=0.5,
                                 training=True) == "explicit"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(q=(2, 3, 4), k=(2, 3, 4, 8), v=(2, 3, 4, 8)), "`query` must"),
        (dict(q=(2, 3, 4, 8), k=(2, 3, 4, 6), v=(2, 3, 4, 8)), "last dim"),
        (dict(q=(2, 3, 4, 8), k=(2, 3, 4, 8), v=(2, 5, 4, 8)), "same length"),
        (dict(q=(2, 3, 4, 8), k=(2, 3, 3, 8), v=(2, 3, 3, 8)), "multiple"),
    ],
)
def test_bad_shapes_raise_value_error(kwargs, message):
    q, k, v = (np.zeros(kwargs[x], "float32") for x in ("q", "k", "v"))
    with pytest.raises(ValueError, match=message):
        scaled_dot_product_attention(q, k, v)


def test_bad_arguments_raise_value_error():
    q = np.zeros((1, 2, 2, 4), "float32")
    with pytest.raises(ValueError, match="mask.*Received: mask.shape"):
        scaled_dot_product_attention(q, q, q, mask=np.ones((1, 3, 2), bool))
    with pytest.raises(ValueError, match="mask.*rank"):
        scaled_dot_product_attention(q, q, q, mask=np.ones((2,), bool))
    with pytest.raises(ValueError, match="dropout_rate=1.5"):
        scaled_dot_product_attention(q, q, q, dropout_rate=1.5)
    with pytest.raises(ValueError, match="implementation='flash'"):
        scaled_dot_product_attention(q, q, q, implementation="flash")
    with pytest.raises(ValueError, match="return_weights=True"):
        scaled_dot_product_attention(
            q, q, q, return_weights=True, implementation="fused"
        )


def _numpy_band(t, s, window, offset, causal):
    """Allowed (query, key) pairs by absolute position, in NumPy."""
    rows = np.arange(t)[:, None] + offset
    cols = np.arange(s)[None, :]
    allowed = np.abs(rows - cols) < window
    if causal:
        allowed &= cols <= rows
    return allowed


@pytest.mark.parametrize("t, s, window, offset",
                         [(5, 5, 2, None), (2, 6, 3, None), (3, 7, 2, 1),
                          (4, 4, 1, 0), (1, 9, 4, 8)])
def test_sliding_window_mask_is_a_band_of_absolute_positions(
    t, s, window, offset
):
    expected = _numpy_band(t, s, window, s - t if offset is None else offset,
                           causal=False)
    got = to_numpy(sliding_window_mask(t, s, window, offset))
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("implementation", IMPLS)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("offset", [None, 0, 2])
def test_sliding_window_matches_numpy_float64(implementation, causal,
                                              offset):
    rng = np.random.default_rng(7)
    t, s = 4, 7
    q, k, v = _qkv(rng, 2, t, s, 4, 2, 8)
    padding = rng.random((2, 1, t, s)) > 0.2
    band = _numpy_band(t, s, 3, s - t if offset is None else offset, causal)
    out = scaled_dot_product_attention(
        q, k, v, mask=padding, is_causal=causal, sliding_window=3,
        query_offset=offset, implementation=implementation,
    )
    ref, _ = references.attention(q, k, v, mask=padding & band)
    assert_allclose(out, ref, atol=1e-5)


@pytest.mark.parametrize("implementation", IMPLS)
def test_decoding_one_query_at_its_offset_equals_its_row_of_the_full_pass(
    implementation,
):
    """Query `p` alone, at `query_offset=p`, with a causal window, gives row
    `p` of the full causal windowed pass (what cached decoding relies on)."""
    rng = np.random.default_rng(8)
    q, k, v = _qkv(rng, 1, 6, 6, 2, 1, 4)
    full = scaled_dot_product_attention(
        q, k, v, is_causal=True, sliding_window=2,
        implementation=implementation,
    )
    for p in range(6):
        step = scaled_dot_product_attention(
            q[:, p:p + 1], k, v, is_causal=True, sliding_window=2,
            query_offset=p, implementation=implementation,
        )
        assert_allclose(step[:, 0], full[:, p], atol=1e-6)


def test_flash_attention_selects_the_fused_path_or_raises():
    assert select_implementation("float16", flash_attention=True) == "fused"
    assert select_implementation("float16", flash_attention=False) == (
        "explicit")
    with pytest.raises(ValueError, match="flash_attention=True.*"
                                         "return_weights"):
        select_implementation("float32", return_weights=True,
                              flash_attention=True)
    with pytest.raises(ValueError, match="flash_attention='yes'"):
        select_implementation("float32", flash_attention="yes")
    with pytest.raises(ValueError, match="sliding_window=0"):
        q = np.zeros((1, 2, 1, 4), "float32")
        scaled_dot_product_attention(q, q, q, sliding_window=0)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="Keras's TensorFlow backend has no flash kernels")
def test_flash_attention_on_tensorflow_raises_keras_error():
    q = np.zeros((1, 2, 1, 4), "float32")
    with pytest.raises(ValueError, match="[Ff]lash attention"):
        scaled_dot_product_attention(q, q, q, flash_attention=True)



def _heads_first(x):
    return x.transpose(0, 2, 1, 3)  # (B, S, K, H) -> (B, K, S, H)


@pytest.mark.parametrize("implementation", [None, "explicit"])
def test_heads_first_keys_match_numpy_float64(implementation):
    """`kv_layout="BKSH"`: keys and values `(B, K, S, H)`, the KV cache's
    layout, give the reference's output and weights (grouped heads, a value
    size of its own); they take the explicit path unless told otherwise."""
    rng = np.random.default_rng(4)
    q, k, v = _qkv(rng, 2, 3, 7, 4, 2, 8, v=6)
    mask = rng.random((2, 3, 7)) > 0.3
    ref, ref_weights = references.attention(q, k, v, mask=mask, causal=True)
    out, weights = scaled_dot_product_attention(
        q, _heads_first(k), _heads_first(v), mask=mask, is_causal=True,
        return_weights=True, implementation=implementation, kv_layout="BKSH")
    assert_allclose(out, ref, atol=1e-5)
    assert_allclose(weights, ref_weights, atol=1e-6)
    assert select_implementation("float32", kv_layout="BKSH") == "explicit"
    assert select_implementation("float32") == "fused"


def test_heads_first_keys_on_the_fused_path_match_numpy_float64():
    rng = np.random.default_rng(5)
    q, k, v = _qkv(rng, 2, 3, 7, 4, 2, 8)
    mask = rng.random((2, 3, 7)) > 0.3
    ref, _ = references.attention(q, k, v, mask=mask)
    out = scaled_dot_product_attention(
        q, _heads_first(k), _heads_first(v), mask=mask,
        implementation="fused", kv_layout="BKSH")
    assert_allclose(out, ref, atol=1e-5)


def test_bad_kv_layout_and_heads_first_shapes_are_refused():
    rng = np.random.default_rng(6)
    q, k, v = _qkv(rng, 1, 2, 5, 4, 2, 8)
    with pytest.raises(ValueError, match="kv_layout='BSHK'"):
        scaled_dot_product_attention(q, k, v, kv_layout="BSHK")
    with pytest.raises(ValueError, match="same length dimension"):
        scaled_dot_product_attention(
            q, _heads_first(k), _heads_first(v)[:, :, :4], kv_layout="BKSH")
