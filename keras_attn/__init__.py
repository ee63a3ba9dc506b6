"""keras_attn: Keras 3 attention layers that train under XLA and export to
TFLite.

Subpackages, lowest first: `ops` (attention math on tensors) <- `layers`
<- `models` (functional builders, cached generation); `visualize`
(attention heatmaps) reads models; `distribution` splits them over devices
(keras.distribution, tf.distribute). `keras_attn_runtime`, beside this
package, runs the exported files without TensorFlow.

The subpackages load on first use (`keras_attn.layers`), so that
`import keras_attn` and the `keras-attn` command line do not import
TensorFlow until they need it. The layers still register themselves with
Keras serialization as soon as Keras is imported, before or after
`import keras_attn`, so `keras.saving.load_model` finds them in a fresh
process without `custom_objects`.
"""

import importlib
import importlib.abc
import importlib.util
import sys

from keras_attn.version import __version__

_SUBPACKAGES = ("distribution", "layers", "models", "ops", "visualize")

__all__ = [*_SUBPACKAGES, "__version__"]


def __getattr__(name):
    if name in _SUBPACKAGES:
        return importlib.import_module(f"keras_attn.{name}")
    raise AttributeError(f"module 'keras_attn' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_SUBPACKAGES))


class _RegisterAfterKeras(importlib.abc.MetaPathFinder):
    """Imports `keras_attn.layers` right after `keras` finishes importing.

    Registration happens when the layer modules run, and they import Keras
    (and so TensorFlow); waiting for the user's own `import keras` keeps
    `import keras_attn` cheap without losing registration.
    """

    def find_spec(self, name, path=None, target=None):
        if name != "keras":
            return None
        sys.meta_path.remove(self)  # find the real spec, and only once
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)
            importlib.import_module("keras_attn.layers")

        spec.loader.exec_module = exec_module
        return spec


if "keras" in sys.modules:
    importlib.import_module("keras_attn.layers")
elif not any(isinstance(f, _RegisterAfterKeras) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterAfterKeras())
