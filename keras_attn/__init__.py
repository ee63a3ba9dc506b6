"""keras_attn: Keras 3 attention layers that train under XLA and export to
TFLite.

Subpackages, lowest first: `ops` (attention math on tensors) <- `layers`
<- `models` (functional builders, cached generation); `visualize`
(attention heatmaps) reads models. `keras_attn_runtime`, beside this
package, runs the exported files without TensorFlow.

The subpackages load on first use (`keras_attn.layers`), so that
`import keras_attn` and the `keras-attn` command line do not import
TensorFlow until they need it. The layers register themselves with Keras
serialization when `keras_attn.layers` loads, which happens at once if
Keras is already imported (`import keras` then `import keras_attn`), or
with any of `layers`, `models`, `export`.
"""

import importlib
import sys

from keras_attn.version import __version__

_SUBPACKAGES = ("layers", "models", "ops", "visualize")

__all__ = ["layers", "models", "ops", "visualize", "__version__"]


def __getattr__(name):
    if name in _SUBPACKAGES:
        return importlib.import_module(f"keras_attn.{name}")
    raise AttributeError(f"module 'keras_attn' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_SUBPACKAGES))


if "keras" in sys.modules:
    # Keras is loaded anyway: register the layers now, so that
    # `keras.saving.load_model` finds them after a bare `import keras_attn`.
    importlib.import_module("keras_attn.layers")
