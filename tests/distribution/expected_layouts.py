"""The layouts docs/scaling.md promises, written out for the models of
tests/distribution/single_host_worker.py: variable-path patterns -> axes,
per builder and size of the model axis. Any variable no pattern names must
be replicated. Shared by the in-process `layout_map` tests and the checks of
where JAX really placed each variable.
"""

import re

M = "model"
HEADS_IN = (None, M, None)  # query/key/value kernel (D, N, H)
HEADS_BIAS = (M, None)  # (N, H)
HEADS_OUT = (M, None, None)  # attention output kernel (N, H, D)
COLUMN = (None, M)  # feed-forward intermediate kernel (D, F)
COLUMN_BIAS = (M,)
ROW = (M, None)  # feed-forward output kernel (F, D)
VOCABULARY_SPLIT = (M, None)  # token embedding (V, D)
WIDTH_SPLIT = (None, M)  # (V, D) or (L, D) split along D
LAYER = r"\d+"


def _block(prefix, attentions, split_key_value):
    table = {}
    for attention in attentions:
        projections = ("query", "key", "value") if split_key_value else (
            "query",)
        for projection in projections:
            table[f"{prefix}/{attention}/{projection}/kernel"] = HEADS_IN
            table[f"{prefix}/{attention}/{projection}/bias"] = HEADS_BIAS
        table[f"{prefix}/{attention}/attention_output/kernel"] = HEADS_OUT
    table[f"{prefix}/feedforward_intermediate_dense/kernel"] = COLUMN
    table[f"{prefix}/feedforward_intermediate_dense/bias"] = COLUMN_BIAS
    table[f"{prefix}/feedforward_output_dense/kernel"] = ROW
    return table


def expected(builder, size):
    """`{path regex: axes}` for a builder of the worker at model-axis
    `size` (2 or 4)."""
    if builder == "encoder_classifier":
        # vocabulary 64, 4 heads, learned positions, tied embedding
        return {
            "encoder_embedding/token_embedding/embeddings": VOCABULARY_SPLIT,
            "encoder_embedding/position_embedding/embeddings": WIDTH_SPLIT,
            **_block(f"encoder_layer_{LAYER}", ["self_attention_layer"],
                     True),
        }
    if builder == "decoder_lm":
        # vocabulary 64, 4 heads, 2 key/value heads (split on 2 devices,
        # replicated on 4), rotary positions, untied output projection
        return {
            "decoder_embedding/embeddings": VOCABULARY_SPLIT,
            "decoder_embedding/reverse_embeddings": WIDTH_SPLIT,
            **_block(f"decoder_layer_{LAYER}", ["self_attention"],
                     size == 2),
        }
    # seq2seq: source vocabulary 30 (split on 2 devices, by width on 4),
    # target vocabulary 40 tied, learned positions on both sides
    return {
        "encoder_embedding/token_embedding/embeddings": (
            VOCABULARY_SPLIT if size == 2 else WIDTH_SPLIT),
        "encoder_embedding/position_embedding/embeddings": WIDTH_SPLIT,
        "decoder_embedding/token_embedding/embeddings": VOCABULARY_SPLIT,
        "decoder_embedding/position_embedding/embeddings": WIDTH_SPLIT,
        **_block(f"encoder_layer_{LAYER}", ["self_attention_layer"], True),
        **_block(f"decoder_layer_{LAYER}",
                 ["self_attention", "cross_attention"], True),
    }


def mismatches(placed, table):
    """Differences between `placed` (`{path: axes per dimension}`) and
    `table`; also the patterns that matched no variable (a renamed layer
    must not pass as "replicated")."""
    problems = []
    used = set()
    for path, axes in placed.items():
        hits = [p for p in table if re.fullmatch(p, path)]
        if len(hits) > 1:
            problems.append(f"{path}: several patterns {hits}")
            continue
        want = table[hits[0]] if hits else (None,) * len(axes)
        used.update(hits)
        if tuple(axes) != tuple(want):
            problems.append(f"{path}: {tuple(axes)}, expected {want}")
    problems += [f"no variable matches {p}" for p in table if p not in used]
    return problems
