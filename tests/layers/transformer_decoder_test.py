"""TransformerDecoder against keras_hub.layers.TransformerDecoder with the
same weights; causality and cached decoding."""

import keras
import keras_hub
import numpy as np
import pytest

from keras_attn.layers import KVCache
from keras_attn.layers import TransformerDecoder
from tests.test_case import assert_allclose
from tests.test_case import run_layer_test
from tests.test_case import to_numpy


def _x(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def test_layer_behaviors_decoder_only(tmp_path):
    run_layer_test(
        TransformerDecoder,
        dict(intermediate_dim=16, num_heads=2),
        dict(decoder_sequence=_x(2, 5, 8)),
        expected_output_shapes=[(2, 5, 8)],
        expected_num_trainable_weights=16,
        tmp_path=tmp_path,
    )


def test_layer_behaviors_with_cross_attention(tmp_path):
    run_layer_test(
        TransformerDecoder,
        dict(intermediate_dim=16, num_heads=4, num_key_value_heads=1,
             rotary_max_wavelength=1000, normalize_first=True, dropout=0.1),
        dict(decoder_sequence=_x(2, 5, 8), encoder_sequence=_x(2, 7, 8, seed=1),
             encoder_padding_mask=np.array([[1] * 7, [1] * 3 + [0] * 4],
                                           bool)),
        call_kwargs=dict(return_attention_scores=True),
        expected_output_shapes=[(2, 5, 8), (2, 4, 5, 7), (2, 4, 5, 5)],
        expected_num_trainable_weights=26,
        tmp_path=tmp_path,
    )


def _copy_from_keras_hub(normalize_first, cross):
    kwargs = dict(intermediate_dim=32, num_heads=4,
                  normalize_first=normalize_first)
    ours = TransformerDecoder(**kwargs)
    theirs = keras_hub.layers.TransformerDecoder(**kwargs)
    x, enc = _x(2, 5, 16), _x(2, 7, 16, seed=1)
    args = (x, enc) if cross else (x,)
    ours(*args)
    theirs(*args)
    assert [w.path.split("/", 1)[1] for w in ours.weights] == [
        w.path.split("/", 1)[1] for w in theirs.weights
    ]
    ours.set_weights(theirs.get_weights())
    return ours, theirs, args


@pytest.mark.parametrize("normalize_first", [False, True])
@pytest.mark.parametrize("cross", [False, True])
def test_same_weights_same_outputs_as_keras_hub(normalize_first, cross):
    ours, theirs, args = _copy_from_keras_hub(normalize_first, cross)
    assert_allclose(ours(*args), theirs(*args), atol=1e-6)
    pad = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    kwargs = dict(decoder_padding_mask=pad)
    if cross:
        kwargs["encoder_padding_mask"] = np.array(
            [[1] * 7, [1] * 4 + [0] * 3], bool)
    out = to_numpy(ours(*args, **kwargs))
    ref = to_numpy(theirs(*args, **kwargs))
    assert_allclose(out[pad], ref[pad], atol=1e-6)
    # And back: keras-hub's block with our (changed) weights.
    ours.set_weights([w * 0.5 for w in ours.get_weights()])
    theirs.set_weights(ours.get_weights())
    assert_allclose(ours(*args), theirs(*args), atol=1e-6)


@pytest.mark.parametrize("cross", [False, True])
def test_cached_call_returns_keras_hub_tuple_and_values(cross):
    """keras-hub's convention: `(outputs, self_cache)` or `(outputs,
    self_cache, cross_cache)`, equal to keras-hub's with the same weights,
    the cross cache filled through `cross_attention_cache_update_index`."""
    ours, theirs, args = _copy_from_keras_hub(True, cross)
    kwargs = dict(self_attention_cache=np.zeros((2, 2, 5, 4, 4), "float32"),
                  self_attention_cache_update_index=0)
    if cross:
        kwargs.update(
            cross_attention_cache=np.zeros((2, 2, 7, 4, 4), "float32"),
            cross_attention_cache_update_index=0)
    out, ref = ours(*args, **kwargs), theirs(*args, **kwargs)
    assert isinstance(out, tuple) and len(out) == len(ref) == 2 + cross
    for a, b in zip(out, ref):
        assert_allclose(a, b, atol=1e-6)


def test_filling_the_cross_cache_keeps_encoder_padding():
    decoder = TransformerDecoder(intermediate_dim=16, num_heads=2)
    x, enc = _x(2, 5, 8), _x(2, 7, 8, seed=1)
    encoder_pad = np.array([[1] * 7, [1] * 3 + [0] * 4], bool)
    full = decoder(x, enc, encoder_padding_mask=encoder_pad)
    out, _, cross_cache = decoder(
        x, enc, encoder_padding_mask=encoder_pad,
        self_attention_cache=np.zeros((2, 2, 5, 2, 4), "float32"),
        self_attention_cache_update_index=0,
        cross_attention_cache=np.zeros((2, 2, 7, 2, 4), "float32"),
        cross_attention_cache_update_index=0)
    assert_allclose(out, full, atol=1e-6)
    native = decoder.compute_cross_attention_cache(enc)  # (B, K, E, H)
    assert isinstance(native, KVCache)
    stacked = to_numpy(cross_cache)  # (B, 2, E, K, H)
    assert_allclose(native.keys, stacked[:, 0].transpose(0, 2, 1, 3),
                    atol=1e-6)
    assert_allclose(native.values, stacked[:, 1].transpose(0, 2, 1, 3),
                    atol=1e-6)


CACHES = {
    "none": {},
    "stacked": dict(self_attention_cache=np.zeros((2, 2, 6, 2, 4), "float32"),
                    self_attention_cache_update_index=0),
    "native": dict(self_attention_cache=KVCache(
                       np.zeros((2, 2, 6, 4), "float32"),
                       np.zeros((2, 2, 6, 4), "float32")),
                   self_attention_cache_update_index=1),
}


@pytest.mark.parametrize("policy", ["mixed_float16", "bfloat16"])
@pytest.mark.parametrize("cache", list(CACHES))
@pytest.mark.parametrize("cross", [False, True])
@pytest.mark.parametrize("return_attention_scores", [False, True])
def test_output_spec_matches_the_eager_call(policy, cache, cross,
                                            return_attention_scores):
    """`compute_output_spec` with float32 inputs gives the structure, shapes
    and compute dtype of the eager call, caches and scores included."""
    decoder = TransformerDecoder(16, 2, num_key_value_heads=2, dtype=policy)
    args = (_x(2, 5, 8), _x(2, 7, 8, seed=1)) if cross else (_x(2, 5, 8),)
    kwargs = dict(CACHES[cache])
    if cross and cache != "none":
        kwargs["cross_attention_cache"] = np.zeros((2, 2, 7, 2, 4), "float32")
    # Backend tensors, as keras-hub's test passes (NumPy arrays would not be
    # traced symbolically).
    args, kwargs = keras.tree.map_structure(
        keras.ops.convert_to_tensor, (args, kwargs))
    kwargs["return_attention_scores"] = return_attention_scores
    eager = decoder(*args, **kwargs)
    spec = decoder.compute_output_spec(*args, **kwargs)
    assert keras.tree.map_structure(lambda t: tuple(t.shape), spec) == (
        keras.tree.map_structure(lambda t: tuple(t.shape), eager))
    compute = keras.mixed_precision.Policy(policy).compute_dtype
    for tensor in keras.tree.flatten(spec) + keras.tree.flatten(eager):
        assert keras.backend.standardize_dtype(tensor.dtype) == compute


def test_keras_hub_config_with_build_shapes_loads_built():
    theirs = keras_hub.layers.TransformerDecoder(16, 2, normalize_first=True)
    x, enc = _x(1, 5, 8), _x(1, 7, 8, seed=1)
    theirs(x, enc)
    ours = TransformerDecoder.from_config(theirs.get_config())
    assert ours.built and ours.normalize_first
    ours.set_weights(theirs.get_weights())
    assert_allclose(ours(x, enc), theirs(x, enc), atol=1e-6)
    assert "decoder_sequence_shape" not in ours.get_config()


def test_changing_tokens_after_t_leaves_outputs_up_to_t_unchanged():
    decoder = TransformerDecoder(intermediate_dim=16, num_heads=2)
    x = _x(2, 6, 8)
    y = x.copy()
    y[:, 4:] = _x(2, 2, 8, seed=5)
    a, b = to_numpy(decoder(x)), to_numpy(decoder(y))
    assert_allclose(a[:, :4], b[:, :4], atol=1e-6)
    assert not np.allclose(a[:, 4:], b[:, 4:])


def test_sliding_window_hides_tokens_older_than_the_window():
    """With `sliding_window=3`, the output at t depends on tokens t-2..t
    only: changing token t-3 leaves it unchanged, changing t-2 does not."""
    decoder = TransformerDecoder(intermediate_dim=16, num_heads=2,
                                 sliding_window=3)
    x = _x(2, 6, 8)
    outside, inside = x.copy(), x.copy()
    outside[:, 2] = _x(2, 1, 8, seed=7)[:, 0]  # 3 before position 5
    inside[:, 3] = _x(2, 1, 8, seed=7)[:, 0]  # 2 before position 5
    base = to_numpy(decoder(x))
    assert_allclose(to_numpy(decoder(outside))[:, 5], base[:, 5], atol=1e-6)
    assert not np.allclose(to_numpy(decoder(inside))[:, 5], base[:, 5])
    assert decoder.get_config()["sliding_window"] == 3
    assert TransformerDecoder.from_config(
        decoder.get_config()).sliding_window == 3


@pytest.mark.parametrize("cross", [False, True])
@pytest.mark.parametrize("rotary", [None, 10000])
@pytest.mark.parametrize("native", [False, True])
def test_cached_decoding_equals_full_pass(cross, rotary, native):
    """Both self-attention cache forms; the cross-attention cache from
    `compute_cross_attention_cache`."""
    decoder = TransformerDecoder(intermediate_dim=16, num_heads=4,
                                 num_key_value_heads=2,
                                 rotary_max_wavelength=rotary)
    x, enc = _x(2, 6, 8), _x(2, 4, 8, seed=1)
    args = (enc,) if cross else ()
    full = to_numpy(decoder(x, *args))
    self_cache = (KVCache.zeros(2, 2, 8, 2) if native  # (B, K, S, H)
                  else np.zeros((2, 2, 8, 2, 2), "float32"))  # (B, 2, S, K, H)
    kwargs = {}
    if cross:
        kwargs["cross_attention_cache"] = (
            decoder.compute_cross_attention_cache(enc))
    outs = []
    for i in range(6):
        out, self_cache, *rest = decoder(
            x[:, i:i + 1], *args, self_attention_cache=self_cache,
            self_attention_cache_update_index=i, **kwargs)
        outs.append(to_numpy(out))
    assert_allclose(np.concatenate(outs, 1), full, atol=1e-5)
    assert isinstance(self_cache, KVCache) == native


def test_scores_dict_on_cached_path():
    decoder = TransformerDecoder(intermediate_dim=16, num_heads=2)
    x = _x(1, 3, 8)
    cache = np.zeros((1, 2, 4, 2, 4), "float32")
    out, scores, cache = decoder(
        x, self_attention_cache=cache, self_attention_cache_update_index=0,
        return_attention_scores=True)
    weights = to_numpy(scores["self_attention"])
    assert weights.shape == (1, 2, 3, 4)
    assert_allclose(weights.sum(-1), np.ones((1, 2, 3)), atol=1e-6)
    assert_allclose(weights[..., 3], 0.0, atol=0)  # causal: unwritten slot


def test_bad_call_arguments():
    decoder = TransformerDecoder(16, 2)
    decoder(_x(1, 3, 8))
    with pytest.raises(ValueError, match="without cross-attention"):
        decoder(_x(1, 3, 8), _x(1, 4, 8))
    cross = TransformerDecoder(16, 2)
    cross(_x(1, 3, 8), _x(1, 4, 8))
    with pytest.raises(ValueError, match="both be given"):
        cross(_x(1, 3, 8), _x(1, 4, 8),
              self_attention_cache=np.zeros((1, 2, 4, 2, 4), "float32"),
              self_attention_cache_update_index=0)
