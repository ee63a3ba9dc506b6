"""Keras 3 attention layers, backend-agnostic (`keras.ops` only)."""

from keras_attn.layers.group_query_attention import GroupQueryAttention
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

__all__ = [
    "GroupQueryAttention",
    "MultiHeadAttention",
    "PositionEmbedding",
    "RotaryEmbedding",
    "ScaledDotProductAttention",
    "SinusoidalPositionEncoding",
    "TokenAndPositionEmbedding",
    "TransformerDecoder",
    "TransformerEncoder",
]
