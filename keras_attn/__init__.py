"""keras_attn: Keras 3 attention layers that train under XLA and export to
TFLite.

Subpackages, lowest first: `ops` (attention math on tensors) <- `layers`
<- `models` (functional builders, cached generation); `visualize`
(attention heatmaps) reads models; `distribution` splits them over devices
(keras.distribution, tf.distribute).
"""

from keras_attn import distribution
from keras_attn import layers
from keras_attn import models
from keras_attn import ops
from keras_attn import visualize
from keras_attn.version import __version__

__all__ = [
    "distribution", "layers", "models", "ops", "visualize", "__version__",
]
