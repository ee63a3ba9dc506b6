"""Runs peers' test files (Keras, keras-hub) against keras_attn's classes.

A peer test file is copied, unmodified except for its `from M import N`
statements, into a temporary folder. Each import of a class under test is
redirected to ours; nothing else in the file changes. The file then runs
under pytest in a subprocess with the peer's own pytest settings, and the
per-test outcomes are read back from a JUnit XML report.

How an import is redirected depends on what it names:

- a class (`from keras_hub.src....transformer_encoder import
  TransformerEncoder`) is replaced by ours;
- a module that holds a class under test (Keras's `from keras.src import
  layers`, then `layers.MultiHeadAttention`) is replaced by an overlay of
  that module: every attribute is the peer's, except the classes under test.

The redirected names live in a generated module `_peer_imports.py` next to
the copied file, so the test file keeps plain import statements. A rewrite
rule that matches nothing in a file it is meant for is an error: a renamed
peer import must never silently test the peer's own class.

Nothing of the peers' code is stored in this repository: Keras's test files
come from the installed keras wheel, keras-hub's from
`<repo root>/../shared/peer-tests/keras-hub/` when that folder exists.

This module imports only the standard library at the top, so listing suites
and parsing reports is fast; `overlay` and `resolve` run inside the
subprocess, where the generated `_peer_imports.py` calls them.
"""

import ast
import dataclasses
import importlib
import importlib.util
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import types
import xml.etree.ElementTree as ET

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
KERAS_HUB_PEER_DIR = REPO_ROOT.parent / "shared" / "peer-tests" / "keras-hub"
NOT_APPLICABLE_PATH = pathlib.Path(__file__).with_name("NOT_APPLICABLE.md")
SHIM_MODULE = "_peer_imports"

# Both peers (their pyproject.toml `[tool.pytest.ini_options]`) turn
# warnings into errors except these categories.
_IGNORED_WARNINGS = (
    "DeprecationWarning", "ImportWarning", "RuntimeWarning",
    "PendingDeprecationWarning", "FutureWarning", "UserWarning",
)


def _pytest_ini(*extra_filters):
    filters = ["error"] + [f"ignore::{c}" for c in _IGNORED_WARNINGS]
    lines = "\n".join(f"    {f}" for f in filters + list(extra_filters))
    return f"[pytest]\nfilterwarnings =\n{lines}\n"


# Keras's settings, and its root conftest's `requires_trainable_backend`
# marker (skipped on backends without a trainer).
KERAS_PYTEST_INI = _pytest_ini("ignore:Custom mask layers require a config")
KERAS_CONFTEST = '''\
"""Keras's root conftest: the `requires_trainable_backend` marker."""
import pytest
from keras import backend


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "requires_trainable_backend: needs a trainer"
    )


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skipif(
        backend.backend() in ("numpy", "openvino"),
        reason="Trainer not implemented for this backend.",
    )
    for item in items:
        if "requires_trainable_backend" in item.keywords:
            item.add_marker(skip)
'''
# keras-hub's settings: pyproject.toml `[tool.pytest.ini_options]` of
# keras-team/keras-hub, and its root conftest's markers (`large` tests are
# skipped unless `--run_large`). The README of shared/peer-tests/keras-hub
# quotes only `error` and `ignore::DeprecationWarning`; with only those,
# 7 of keras-hub's tests fail against keras-hub's own classes (a
# UserWarning "The model does not have any trainable weights" from
# Keras's trainer, and the like), with these they all pass.
KERAS_HUB_PYTEST_INI = _pytest_ini()
KERAS_HUB_CONFTEST = '''\
"""keras-hub's root conftest: its markers; `large` needs --run_large."""
import keras
import pytest


def pytest_addoption(parser):
    parser.addoption("--run_large", action="store_true", default=False)


def pytest_configure(config):
    for marker in ("large", "extra_large", "tf_only", "kaggle_key_required"):
        config.addinivalue_line("markers", f"{marker}: keras-hub marker")


def pytest_collection_modifyitems(config, items):
    skip_large = pytest.mark.skipif(
        not config.getoption("--run_large"), reason="needs --run_large"
    )
    tf_only = pytest.mark.skipif(
        keras.config.backend() != "tensorflow", reason="TensorFlow only"
    )
    for item in items:
        if "large" in item.keywords or "extra_large" in item.keywords:
            item.add_marker(skip_large)
        if "tf_only" in item.keywords:
            item.add_marker(tf_only)
        if "kaggle_key_required" in item.keywords:
            item.add_marker(pytest.mark.skip(reason="needs a Kaggle key"))


keras.config.disable_traceback_filtering()
'''

KERAS_ATTN_LAYERS = "keras_attn.layers"

# Keras's classes, by the attribute name its test files read from
# `keras.src.layers`, and ours. Keras's own class is
# `GroupedQueryAttention`, exported as `keras.layers.GroupQueryAttention`.
KERAS_REWRITES = {
    "keras.src.layers.MultiHeadAttention": (
        f"{KERAS_ATTN_LAYERS}:MultiHeadAttention",
    ),
    "keras.src.layers.GroupedQueryAttention": (
        f"{KERAS_ATTN_LAYERS}:GroupQueryAttention",
    ),
}

# keras-hub's classes (the README of the peer-tests folder) and ours. The
# first of several alternatives that exists is used.
_HUB_MODELING = "keras_hub.src.layers.modeling"
_HUB_CLASSES = {
    "transformer_encoder.TransformerEncoder": ("TransformerEncoder",),
    "transformer_decoder.TransformerDecoder": ("TransformerDecoder",),
    "position_embedding.PositionEmbedding": ("PositionEmbedding",),
    "rotary_embedding.RotaryEmbedding": ("RotaryEmbedding",),
    "sine_position_encoding.SinePositionEncoding": (
        "SinePositionEncoding",
        "SinusoidalPositionEncoding",
    ),
    "token_and_position_embedding.TokenAndPositionEmbedding": (
        "TokenAndPositionEmbedding",
    ),
    "cached_multi_head_attention.CachedMultiHeadAttention": (
        "MultiHeadAttention",
    ),
}
KERAS_HUB_REWRITES = {
    f"{_HUB_MODELING}.{path}": tuple(
        f"{KERAS_ATTN_LAYERS}:{name}" for name in names
    )
    for path, names in _HUB_CLASSES.items()
}
KERAS_HUB_REWRITES["keras_hub.src.tests.test_case.TestCase"] = (
    "test_case:TestCase",
)


@dataclasses.dataclass(frozen=True)
class Suite:
    """One peer test file and how to run it against our classes.

    Attributes:
        name: str. `"<peer>/<file name>"`, the prefix of its test ids.
        path: pathlib.Path. The peer's test file.
        rewrites: dict `{dotted path of a peer object: (alternatives,)}`,
            each alternative `"module:attribute"`.
        pytest_ini: str. The peer's pytest settings.
        conftest: str or `None`. A conftest giving the peer's markers.
        support_files: tuple of paths copied next to the test file as they
            are (keras-hub's `test_case.py`).
        must_rewrite: tuple of module prefixes that no import left in the
            rewritten file may come from (the peer's classes under test).
    """

    name: str
    path: pathlib.Path
    rewrites: dict
    pytest_ini: str
    conftest: str = None
    support_files: tuple = ()
    must_rewrite: tuple = ()


@dataclasses.dataclass
class SuiteResult:
    """Per-test outcomes of one suite; ids are `"<suite>::<Class>::<test>"`.

    `error` is set when the run produced no report (e.g. a crash before
    collection); `output` is the tail of pytest's output.
    """

    suite: str
    passed: list = dataclasses.field(default_factory=list)
    failed: list = dataclasses.field(default_factory=list)
    skipped: list = dataclasses.field(default_factory=list)
    error: str = None
    output: str = ""

    @property
    def total(self):
        return len(self.passed) + len(self.failed) + len(self.skipped)


def keras_source_dir():
    """The installed `keras` package folder, found without importing it."""
    spec = importlib.util.find_spec("keras")
    return pathlib.Path(list(spec.submodule_search_locations)[0])


def keras_suites():
    """Keras's attention test files from the installed wheel."""
    folder = keras_source_dir() / "src" / "layers" / "attention"
    return [
        Suite(
            name=f"keras/{file_name}",
            path=folder / file_name,
            rewrites={key: KERAS_REWRITES[key]},
            pytest_ini=KERAS_PYTEST_INI,
            conftest=KERAS_CONFTEST,
        )
        for file_name, key in (
            ("multi_head_attention_test.py",
             "keras.src.layers.MultiHeadAttention"),
            ("grouped_query_attention_test.py",
             "keras.src.layers.GroupedQueryAttention"),
        )
    ]


def keras_hub_suites(folder=KERAS_HUB_PEER_DIR):
    """keras-hub's test files listed in the folder's README table, or `[]`
    if the folder does not exist."""
    folder = pathlib.Path(folder)
    readme = folder / "README.md"
    if not readme.is_file():
        return []
    names = re.findall(r"^\|\s*`(\w+_test\.py)`\s*\|", readme.read_text(),
                       re.M)
    return [
        Suite(
            name=f"keras-hub/{file_name}",
            path=folder / file_name,
            rewrites=KERAS_HUB_REWRITES,
            pytest_ini=KERAS_HUB_PYTEST_INI,
            conftest=KERAS_HUB_CONFTEST,
            support_files=(folder / "test_case.py",),
            must_rewrite=(_HUB_MODELING, "keras_hub.src.tests"),
        )
        for file_name in names
    ]


def all_suites():
    return keras_suites() + keras_hub_suites()


# Rewriting ------------------------------------------------------------------


def _shim_symbol(full_path, taken):
    name = full_path.rsplit(".", 1)[1]
    symbol, i = name, 1
    while taken.get(symbol, full_path) != full_path:
        symbol, i = f"{name}_{i}", i + 1
    taken[symbol] = full_path
    return symbol


def rewrite_imports(source, rewrites, must_rewrite=()):
    """Rewrites the `from M import N` statements of a test file.

    Args:
        source: str. The peer's test file.
        rewrites: dict `{dotted path: (alternatives,)}`, see `Suite`.
        must_rewrite: module prefixes no remaining import may come from.

    Returns:
        `(new_source, shim_source, used)`: the file with only its import
        statements changed, the `_peer_imports.py` it now imports from, and
        the set of rewrite keys that matched.

    Raises:
        ValueError: when an import from a `must_rewrite` prefix is left
            as it was.
    """
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    replacements = {}  # first line index -> (last line index, new text)
    shim, taken, used = {}, {}, set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom) or node.level:
            continue
        module = node.module or ""
        kept, redirected = [], []
        for alias in node.names:
            full_path = f"{module}.{alias.name}"
            members = {
                key[len(full_path) + 1:]: value
                for key, value in rewrites.items()
                if key.startswith(full_path + ".")
            }
            if full_path in rewrites:
                shim[full_path] = ("resolve", rewrites[full_path])
                used.add(full_path)
            elif members:
                shim[full_path] = ("overlay", members)
                used.update(f"{full_path}.{m}" for m in members)
            else:
                if any(module == p or module.startswith(p + ".")
                       for p in must_rewrite):
                    raise ValueError(
                        f"`from {module} import {alias.name}` has no rewrite "
                        "rule: the peer's own class would be tested."
                    )
                kept.append(alias)
                continue
            symbol = _shim_symbol(full_path, taken)
            local = alias.asname or alias.name
            redirected.append(
                symbol if symbol == local else f"{symbol} as {local}"
            )
        if not redirected:
            continue
        indent = re.match(r"\s*", lines[node.lineno - 1]).group(0)
        new = [f"{indent}from {SHIM_MODULE} import {name}\n"
               for name in redirected]
        if kept:
            names = ", ".join(
                a.name if a.asname is None else f"{a.name} as {a.asname}"
                for a in kept
            )
            new.insert(0, f"{indent}from {module} import {names}\n")
        replacements[node.lineno - 1] = (node.end_lineno - 1, "".join(new))
    out, i = [], 0
    while i < len(lines):
        if i in replacements:
            last, text = replacements[i]
            out.append(text)
            i = last + 1
        else:
            out.append(lines[i])
            i += 1
    shim_lines = [
        '"""Generated by tests/compat/runner.py: the peer\'s imports that',
        'now name keras_attn\'s classes."""',
        "from tests.compat.runner import overlay",
        "from tests.compat.runner import resolve",
        "",
    ]
    symbols = {path: s for s, path in taken.items()}
    for full_path, (kind, target) in shim.items():
        module = full_path if kind == "overlay" else None
        args = f"{module!r}, {target!r}" if module else repr(target)
        shim_lines.append(f"{symbols[full_path]} = {kind}({args})")
    return "".join(out), "\n".join(shim_lines) + "\n", used


def resolve(alternatives):
    """The first `"module:attribute"` of `alternatives` that exists."""
    for target in alternatives:
        module, attribute = target.split(":")
        try:
            return getattr(importlib.import_module(module), attribute)
        except (ImportError, AttributeError):
            continue
    raise ImportError(f"None of {alternatives} exists.")


def overlay(module_name, members):
    """A module that is `module_name`, except for `members` (`{attribute:
    alternatives}`), which are resolved with `resolve`."""
    base = importlib.import_module(module_name)
    module = types.ModuleType(module_name, base.__doc__)
    for attribute, alternatives in members.items():
        setattr(module, attribute, resolve(alternatives))
    module.__getattr__ = lambda name: getattr(base, name)
    return module


# Running --------------------------------------------------------------------


def _test_id(suite, testcase):
    module = pathlib.Path(suite.path).stem
    parts = (testcase.get("classname") or "").split(".")
    if parts and parts[0] == module:
        parts = parts[1:]
    return "::".join([suite.name] + [p for p in parts if p]
                     + [testcase.get("name")])


def parse_junit(suite, path):
    """Reads a JUnit XML report into a `SuiteResult`."""
    result = SuiteResult(suite.name)
    for testcase in ET.parse(path).iter("testcase"):
        test_id = _test_id(suite, testcase)
        tags = {child.tag for child in testcase}
        if tags & {"failure", "error"}:
            result.failed.append(test_id)
        elif "skipped" in tags:
            result.skipped.append(test_id)
        else:
            result.passed.append(test_id)
    return result


def prepare(suite, folder, against_peer=False):
    """Writes the rewritten test file, its shim, support files and the
    peer's pytest settings into `folder`; returns the test file path."""
    folder = pathlib.Path(folder)
    source = suite.path.read_text()
    rewrites = dict(suite.rewrites)
    if against_peer:
        # Keep the peer's classes; only its support files are redirected.
        rewrites = {k: v for k, v in rewrites.items()
                    if not any(a.startswith(KERAS_ATTN_LAYERS)
                               for a in v)}
    new_source, shim, used = rewrite_imports(
        source, rewrites, () if against_peer else suite.must_rewrite)
    under_test = [k for k in used
                  if any(a.startswith(KERAS_ATTN_LAYERS)
                         for a in suite.rewrites[k])]
    if not against_peer and not under_test:
        raise ValueError(
            f"{suite.name}: no import names a class under test; rules: "
            f"{sorted(suite.rewrites)}"
        )
    for support in suite.support_files:
        shutil.copyfile(support, folder / pathlib.Path(support).name)
    (folder / suite.path.name).write_text(new_source)
    (folder / f"{SHIM_MODULE}.py").write_text(shim)
    (folder / "pytest.ini").write_text(suite.pytest_ini)
    if suite.conftest:
        (folder / "conftest.py").write_text(suite.conftest)
    return folder / suite.path.name


def run_suite(suite, against_peer=False, timeout=1800, extra_args=()):
    """Runs one suite in a subprocess and returns its `SuiteResult`.

    Args:
        suite: a `Suite`.
        against_peer: bool. Run the file against the peer's own classes
            (to check the harness); only support imports are redirected.
        timeout: seconds before the run is abandoned.
        extra_args: more pytest arguments (e.g. `("-k", "masking")`).
    """
    with tempfile.TemporaryDirectory(prefix="keras_attn_compat_") as tmp:
        tmp = pathlib.Path(tmp)
        test_file = prepare(suite, tmp, against_peer)
        report = tmp / "report.xml"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(tmp), str(REPO_ROOT)]
            + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        )
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        command = [
            sys.executable, "-m", "pytest", str(test_file),
            "-c", str(tmp / "pytest.ini"), "--rootdir", str(tmp),
            "-p", "no:cacheprovider", "-q", "-rN",
            "-o", "junit_family=xunit2", f"--junitxml={report}",
            *extra_args,
        ]
        try:
            completed = subprocess.run(
                command, cwd=tmp, env=env, capture_output=True, text=True,
                timeout=timeout,
            )
            output = completed.stdout + completed.stderr
        except subprocess.TimeoutExpired as error:
            output = f"timed out after {timeout} s\n{error.stdout or ''}"
            return SuiteResult(suite.name, error="timeout",
                               output=output[-4000:])
        if not report.is_file():
            return SuiteResult(suite.name, error="no report",
                               output=output[-4000:])
        result = parse_junit(suite, report)
        result.output = output[-4000:]
        return result


# The list of tolerated failures ---------------------------------------------


def read_not_applicable(path=NOT_APPLICABLE_PATH):
    """The entries of `NOT_APPLICABLE.md`: `{test id: (reason, our test)}`.

    Entries are the rows of its markdown table whose first cell is a
    backticked test id (`"<suite>::<Class>::<test>"`).
    """
    entries = {}
    path = pathlib.Path(path)
    if not path.is_file():
        return entries
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        match = re.fullmatch(r"`([^`]+::[^`]+)`", cells[0]) if cells else None
        if match:
            reason = cells[1] if len(cells) > 1 else ""
            ours = cells[2] if len(cells) > 2 else ""
            entries[match.group(1)] = (reason, ours)
    return entries


def format_table(results, not_applicable):
    """`suite | passed | failed | skipped | not applicable` as markdown."""
    rows = ["| suite | passed | failed | skipped | not applicable |",
            "|---|---:|---:|---:|---:|"]
    for r in results:
        listed = [t for t in r.failed if t in not_applicable]
        failed = len(r.failed) - len(listed)
        cell = r.error if r.error else failed
        rows.append(f"| {r.suite} | {len(r.passed)} | {cell} | "
                    f"{len(r.skipped)} | {len(listed)} |")
    return "\n".join(rows)
