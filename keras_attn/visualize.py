"""Attention heatmaps: read a model's attention weights, then plot them.

`attention_weights` returns the weights of one attention layer of a
functional model for given inputs; `plot_attention` draws one example's
weights as a grid of heatmaps, one per head, and saves it as a PNG.

Shape legend: B batch, N heads, T query length, S key length.

Plotting needs matplotlib (`pip install matplotlib`), imported only when
`plot_attention` is called; it draws through the Agg canvas and never touches
pyplot, so a backend the user chose stays as it is.
"""

import math
import os
import textwrap
import weakref

import keras
import numpy as np

from keras_attn.layers.multi_head_attention import MultiHeadAttention
from keras_attn.layers.scaled_dot_product_attention import (
    ScaledDotProductAttention,
)
from keras_attn.layers.transformer_decoder import TransformerDecoder
from keras_attn.layers.transformer_encoder import TransformerEncoder
from keras_attn_runtime import atomic

__all__ = ["ATTENTION_LAYERS", "attention_weights", "plot_attention"]

ATTENTION_LAYERS = (
    TransformerEncoder,
    TransformerDecoder,
    MultiHeadAttention,
    ScaledDotProductAttention,
)

# model -> {"graph": its plain functional graph, "models": {layer name: model
# from the inputs to that layer's weights}}. Building a weights model re-runs
# the graph and adds a call node to every layer, so it is built once per
# (model, layer), and dropped with the model.
_CACHE = weakref.WeakKeyDictionary()


class _AttentionProbe(keras.layers.Layer):
    """Calls `target` as the model did, asking for its attention weights.

    A fresh layer rather than a second call of `target` itself: a functional
    model checks each node's outputs against the operation's *first* call,
    so a second call of `target` that returns more outputs than the first
    cannot be a model output (Keras 3.15).
    """

    def __init__(self, target, **kwargs):
        super().__init__(
            name=f"{target.name}_attention_probe",
            dtype=target.dtype_policy,
            **kwargs,
        )
        self.target = target
        self._flag = (
            "return_weights"
            if isinstance(target, ScaledDotProductAttention)
            else "return_attention_scores"
        )
        self.built = True

    def call(self, *args, **kwargs):
        kwargs[self._flag] = True
        # Every layer puts the weights second: (output, weights, caches...).
        return self.target(*args, **kwargs)[1]

    def compute_mask(self, *args, **kwargs):
        return None


def _attention_layer_names(graph):
    return [
        layer.name for layer in graph.layers
        if isinstance(layer, ATTENTION_LAYERS)
    ]


def _graph(model):
    """A plain functional model on `model`'s graph (no compile config, so
    cloning it deserializes nothing); a built Sequential works too."""
    try:
        if isinstance(model, keras.Sequential):
            inputs, outputs = model.inputs, model.outputs
            inputs = inputs[0] if len(inputs) == 1 else inputs
            outputs = outputs[0] if len(outputs) == 1 else outputs
        else:
            inputs, outputs = model.input, model.output
    except (AttributeError, ValueError) as e:
        raise TypeError(
            "Received an invalid value for argument `model`, expected a "
            "functional keras.Model or a built Sequential; a subclassed "
            f"model has no graph of layers to read. Received: "
            f"model={model.name!r} of type {type(model).__name__}"
        ) from e
    return keras.Model(inputs, outputs)


def _find_layer(graph, model_name, layer):
    if isinstance(layer, str):
        found = [m for m in graph.layers if m.name == layer]
        if not found:
            raise ValueError(
                f"No layer named {layer!r} in model {model_name!r} (nested "
                "models are not searched). Its attention layers are: "
                f"{_attention_layer_names(graph)}. Received: layer={layer!r}"
            )
        layer = found[0]
    elif isinstance(layer, keras.layers.Layer):
        if not any(m is layer for m in graph.layers):
            raise ValueError(
                f"Layer {layer.name!r} is not a layer of model "
                f"{model_name!r} (nested models are not searched). Its "
                "attention layers are: "
                f"{_attention_layer_names(graph)}. Received: layer={layer}"
            )
    else:
        raise TypeError(
            "Received an invalid value for argument `layer`, expected a "
            "layer name or a layer object. Received: "
            f"layer={layer!r} of type {type(layer).__name__}"
        )
    if not isinstance(layer, ATTENTION_LAYERS):
        names = ", ".join(cls.__name__ for cls in ATTENTION_LAYERS)
        raise TypeError(
            "Received an invalid value for argument `layer`, expected a "
            f"keras_attn {names}. Received: layer={layer.name!r} of type "
            f"{type(layer).__name__}. The model's attention layers are: "
            f"{_attention_layer_names(graph)}"
        )
    return layer


def _weights_model(graph, model_name, layer):
    """A model from the graph's inputs to the weights of `layer`'s call."""
    probe = _AttentionProbe(layer)
    found = []

    def call_function(called, *args, **kwargs):
        outputs = called(*args, **kwargs)
        if called is layer:
            # The original arguments and keyword arguments, e.g.
            # `use_causal_mask=True`, with the new graph's tensors; the
            # inputs' Keras masks come with them.
            found.append(probe(*args, **kwargs))
        return outputs

    clone = keras.models.clone_model(
        graph, clone_function=lambda x: x, call_function=call_function
    )
    if len(found) != 1:
        raise ValueError(
            f"Layer {layer.name!r} is called {len(found)} times in model "
            f"{model_name!r}; `attention_weights` needs exactly one call."
        )
    return keras.Model(clone.input, found[0])


def attention_weights(model, layer, inputs):
    """The attention weights of one attention layer of a model.

    Runs `model`'s graph from its inputs up to `layer`, calling `layer` with
    the same arguments as in the model (`use_causal_mask=True`, mask
    tensors, ...) plus `return_attention_scores=True` (`return_weights=True`
    for `ScaledDotProductAttention`), in inference mode (no dropout). Weights
    of the model are shared, not copied.

    Masking: the Keras masks of the layer's inputs (from a `mask_zero=True`
    embedding) are applied as in the model: padded keys get weight 0 and
    padded query rows are all zeros; causal layers give zero weight above
    the diagonal.

    Args:
        model: a functional `keras.Model` (or a built `keras.Sequential`).
        layer: str or layer. The name of, or the layer object of, a
            `keras_attn.layers` `TransformerEncoder`, `TransformerDecoder`,
            `MultiHeadAttention` or `ScaledDotProductAttention` that is a
            direct layer of `model` (nested models are not searched) and is
            called once in it.
        inputs: what `model(inputs)` accepts: arrays or a dict of arrays.

    Returns:
        A NumPy array `(B, N, T, S)`; for a `TransformerDecoder` a dict with
        `"self_attention"` `(B, N, T, T)` and, when built with an encoder
        sequence, `"cross_attention"` `(B, N, T, S)`.

    Raises:
        TypeError: `layer` is not a layer name or object, or not one of the
            attention layers above; `model` is not a functional model.
        ValueError: `layer` is not in `model` (the message lists the model's
            attention layers) or is called more than once in it.

    Example:

    ```python
    import numpy as np
    import keras
    import keras_attn
    from keras_attn.visualize import attention_weights
    ids = keras.Input((5,), dtype="int32")
    x = keras_attn.layers.TokenAndPositionEmbedding(
        vocabulary_size=20, sequence_length=5, embedding_dim=8,
        mask_zero=True)(ids)
    x = keras_attn.layers.TransformerEncoder(
        intermediate_dim=16, num_heads=2, name="encoder")(x)
    model = keras.Model(ids, x)
    w = attention_weights(model, "encoder", np.array([[4, 7, 9, 0, 0]]))
    assert w.shape == (1, 2, 5, 5)  # (B, N, T, S)
    np.testing.assert_allclose(w[0, :, :3].sum(-1), 1.0, rtol=1e-5)
    assert np.all(w[0, :, :, 3:] == 0)  # padded keys get no weight
    ```
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            "Received an invalid value for argument `model`, expected a "
            f"functional keras.Model. Received: model={model!r}"
        )
    cached = _CACHE.get(model)
    if cached is None:
        cached = _CACHE[model] = {"graph": _graph(model), "models": {}}
    layer = _find_layer(cached["graph"], model.name, layer)
    if layer.name not in cached["models"]:
        cached["models"][layer.name] = _weights_model(
            cached["graph"], model.name, layer
        )
    weights = cached["models"][layer.name](inputs, training=False)
    return keras.tree.map_structure(keras.ops.convert_to_numpy, weights)


def _token_labels(tokens, name, length, weights_shape, axis):
    if tokens is None or isinstance(tokens, (str, bytes)):
        raise TypeError(
            f"Received an invalid value for argument `{name}`, expected a "
            f"sequence of {length} tokens (the {axis} axis of weights of "
            f"shape {weights_shape}). Received: {name}={tokens!r}"
        )
    labels = [
        t.decode("utf-8", "replace") if isinstance(t, bytes) else str(t)
        for t in tokens
    ]
    if len(labels) != length:
        raise ValueError(
            f"`{name}` must have one token per position of the {axis} axis "
            f"of `weights` (shape {weights_shape}): expected {length} "
            f"tokens. Received: len({name})={len(labels)}"
        )
    return labels


def _select_heads(weights, heads, input_shape):
    """(panels (P, T, S), panel titles) for the `heads` argument."""
    num_heads = weights.shape[0]
    if isinstance(heads, str):
        if heads != "mean":
            raise ValueError(
                "Received an invalid value for argument `heads`, expected "
                "None, 'mean' or a list of head indices. Received: "
                f"heads={heads!r}"
            )
        return weights.mean(axis=0, keepdims=True), [
            f"mean of {num_heads} heads" if num_heads > 1 else "attention"
        ]
    if heads is None:
        heads = list(range(num_heads))
    elif isinstance(heads, (int, np.integer)) and not isinstance(heads, bool):
        heads = [heads]
    heads = list(heads)
    if not heads or any(
        isinstance(h, bool)
        or not isinstance(h, (int, np.integer))
        or not 0 <= h < num_heads
        for h in heads
    ):
        raise ValueError(
            "Received an invalid value for argument `heads`, expected "
            f"indices in [0, {num_heads}) for weights of shape "
            f"{input_shape} ({num_heads} heads). Received: heads={heads!r}"
        )
    if len(input_shape) == 2:
        return weights, ["attention"]
    return weights[heads], [f"head {h}" for h in heads]


def _save_png(figure, path):
    """Writes `figure` to `path` atomically (`keras_attn_runtime.atomic`):
    no reader ever sees a partial PNG."""
    path = os.fspath(path)
    if os.path.splitext(path)[1].lower() != ".png":
        raise ValueError(
            "Received an invalid value for argument `path`, expected a file "
            f"name ending in '.png'. Received: path={path!r}"
        )
    with atomic.atomic_file(path) as temporary:
        figure.savefig(temporary, format="png")
    return path


def plot_attention(
    weights,
    x_tokens,
    y_tokens=None,
    heads=None,
    path=None,
    title=None,
    max_heads_per_row=4,
):
    """Draws one example's attention weights as heatmaps, one per head.

    Each panel shows a `(T, S)` matrix: query tokens down the y axis, key
    tokens along the x axis (labels rotated), color on a fixed [0, 1] scale
    shared by every panel through one colorbar, so heads compare at a
    glance. Past 64 tokens every k-th token is labelled, so labels never
    overlap. Masking is whatever the weights carry: padded keys show as 0
    columns, padded queries as 0 rows; drop them from `weights` and the
    token lists to hide them.

    Args:
        weights: array `(N, T, S)` (one example, all heads, e.g.
            `attention_weights(...)[0]`) or `(T, S)`.
        x_tokens: sequence of `S` tokens (str, bytes or anything with `str`)
            labelling the keys (x axis).
        y_tokens: sequence of `T` tokens labelling the queries (y axis).
            Defaults to `x_tokens` (self-attention).
        heads: `None` (all heads), a list of head indices, one index, or
            `"mean"` (one panel averaging the heads). Defaults to `None`.
        path: str or path-like ending in `.png`, or `None`. Where to save
            the figure. Defaults to `None`: return the figure.
        title: str or `None`. Title above the grid. Defaults to `None`.
        max_heads_per_row: int. Panels per row of the grid. Defaults to `4`.

    Returns:
        `path` (a str) once the PNG is written; with `path=None` the
        `matplotlib.figure.Figure` (on an Agg canvas; Jupyter displays it).

    Raises:
        ValueError: `weights` is not of rank 2 or 3, a token list does not
            match its axis, a head index is out of range, or `path` does not
            end in `.png`.
        TypeError: a token list is a single string.

    Example:

    ```python
    import os
    import tempfile
    import numpy as np
    from keras_attn.visualize import plot_attention
    tokens = ["the", "cat", "sat"]
    weights = np.tril(np.ones((2, 3, 3)))  # (N, T, S): causal, 2 heads
    weights /= weights.sum(-1, keepdims=True)
    path = os.path.join(tempfile.mkdtemp(), "attention.png")
    assert plot_attention(weights, tokens, heads=[1], path=path) == path
    with open(path, "rb") as f:
        assert f.read(8) == b"\\x89PNG\\r\\n\\x1a\\n"
    figure = plot_attention(weights, tokens, heads="mean", title="mean")
    assert len(figure.axes) == 2  # the heatmap and its colorbar
    ```
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError(
            "`plot_attention` needs matplotlib: `pip install matplotlib`."
        ) from e

    if isinstance(weights, dict):
        raise ValueError(
            "`weights` must be one array; for a TransformerDecoder pick one "
            "entry, e.g. `weights['self_attention'][0]`. Received: a dict "
            f"with keys {sorted(weights)}"
        )
    weights = np.asarray(keras.ops.convert_to_numpy(weights), "float64")
    input_shape = weights.shape
    if weights.ndim not in (2, 3):
        hint = " (select one example, e.g. `weights[0]`)" * (weights.ndim == 4)
        raise ValueError(
            "`weights` must have shape (N, T, S) or (T, S)" + hint
            + f". Received: weights.shape={input_shape}"
        )
    if weights.ndim == 2:
        weights = weights[None]  # (1, T, S)
    _, query_length, key_length = weights.shape
    x_labels = _token_labels(
        x_tokens, "x_tokens", key_length, input_shape, "key (last)"
    )
    y_labels = _token_labels(
        x_tokens if y_tokens is None else y_tokens,
        "x_tokens" if y_tokens is None else "y_tokens",
        query_length,
        input_shape,
        "query (second to last)",
    )
    if (
        isinstance(max_heads_per_row, bool)
        or not isinstance(max_heads_per_row, (int, np.integer))
        or max_heads_per_row < 1
    ):
        raise ValueError(
            "Received an invalid value for argument `max_heads_per_row`, "
            "expected a positive integer. Received: "
            f"max_heads_per_row={max_heads_per_row!r}"
        )
    panels, panel_titles = _select_heads(weights, heads, input_shape)

    columns = min(len(panels), max_heads_per_row)
    rows = math.ceil(len(panels) / columns)
    # A quarter inch per token (8 pt labels) up to 32 tokens, an eighth
    # (5 pt) beyond; past 64 tokens the panel stops growing and every
    # `step`-th token is labelled, so labels never overlap.
    longest = max(query_length, key_length)
    cell, font_size = (0.25, 8) if longest <= 32 else (0.125, 5)
    step = math.ceil(longest / 64)

    def side(length):
        return max(2.5, cell * min(length, 64) + 0.8)

    panel_width, panel_height = side(key_length), side(query_length)
    figure = Figure(
        figsize=(columns * panel_width + 1.2, rows * panel_height + 0.6),
        dpi=100,
        layout="constrained",
    )
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_axis_off()
    for ax, panel, panel_title in zip(axes.flat, panels, panel_titles):
        image = ax.imshow(
            panel, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto",
            interpolation="nearest",
        )
        ax.set_title(panel_title, fontsize=9)
        ax.set_xticks(range(0, key_length, step))
        ax.set_xticklabels(
            x_labels[::step], rotation=60, ha="right",
            rotation_mode="anchor", fontsize=font_size,
        )
        ax.set_yticks(range(0, query_length, step))
        ax.set_yticklabels(y_labels[::step], fontsize=font_size)
        ax.set_xlabel("key", fontsize=8)
        ax.set_ylabel("query", fontsize=8)
    figure.colorbar(image, ax=axes.ravel().tolist(), shrink=0.9,
                    label="attention weight")
    if title is not None:
        # Wrap to the figure width (about 9 characters per inch at the
        # default title size) so a long title is not cut off.
        width = max(20, int(figure.get_figwidth() * 9))
        figure.suptitle(textwrap.fill(str(title), width))
    if path is None:
        return figure
    return _save_png(figure, path)
