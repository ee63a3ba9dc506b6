"""Pure functions on tensors: the attention math and its masks."""

from keras_attn.ops.attention import causal_mask
from keras_attn.ops.attention import scaled_dot_product_attention
from keras_attn.ops.attention import select_implementation
from keras_attn.ops.attention import sliding_window_mask

__all__ = [
    "causal_mask",
    "scaled_dot_product_attention",
    "select_implementation",
    "sliding_window_mask",
]
