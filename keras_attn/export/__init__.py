"""Export to TensorFlow SavedModel and TFLite (TensorFlow backend only).

`export_saved_model` writes a SavedModel with a named `serving_default`
signature; `export_tflite` converts to a .tflite of builtin ops only,
optionally quantized, and reports size, ops, parity with Keras and batch-1
latency measured with the LiteRT runtime; `export_generator_tflite` writes
`prefill`/`decode` (and `encode`) signatures around a fixed-shape KV cache
for on-device generation. All write atomically.
"""

from keras_attn.export.generator import export_generator_tflite
from keras_attn.export.saved_model import export_saved_model
from keras_attn.export.tflite import QUANTIZATIONS
from keras_attn.export.tflite import TFLiteReport
from keras_attn.export.tflite import UnsupportedOpsError
from keras_attn.export.tflite import export_tflite
from keras_attn.export.tflite import tflite_ops

__all__ = [
    "QUANTIZATIONS",
    "TFLiteReport",
    "UnsupportedOpsError",
    "export_generator_tflite",
    "export_saved_model",
    "export_tflite",
    "tflite_ops",
]
