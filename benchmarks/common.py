"""What the side-by-side benchmarks share: the issue's model shapes, the
same models built from keras-hub layers, weight copying, and interleaved
timing.

Every comparison here times "ours" and "theirs" in one process, taking
turns (A B A B ...), so a busy machine slows both alike; each figure is a
median over rounds, and each ratio is the median of the per-round ratios,
which drifts less than the ratio of two medians.
"""

import dataclasses
import os
import platform
import statistics
import time

import numpy as np

# The encoder classifier and decoder LM of the TFLite and training
# comparisons (issue 13; shared/notes/edge-facts.md).
EDGE_SHAPES = dict(vocabulary_size=8000, sequence_length=128, num_layers=4,
                   hidden_dim=256, num_heads=4, intermediate_dim=1024)
TINY_SHAPES = dict(vocabulary_size=64, sequence_length=16, num_layers=1,
                   hidden_dim=16, num_heads=2, intermediate_dim=32)


def machine_line():
    """Date, machine and load, for the header of every benchmark table."""
    load = (", load average %.1f" % os.getloadavg()[0]
            if hasattr(os, "getloadavg") else "")
    return (f"date {time.strftime('%Y-%m-%d %H:%M')}, {platform.machine()}, "
            f"{os.cpu_count()} cores{load}")


def load_note(start_load):
    """A line saying whether the machine was busy during the run."""
    if not hasattr(os, "getloadavg"):
        return ""
    end = os.getloadavg()[0]
    busy = max(start_load, end) > (os.cpu_count() or 1)
    return (f"load average {start_load:.1f} at start, {end:.1f} at end"
            + (" (busy machine: more runnable tasks than cores)"
               if busy else ""))


def keras_hub_encoder_classifier(vocabulary_size, sequence_length,
                                 num_layers, hidden_dim, num_heads,
                                 intermediate_dim, num_classes=2,
                                 dropout=0.0):
    """`keras_attn.models.encoder_classifier`'s model built from keras-hub
    layers: the same layers, order, variables and masking (token id 0 is
    padding), so `copy_weights` makes the two compute the same function."""
    import keras
    import keras_hub

    token_ids = keras.Input((sequence_length,), dtype="int32",
                            name="token_ids")
    x = keras_hub.layers.TokenAndPositionEmbedding(
        vocabulary_size, sequence_length, hidden_dim, mask_zero=True,
        name="encoder_embedding")(token_ids)
    x = keras.layers.Dropout(dropout)(x)
    for i in range(num_layers):
        x = keras_hub.layers.TransformerEncoder(
            intermediate_dim, num_heads, dropout=dropout, activation="gelu",
            layer_norm_epsilon=1e-5, name=f"encoder_layer_{i}")(x)
    x = keras.layers.GlobalAveragePooling1D(name="pooling")(x)
    x = keras.layers.Dropout(dropout)(x)
    logits = keras.layers.Dense(num_classes, dtype="float32",
                                name="classifier_head")(x)
    return keras.Model(token_ids, logits, name="keras_hub_classifier")


def keras_hub_decoder_lm(vocabulary_size, sequence_length, num_layers,
                         hidden_dim, num_heads, intermediate_dim,
                         dropout=0.0, normalize_first=True):
    """`keras_attn.models.decoder_lm`'s model built from keras-hub layers:
    causal `TransformerDecoder` blocks (pre-LN with a final layer norm, as
    `decoder_lm`'s default), logits from the tied embedding."""
    import keras
    import keras_hub

    token_ids = keras.Input((sequence_length,), dtype="int32",
                            name="token_ids")
    embedding = keras_hub.layers.TokenAndPositionEmbedding(
        vocabulary_size, sequence_length, hidden_dim, mask_zero=True,
        name="decoder_embedding")
    x = keras.layers.Dropout(dropout)(embedding(token_ids))
    for i in range(num_layers):
        x = keras_hub.layers.TransformerDecoder(
            intermediate_dim, num_heads, dropout=dropout, activation="gelu",
            layer_norm_epsilon=1e-5, normalize_first=normalize_first,
            name=f"decoder_layer_{i}")(x)
    if normalize_first:
        x = keras.layers.LayerNormalization(
            epsilon=1e-5, name="decoder_final_layer_norm")(x)
    logits = embedding.token_embedding(x, reverse=True)
    logits = keras.layers.Activation("linear", dtype="float32",
                                     name="logits")(logits)
    return keras.Model(token_ids, logits, name="keras_hub_lm")


def randomize_weights(model, seed=0, scale=0.05):
    """Gives every variable random values (layer-norm scales around 1).

    Freshly built models have zero biases and unit layer-norm scales, which
    the TFLite converter folds away; trained models have neither, so the
    benchmarks time models whose every weight is live.
    """
    rng = np.random.default_rng(seed)
    values = []
    for variable in model.weights:
        shape = tuple(variable.shape)
        value = rng.normal(0.0, scale, shape)
        if "gamma" in variable.path:
            value += 1.0
        values.append(value.astype(variable.dtype if "float" in str(
            variable.dtype) else "float32"))
    model.set_weights(values)


def copy_weights(source, target):
    """`target.set_weights(source.get_weights())` after checking that the
    two models have the same variable shapes in the same order."""
    got = [tuple(w.shape) for w in target.weights]
    want = [tuple(w.shape) for w in source.weights]
    if got != want:
        raise ValueError(
            f"The models' variables differ: {len(want)} variables "
            f"{want[:4]}... vs {len(got)} variables {got[:4]}...")
    target.set_weights(source.get_weights())


def token_batch(batch_size, sequence_length, vocabulary_size, seed=0,
                padded_fraction=0.25):
    """int32 token ids `(B, L)`; each row ends with up to
    `padded_fraction * L` padding zeros, so the masks are exercised."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocabulary_size, (batch_size, sequence_length))
    for row in ids:
        row[sequence_length - rng.integers(
            0, int(padded_fraction * sequence_length) + 1):] = 0
    return ids.astype("int32")


@dataclasses.dataclass
class Timing:
    """Interleaved timings of several candidates (seconds per call)."""

    times: dict

    def median(self, name):
        return statistics.median(self.times[name])

    def ratio(self, name, reference):
        """Median over rounds of `time(name) / time(reference)`."""
        return statistics.median(
            a / b for a, b in zip(self.times[name], self.times[reference]))


def interleaved(candidates, rounds, calls_per_round=1, warmup=1):
    """Times each `candidates[name]()` in turns: every round runs each
    candidate `calls_per_round` times, in a rotating order.

    Returns a `Timing` of seconds per call, one entry a round.
    """
    names = list(candidates)
    for name in names:
        for _ in range(warmup):
            candidates[name]()
    times = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            fn = candidates[name]
            start = time.perf_counter()
            for _ in range(calls_per_round):
                fn()
            times[name].append((time.perf_counter() - start)
                               / calls_per_round)
    return Timing(times)


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |",
             "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
