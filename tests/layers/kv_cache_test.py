"""KVCache: its heads-first layout and update against NumPy, keras-hub's
stacked form, the form rule, the index check, and its passage through
compiled loops."""

import keras
import numpy as np
import pytest

from keras_attn.layers import KVCache
from keras_attn.layers.kv_cache import as_kv_cache
from keras_attn.layers.kv_cache import restore_form
from tests.test_case import assert_allclose
from tests.test_case import to_numpy


def _rand(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def test_zeros_are_heads_first():
    cache = KVCache.zeros(2, 3, 7, 4, value_head_dim=5)
    assert tuple(cache.keys.shape) == (2, 3, 7, 4)  # (B, K, S, H)
    assert tuple(cache.values.shape) == (2, 3, 7, 5)  # (B, K, S, V)
    assert cache.length == 7
    assert not to_numpy(cache.keys).any()


@pytest.mark.parametrize("index, new", [(0, 1), (3, 2), (5, 2), (0, 7)])
def test_update_writes_new_positions_heads_first(index, new):
    """T new keys `(B, T, K, H)` land at positions `index ..` of the
    `(B, K, S, H)` cache; every other position keeps its value."""
    keys, values = _rand(2, 3, 7, 4), _rand(2, 3, 7, 5, seed=1)
    new_keys, new_values = _rand(2, new, 3, 4, seed=2), _rand(2, new, 3, 5,
                                                              seed=3)
    updated = KVCache(keys, values).update(index, new_keys, new_values)
    expected_keys, expected_values = keys.copy(), values.copy()
    for t in range(new):
        expected_keys[:, :, index + t] = new_keys[:, t]
        expected_values[:, :, index + t] = new_values[:, t]
    assert isinstance(updated, KVCache)
    assert_allclose(updated.keys, expected_keys, atol=0)
    assert_allclose(updated.values, expected_values, atol=0)


def test_keras_hub_stacked_form_round_trip():
    stacked = _rand(2, 2, 7, 3, 4)  # (B, 2, S, K, H)
    cache = KVCache.from_stacked(stacked)
    assert_allclose(cache.keys, stacked[:, 0].transpose(0, 2, 1, 3), atol=0)
    assert_allclose(cache.values, stacked[:, 1].transpose(0, 2, 1, 3), atol=0)
    assert_allclose(cache.to_stacked(), stacked, atol=0)


def test_one_rule_tells_the_forms_apart():
    native = KVCache(_rand(1, 2, 5, 4), _rand(1, 2, 5, 4, seed=1))
    cache, stacked = as_kv_cache(native)
    assert cache is native and not stacked
    assert restore_form(cache, stacked) is native
    tensor = keras.ops.convert_to_tensor(_rand(1, 2, 5, 2, 4))
    cache, stacked = as_kv_cache(tensor)
    assert stacked and isinstance(cache, KVCache)
    assert_allclose(restore_form(cache, stacked), tensor, atol=0)
    for plain in (tuple(native), list(native)):
        with pytest.raises(TypeError, match="KVCache"):
            as_kv_cache(plain)


@pytest.mark.parametrize("index", [-1, 4, np.int32(6)])
def test_static_index_past_the_end_raises(index):
    cache = KVCache.zeros(1, 2, 5, 4)
    new = _rand(1, 2, 2, 4)
    with pytest.raises(ValueError, match=r"in \[0, 3\].*cache_update_index="):
        cache.update(index, new, new)
    with pytest.raises(ValueError, match="6 new positions do not fit"):
        cache.update(0, _rand(1, 6, 2, 4), _rand(1, 6, 2, 4))


def test_passes_through_a_compiled_while_loop():
    """One structure for `keras.ops.while_loop` and the backend's compiler:
    the loop writes one position per step and gives back a `KVCache`."""
    new = _rand(1, 4, 2, 3)  # (B, T, K, H)

    def step(i, cache):
        token = keras.ops.slice(new, [0, i, 0, 0], [1, 1, 2, 3])
        return i + 1, cache.update(i, token, token * 2)

    def run(cache):
        return keras.ops.while_loop(lambda i, c: i < 4, step, (0, cache))[1]

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        run = tf.function(run, jit_compile=True)
    elif backend == "jax":
        import jax

        run = jax.jit(run)
    cache = run(KVCache.zeros(1, 2, 4, 3))
    assert isinstance(cache, KVCache)
    assert_allclose(cache.keys, new.transpose(0, 2, 1, 3), atol=0)
    assert_allclose(cache.values, 2 * new.transpose(0, 2, 1, 3), atol=0)
