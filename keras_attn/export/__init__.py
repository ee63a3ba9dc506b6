"""Export to TensorFlow SavedModel and TFLite (TensorFlow backend only).

`export_saved_model` writes a SavedModel with a named `serving_default`
signature; `export_tflite` converts to a .tflite of builtin ops only,
optionally quantized, and reports size, ops, parity with Keras and batch-1
latency measured with the LiteRT runtime; `export_generator_tflite` writes
`prefill`/`decode` (and `encode`) signatures around a fixed-shape KV cache
for on-device generation, and reports size, ops, greedy-token parity with
Keras and prefill/decode times; `export_litertlm` writes a `decoder_lm`
as one LiteRT-LM bundle (`.litertlm`: model, tokenizer, metadata) for
Google's on-device LLM engine, and reports its greedy parity through that
engine. Every .tflite describes itself (kind,
lengths, vocabularies, class names) in its metadata. All write atomically.

Modules: `converter` (the one SavedModel -> TFLite path: quantization,
builtin-op check, converter errors), `flatbuffer` (reading op codes),
`description` (what a file says about itself, checked against the model),
`report` (the reports and their measurements), `generation_signatures`,
`litertlm` (the bundle), `hf_tokenizer` (our tokenizer as an HF
`tokenizer.json`), `embedding_lookup` (the token table as
EMBEDDING_LOOKUP, for int4).
"""

from keras_attn.export.converter import QUANTIZATIONS
from keras_attn.export.converter import UnsupportedOpsError
from keras_attn.export.flatbuffer import tflite_ops
from keras_attn.export.generator import GENERATOR_QUANTIZATIONS
from keras_attn.export.generator import export_generator_tflite
from keras_attn.export.litertlm import LITERTLM_QUANTIZATIONS
from keras_attn.export.litertlm import export_litertlm
from keras_attn.export.report import GeneratorReport
from keras_attn.export.report import LiteRTLMReport
from keras_attn.export.report import TFLiteReport
from keras_attn.export.saved_model import export_saved_model
from keras_attn.export.tflite import export_tflite

__all__ = [
    "GENERATOR_QUANTIZATIONS",
    "GeneratorReport",
    "LITERTLM_QUANTIZATIONS",
    "LiteRTLMReport",
    "QUANTIZATIONS",
    "TFLiteReport",
    "UnsupportedOpsError",
    "export_generator_tflite",
    "export_litertlm",
    "export_saved_model",
    "export_tflite",
    "tflite_ops",
]
