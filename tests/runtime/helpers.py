"""Helpers of the runtime tests: sizes, keras-hub's token ids (the
reference tokenizer), and a Python process that cannot import TensorFlow.
"""

import subprocess
import sys
import textwrap

import keras
import pytest

from keras_attn import data

CLASS_NAMES = ["negative", "neutral", "positive"]
CLASSIFIER_LENGTH = 16
MAX_LENGTH = 40
SOURCE_LENGTH = 12
TRANSLATOR_LENGTH = 20
# Imports a device may not have; the runtime must never need them.
BLOCKED = ("tensorflow", "tensorflow_text", "keras", "tf_keras",
           "keras_hub", "keras_attn")

needs_tensorflow = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="exporting .tflite files needs the TensorFlow backend",
)


def keras_hub_ids(vocabulary, texts, lowercase=True, sequence_length=None):
    """Ids of `make_tokenizer` on its TensorFlow path (the one `tf.data`
    runs in training), all texts in one batch."""
    import tensorflow as tf

    tokenizer = data.make_tokenizer(vocabulary, sequence_length, lowercase)
    ids = tf.function(tokenizer.tokenize)(tf.constant(texts, tf.string))
    if isinstance(ids, tf.RaggedTensor):
        return ids.to_list()
    return ids.numpy().tolist()


def penalized(logits, sequence, penalty):
    """CTRL's repetition penalty, token by token."""
    out = [float(x) for x in logits]
    for token in set(sequence):
        out[token] = out[token] / penalty if out[token] > 0 else (
            out[token] * penalty)
    return out


def banned(sequence, n):
    """Tokens that would repeat an n-gram: scan every earlier n-gram."""
    if n == 0 or len(sequence) < n - 1:
        return set()
    tail = sequence[len(sequence) - (n - 1):] if n > 1 else []
    found = set()
    for start in range(len(sequence) - n + 1):
        if sequence[start:start + n - 1] == tail:
            found.add(sequence[start + n - 1])
    return found


BLOCKER = textwrap.dedent("""
    import sys

    BLOCKED = {blocked!r}

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{{name}} is blocked on the device")

    PRELOADED = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    sys.meta_path.insert(0, Block())
""").format(blocked=BLOCKED)


def run_without_tensorflow(code, args=(), stdin=None, cwd=None, env=None):
    """Runs Python `code` in a fresh process where TensorFlow, Keras,
    keras-hub and keras_attn cannot be imported; returns the process."""
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + textwrap.dedent(code), *args],
        capture_output=True, text=True, timeout=180, input=stdin, cwd=cwd,
        env=env,
    )
