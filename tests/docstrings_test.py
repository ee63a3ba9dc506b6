"""Every ```python example in a public docstring, in README.md and in
docs/*.md runs. Outlines with `...` for the reader's own code are
fenced as ```py and do not run."""

import inspect
import pathlib
import re

import keras
import pytest

import keras_attn

FENCE = re.compile(r"```python\n(.*?)```", re.S)
ROOT = pathlib.Path(__file__).resolve().parents[1]


def _modules():
    modules = [keras_attn.layers, keras_attn.ops, keras_attn.models,
               keras_attn.visualize]
    if keras.backend.backend() == "tensorflow":
        # TensorFlow-only modules (tf.data, tensorflow-text).
        from keras_attn import data

        modules.append(data)
    return modules


def _public_objects():
    for module in _modules():
        for name in module.__all__:
            obj = getattr(module, name)
            if callable(obj):  # classes and functions, not constants
                yield f"{module.__name__}.{name}", obj


def _workflow_examples():
    """Examples of keras_attn.training and keras_attn.distribution, whose
    helpers are documented by the workflow they belong to (not every
    helper has its own example)."""
    from keras_attn import distribution
    from keras_attn import training

    for module in (training, distribution):
        for name, obj in vars(module).items():
            if name.startswith("_") or not callable(obj):
                continue
            if getattr(obj, "__module__", None) != module.__name__:
                continue
            for i, code in enumerate(FENCE.findall(inspect.getdoc(obj) or "")):
                yield pytest.param(code, id=f"{module.__name__}.{name}-{i}")


def _page_examples():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for page in pages:
        for i, code in enumerate(FENCE.findall(page.read_text())):
            yield pytest.param(code, id=f"{page.stem}-{i}")


EXAMPLES = [
    pytest.param(code, id=f"{name}-{i}")
    for name, obj in _public_objects()
    for i, code in enumerate(FENCE.findall(inspect.getdoc(obj) or ""))
] + list(_workflow_examples()) + list(_page_examples())


def test_every_public_layer_has_an_example():
    documented = {p.id.rsplit("-", 1)[0] for p in EXAMPLES}
    helpers = ("select_implementation", "causal_mask", "make_sampler",
               "trace_count", "CachedDecoder", "TextClassificationData",
               "tokenize_with_bos_eos", "tweets_csv_path", "load_vocabulary")
    missing = [n for n, _ in _public_objects() if n not in documented
               and not n.endswith(helpers)]
    assert not missing, missing


@pytest.mark.parametrize("code", EXAMPLES)
def test_example_runs(code):
    exec(compile(code, "<example>", "exec"), {})
