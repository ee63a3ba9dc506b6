"""Encoder-decoder Transformer with cross-attention (translation).

Shape legend: B batch, E source length, T target length, V target
vocabulary.
"""

import keras

from keras_attn.models import common


def seq2seq(
    source_vocabulary_size,
    target_vocabulary_size,
    source_length,
    target_length,
    num_layers=2,
    hidden_dim=128,
    num_heads=4,
    intermediate_dim=None,
    dropout=0.1,
    normalize_first=False,
    num_key_value_heads=None,
    position="learned",
    tie_weights=True,
    layer_norm_epsilon=1e-5,
    sliding_window=None,
    name="seq2seq",
):
    """Source ids -> encoder; target ids -> decoder with cross-attention.

    Teacher forcing: `decoder_token_ids` are the target tokens shifted right
    (starting with a begin token); output position `t` predicts target token
    `t`. Token id 0 is padding on both sides. Translate with
    `keras_attn.models.generate(model, prompt, ..., encoder_token_ids=...)`.

    Args:
        source_vocabulary_size, target_vocabulary_size: int. Vocabulary
            sizes of the two sides.
        source_length, target_length: int. Padded lengths `E` and `T`.
        num_layers: int. Encoder blocks and decoder blocks (each).
        hidden_dim, num_heads, intermediate_dim, dropout, normalize_first,
        num_key_value_heads, position, layer_norm_epsilon, sliding_window:
            as in `encoder_classifier`.
        tie_weights: bool. Whether the output projection reuses the target
            embedding matrix. Defaults to `True`.
        name: str. Model name.

    Returns:
        A functional `keras.Model` with inputs `{"encoder_token_ids": (B, E),
        "decoder_token_ids": (B, T)}` (int32) and float32 logits `(B, T, V)`.

    Example:

    ```python
    import numpy as np
    import keras_attn
    model = keras_attn.models.seq2seq(30, 40, source_length=6,
                                      target_length=5, num_layers=1,
                                      hidden_dim=16, num_heads=2)
    logits = model({"encoder_token_ids": np.array([[4, 5, 6, 0, 0, 0]]),
                    "decoder_token_ids": np.array([[2, 7, 0, 0, 0]])})
    assert logits.shape == (1, 5, 40)
    ```
    """
    intermediate_dim = common.check_args(
        target_vocabulary_size, target_length, num_layers, hidden_dim,
        num_heads, intermediate_dim, dropout, num_key_value_heads, position,
    )
    common.check_args(
        source_vocabulary_size, source_length, num_layers, hidden_dim,
        num_heads, intermediate_dim, dropout, num_key_value_heads, position,
    )
    block = common.block_kwargs(
        num_heads, intermediate_dim, dropout, normalize_first,
        num_key_value_heads, position, layer_norm_epsilon, sliding_window,
    )
    encoder_ids = keras.Input((source_length,), dtype="int32",
                              name="encoder_token_ids")
    decoder_ids = keras.Input((target_length,), dtype="int32",
                              name="decoder_token_ids")
    source = common.embedding("encoder", source_vocabulary_size,
                              source_length, hidden_dim, position)
    encoder_padding = common.padding_mask(encoder_ids)  # (B, E)
    memory = common.encoder_stack(source(encoder_ids), encoder_padding,
                                  num_layers, block)
    target = common.embedding("decoder", target_vocabulary_size,
                              target_length, hidden_dim, position,
                              tie_weights)
    x = common.decoder_stack(target(decoder_ids),
                             common.padding_mask(decoder_ids), memory,
                             encoder_padding, num_layers, block)
    logits = common.lm_logits(x, target)
    return keras.Model(
        {"encoder_token_ids": encoder_ids, "decoder_token_ids": decoder_ids},
        logits,
        name=name,
    )
