"""keras_attn: Keras 3 attention layers that train under XLA and export to
TFLite.

Subpackages, lowest first: `ops` (attention math on tensors) <- `layers`.
"""

from keras_attn import layers
from keras_attn import ops
from keras_attn.version import __version__

__all__ = ["layers", "ops", "__version__"]
