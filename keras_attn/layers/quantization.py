"""Keeping `Model.quantize` through save and load (private to the package).

`keras.Model.quantize("int8")` (or `"int4"`) quantizes the leaf layers
(`Dense`, `EinsumDense`, `Embedding`, `ReversibleEmbedding`) in place and
records the mode in each leaf's dtype policy. A layer that creates its own
sublayers (our blocks, embeddings and attention) saves only its own policy
by default, so a loaded model rebuilds those leaves in float and their int8
weights no longer fit ("Layer 'token_embedding' expected 1 variables, but
received 2 variables during loading").

`serialized_dtype(layer)` is what such a layer puts under `"dtype"` in
`get_config`: its policy as usual, or, once sublayers are quantized, a
`keras.dtype_policies.DTypePolicyMap` from their paths to their policies
(Keras's recipe, in the `DTypePolicyMap` docstring). Given back as
`dtype`, the map reaches every sublayer through `dtype=self.dtype_policy`,
and each picks its own entry when it is built under the same path. The
paths are those of the model being saved, so a quantized layer restores
inside the model it was saved in (the `.keras` file), not under another
name.
"""

import keras


def _resolved(layer):
    """A layer's own policy (a sublayer that shares a map holds the map)."""
    policy = layer.dtype_policy
    if isinstance(policy, keras.dtype_policies.DTypePolicyMap):
        return policy[layer.path]
    return policy


def serialized_dtype(layer):
    """The serialized dtype for `layer.get_config()`, quantized sublayers
    included."""
    policy = layer.dtype_policy
    # `_flatten_layers` is the walk `Model.quantize` itself uses; Keras has
    # no public way to list a layer's sublayers.
    quantized = {
        sublayer.path: _resolved(sublayer)
        for sublayer in layer._flatten_layers(include_self=False)
        if sublayer.quantization_mode is not None
    }
    if not quantized:
        return keras.dtype_policies.serialize(policy)
    if isinstance(policy, keras.dtype_policies.DTypePolicyMap):
        default = policy.default_policy
    else:
        default = policy
    policy_map = keras.dtype_policies.DTypePolicyMap(
        default_policy=default, policy_map=quantized
    )
    return keras.dtype_policies.serialize(policy_map)
