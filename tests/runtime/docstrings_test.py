"""Every runnable ```python example in the runtime's docstrings runs
(`Classifier`, `Generator` and `TFLiteFile` need model files: their
examples are exercised by the tests of those classes)."""

import inspect
import os
import re

import pytest

from keras_attn_runtime import WordPieceTokenizer
from keras_attn_runtime import atomic
from keras_attn_runtime import bundle
from keras_attn_runtime import samplers
from keras_attn_runtime import text_stream
from keras_attn_runtime import vocabulary
from tests.runtime.helpers import needs_tensorflow

FENCE = re.compile(r"```python\n(.*?)```", re.S)
OBJECTS = [
    atomic.atomic_file, atomic.write_bytes, atomic.atomic_directory,
    vocabulary.save_vocabulary, vocabulary.load_vocabulary,
    WordPieceTokenizer, samplers.make_sampler, samplers.process_logits,
    text_stream.join_tokens, text_stream.TextStream, bundle.build_zipapp,
]


@pytest.mark.parametrize("obj", OBJECTS, ids=lambda obj: obj.__name__)
def test_docstring_example_runs(obj, tmp_path):
    (code,) = FENCE.findall(inspect.getdoc(obj))
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        exec(compile(code, "<example>", "exec"), {})
    finally:
        os.chdir(cwd)


@needs_tensorflow
def test_metadata_example_runs():
    from keras_attn.export import metadata

    (code,) = FENCE.findall(inspect.getdoc(metadata.describe))
    exec(compile(code, "<example>", "exec"), {})
