"""Self-attention encoder classifier (e.g. sentiment).

Shape legend: B batch, L sequence length, D hidden width, C classes.
"""

import keras

from keras_attn.layers.validation import positive_int
from keras_attn.models import common


def encoder_classifier(
    vocabulary_size,
    sequence_length,
    num_classes=2,
    num_layers=2,
    hidden_dim=128,
    num_heads=4,
    intermediate_dim=None,
    dropout=0.1,
    normalize_first=False,
    num_key_value_heads=None,
    position="learned",
    layer_norm_epsilon=1e-5,
    sliding_window=None,
    name="encoder_classifier",
):
    """Token ids -> Transformer encoder -> masked mean pooling -> logits.

    Token id 0 is padding: it is masked in the attention and the pooling.

    Args:
        vocabulary_size: int. Number of token ids.
        sequence_length: int. Length `L` of the (padded) input.
        num_classes: int. Number of classes `C`. Defaults to `2`.
        num_layers: int. Number of encoder blocks. Defaults to `2`.
        hidden_dim: int. Model width `D`. Defaults to `128`.
        num_heads: int. Attention heads; must divide `hidden_dim`.
            Defaults to `4`.
        intermediate_dim: int or `None`. Feed-forward width. Defaults to
            `4 * hidden_dim`.
        dropout: float. Dropout rate. Defaults to `0.1`.
        normalize_first: bool. Pre-LN blocks (plus a final layer norm).
            Defaults to `False` (post-LN, as in the original Transformer).
        num_key_value_heads: int or `None`. Grouped-query attention.
        position: `"learned"`, `"sinusoidal"` or `"rotary"`. Defaults to
            `"learned"`.
        layer_norm_epsilon: float. Defaults to `1e-5`.
        sliding_window: int or `None`. If set, each token attends only to
            tokens less than `sliding_window` positions away. Defaults to
            `None`.
        name: str. Model name.

    Returns:
        A functional `keras.Model` mapping int32 `token_ids` `(B, L)` to
        float32 logits `(B, C)`.

    Example:

    ```python
    import numpy as np
    import keras_attn
    model = keras_attn.models.encoder_classifier(
        vocabulary_size=100, sequence_length=8, num_classes=3,
        num_layers=1, hidden_dim=16, num_heads=2)
    logits = model(np.array([[5, 6, 7, 0, 0, 0, 0, 0]]))
    assert logits.shape == (1, 3)
    ```
    """
    intermediate_dim = common.check_args(
        vocabulary_size, sequence_length, num_layers, hidden_dim, num_heads,
        intermediate_dim, dropout, num_key_value_heads, position,
    )
    positive_int(num_classes, "num_classes")
    token_ids = keras.Input((sequence_length,), dtype="int32",
                            name="token_ids")
    x = common.embedding("encoder", vocabulary_size, sequence_length,
                         hidden_dim, position)(token_ids)
    block = common.block_kwargs(
        num_heads, intermediate_dim, dropout, normalize_first,
        num_key_value_heads, position, layer_norm_epsilon, sliding_window,
    )
    padding = common.padding_mask(token_ids)  # (B, L)
    x = common.encoder_stack(x, padding, num_layers, block)
    x = keras.layers.GlobalAveragePooling1D(name="pooling")(
        x, mask=padding)  # masked mean
    x = keras.layers.Dropout(dropout, name="pooled_dropout")(x)
    logits = keras.layers.Dense(num_classes, dtype="float32",
                                name="classifier_head")(x)
    return keras.Model(token_ids, logits, name=name)
