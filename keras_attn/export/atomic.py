"""Atomic writes for the exporters: `keras_attn_runtime.atomic`, re-exported.

A file or directory appears at its path complete or not at all; see
`keras_attn_runtime.atomic` (one implementation for the package, the
runtime, the vocabulary files, checkpoints and heatmaps).
"""

import os  # noqa: F401  (tests patch `atomic.os.replace`)

from keras_attn_runtime.atomic import atomic_directory
from keras_attn_runtime.atomic import atomic_file
from keras_attn_runtime.atomic import write_bytes
from keras_attn_runtime.atomic import write_text

__all__ = ["atomic_directory", "atomic_file", "write_bytes", "write_text"]
