"""attention_weights against direct layer calls and NumPy; plot_attention
writes readable PNGs and rejects bad inputs."""

import inspect
import os
import re

import keras
import matplotlib
import matplotlib.image
import numpy as np
import pytest

from keras_attn.layers import MultiHeadAttention
from keras_attn.layers import ScaledDotProductAttention
from keras_attn.layers import TokenAndPositionEmbedding
from keras_attn.layers import TransformerDecoder
from keras_attn.layers import TransformerEncoder
from keras_attn.visualize import attention_weights
from keras_attn.visualize import plot_attention
from tests.references import attention
from tests.test_case import to_numpy

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Token 0 is padding; the rows have 6, 3 and 4 real tokens.
IDS = np.array(
    [[5, 3, 8, 2, 9, 4], [7, 1, 6, 0, 0, 0], [2, 2, 4, 9, 0, 0]], "int32"
)
ENCODER_IDS = np.array(
    [[4, 8, 1, 3, 5, 6, 2], [9, 3, 0, 0, 0, 0, 0], [1, 2, 3, 4, 5, 0, 0]],
    "int32",
)
DECODER_IDS = IDS[:, :5]


def _embedding(length, name=None):
    # Unit-variance embeddings, so the weights are far from uniform.
    return TokenAndPositionEmbedding(
        vocabulary_size=16, sequence_length=length, embedding_dim=8,
        embeddings_initializer=keras.initializers.RandomNormal(stddev=1.0),
        mask_zero=True, name=name,
    )


def encoder_model():
    keras.utils.set_random_seed(0)
    ids = keras.Input((6,), dtype="int32")
    x = _embedding(6)(ids)
    x = TransformerEncoder(intermediate_dim=16, num_heads=2, name="encoder")(x)
    return keras.Model(ids, keras.layers.Dense(3, name="head")(x))


def decoder_only_model():
    keras.utils.set_random_seed(1)
    ids = keras.Input((6,), dtype="int32")
    x = _embedding(6)(ids)
    x = TransformerDecoder(intermediate_dim=16, num_heads=2, name="decoder")(x)
    return keras.Model(ids, x)


def encoder_decoder_model():
    keras.utils.set_random_seed(2)
    inputs = {
        "encoder_ids": keras.Input((7,), dtype="int32", name="encoder_ids"),
        "decoder_ids": keras.Input((5,), dtype="int32", name="decoder_ids"),
    }
    encoded = _embedding(7, "encoder_embedding")(inputs["encoder_ids"])
    encoded = TransformerEncoder(16, 2, name="encoder")(encoded)
    x = _embedding(5, "decoder_embedding")(inputs["decoder_ids"])
    x = TransformerDecoder(16, 4, name="decoder")(x, encoded)
    return keras.Model(inputs, x)


def causal_mha_model(return_attention_scores=False):
    keras.utils.set_random_seed(3)
    ids = keras.Input((6,), dtype="int32")
    x = _embedding(6)(ids)
    out = MultiHeadAttention(num_heads=2, key_dim=4, name="mha")(
        x, x, use_causal_mask=True,
        return_attention_scores=return_attention_scores,
    )
    return keras.Model(ids, out)


def _check_rows(weights, query_real, key_real, causal=False):
    """Real query rows sum to 1 over real keys; padded keys and padded
    query rows get 0; nothing above the diagonal when causal."""
    assert np.all(np.isfinite(weights))
    np.testing.assert_allclose(
        weights.sum(-1), np.broadcast_to(query_real[:, None, :],
                                         weights.shape[:3]), atol=1e-5
    )
    assert np.all(weights[~np.broadcast_to(
        key_real[:, None, None, :], weights.shape)] == 0)
    if causal:
        t, s = weights.shape[-2:]
        assert np.all(weights[..., np.triu(np.ones((t, s), bool), 1)] == 0)


def _sub_model_inputs(model, layer, inputs):
    """The layer's input(s) in the model, from a sub-model."""
    outputs = keras.Model(model.input, layer.input)(inputs)
    return [to_numpy(x) for x in keras.tree.flatten(outputs)]


# attention_weights


def test_encoder_weights_respect_padding():
    model = encoder_model()
    weights = attention_weights(model, "encoder", IDS)
    assert isinstance(weights, np.ndarray)
    assert weights.shape == (3, 2, 6, 6)  # (B, N, T, S)
    _check_rows(weights, IDS != 0, IDS != 0)
    # Not uniform: the test would be weak if every real key got 1 / len.
    assert weights[0].std() > 0.05


def test_encoder_weights_equal_direct_call():
    model = encoder_model()
    layer = model.get_layer("encoder")
    (hidden,) = _sub_model_inputs(model, layer, IDS)
    _, expected = layer(hidden, padding_mask=IDS != 0,
                        return_attention_scores=True)
    np.testing.assert_allclose(
        attention_weights(model, layer, IDS), to_numpy(expected), atol=1e-6
    )


def test_mha_keeps_use_causal_mask_of_the_model_call():
    model = causal_mha_model()
    layer = model.get_layer("mha")
    weights = attention_weights(model, "mha", IDS)
    assert weights.shape == (3, 2, 6, 6)
    _check_rows(weights, IDS != 0, IDS != 0, causal=True)

    query, value = _sub_model_inputs(model, layer, IDS)
    _, expected = layer(query, value, use_causal_mask=True,
                        query_mask=IDS != 0, value_mask=IDS != 0,
                        return_attention_scores=True)
    np.testing.assert_allclose(weights, to_numpy(expected), atol=1e-6)

    # NumPy float64 softmax(q k^T / sqrt(H)) from the layer's own kernels.
    q_kernel, q_bias, k_kernel, k_bias = (
        np.asarray(to_numpy(w), np.float64) for w in layer.weights[:4]
    )
    q = np.einsum("btd,dnh->btnh", query, q_kernel) + q_bias  # (B, T, N, H)
    k = np.einsum("bsd,dnh->bsnh", value, k_kernel) + k_bias  # (B, S, N, H)
    real = IDS != 0
    mask = real[:, :, None] & real[:, None, :]  # (B, T, S)
    _, reference = attention(q, k, k, mask=mask, causal=True)
    np.testing.assert_allclose(weights, reference, atol=1e-5)


def test_scores_requested_in_the_model_are_returned_as_is():
    model = causal_mha_model(return_attention_scores=True)
    _, scores = model(IDS)
    np.testing.assert_allclose(
        attention_weights(model, "mha", IDS), to_numpy(scores), atol=1e-6
    )


def test_decoder_only_self_attention_is_causal():
    model = decoder_only_model()
    layer = model.get_layer("decoder")
    weights = attention_weights(model, layer, IDS)
    assert sorted(weights) == ["self_attention"]
    assert weights["self_attention"].shape == (3, 2, 6, 6)
    _check_rows(weights["self_attention"], IDS != 0, IDS != 0, causal=True)
    (hidden,) = _sub_model_inputs(model, layer, IDS)
    _, expected = layer(hidden, decoder_padding_mask=IDS != 0,
                        return_attention_scores=True)
    np.testing.assert_allclose(weights["self_attention"],
                               to_numpy(expected["self_attention"]),
                               atol=1e-6)


def test_encoder_decoder_cross_attention():
    model = encoder_decoder_model()
    inputs = {"encoder_ids": ENCODER_IDS, "decoder_ids": DECODER_IDS}
    layer = model.get_layer("decoder")
    weights = attention_weights(model, "decoder", inputs)
    assert sorted(weights) == ["cross_attention", "self_attention"]
    assert weights["self_attention"].shape == (3, 4, 5, 5)  # (B, N, T, T)
    assert weights["cross_attention"].shape == (3, 4, 5, 7)  # (B, N, T, S)
    decoder_real, encoder_real = DECODER_IDS != 0, ENCODER_IDS != 0
    _check_rows(weights["self_attention"], decoder_real, decoder_real,
                causal=True)
    _check_rows(weights["cross_attention"], decoder_real, encoder_real)
    # The cross-attention is not causal: late encoder keys get weight.
    assert weights["cross_attention"][0, :, 0, 1:].max() > 0

    # layer.input is [decoder_sequence, encoder_sequence], as called.
    decoded, encoded = _sub_model_inputs(model, layer, inputs)
    assert decoded.shape[1] == 5 and encoded.shape[1] == 7
    _, expected = layer(decoded, encoded, decoder_padding_mask=decoder_real,
                        encoder_padding_mask=encoder_real,
                        return_attention_scores=True)
    for key in ("self_attention", "cross_attention"):
        np.testing.assert_allclose(weights[key], to_numpy(expected[key]),
                                   atol=1e-6)
    # The encoder of the same model, by name.
    assert attention_weights(model, "encoder", inputs).shape == (3, 2, 7, 7)


def test_scaled_dot_product_attention_keeps_is_causal():
    keras.utils.set_random_seed(4)
    x = keras.Input((5, 8))
    heads = keras.layers.Reshape((5, 2, 4))(x)  # (B, T, N, H)
    out = ScaledDotProductAttention(name="sdpa")(heads, heads, heads,
                                                 is_causal=True)
    model = keras.Model(x, out)
    data = np.random.default_rng(0).normal(size=(2, 5, 8)).astype("float32")
    weights = attention_weights(model, "sdpa", data)
    assert weights.shape == (2, 2, 5, 5)
    _check_rows(weights, np.ones((2, 5), bool), np.ones((2, 5), bool),
                causal=True)
    q = data.reshape(2, 5, 2, 4)
    _, reference = attention(q, q, q, causal=True)
    np.testing.assert_allclose(weights, reference, atol=1e-5)


def test_sequential_model_and_repeated_calls():
    keras.utils.set_random_seed(5)
    model = keras.Sequential([
        keras.Input((6,), dtype="int32"),
        _embedding(6),
        TransformerEncoder(16, 2, name="encoder"),
    ])
    first = attention_weights(model, "encoder", IDS)
    _check_rows(first, IDS != 0, IDS != 0)
    np.testing.assert_array_equal(
        attention_weights(model, "encoder", IDS), first
    )


def test_bad_layer_arguments():
    model = encoder_model()
    with pytest.raises(TypeError, match=r"`layer`.*TransformerEncoder.*"
                       r"Received: layer='head'"):
        attention_weights(model, "head", IDS)
    with pytest.raises(ValueError, match=r"No layer named 'nope'.*"
                       r"\['encoder'\]"):
        attention_weights(model, "nope", IDS)
    with pytest.raises(TypeError, match="`layer`.*Received: layer=3"):
        attention_weights(model, 3, IDS)
    with pytest.raises(ValueError, match="not a layer of model"):
        attention_weights(model, TransformerEncoder(16, 2), IDS)
    with pytest.raises(TypeError, match="`model`"):
        attention_weights("model", "encoder", IDS)


def test_subclassed_model_is_rejected():
    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.encoder = TransformerEncoder(16, 2)

        def call(self, x):
            return self.encoder(x)

    model = Subclassed()
    model(np.zeros((1, 4, 8), "float32"))
    with pytest.raises(TypeError, match="`model`.*subclassed"):
        attention_weights(model, model.encoder, np.zeros((1, 4, 8)))


def test_layer_called_twice_is_rejected():
    x = keras.Input((4, 8))
    mha = MultiHeadAttention(num_heads=2, key_dim=4, name="mha")
    model = keras.Model(x, mha(mha(x, x), x))
    with pytest.raises(ValueError, match="called 2 times"):
        attention_weights(model, "mha", np.zeros((1, 4, 8), "float32"))


# plot_attention

TOKENS = ["<s>", "the", "cat", "sat", "on", "mat"]


def _weights(num_heads=3, t=6, s=6, seed=0):
    logits = np.random.default_rng(seed).normal(size=(num_heads, t, s))
    e = np.exp(logits)
    return e / e.sum(-1, keepdims=True)  # (N, T, S)


def _heatmaps(figure):
    return [ax for ax in figure.axes if ax.images]


def test_plot_writes_a_png(tmp_path):
    backend = matplotlib.get_backend()
    path = str(tmp_path / "attention.png")
    assert plot_attention(_weights(), TOKENS, path=path,
                          title="encoder") == path
    with open(path, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    figure = plot_attention(_weights(), TOKENS, title="encoder")
    width, height = figure.get_size_inches() * figure.dpi
    assert image.shape[:2] == (round(height), round(width))
    assert image.shape[0] > 0 and image.shape[1] > 0
    # Only the PNG: the temporary file was renamed, not left behind.
    assert os.listdir(tmp_path) == ["attention.png"]
    assert matplotlib.get_backend() == backend
    # Overwriting an existing file works.
    assert plot_attention(_weights(seed=1), TOKENS, path=tmp_path /
                          "attention.png") == path


def test_plot_layout_tokens_and_colorbar():
    weights = _weights(num_heads=5)
    figure = plot_attention(weights, TOKENS, max_heads_per_row=2)
    panels = _heatmaps(figure)
    assert [ax.get_title() for ax in panels] == [f"head {h}" for h in
                                                 range(5)]
    # 3 rows of 2, the sixth cell blank, plus one colorbar.
    assert len(figure.axes) == 7 and not figure.axes[5].axison
    colorbars = [ax for ax in figure.axes if ax.get_ylabel() ==
                 "attention weight"]
    assert len(colorbars) == 1
    ax = panels[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == TOKENS
    assert [t.get_text() for t in ax.get_yticklabels()] == TOKENS
    assert ax.get_xticklabels()[0].get_rotation() != 0
    assert ax.images[0].get_clim() == (0.0, 1.0)
    np.testing.assert_allclose(ax.images[0].get_array(), weights[0])


def test_plot_long_sequences_label_every_other_token():
    tokens = [f"t{i}" for i in range(100)]
    weights = np.full((1, 100, 100), 0.01)
    (ax,) = _heatmaps(plot_attention(weights, tokens))
    assert [t.get_text() for t in ax.get_xticklabels()] == tokens[::2]
    assert [t.get_text() for t in ax.get_yticklabels()] == tokens[::2]


def test_plot_heads_selection_and_mean():
    weights = _weights(num_heads=4)
    panels = _heatmaps(plot_attention(weights, TOKENS, heads=[3, 1]))
    assert [ax.get_title() for ax in panels] == ["head 3", "head 1"]
    np.testing.assert_allclose(panels[0].images[0].get_array(), weights[3])
    (mean,) = _heatmaps(plot_attention(weights, TOKENS, heads="mean"))
    np.testing.assert_allclose(mean.images[0].get_array(),
                               weights.mean(0))
    (single,) = _heatmaps(plot_attention(weights, TOKENS, heads=2))
    assert single.get_title() == "head 2"
    (matrix,) = _heatmaps(plot_attention(weights[0], TOKENS))
    np.testing.assert_allclose(matrix.images[0].get_array(), weights[0])


def test_plot_cross_attention_tokens():
    source = ["a", "b", "c", "d", "e", "f", "g"]
    figure = plot_attention(_weights(2, t=4, s=7), source,
                            y_tokens=["w", "x", "y", b"z"])
    ax = _heatmaps(figure)[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == source
    assert [t.get_text() for t in ax.get_yticklabels()] == list("wxyz")


def test_plot_from_attention_weights(tmp_path):
    model = encoder_decoder_model()
    weights = attention_weights(
        model, "decoder",
        {"encoder_ids": ENCODER_IDS, "decoder_ids": DECODER_IDS},
    )
    path = plot_attention(
        weights["cross_attention"][0], [f"e{i}" for i in range(7)],
        y_tokens=[f"d{i}" for i in range(5)],
        path=tmp_path / "cross.png", title="cross-attention",
    )
    assert matplotlib.image.imread(path).shape[2] == 4


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(weights=np.ones((1, 2, 6, 6))), ValueError,
         r"select one example.*weights\.shape=\(1, 2, 6, 6\)"),
        (dict(weights=np.ones(6)), ValueError, r"weights\.shape=\(6,\)"),
        (dict(weights={"self_attention": np.ones((2, 6, 6))}), ValueError,
         "pick one"),
        (dict(x_tokens=TOKENS[:5]), ValueError,
         r"`x_tokens`.*expected 6 tokens.*len\(x_tokens\)=5"),
        (dict(x_tokens="the cat"), TypeError, "`x_tokens`"),
        (dict(weights=np.ones((2, 4, 6)) / 6), ValueError,
         r"`x_tokens`.*query.*expected 4 tokens"),
        (dict(weights=np.ones((2, 4, 6)) / 6, y_tokens=["a"] * 3),
         ValueError, r"`y_tokens`.*expected 4 tokens.*len\(y_tokens\)=3"),
        (dict(heads=[0, 2]), ValueError, r"`heads`.*\[0, 2\).*heads=\[0, 2\]"),
        (dict(heads=[-1]), ValueError, "`heads`"),
        (dict(heads=[]), ValueError, "`heads`"),
        (dict(heads="max"), ValueError, "'mean'"),
        (dict(weights=np.ones((6, 6)) / 6, heads=[1]), ValueError,
         "`heads`"),
        (dict(max_heads_per_row=0), ValueError, "`max_heads_per_row`"),
        (dict(path="attention.jpg"), ValueError, r"'\.png'"),
    ],
)
def test_plot_bad_inputs(kwargs, error, message):
    arguments = dict(weights=np.ones((2, 6, 6)) / 6, x_tokens=TOKENS)
    arguments.update(kwargs)
    with pytest.raises(error, match=message):
        plot_attention(**arguments)


def test_docstring_examples_run():
    import keras_attn.visualize as visualize

    examples = [
        code
        for function in (visualize.attention_weights, visualize.plot_attention)
        for code in re.findall(r"```python\n(.*?)```",
                               inspect.getdoc(function), re.S)
    ]
    assert len(examples) == 2
    for code in examples:
        exec(compile(code, "<example>", "exec"), {})
