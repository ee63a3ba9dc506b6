"""Keras 3 attention layers, backend-agnostic (`keras.ops` only).

keras-hub's names are aliases of ours, so that moving from keras-hub is an
import change: `SinePositionEncoding` is `SinusoidalPositionEncoding` and
`CachedMultiHeadAttention` is `MultiHeadAttention` (which takes keras-hub's
`cache` and `cache_update_index`). An alias is the same class, not a
subclass: it serializes under our class's registered name, so a model saved
through either name loads through both, and `isinstance` checks agree.
"""

from keras_attn.layers.group_query_attention import GroupQueryAttention
from keras_attn.layers.kv_cache import KVCache
from keras_attn.layers.multi_head_attention import MultiHeadAttention
from keras_attn.layers.position_embedding import PositionEmbedding
from keras_attn.layers.rotary_embedding import RotaryEmbedding
from keras_attn.layers.scaled_dot_product_attention import (
    ScaledDotProductAttention,
)
from keras_attn.layers.sinusoidal_position_encoding import (
    SinusoidalPositionEncoding,
)
from keras_attn.layers.token_and_position_embedding import (
    TokenAndPositionEmbedding,
)
from keras_attn.layers.transformer_decoder import TransformerDecoder
from keras_attn.layers.transformer_encoder import TransformerEncoder

# keras-hub's names (see the module docstring).
CachedMultiHeadAttention = MultiHeadAttention
SinePositionEncoding = SinusoidalPositionEncoding

__all__ = [
    "CachedMultiHeadAttention",
    "GroupQueryAttention",
    "KVCache",
    "MultiHeadAttention",
    "PositionEmbedding",
    "RotaryEmbedding",
    "ScaledDotProductAttention",
    "SinePositionEncoding",
    "SinusoidalPositionEncoding",
    "TokenAndPositionEmbedding",
    "TransformerDecoder",
    "TransformerEncoder",
]
