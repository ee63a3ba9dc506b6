"""TransformerEncoder against keras_hub.layers.TransformerEncoder with the
same weights, and the padding property."""

import keras
import keras_hub
import numpy as np
import pytest

from keras_attn.layers import TransformerEncoder
from tests.test_case import assert_allclose
from tests.test_case import run_layer_test
from tests.test_case import to_numpy


def _x(*shape, seed=0, scale=1.0):
    return (np.random.default_rng(seed).normal(size=shape) * scale).astype(
        "float32"
    )


PADDING = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], bool)


@pytest.mark.parametrize(
    "init, call, shapes",
    [
        (dict(intermediate_dim=16, num_heads=2), {}, [(2, 6, 8)]),
        (dict(intermediate_dim=16, num_heads=4, num_key_value_heads=2,
              rotary_max_wavelength=1000, normalize_first=True, dropout=0.1,
              activation="gelu"),
         dict(return_attention_scores=True), [(2, 6, 8), (2, 4, 6, 6)]),
    ],
)
def test_layer_behaviors(init, call, shapes, tmp_path):
    run_layer_test(
        TransformerEncoder,
        init,
        dict(inputs=_x(2, 6, 8), padding_mask=PADDING),
        call_kwargs=call,
        expected_output_shapes=shapes,
        expected_num_trainable_weights=16,
        tmp_path=tmp_path,
    )


@pytest.mark.parametrize("normalize_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_same_weights_same_outputs_as_keras_hub(normalize_first, activation):
    kwargs = dict(intermediate_dim=32, num_heads=4, activation=activation,
                  normalize_first=normalize_first, layer_norm_epsilon=1e-6)
    ours = TransformerEncoder(**kwargs)
    theirs = keras_hub.layers.TransformerEncoder(**kwargs)
    x = _x(2, 6, 16)
    ours(x)
    theirs(x)
    assert [w.path.split("/", 1)[1] for w in ours.weights] == [
        w.path.split("/", 1)[1] for w in theirs.weights
    ]
    ours.set_weights(theirs.get_weights())
    assert_allclose(ours(x), theirs(x), atol=1e-6)
    # With padding: equal at real tokens (keras-hub lets padded queries
    # attend; ours gives them no attention output).
    out = to_numpy(ours(x, padding_mask=PADDING))
    ref = to_numpy(theirs(x, padding_mask=PADDING))
    assert_allclose(out[PADDING], ref[PADDING], atol=1e-6)
    # And back: keras-hub's block with our (changed) weights.
    ours.set_weights([w * 0.5 for w in ours.get_weights()])
    theirs.set_weights(ours.get_weights())
    assert_allclose(ours(x), theirs(x), atol=1e-6)
    out, scores = ours(x, padding_mask=PADDING, return_attention_scores=True)
    _, ref_scores = theirs(x, padding_mask=PADDING,
                           return_attention_scores=True)
    real = PADDING[:, None, :, None]
    assert_allclose(np.where(real, to_numpy(scores), 0),
                    np.where(real, to_numpy(ref_scores), 0), atol=1e-6)


@pytest.mark.parametrize(
    "policy", ["mixed_float16", "mixed_bfloat16", "bfloat16"])
@pytest.mark.parametrize("return_attention_scores", [False, True])
def test_output_spec_in_compute_dtype_for_float32_inputs(
        policy, return_attention_scores):
    """keras-hub's precision check: `compute_output_spec` called directly
    with float32 inputs answers the shapes and compute dtype of the eager
    call (tracing `call` would add float32 inputs to float16 updates)."""
    encoder = TransformerEncoder(16, 4, dtype=policy)
    x = keras.ops.convert_to_tensor(_x(2, 6, 8))  # a backend tensor, traced
    kwargs = dict(padding_mask=PADDING,
                  return_attention_scores=return_attention_scores)
    eager = keras.tree.flatten(encoder(x, **kwargs))
    spec = keras.tree.flatten(encoder.compute_output_spec(x, **kwargs))
    compute = keras.mixed_precision.Policy(policy).compute_dtype
    assert [tuple(t.shape) for t in spec] == [tuple(t.shape) for t in eager]
    for tensor in spec + eager:
        assert keras.backend.standardize_dtype(tensor.dtype) == compute


def test_keras_hub_config_loads():
    theirs = keras_hub.layers.TransformerEncoder(
        intermediate_dim=8, num_heads=2, dropout=0.1, activation="gelu",
        kernel_initializer="he_normal", normalize_first=True)
    ours = TransformerEncoder.from_config(theirs.get_config())
    config = ours.get_config()
    for key, value in theirs.get_config().items():
        if key != "name":
            assert config[key] == value, key


def test_changing_padded_tokens_leaves_real_positions_unchanged():
    encoder = TransformerEncoder(intermediate_dim=16, num_heads=2)
    x = _x(2, 6, 8)
    y = x.copy()
    y[~PADDING] = _x(2, 6, 8, seed=9)[~PADDING] * 10
    a = to_numpy(encoder(x, padding_mask=PADDING))
    b = to_numpy(encoder(y, padding_mask=PADDING))
    assert_allclose(a[PADDING], b[PADDING], atol=1e-5)


def test_keras_mask_and_explicit_masks_combine():
    encoder = TransformerEncoder(intermediate_dim=16, num_heads=2)
    ids = np.array([[1, 2, 3, 4, 0, 0], [1, 2, 3, 4, 5, 6]])
    x = keras.layers.Embedding(10, 8, mask_zero=True)(ids)
    attention_mask = np.tril(np.ones((6, 6), bool))[None].repeat(2, 0)
    plain = to_numpy(x)
    combined = to_numpy(encoder(x, attention_mask=attention_mask))
    explicit = to_numpy(encoder(plain, padding_mask=ids != 0,
                                attention_mask=attention_mask))
    assert_allclose(combined, explicit, atol=1e-6)
    out = encoder(x)
    np.testing.assert_array_equal(to_numpy(out._keras_mask), ids != 0)


def test_mixed_float16_with_large_inputs_stays_finite():
    """keras-hub's encoder returns all NaN/inf here (edge-facts.md)."""
    keras.config.set_dtype_policy("mixed_float16")
    encoder = TransformerEncoder(intermediate_dim=128, num_heads=2)
    x = _x(2, 16, 64, scale=100.0)
    out = to_numpy(encoder(x, padding_mask=np.ones((2, 16), bool)))
    assert np.isfinite(out.astype("float32")).all()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(intermediate_dim=0, num_heads=2), "intermediate_dim=0"),
        (dict(intermediate_dim=8, num_heads=-2), "num_heads=-2"),
        (dict(intermediate_dim=8, num_heads=4, num_key_value_heads=3),
         "num_key_value_heads=3"),
        (dict(intermediate_dim=8, num_heads=2, dropout=-0.1),
         "dropout=-0.1"),
        (dict(intermediate_dim=8, num_heads=2, layer_norm_epsilon=0),
         "layer_norm_epsilon=0"),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TransformerEncoder(**kwargs)


def test_bad_call_arguments():
    with pytest.raises(ValueError, match="divisible by num_heads=3"):
        TransformerEncoder(8, 3)(_x(1, 4, 8))
    encoder = TransformerEncoder(8, 2)
    with pytest.raises(ValueError, match="query_mask"):
        encoder(_x(2, 6, 8), padding_mask=np.ones((2, 5), bool))
    with pytest.raises(ValueError, match="attention_mask"):
        encoder(_x(2, 6, 8), attention_mask=np.ones((2, 6, 5), bool))
