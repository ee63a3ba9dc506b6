"""Masked self-attention decoder language model (text generation).

Shape legend: B batch, L sequence length, V vocabulary.
"""

import keras

from keras_attn.models import common


def decoder_lm(
    vocabulary_size,
    sequence_length,
    num_layers=2,
    hidden_dim=128,
    num_heads=4,
    intermediate_dim=None,
    dropout=0.1,
    normalize_first=True,
    num_key_value_heads=None,
    position="learned",
    tie_weights=True,
    layer_norm_epsilon=1e-5,
    sliding_window=None,
    name="decoder_lm",
):
    """Token ids -> causal Transformer decoder -> next-token logits.

    Position `t` of the output predicts token `t + 1`. Token id 0 is padding
    and is masked. Generate text with `keras_attn.models.generate`, which
    runs the same layers with a KV cache.

    Args:
        vocabulary_size: int. Number of token ids `V`.
        sequence_length: int. Training length `L`; with learned positions
            also the longest sequence the model can generate.
        num_layers, hidden_dim, num_heads, intermediate_dim, dropout,
        num_key_value_heads, position, layer_norm_epsilon, sliding_window:
            as in `encoder_classifier`.
        normalize_first: bool. Pre-LN blocks plus a final layer norm (as in
            GPT-2). Defaults to `True`.
        tie_weights: bool. Whether the output projection reuses the token
            embedding matrix. Defaults to `True`.
        name: str. Model name.

    Returns:
        A functional `keras.Model` mapping int32 `token_ids` `(B, L)` to
        float32 logits `(B, L, V)`.

    Example:

    ```python
    import numpy as np
    import keras_attn
    model = keras_attn.models.decoder_lm(
        vocabulary_size=50, sequence_length=16, num_layers=1, hidden_dim=16,
        num_heads=2, position="rotary")
    prompt = np.array([[3, 4, 5], [6, 7, 0]])  # right-padded with 0
    tokens = keras_attn.models.generate(model, prompt, max_new_tokens=4)
    assert tokens.shape == (2, 4)
    ```
    """
    intermediate_dim = common.check_args(
        vocabulary_size, sequence_length, num_layers, hidden_dim, num_heads,
        intermediate_dim, dropout, num_key_value_heads, position,
    )
    token_ids = keras.Input((sequence_length,), dtype="int32",
                            name="token_ids")
    embedding = common.embedding("decoder", vocabulary_size, sequence_length,
                                 hidden_dim, position, tie_weights)
    block = common.block_kwargs(
        num_heads, intermediate_dim, dropout, normalize_first,
        num_key_value_heads, position, layer_norm_epsilon, sliding_window,
    )
    x = common.decoder_stack(embedding(token_ids),
                             common.padding_mask(token_ids), None, None,
                             num_layers, block)
    logits = common.lm_logits(x, embedding)
    return keras.Model(token_ids, logits, name=name)
