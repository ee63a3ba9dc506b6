"""Reading a converted .tflite flatbuffer on the export side.

The op list (to reject Flex, custom and `WHILE` ops, and for the reports)
comes from `keras_attn_runtime.tflite_file`, the reader the device runtime
uses too; `tflite_ops` is its public face here. What only the exporter
needs lives here: for `"int8"` quantization, which output layers are small
enough to keep in float32 (read with LiteRT's generated schema).
"""

import numpy as np

from keras_attn_runtime.tflite_file import op_names as runtime_op_names


def _schema():
    from ai_edge_litert import schema_py_generated as schema

    return schema


def tflite_ops(path):
    """Lists the ops in a .tflite file.

    Reads the operator codes from the flatbuffer (all subgraphs), so it
    needs neither TensorFlow nor a runnable model. Custom and Flex ops are
    named by their custom code (`FlexMatrixDeterminant`).

    Args:
        path: str or path-like. A .tflite file (an export report, which
            is path-like, works too).

    Returns:
        A sorted list of unique op names, e.g. `["ADD", "FULLY_CONNECTED"]`.

    Example:

    ```python
    import os
    import tempfile
    import keras_attn
    from keras_attn.export import export_tflite
    from keras_attn.export import tflite_ops
    model = keras_attn.models.encoder_classifier(
        vocabulary_size=50, sequence_length=8, num_layers=1, hidden_dim=16,
        num_heads=2)
    path = os.path.join(tempfile.mkdtemp(), "model.tflite")
    export_tflite(model, path)
    assert "FULLY_CONNECTED" in tflite_ops(path)
    ```
    """
    return runtime_op_names(path)


def small_output_tensors(model_bytes, max_weights):
    """Output tensor names of the ops that produce the model's outputs
    (first subgraph) and hold at most `max_weights` constant values."""
    schema = _schema()
    model = schema.Model.GetRootAs(model_bytes, 0)
    graph = model.Subgraphs(0)
    producers = {}
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        for j in range(op.OutputsLength()):
            producers[op.Outputs(j)] = op

    def is_constant(tensor):
        buffer = model.Buffers(tensor.Buffer())
        return tensor.Buffer() > 0 and (buffer.DataLength() > 0
                                        or buffer.Size() > 0)

    names = []
    for i in range(graph.OutputsLength()):
        index = graph.Outputs(i)
        op = producers.get(index)
        if op is None:
            continue
        weights = 0
        for j in range(op.InputsLength()):
            if op.Inputs(j) < 0:
                continue
            tensor = graph.Tensors(op.Inputs(j))
            if is_constant(tensor):
                weights += int(np.prod(tensor.ShapeAsNumpy()))
        if weights <= max_weights:
            names.append(graph.Tensors(index).Name().decode())
    return names
