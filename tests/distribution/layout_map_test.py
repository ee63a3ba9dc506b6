"""`layout_map`: every weight of every builder gets the layout
docs/scaling.md states (tests/distribution/expected_layouts.py), models
that cannot be split say why, and attention layers other than ours (Keras's,
keras-hub's, LoRA, an extra gate projection) are split by role.

These read layouts only, on a mesh of named devices, so they run in the
default (TensorFlow) test process; single_host_test.py checks where JAX
really places the variables.
"""

import keras
import keras_hub
import pytest

from keras_attn import distribution
from keras_attn import models
from tests.distribution.expected_layouts import COLUMN
from tests.distribution.expected_layouts import HEADS_IN
from tests.distribution.expected_layouts import HEADS_OUT
from tests.distribution.expected_layouts import ROW
from tests.distribution.expected_layouts import M
from tests.distribution.expected_layouts import expected
from tests.distribution.expected_layouts import mismatches
from tests.distribution.single_host_worker import BUILDERS


def mesh(size, data=1):
    devices = [f"cpu:{i}" for i in range(data * size)]
    return keras.distribution.DeviceMesh(
        (data, size), ["batch", "model"], devices
    )


def placed(model, layouts):
    """`{path: axes}` the layout map gives each variable of `model`."""
    out = {}
    for variable in model.weights:
        layout = layouts[variable.path]
        out[variable.path] = (
            tuple(layout.axes) if layout is not None
            else (None,) * len(variable.shape)
        )
    return out


@pytest.mark.parametrize("size", [2, 4])
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_every_weight_of_each_builder_has_its_documented_layout(name, size):
    builder, kwargs = BUILDERS[name]
    model = builder(**kwargs)
    layouts = distribution.layout_map(model, mesh(size))
    assert mismatches(placed(model, layouts), expected(name, size)) == []
    assert layouts.device_mesh.shape == (1, size)


def test_every_large_kernel_of_a_transformer_block_is_split():
    """No kernel of a block with 2+ dimensions stays whole when the mesh
    divides all head counts: a pattern matching nothing would leave it
    replicated silently."""
    model = models.seq2seq(40, 40, 6, 6, num_layers=2, hidden_dim=16,
                           num_heads=4, dropout=0.0)
    layouts = distribution.layout_map(model, mesh(2))
    whole = [
        v.path for v in model.weights
        if "_layer_" in v.path and len(v.shape) >= 2
        and layouts[v.path] is None
    ]
    assert whole == []


@pytest.mark.parametrize("source", ["config", "serialized", "callable"])
def test_a_config_or_a_builder_gives_the_model_s_layouts(source):
    builder, kwargs = BUILDERS["decoder_lm"]
    model = builder(**kwargs)
    given = {
        "config": model.get_config(),
        "serialized": keras.saving.serialize_keras_object(model),
        "callable": lambda: builder(**kwargs),
    }[source]
    layouts = distribution.layout_map(given, mesh(2))
    want = distribution.layout_map(model, mesh(2))
    assert {k: layouts[k].axes for k in layouts} == {
        k: want[k].axes for k in want}


def test_heads_not_divisible_by_the_model_axis_is_a_clear_error():
    model = models.decoder_lm(64, 8, num_layers=1, hidden_dim=24,
                              num_heads=6, intermediate_dim=32)
    with pytest.raises(ValueError, match=r"decoder_layer_0/self_attention.*"
                       r"num_heads=6 is not divisible by 4"):
        distribution.layout_map(model, mesh(4))


def test_feedforward_width_not_divisible_is_a_clear_error():
    model = models.encoder_classifier(64, 8, num_layers=1, hidden_dim=16,
                                      num_heads=4, intermediate_dim=30)
    with pytest.raises(ValueError, match="feed-forward width 30 is not "
                       "divisible by 4"):
        distribution.layout_map(model, mesh(4))


def test_key_value_heads_fewer_than_devices_are_replicated():
    """Multi-query attention: one key/value head, computed in full on
    every device; the query heads are still split."""
    model = models.decoder_lm(64, 8, num_layers=1, hidden_dim=16,
                              num_heads=4, num_key_value_heads=1)
    got = placed(model, distribution.layout_map(model, mesh(4)))
    prefix = "decoder_layer_0/self_attention"
    assert got[f"{prefix}/key/kernel"] == (None, None, None)
    assert got[f"{prefix}/value/bias"] == (None, None)
    assert got[f"{prefix}/query/kernel"] == HEADS_IN


@pytest.mark.parametrize("given, error, match", [
    ("model", TypeError, "keras.Model, a model config"),
    (None, TypeError, "keras.Model, a model config"),
])
def test_bad_model_argument(given, error, match):
    with pytest.raises(error, match=match):
        distribution.layout_map(given, mesh(2))


def test_a_callable_must_return_a_model():
    with pytest.raises(TypeError, match="must return a keras.Model"):
        distribution.layout_map(lambda: 3, mesh(2))


def test_an_unbuilt_layer_is_refused():
    with pytest.raises(ValueError, match="must be built"):
        distribution.layout_map(keras.layers.Dense(4), mesh(2))


def test_the_mesh_needs_a_model_axis():
    model = models.decoder_lm(64, 8, num_layers=1, hidden_dim=16,
                              num_heads=4)
    data_only = keras.distribution.DeviceMesh((2,), ["batch"],
                                              ["cpu:0", "cpu:1"])
    with pytest.raises(ValueError, match="no axis named 'model'"):
        distribution.layout_map(model, data_only)
    with pytest.raises(TypeError, match="DeviceMesh"):
        distribution.layout_map(model, (1, 2))


def _functional(layer, width=16, length=5):
    inputs = keras.Input((length, width))
    return keras.Model(inputs, layer(inputs, inputs))


def test_keras_multi_head_attention_with_lora_is_split_by_role():
    """Keras's own layer; LoRA factors follow their kernel: `a` carries
    the heads axis of a projection, `b` only the head size."""
    attention = keras.layers.MultiHeadAttention(4, 4, name="attention")
    model = _functional(attention)
    attention.query_dense.enable_lora(2)
    attention.output_dense.enable_lora(2)
    got = placed(model, distribution.layout_map(model, mesh(2)))
    assert got["attention/query/kernel"] == HEADS_IN
    assert got["attention/query/lora_kernel_a"] == HEADS_IN  # (D, N, r)
    assert got["attention/query/lora_kernel_b"] == (None, None)  # (r, H)
    assert got["attention/attention_output/kernel"] == HEADS_OUT
    assert got["attention/attention_output/lora_kernel_a"] == HEADS_OUT
    assert got["attention/attention_output/lora_kernel_b"] == (None, None)
    assert got["attention/attention_output/bias"] == (None,)


def test_keras_group_query_attention_with_a_gate_is_split_by_role():
    """Keras's grouped-query layer, whose `use_gate` adds a `gate`
    projection (D, N, H) split like the queries."""
    attention = keras.layers.GroupQueryAttention(
        head_dim=4, num_query_heads=4, num_key_value_heads=2,
        use_gate=True, name="attention")
    model = _functional(attention)
    got = placed(model, distribution.layout_map(model, mesh(2)))
    for projection in ("query", "key", "value", "gate"):
        assert got[f"attention/{projection}/kernel"] == HEADS_IN
        assert got[f"attention/{projection}/bias"] == (M, None)
    assert got["attention/attention_output/kernel"] == HEADS_OUT


def test_keras_hub_encoder_block_matches_ours():
    inputs = keras.Input((5, 16))
    block = keras_hub.layers.TransformerEncoder(32, 4, name="block")
    model = keras.Model(inputs, block(inputs))
    got = placed(model, distribution.layout_map(model, mesh(2)))
    assert got["block/self_attention_layer/key/kernel"] == HEADS_IN
    assert got["block/feedforward_intermediate_dense/kernel"] == COLUMN
    assert got["block/feedforward_output_dense/kernel"] == ROW


class HeadGatedAttention(keras.layers.Layer):
    """An attention layer of another shape than ours: one gate value per
    head (`gate`, D -> N, through the einsum `btd,dn->btn`)."""

    def __init__(self, num_heads, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.attention = keras.layers.MultiHeadAttention(
            num_heads, 4, name="attention")
        self.gate = keras.layers.EinsumDense(
            "btd,dn->btn", (None, num_heads), name="gate")

    def build(self, query_shape, value_shape):
        self.attention.build(query_shape, value_shape)
        self.gate.build(query_shape)

    def call(self, query, value):
        gate = keras.ops.sigmoid(self.gate(query))  # (B, T, N)
        out = self.attention(query, value)  # (B, T, D)
        return out * keras.ops.mean(gate, -1, keepdims=True)


def test_a_per_head_gate_is_split_along_its_heads():
    model = _functional(HeadGatedAttention(4, name="gated"))
    got = placed(model, distribution.layout_map(model, mesh(2)))
    assert got["gated/gate/kernel"] == (None, M)  # (D, N)
    assert got["gated/attention/query/kernel"] == HEADS_IN
