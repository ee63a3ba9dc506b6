"""keras_attn_runtime: run keras_attn .tflite models with LiteRT and NumPy.

The device half of keras_attn, shipped in the same wheel. It imports the
standard library and NumPy only (LiteRT, `ai_edge_litert` or
`tflite_runtime`, when a model runs), never TensorFlow, Keras or
keras-hub, so it runs on a phone-class Linux board:

- `WordPieceTokenizer`: the token ids of the training tokenizer.
- `load_vocabulary`, `save_vocabulary`: vocabulary files.
- `make_sampler`, `samplers.process_logits`: next-token choice
  (greedy, random, top-k, top-p; repetition penalty, no-repeat n-grams).
- `Classifier`, `Generator`: run `export_tflite` and
  `export_generator_tflite` files.
- `TFLiteFile`, `read_metadata`: a .tflite's signatures, ops and the
  description keras_attn embeds (vocabularies, class names, lengths,
  generation defaults).
- `python -m keras_attn_runtime generate|classify`: the command line,
  also bundled as one file by `keras-attn bundle-runtime`.

`keras_attn` imports from here; nothing here imports `keras_attn`.
"""

from keras_attn_runtime.classifier import Classifier
from keras_attn_runtime.generator import Generator
from keras_attn_runtime.samplers import SAMPLERS
from keras_attn_runtime.samplers import make_sampler
from keras_attn_runtime.tflite_file import TFLiteFile
from keras_attn_runtime.tflite_file import read_metadata
from keras_attn_runtime.tokenizer import WordPieceTokenizer
from keras_attn_runtime.vocabulary import BOS
from keras_attn_runtime.vocabulary import EOS
from keras_attn_runtime.vocabulary import PAD
from keras_attn_runtime.vocabulary import PAD_ID
from keras_attn_runtime.vocabulary import RESERVED_TOKENS
from keras_attn_runtime.vocabulary import UNK
from keras_attn_runtime.vocabulary import load_vocabulary
from keras_attn_runtime.vocabulary import save_vocabulary

__all__ = [
    "BOS",
    "Classifier",
    "EOS",
    "Generator",
    "PAD",
    "PAD_ID",
    "RESERVED_TOKENS",
    "SAMPLERS",
    "TFLiteFile",
    "UNK",
    "WordPieceTokenizer",
    "load_vocabulary",
    "make_sampler",
    "read_metadata",
    "save_vocabulary",
]
