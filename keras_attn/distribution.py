"""Scaling out on existing engines: Megatron layouts for
`keras.distribution` and a one-call setup for the example scripts.

No collective, launcher or checkpoint format here is ours: JAX training is
`keras.distribution` (`DataParallel`, `ModelParallel`, multi-process through
`keras.distribution.initialize`), TensorFlow training is `tf.distribute`
(`MirroredStrategy` on one host, `MultiWorkerMirroredStrategy` with
`TF_CONFIG` on several). This module says how our layers split over a device
mesh (`layout_map`) and wires the engines into a script (`add_arguments`,
`setup`). docs/scaling.md has the launch commands.

Shape legend: D model width, N query heads, K key/value heads, H head size,
F feed-forward width, V vocabulary, L learned positions, r LoRA rank; m is
the size of the mesh's model axis.

Layouts (`layout_map`), "model" meaning split over the model axis:
    attention query (and any other input projection with N heads, e.g. a
        gate) kernel (D, N, H) and bias (N, H): heads split
    attention key/value kernel (D, K, H) and bias (K, H): heads split when m
        divides K, else replicated (each device computes the few K/V heads
        of grouped-query or multi-query attention in full)
    attention output kernel (N, H, D): heads split; its bias replicated
    feed-forward intermediate (and gate) kernel (D, F), bias (F,): F split
    feed-forward output kernel (F, D): F split; its bias replicated
    token embedding (V, D) and untied reverse embedding (D, V): V split when
        m divides V, else D split
    learned position embedding (L, D): D split
    LoRA factors of a split kernel: the factor that carries the split axis
        is split the same way
    everything else (layer norms, output biases, classifier head):
        replicated
So each block needs one all-reduce after the attention and one after the
feed-forward network (Shoeybi et al., 2019), and the vocabulary-split logits
are never gathered by the weights.

Batch and learning rate (`setup`): `--batch-size` is per data-parallel
replica; datasets are batched with `global_batch_size(batch_size)` (the
engines split each global batch over replicas and processes), and the
learning rate is scaled with the global batch (`--lr-scaling`, linear by
default: Goyal et al., 2017, https://arxiv.org/abs/1706.02677). A run
continued on another number of replicas trains with the rate scaled for
them, not the one its backup restores (`keras_attn.training.
KeepLearningRate`).

Checkpoints (`DistributionSetup.callbacks`): only the chief process writes;
every process restores from the chief's `BackupAndRestore` directory (a
shared filesystem); weights are saved whole (unsplit), so a run resumes with
any replica count or mesh.
"""

import contextlib
import os
import random
import re

import keras
import numpy as np

from keras_attn.layers import PositionEmbedding

__all__ = [
    "DistributionSetup",
    "OnThisProcess",
    "RestoreOnly",
    "add_arguments",
    "layout_map",
    "setup",
]

MODES = ("none", "data", "model")
LR_SCALINGS = ("linear", "sqrt", "none")
MODEL_AXIS = "model"
BATCH_AXIS = "batch"
_COLUMN_PARALLEL = ("feedforward_intermediate_dense", "feedforward_gate_dense")
_ROW_PARALLEL = ("feedforward_output_dense",)
_MULTI_PROCESS_VARIABLES = (
    "KERAS_DISTRIBUTION_JOB_ADDRESSES",
    "KERAS_DISTRIBUTION_NUM_PROCESSES",
    "KERAS_DISTRIBUTION_PROCESS_ID",
)


def _invalid(name, expected, value):
    return ValueError(
        f"Received an invalid value for argument `{name}`, expected "
        f"{expected}. Received: {name}={value!r}"
    )


## Layouts


def layout_map(model_or_config, mesh, model_axis=MODEL_AXIS):
    """A `keras.distribution.LayoutMap` that splits our layers the Megatron
    way over the `model_axis` of `mesh` (see the module docstring).

    Variables are found by role, walking the model's layers: attention
    projections are the `EinsumDense` sublayers of any layer with heads
    (`num_heads` or `num_query_heads`: ours, Keras's, keras-hub's), read
    through their einsum equation; feed-forward denses and embeddings by
    their layer names and types. Each key is one variable's exact path, so
    nothing is matched by accident; variables without a role are left out
    (replicated).

    Args:
        model_or_config: a `keras.Model` (or built layer); or a model config
            (`model.get_config()`, or `keras.saving.serialize_keras_object`
            output); or a callable without arguments returning the model.
            A config or callable is built only to read its variables: under
            `jax.eval_shape` on JAX (no memory is allocated), eagerly on
            other backends.
        mesh: `keras.distribution.DeviceMesh` with an axis named
            `model_axis`.
        model_axis: str. The mesh axis the weights are split over.
            Defaults to `"model"`.

    Returns:
        A `keras.distribution.LayoutMap` on `mesh`, one entry per split
        variable; pass it to `keras.distribution.ModelParallel`.

    Raises:
        ValueError: when the model cannot be split over the axis (query heads
            or the feed-forward width not divisible by its size).

    Example:

    ```python
    import keras
    import keras_attn
    devices = keras.distribution.list_devices()
    mesh = keras.distribution.DeviceMesh(
        (1, len(devices)), ["batch", "model"], devices)
    build = lambda: keras_attn.models.decoder_lm(
        vocabulary_size=64, sequence_length=8, num_layers=1, hidden_dim=16,
        num_heads=len(devices) * 2)
    layouts = keras_attn.distribution.layout_map(build, mesh)
    keras.distribution.set_distribution(
        keras.distribution.ModelParallel(layout_map=layouts))
    model = build()
    keras.distribution.set_distribution(None)
    assert layouts["decoder_layer_0/self_attention/query/kernel"].axes == (
        None, "model", None)
    ```

    References:
        Shoeybi et al., "Megatron-LM", 2019, https://arxiv.org/abs/1909.08053
    """
    if not isinstance(mesh, keras.distribution.DeviceMesh):
        raise TypeError(
            "`mesh` must be a keras.distribution.DeviceMesh. Received: "
            f"mesh={type(mesh).__name__}"
        )
    if model_axis not in mesh.axis_names:
        raise ValueError(
            f"`mesh` has no axis named {model_axis!r} to split the weights "
            f"over. Received: mesh.axis_names={list(mesh.axis_names)}"
        )
    size = mesh.shape[list(mesh.axis_names).index(model_axis)]
    layouts = keras.distribution.LayoutMap(mesh)
    model = _materialize(model_or_config)
    for path, axes in _variable_axes(model, size, model_axis).items():
        # Keys are regular expressions to Keras: escape the path.
        layouts[re.escape(path)] = axes
    return layouts


def _variable_axes(model, size, model_axis=MODEL_AXIS):
    """`{variable.path: axes}` for every variable `layout_map` splits over
    a model axis of `size` devices (axes: a tuple of `model_axis` or
    `None` per dimension)."""
    roles = {}

    def put(variable, axis):
        axes = [None] * len(variable.shape)
        axes[axis] = model_axis
        previous = roles.setdefault(variable.path, tuple(axes))
        if previous != tuple(axes):
            raise ValueError(
                f"Two variables share the path {variable.path!r} with "
                "different layouts; give the layers distinct names."
            )

    for layer in _all_layers(model):
        heads = getattr(layer, "num_heads", None) or getattr(
            layer, "num_query_heads", None
        )
        if isinstance(layer, keras.layers.Embedding):
            _embedding_roles(layer, size, put)
        elif isinstance(layer, PositionEmbedding) or _is_keras_hub_position(
            layer
        ):
            for variable in _own_variables(layer):
                if len(variable.shape) == 2 and variable.shape[1] % size == 0:
                    put(variable, 1)  # (L, D): split D
        elif isinstance(layer, keras.layers.Dense) and (
            layer.name in _COLUMN_PARALLEL + _ROW_PARALLEL
        ):
            _feedforward_roles(layer, size, put)
        elif isinstance(heads, int) and not isinstance(
            layer, keras.layers.EinsumDense
        ):
            for child in _children(layer):
                if isinstance(child, keras.layers.EinsumDense):
                    _projection_roles(layer, child, heads, size, put)
    return roles


def _materialize(model_or_config):
    if isinstance(model_or_config, keras.layers.Layer):
        if not model_or_config.built:
            raise ValueError(
                "`model_or_config` must be built (its variables give the "
                f"layout). Received: an unbuilt {model_or_config.name!r}"
            )
        return model_or_config
    if isinstance(model_or_config, dict):
        config = model_or_config

        def build():
            if "class_name" in config:
                return keras.saving.deserialize_keras_object(config)
            return keras.Model.from_config(config)

    elif callable(model_or_config):
        build = model_or_config
    else:
        raise TypeError(
            "`model_or_config` must be a keras.Model, a model config dict or "
            "a callable returning a model. Received: "
            f"model_or_config={type(model_or_config).__name__}"
        )
    model = _abstract_build(build)
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(
            "The callable passed as `model_or_config` must return a "
            f"keras.Model. It returned: {type(model).__name__}"
        )
    return model


def _abstract_build(build):
    """Runs `build()` with no global distribution; on JAX under
    `jax.eval_shape`, so the variables are shapes, not memory."""
    previous = keras.distribution.distribution()
    keras.distribution.set_distribution(None)
    try:
        if keras.backend.backend() != "jax":
            return build()
        import jax

        built = []

        def trace():
            built.append(build())
            return 0

        # Unseeded initializers draw their seeds from Python's `random`:
        # the real build must draw the same ones.
        python_state, numpy_state = random.getstate(), np.random.get_state()
        try:
            jax.eval_shape(trace)
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)
        return built[0]
    finally:
        keras.distribution.set_distribution(previous)


def _children(layer):
    """The layers held in `layer`'s attributes (directly or in lists,
    tuples and dicts), in attribute order."""
    found = []

    def visit(value):
        if isinstance(value, keras.layers.Layer):
            found.append(value)
        elif isinstance(value, (list, tuple)):
            for item in value:
                visit(item)
        elif isinstance(value, dict):
            for item in value.values():
                visit(item)

    for value in vars(layer).values():
        visit(value)
    return found


def _all_layers(root):
    seen, order, stack = set(), [], [root]
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        order.append(layer)
        stack.extend(reversed(_children(layer)))
    return order


def _own_variables(layer):
    """The variables `layer` creates itself (not its sublayers')."""
    nested = {
        id(v) for child in _children(layer) for v in child.variables
    }
    return [v for v in layer.variables if id(v) not in nested]


def _is_keras_hub_position(layer):
    try:
        import keras_hub
    except ImportError:  # pragma: no cover - keras-hub is a dependency
        return False
    return isinstance(layer, keras_hub.layers.PositionEmbedding)


def _named(layer, *names):
    return [v for v in _own_variables(layer) if v.name in names]


def _embedding_roles(layer, size, put):
    """Token embedding (V, D): split V, else D; the reverse projection
    (D, V) the same way."""
    for variable in _named(layer, "embeddings"):
        vocabulary, width = variable.shape
        axis = 0 if vocabulary % size == 0 else 1 if width % size == 0 else None
        if axis is None:
            continue
        put(variable, axis)
        for reverse in _named(layer, "reverse_embeddings"):
            put(reverse, 1 - axis)


def _feedforward_roles(layer, size, put):
    """Column-parallel intermediate (D, F) / row-parallel output (F, D)."""
    column = layer.name in _COLUMN_PARALLEL
    kernel = _named(layer, "kernel")
    if not kernel:
        return
    width = kernel[0].shape[1 if column else 0]
    if width % size:
        raise ValueError(
            f"Cannot split {layer.path!r} over a model axis of {size} "
            f"devices: its feed-forward width {width} is not divisible by "
            f"{size}. Use an `intermediate_dim` divisible by {size}, or a "
            "smaller model axis (--mesh-shape)."
        )
    put(kernel[0], 1 if column else 0)
    if column:
        for variable in _named(layer, "bias", "lora_kernel_b"):
            put(variable, len(variable.shape) - 1)
    else:
        for variable in _named(layer, "lora_kernel_a"):
            put(variable, 0)


def _einsum_axes(equation):
    """`(input letters, kernel letters, output letters)` of an EinsumDense
    equation such as `"abc,cde->abde"`."""
    inputs, rest = equation.split(",")
    kernel, output = rest.split("->")
    return inputs, kernel, output


def _projection_roles(attention, dense, heads, size, put):
    """Splits one projection of an attention layer along its heads axis.

    An input projection (query, key, value, gate) maps the features to
    heads: its heads axis is the first kernel axis in the output whose size
    divides `heads`. The output projection contracts heads and head size:
    its heads axis is the first contracted one."""
    kernel = _named(dense, "kernel")
    if not kernel or len(kernel[0].shape) < 2:
        return
    kernel = kernel[0]
    _, letters, output = _einsum_axes(dense.equation)
    produced = [i for i, c in enumerate(letters) if c in output]
    contracted = [i for i, c in enumerate(letters) if c not in output]
    # The output projection contracts heads and head size; an input
    # projection contracts only the features.
    is_input = len(contracted) == 1
    candidates = produced if is_input else contracted
    axis = next(
        (i for i in candidates if kernel.shape[i] <= heads
         and heads % kernel.shape[i] == 0),
        None,
    )
    if axis is None:
        return
    count = kernel.shape[axis]
    if count % size:
        if is_input and count < heads:
            return  # few key/value heads: each device computes them all
        raise ValueError(
            f"Cannot split {attention.path!r} over a model axis of {size} "
            f"devices: num_heads={count} is not divisible by {size}. Use a "
            f"number of heads divisible by {size}, or a smaller model axis "
            "(--mesh-shape)."
        )
    put(kernel, axis)
    letter = letters[axis]
    rank = len(kernel.shape)
    for variable in _named(dense, "lora_kernel_a"):
        if axis < rank - 1:
            put(variable, axis)
    for variable in _named(dense, "lora_kernel_b"):
        if axis == rank - 1:
            put(variable, 1)
    if is_input and dense.bias_axes and letter in dense.bias_axes:
        # The bias covers the output letters from its first axis on.
        first = min(output.index(c) for c in dense.bias_axes)
        for variable in _named(dense, "bias"):
            put(variable, output[first:].index(letter))


## Setup for scripts


def add_arguments(parser):
    """Adds `--distribution`, `--mesh-shape` and `--lr-scaling` to an
    `argparse` parser (the flags `setup` reads)."""
    group = parser.add_argument_group(
        "distribution", "Scale out (see docs/scaling.md)."
    )
    group.add_argument(
        "--distribution", choices=MODES, default="none",
        help="none: one device; data: replicate the model, split batches; "
             "model: also split the weights over a model axis (JAX only). "
             "Several processes: set TF_CONFIG (TensorFlow) or "
             "KERAS_DISTRIBUTION_* (JAX). (default: %(default)s)",
    )
    group.add_argument(
        "--mesh-shape", default=None,
        help="BATCH,MODEL device mesh for --distribution model (default: "
             "processes,devices per process), or BATCH for data (default: "
             "every device)",
    )
    group.add_argument(
        "--lr-scaling", choices=LR_SCALINGS, default="linear",
        help="how the learning rate grows with the number of replicas "
             "(--batch-size is per replica) (default: %(default)s)",
    )
    return parser


def setup(args=None, distribution="none", mesh_shape=None,
          lr_scaling="linear"):
    """Starts the engine a script asked for and returns what it needs.

    Under several processes (TensorFlow: `TF_CONFIG` set; JAX: any of
    `KERAS_DISTRIBUTION_JOB_ADDRESSES`, `_NUM_PROCESSES`, `_PROCESS_ID` set)
    it first joins the cluster. On JAX it then sets the global
    `keras.distribution` (data mode here, model mode once `build` knows the
    layouts); on TensorFlow it creates the `tf.distribute` strategy.

    Args:
        args: `argparse.Namespace` from a parser given `add_arguments`; its
            values replace the keyword arguments.
        distribution: `"none"`, `"data"` or `"model"`.
        mesh_shape: str or tuple. `"BATCH,MODEL"` (model) or `"BATCH"`
            (data); `None` for the defaults of `add_arguments`.
        lr_scaling: `"linear"`, `"sqrt"` or `"none"`.

    Returns:
        A `DistributionSetup`.

    Example:

    ```python
    import argparse
    import keras
    import keras_attn
    parser = keras_attn.distribution.add_arguments(argparse.ArgumentParser())
    args = parser.parse_args([])  # e.g. ["--distribution", "data"]
    dist = keras_attn.distribution.setup(args)
    model = dist.build(keras_attn.models.encoder_classifier,
                       vocabulary_size=50, sequence_length=8, num_layers=1,
                       hidden_dim=16, num_heads=2)
    with dist.scope():
        model.compile(
            optimizer=keras.optimizers.AdamW(dist.scale_learning_rate(1e-3)),
            loss="sparse_categorical_crossentropy",
            jit_compile=dist.jit_compile)
    batch_size = dist.global_batch_size(32)  # what the dataset is batched by
    ```
    """
    if args is not None:
        distribution = getattr(args, "distribution", distribution)
        mesh_shape = getattr(args, "mesh_shape", mesh_shape)
        lr_scaling = getattr(args, "lr_scaling", lr_scaling)
    if distribution not in MODES:
        raise _invalid("distribution", f"one of {MODES}", distribution)
    if lr_scaling not in LR_SCALINGS:
        raise _invalid("lr_scaling", f"one of {LR_SCALINGS}", lr_scaling)
    shape = _parse_mesh_shape(mesh_shape, distribution)
    backend = keras.backend.backend()
    if backend == "jax":
        return _setup_jax(distribution, shape, lr_scaling)
    if backend == "tensorflow":
        return _setup_tensorflow(distribution, shape, lr_scaling)
    if distribution != "none":
        raise ValueError(
            f"--distribution {distribution} needs the JAX or TensorFlow "
            f"backend. Received: KERAS_BACKEND={backend!r}"
        )
    return DistributionSetup("none", lr_scaling)


def _parse_mesh_shape(mesh_shape, mode):
    if mesh_shape is None:
        return None
    expected = "'BATCH,MODEL'" if mode == "model" else "'BATCH'"
    if mode == "none":
        raise ValueError(
            "`mesh_shape` needs --distribution data or model. Received: "
            f"mesh_shape={mesh_shape!r}"
        )
    try:
        if isinstance(mesh_shape, str):
            shape = tuple(
                int(p) for p in mesh_shape.replace("x", ",").split(",")
            )
        else:
            shape = tuple(int(p) for p in mesh_shape)
    except (TypeError, ValueError):
        raise _invalid("mesh_shape", expected, mesh_shape) from None
    if len(shape) != (2 if mode == "model" else 1) or min(shape) < 1:
        raise _invalid("mesh_shape", expected, mesh_shape)
    return shape


def _setup_jax(mode, shape, lr_scaling):
    import jax

    if mode != "none" and any(
        name in os.environ for name in _MULTI_PROCESS_VARIABLES
    ) and not _jax_initialized():
        keras.distribution.initialize()
    devices = keras.distribution.list_devices()
    setup = DistributionSetup(mode, lr_scaling)
    setup.num_processes = jax.process_count()
    setup.process_id = jax.process_index()
    setup.is_chief = setup.process_id == 0
    if mode == "none":
        return setup
    if mode == "data":
        shape = shape or (len(devices),)
        _check_device_count(shape, devices)
        mesh = keras.distribution.DeviceMesh(shape, [BATCH_AXIS], devices)
        setup.distribution = keras.distribution.DataParallel(
            device_mesh=mesh
        )
        keras.distribution.set_distribution(setup.distribution)
        setup.mesh = mesh
    else:
        shape = shape or (setup.num_processes,
                          len(devices) // setup.num_processes)
        _check_device_count(shape, devices)
        setup.mesh = keras.distribution.DeviceMesh(
            shape, [BATCH_AXIS, MODEL_AXIS], devices
        )
    setup.num_replicas = shape[0]
    setup.drop_remainder = True
    return setup


def _jax_initialized():
    import jax

    try:
        return jax.distributed.is_initialized()
    except AttributeError:  # pragma: no cover - older JAX
        return jax.process_count() > 1


def _check_device_count(shape, devices):
    total = 1
    for size in shape:
        total *= size
    if total != len(devices):
        raise ValueError(
            "Received an invalid value for argument `mesh_shape`, expected "
            f"sizes whose product is the number of devices ({len(devices)})."
            f" Received: mesh_shape={','.join(map(str, shape))}"
        )


def _multi_worker_strategy():
    """`MultiWorkerMirroredStrategy` whose `reduce` takes nested values, as
    Keras 3's `fit` passes them (keras-team/keras#20585): each leaf is
    reduced on its own, scalars without an axis."""
    import tensorflow as tf

    class NestedReduceMultiWorkerMirroredStrategy(
        tf.distribute.MultiWorkerMirroredStrategy
    ):
        def reduce(self, reduce_op, value, axis=None):
            parent = super()

            def one(leaf):
                local = self.experimental_local_results(leaf)[0]
                rank = getattr(local.shape, "rank", None)
                return parent.reduce(reduce_op, leaf, axis if rank else None)

            return tf.nest.map_structure(one, value)

    return NestedReduceMultiWorkerMirroredStrategy()


_STRATEGIES = {}


def _strategy(key, create):
    """One strategy per kind and devices for the whole process: a second
    `MirroredStrategy` over the same devices reuses collective keys of the
    first, and its all-reduces then fail with shape mismatches."""
    if key not in _STRATEGIES:
        _STRATEGIES[key] = create()
    return _STRATEGIES[key]


def _setup_tensorflow(mode, shape, lr_scaling):
    import tensorflow as tf

    if mode == "model":
        raise ValueError(
            "--distribution model splits weights with keras.distribution, "
            "which trains on the JAX backend only (tf.distribute replicates "
            "whole models). Run with KERAS_BACKEND=jax, or use "
            "--distribution data. Received: KERAS_BACKEND='tensorflow'"
        )
    setup = DistributionSetup(mode, lr_scaling)
    if mode == "none":
        return setup
    if os.environ.get("TF_CONFIG"):
        if shape is not None:
            raise ValueError(
                "With TF_CONFIG the replicas are the workers' devices; "
                f"--mesh-shape does not apply. Received: mesh_shape={shape}"
            )
        strategy = _strategy(("multi_worker",), _multi_worker_strategy)
        resolver = strategy.cluster_resolver
        setup.num_processes = len(
            resolver.cluster_spec().as_dict().get("worker", [])
        ) + len(resolver.cluster_spec().as_dict().get("chief", []))
        setup.process_id = resolver.task_id
        setup.is_chief = resolver.task_type == "chief" or (
            resolver.task_type == "worker" and resolver.task_id == 0
            and "chief" not in resolver.cluster_spec().as_dict()
        )
    else:
        devices = tf.config.list_logical_devices("GPU") or (
            tf.config.list_logical_devices("CPU")
        )
        names = [d.name for d in devices]
        if shape is not None:
            if shape[0] > len(names):
                raise _invalid(
                    "mesh_shape", f"at most {len(names)} replicas", shape
                )
            names = names[: shape[0]]
        strategy = _strategy(
            ("mirrored", *names),
            lambda: tf.distribute.MirroredStrategy(names),
        )
    setup.strategy = strategy
    setup.num_replicas = strategy.num_replicas_in_sync
    # XLA under tf.distribute fails on CPUs (variables of other replicas'
    # devices; no collectives in XLA on CPU, b/194942685); Keras's "auto"
    # turns it off under any strategy too.
    setup.jit_compile = False
    return setup


class DistributionSetup:
    """What `setup` returns: the engine and the rules a script follows.

    Attributes:
        mode: `"none"`, `"data"` or `"model"`.
        num_replicas: int. Data-parallel replicas (devices, or the batch
            axis of the mesh in model mode), over all processes.
        num_processes, process_id: the cluster; `1, 0` on one process.
        is_chief: bool. Whether this process writes files (process 0).
        strategy: the `tf.distribute.Strategy` (TensorFlow) or `None`.
        distribution: the `keras.distribution.Distribution` (JAX; set by
            `build` in model mode) or `None`.
        mesh: the `keras.distribution.DeviceMesh` (JAX) or `None`.
        jit_compile: bool. What to pass to `model.compile`: XLA, except
            under a `tf.distribute` strategy (see `setup`).
        drop_remainder: bool. Whether datasets must drop their last short
            batch (JAX: every batch is split evenly over devices).
    """

    def __init__(self, mode, lr_scaling="linear"):
        self.backend = keras.backend.backend()
        self.mode = mode
        self.lr_scaling = lr_scaling
        self.num_replicas = 1
        self.num_processes = 1
        self.process_id = 0
        self.is_chief = True
        self.strategy = None
        self.distribution = None
        self.mesh = None
        self.jit_compile = True
        self.drop_remainder = False

    def __repr__(self):
        engine = (
            type(self.strategy).__name__ if self.strategy is not None
            else type(self.distribution).__name__
            if self.distribution is not None else "one device"
        )
        mesh = (
            f", mesh {dict(zip(self.mesh.axis_names, self.mesh.shape))}"
            if self.mesh is not None else ""
        )
        return (
            f"<DistributionSetup {self.mode}: {engine}, {self.num_replicas} "
            f"replicas, process {self.process_id} of {self.num_processes}"
            f"{mesh}>"
        )

    def info(self):
        """This setup as JSON-serializable facts, e.g. for a training
        record: `{"distribution": mode, "replicas": ..., "processes": ...}`
        and, on JAX with a mesh, `"mesh": {axis: size}`."""
        info = {"distribution": self.mode, "replicas": self.num_replicas,
                "processes": self.num_processes}
        if self.mesh is not None:
            info["mesh"] = {
                str(name): int(size)
                for name, size in zip(self.mesh.axis_names, self.mesh.shape)
            }
        return info

    def describe(self, batch_size, learning_rate):
        """One line for a script's summary: the mode, replicas and mesh,
        the global batch for `batch_size` per replica, and `learning_rate`
        (tuned for one replica) as scaled."""
        text = f"distribution {self.mode}: {self.num_replicas} replica"
        text += "" if self.num_replicas == 1 else "s"
        if self.num_processes > 1:
            text += f" in {self.num_processes} processes"
        if self.mesh is not None:
            text += ", mesh " + " x ".join(
                f"{name} {size}"
                for name, size in zip(self.mesh.axis_names, self.mesh.shape)
            )
        scaled = self.scale_learning_rate(learning_rate)
        text += (
            f"; global batch {self.global_batch_size(batch_size)} "
            f"({batch_size} per replica), learning rate {scaled:g}"
        )
        if scaled != learning_rate:
            text += f" ({learning_rate:g} scaled {self.lr_scaling})"
        return text

    def scope(self):
        """The context to create the model, optimizer and metrics in (the
        strategy's scope on TensorFlow; the distribution's on JAX)."""
        if self.strategy is not None:
            return self.strategy.scope()
        if self.distribution is not None:
            return self.distribution.scope()
        return contextlib.nullcontext()

    def build(self, builder, *args, **kwargs):
        """`builder(*args, **kwargs)` in `scope()`: the model, its variables
        replicated or split as the mode says.

        In model mode (JAX) the layouts come from an abstract build first
        (`layout_map`); the model is then built under a
        `keras.distribution.ModelParallel` of these layouts, which becomes
        the global distribution (one per built model; all share the mesh),
        and each variable is checked to carry its layout.
        """
        if self.mode == "model":
            make = lambda: builder(*args, **kwargs)  # noqa: E731
            layouts = layout_map(make, self.mesh)
            self.distribution = keras.distribution.ModelParallel(
                layout_map=layouts, batch_dim_name=BATCH_AXIS
            )
            keras.distribution.set_distribution(self.distribution)
            model = make()
            _check_layouts(model, layouts)
            return model
        with self.scope():
            return builder(*args, **kwargs)

    def global_batch_size(self, batch_size):
        """The batch to give datasets: `batch_size` per replica."""
        return int(batch_size) * self.num_replicas

    def scale_learning_rate(self, learning_rate):
        """`learning_rate` (tuned for one replica's batch) for the global
        batch: times the replicas (linear), their square root (sqrt), or
        unchanged (none)."""
        if self.lr_scaling == "linear":
            return learning_rate * self.num_replicas
        if self.lr_scaling == "sqrt":
            return learning_rate * self.num_replicas ** 0.5
        return learning_rate

    def callbacks(self, callbacks):
        """`callbacks` for this process: the chief keeps them all; other
        processes keep those that write nothing, and restore from the
        chief's `BackupAndRestore` directory without writing to it.

        Writers recognised: `BackupAndRestore`, `ModelCheckpoint`,
        `TensorBoard`, `CSVLogger` and `keras_attn.training`'s
        `BestModelCheckpoint`. A custom callback that writes files should
        check `is_chief` itself. On JAX with several processes every
        callback runs without the global distribution: Keras's saving
        creates throwaway variables, which would otherwise be cluster-wide
        and wait for processes that never create them.
        """
        if self.is_chief:
            kept = list(callbacks)
        else:
            from keras_attn.training import BestModelCheckpoint

            writers = (
                keras.callbacks.ModelCheckpoint,
                keras.callbacks.TensorBoard,
                keras.callbacks.CSVLogger,
                BestModelCheckpoint,
            )
            kept = []
            for callback in callbacks:
                if isinstance(callback, keras.callbacks.BackupAndRestore):
                    kept.append(RestoreOnly(callback.backup_dir,
                                            callback.save_freq))
                elif not isinstance(callback, writers):
                    kept.append(callback)
        if self.backend == "jax" and self.num_processes > 1:
            kept = [OnThisProcess(callback) for callback in kept]
        return kept

    def on_this_process(self):
        """A context in which Keras objects are created on this process
        alone (JAX: no global distribution), e.g. to save or load a model
        on the chief only."""
        return _no_distribution()

    def finish(self):
        """Ends the collective part of a script, on every process at once.

        Returns True on the chief, False elsewhere: those processes should
        return. On one process nothing changes (the chief goes on under the
        same distribution: a checkpoint loaded now is split again). With
        several JAX processes it shuts `jax.distributed` down (all processes
        meet there, so none waits for the chief's exit) and unsets the
        global distribution: the chief continues alone on its own devices,
        so evaluate a model too large for them before `finish`.
        """
        if self.backend == "jax" and self.num_processes > 1:
            import jax

            keras.distribution.set_distribution(None)
            jax.distributed.shutdown()
        return self.is_chief


@contextlib.contextmanager
def _no_distribution():
    previous = keras.distribution.distribution()
    keras.distribution.set_distribution(None)
    try:
        yield
    finally:
        keras.distribution.set_distribution(previous)


class RestoreOnly(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` for a non-chief process: restores the model,
    optimizer and epoch from `backup_dir` at the start of `fit`, then never
    writes or deletes it (the chief does)."""

    def on_epoch_end(self, epoch, logs=None):
        pass

    def on_train_batch_end(self, batch, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass


class OnThisProcess(keras.callbacks.Callback):
    """Runs `callback`'s hooks with no global distribution (see
    `DistributionSetup.callbacks`).

    Args:
        callback: a `keras.callbacks.Callback`.
    """

    def __init__(self, callback):
        super().__init__()
        self.callback = callback
        self.async_safe = getattr(callback, "async_safe", False)

    def set_params(self, params):
        super().set_params(params)
        self.callback.set_params(params)

    def set_model(self, model):
        super().set_model(model)
        self.callback.set_model(model)


def _forward(hook):
    def forwarded(self, *args, **kwargs):
        with _no_distribution():
            return getattr(self.callback, hook)(*args, **kwargs)

    forwarded.__name__ = hook
    return forwarded


for _hook in (
    "on_batch_begin", "on_batch_end", "on_epoch_begin", "on_epoch_end",
    "on_train_batch_begin", "on_train_batch_end", "on_test_batch_begin",
    "on_test_batch_end", "on_predict_batch_begin", "on_predict_batch_end",
    "on_train_begin", "on_train_end", "on_test_begin", "on_test_end",
    "on_predict_begin", "on_predict_end",
):
    setattr(OnThisProcess, _hook, _forward(_hook))


def _check_layouts(model, layouts):
    """Every entry of `layouts` names a variable of `model`, which carries
    that layout (a renamed layer would otherwise be replicated silently)."""
    matched = 0
    for variable in model.variables:
        layout = layouts[variable.path]
        if layout is None:
            continue
        matched += 1
        spec = tuple(variable.value.sharding.spec)
        spec += (None,) * (len(layout.axes) - len(spec))
        if spec != tuple(layout.axes):
            raise ValueError(
                f"{variable.path!r} was placed as {spec}, not "
                f"{tuple(layout.axes)}: build the model with `build`."
            )
    if matched != len(layouts):
        raise ValueError(
            f"Only {matched} of the {len(layouts)} variables in the layouts "
            "exist in the model built under the distribution. Name every "
            "layer of the builder, so that two builds give the same "
            "variable paths."
        )
