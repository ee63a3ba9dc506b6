"""What the Transformer encoder and decoder blocks share (private).

The constructor arguments and their checks, the sublayer factories (named
and initialized as in keras-hub, so weights copy across), the layer norm
placement (post-LN or pre-LN), the feed-forward sublayer, and `get_config`.
"""

import keras

from keras_attn.layers.multi_head_attention import MultiHeadAttention
from keras_attn.layers.quantization import serialized_dtype
from keras_attn.layers.validation import positive_int
from keras_attn.layers.validation import positive_number
from keras_attn.layers.validation import rate


def _clone(initializer):
    return initializer.__class__.from_config(initializer.get_config())


def split_attention_outputs(outputs, return_attention_scores, has_cache):
    """`MultiHeadAttention` returns `out`, `(out, scores)`, `(out, cache)` or
    `(out, scores, cache)`; this is always `(out, scores, cache)`, with None
    for what was not asked for."""
    if not (return_attention_scores or has_cache):
        return outputs, None, None
    scores = outputs[1] if return_attention_scores else None
    cache = outputs[-1] if has_cache else None
    return outputs[0], scores, cache


class TransformerBlock(keras.layers.Layer):
    """Base of `TransformerEncoder` and `TransformerDecoder`."""

    def __init__(
        self,
        intermediate_dim,
        num_heads,
        dropout=0.0,
        activation="relu",
        layer_norm_epsilon=1e-05,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        normalize_first=False,
        num_key_value_heads=None,
        rotary_max_wavelength=None,
        sliding_window=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.intermediate_dim = positive_int(
            intermediate_dim, "intermediate_dim"
        )
        self.num_heads = positive_int(num_heads, "num_heads")
        self.dropout = rate(dropout, "dropout")
        self.activation = keras.activations.get(activation)
        self.layer_norm_epsilon = positive_number(
            layer_norm_epsilon, "layer_norm_epsilon"
        )
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.normalize_first = bool(normalize_first)
        self.num_key_value_heads = positive_int(
            num_key_value_heads, "num_key_value_heads", allow_none=True
        )
        if (
            self.num_key_value_heads is not None
            and self.num_heads % self.num_key_value_heads
        ):
            raise ValueError(
                "Received an invalid value for argument `num_key_value_heads`"
                f", expected a divisor of num_heads={num_heads}. Received: "
                f"num_key_value_heads={num_key_value_heads}"
            )
        self.rotary_max_wavelength = positive_number(
            rotary_max_wavelength, "rotary_max_wavelength", allow_none=True
        )
        self.sliding_window = positive_int(
            sliding_window, "sliding_window", allow_none=True
        )
        self.supports_masking = True

    def _head_dim(self, hidden_dim, name):
        if hidden_dim is None or hidden_dim % self.num_heads:
            raise ValueError(
                f"The hidden size (last axis of `{name}`) must be divisible "
                f"by num_heads={self.num_heads}. Received: hidden size "
                f"{hidden_dim}"
            )
        return hidden_dim // self.num_heads

    def _attention(self, hidden_dim, name, self_attention=True):
        # Rotary positions and the sliding window concern positions within
        # one sequence: the self-attention's, never the cross-attention's.
        return MultiHeadAttention(
            num_heads=self.num_heads,
            key_dim=self._head_dim(hidden_dim, "inputs"),
            dropout=self.dropout,
            kernel_initializer=_clone(self.kernel_initializer),
            bias_initializer=_clone(self.bias_initializer),
            num_key_value_heads=self.num_key_value_heads,
            rotary_max_wavelength=(
                self.rotary_max_wavelength if self_attention else None
            ),
            sliding_window=self.sliding_window if self_attention else None,
            dtype=self.dtype_policy,
            name=name,
        )

    def _layer_norm(self, name, shape):
        norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name=name
        )
        norm.build(shape)
        return norm

    def _dense(self, units, name, shape, activation=None):
        dense = keras.layers.Dense(
            units,
            activation=activation,
            kernel_initializer=_clone(self.kernel_initializer),
            bias_initializer=_clone(self.bias_initializer),
            dtype=self.dtype_policy,
            name=name,
        )
        dense.build(shape)
        return dense

    def _dropout(self, name):
        return keras.layers.Dropout(
            rate=self.dropout, dtype=self.dtype_policy, name=name
        )

    def _build_feedforward(self, shape):
        """The feed-forward denses (after its layer norm in the encoder,
        before it in the decoder, as keras-hub orders the variables)."""
        self._feedforward_intermediate_dense = self._dense(
            self.intermediate_dim,
            "feedforward_intermediate_dense",
            shape,
            activation=self.activation,
        )
        self._feedforward_output_dense = self._dense(
            shape[-1],
            "feedforward_output_dense",
            tuple(shape[:-1]) + (self.intermediate_dim,),
        )
        self._feedforward_dropout = self._dropout("feedforward_dropout")

    def _pre_norm(self, norm, x):
        """The input of a sublayer: `norm(x)` in a pre-LN block, else `x`."""
        return norm(x) if self.normalize_first else x

    def _add_residual(self, x, update, dropout, norm, training):
        """`x + dropout(update)`, then `norm` in a post-LN block."""
        x = x + dropout(update, training=training)
        return x if self.normalize_first else norm(x)

    def _feedforward(self, x, training):
        h = self._pre_norm(self._feedforward_layer_norm, x)
        h = self._feedforward_intermediate_dense(h)  # (B, L, intermediate_dim)
        h = self._feedforward_output_dense(h)  # (B, L, D)
        return self._add_residual(
            x, h, self._feedforward_dropout, self._feedforward_layer_norm,
            training,
        )

    def compute_output_shape(self, inputs_shape):
        return tuple(inputs_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "dtype": serialized_dtype(self),
                "intermediate_dim": self.intermediate_dim,
                "num_heads": self.num_heads,
                "dropout": self.dropout,
                "activation": keras.activations.serialize(self.activation),
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
                "bias_initializer": keras.initializers.serialize(
                    self.bias_initializer
                ),
                "normalize_first": self.normalize_first,
                "num_key_value_heads": self.num_key_value_heads,
                "rotary_max_wavelength": self.rotary_max_wavelength,
                "sliding_window": self.sliding_window,
            }
        )
        return config
