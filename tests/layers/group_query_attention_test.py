"""GroupQueryAttention against keras.layers.GroupQueryAttention (same
weights, both ways) and a NumPy float64 reference."""

import keras
import numpy as np
import pytest

from keras_attn.layers import GroupQueryAttention
from keras_attn.layers import MultiHeadAttention
from tests import references
from tests.test_case import assert_allclose
from tests.test_case import run_layer_test
from tests.test_case import to_numpy


def _x(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


@pytest.mark.parametrize(
    "init, call, shapes, num_weights",
    [
        (dict(head_dim=4, num_query_heads=4, num_key_value_heads=2),
         dict(use_causal_mask=True), [(2, 5, 8)], 8),
        (dict(head_dim=2, num_query_heads=4, num_key_value_heads=1,
              use_gate=True, dropout=0.1, seed=2, sliding_window=2,
              use_bias=False),
         dict(return_attention_scores=True), [(2, 5, 8), (2, 4, 5, 5)], 5),
        (dict(head_dim=4, num_query_heads=2, num_key_value_heads=2,
              rotary_max_wavelength=100),
         dict(use_causal_mask=True), [(2, 5, 8)], 8),
    ],
)
def test_layer_behaviors(init, call, shapes, num_weights, tmp_path):
    run_layer_test(
        GroupQueryAttention,
        init,
        {"query": _x(2, 5, 8), "value": _x(2, 5, 8, seed=1)},
        call_kwargs=call,
        expected_output_shapes=shapes,
        expected_num_trainable_weights=num_weights,
        tmp_path=tmp_path,
    )


CASES = [
    pytest.param(dict(head_dim=4, num_query_heads=4, num_key_value_heads=2),
                 {}, id="gqa"),
    pytest.param(dict(head_dim=3, num_query_heads=6, num_key_value_heads=1,
                      use_gate=True), dict(use_causal_mask=True),
                 id="mqa-gate-causal"),
    pytest.param(dict(head_dim=4, num_query_heads=2, num_key_value_heads=2,
                      use_bias=False, sliding_window=2),
                 dict(use_causal_mask=True), id="mha-window"),
]


@pytest.mark.parametrize("init, call", CASES)
def test_weights_interchange_with_keras_both_ways(init, call):
    """Keras's weights in ours, and ours in Keras's, give Keras's outputs
    and scores to 1e-6 (with a random attention mask too)."""
    q, v = _x(2, 5, 8), _x(2, 5, 6, seed=1)
    ours = GroupQueryAttention(**init)
    ref = keras.layers.GroupQueryAttention(**init)
    ours(q, v)
    ref(q, v)
    assert [w.shape for w in ours.weights] == [w.shape for w in ref.weights]
    assert [w.path.split("/", 1)[1] for w in ours.weights] == [
        w.path.split("/", 1)[1] for w in ref.weights
    ]
    mask = (np.random.default_rng(2).random((2, 5, 5)) > 0.4) | np.eye(
        5, dtype=bool)
    for weights in (ref.get_weights(), ours.get_weights()):
        ours.set_weights(weights)
        ref.set_weights(weights)
        for mask_kwargs in ({}, dict(attention_mask=mask)):
            want = ref(q, v, return_attention_scores=True, **call,
                       **mask_kwargs)
            got = ours(q, v, return_attention_scores=True, **call,
                       **mask_kwargs)
            for a, b in zip(got, want):
                assert_allclose(a, b, atol=1e-6, rtol=1e-6)


def test_keras_config_builds_the_same_layer():
    ref = keras.layers.GroupQueryAttention(
        head_dim=4, num_query_heads=4, num_key_value_heads=2, dropout=0.1,
        use_gate=True, sliding_window=3, seed=1, name="gqa",
    )
    ours = GroupQueryAttention.from_config(ref.get_config())
    config = ours.get_config()
    for key, value in ref.get_config().items():
        assert config[key] == value, key
    assert (ours.num_repeats, ours.head_dim) == (2, 4)


def test_matches_numpy_float64_with_masks():
    layer = GroupQueryAttention(head_dim=4, num_query_heads=6,
                                num_key_value_heads=2)
    q, v = _x(2, 4, 8), _x(2, 6, 8, seed=1)
    padding = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], bool)
    out = layer(q, v, value_mask=padding)
    w = [np.asarray(to_numpy(x), np.float64) for x in layer.weights]
    qp = np.einsum("btd,dnh->btnh", q, w[0]) + w[1]
    kp = np.einsum("bsd,dkh->bskh", v, w[2]) + w[3]
    vp = np.einsum("bsd,dkh->bskh", v, w[4]) + w[5]
    attended, _ = references.attention(qp, kp, vp, mask=padding[:, None])
    expected = np.einsum("btnh,nhd->btd", attended, w[6]) + w[7]
    assert_allclose(out, expected, atol=1e-5)


def test_is_our_multi_head_attention_with_equal_head_sizes():
    """Same weights, same outputs as MultiHeadAttention(num_heads,
    key_dim=head_dim, num_key_value_heads)."""
    gqa = GroupQueryAttention(head_dim=4, num_query_heads=4,
                              num_key_value_heads=2)
    mha = MultiHeadAttention(num_heads=4, key_dim=4, num_key_value_heads=2)
    x = _x(2, 5, 8)
    gqa(x, x)
    mha(x, x)
    mha.set_weights(gqa.get_weights())
    assert_allclose(gqa(x, x, use_causal_mask=True),
                    mha(x, x, use_causal_mask=True), atol=1e-6)


def test_cached_decoding_equals_full_pass():
    layer = GroupQueryAttention(head_dim=4, num_query_heads=4,
                                num_key_value_heads=2, sliding_window=3,
                                rotary_max_wavelength=10000)
    x = _x(2, 6, 8)
    full = to_numpy(layer(x, x, use_causal_mask=True))
    cache = np.zeros((2, 2, 6, 2, 4), "float32")
    steps = []
    for i in range(6):
        out, cache = layer(x[:, i:i + 1], x[:, i:i + 1], use_causal_mask=True,
                           cache=cache, cache_update_index=i)
        steps.append(to_numpy(out))
    np.testing.assert_allclose(np.concatenate(steps, 1), full, atol=1e-5)


def test_symbolic_shapes():
    layer = GroupQueryAttention(head_dim=8, num_query_heads=4,
                                num_key_value_heads=2)
    q, v = keras.Input((10, 32)), keras.Input((15, 32))
    out, scores = layer(q, v, return_attention_scores=True)
    assert out.shape == (None, 10, 32)
    assert scores.shape == (None, 4, 10, 15)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(head_dim=4, num_query_heads=4, num_key_value_heads=3),
         "divisible by `num_key_value_heads`"),
        (dict(head_dim=0, num_query_heads=4, num_key_value_heads=2),
         "head_dim=0"),
        (dict(head_dim=4, num_query_heads=4, num_key_value_heads=2,
              sliding_window=0), "sliding_window=0"),
        (dict(head_dim=4, num_query_heads=4, num_key_value_heads=2,
              dropout=0.1, flash_attention=True), "Dropout is not supported"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GroupQueryAttention(**kwargs)


def test_output_shape_needs_equal_query_and_value_features():
    """As in Keras, `compute_output_shape` refuses different feature sizes
    of query and value."""
    layer = GroupQueryAttention(head_dim=2, num_query_heads=4,
                                num_key_value_heads=4)
    with pytest.raises(ValueError, match="must be equal"):
        layer.compute_output_shape((2, 4, 8), (2, 2, 7))
