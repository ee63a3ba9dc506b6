"""The peers' own test files pass against our classes.

Keras's `multi_head_attention_test.py` and `grouped_query_attention_test.py`
(from the installed wheel) and keras-hub's layer tests (from
`../shared/peer-tests/keras-hub/`) run with only their imports redirected to
keras_attn (`tests/compat/runner.py`). Every failing test must be listed in
`NOT_APPLICABLE.md`, and a listed test must not pass.
"""

import pathlib
import re
import textwrap

import pytest

from tests.compat import runner

KERAS_HUB_MISSING = pytest.param(
    None,
    marks=pytest.mark.skip(
        reason=f"{runner.KERAS_HUB_PEER_DIR} does not exist: keras-hub's "
        "test files are not run"
    ),
    id="keras-hub",
)
SUITES = [pytest.param(s, id=s.name) for s in runner.keras_suites()] + (
    [pytest.param(s, id=s.name) for s in runner.keras_hub_suites()]
    or [KERAS_HUB_MISSING]
)


@pytest.mark.large
@pytest.mark.parametrize("suite", SUITES)
def test_peer_suite_passes_except_not_applicable(suite):
    result = runner.run_suite(suite)
    assert result.error is None, f"{result.error}\n{result.output}"
    assert result.passed, f"no test passed\n{result.output}"
    listed = runner.read_not_applicable()
    unexpected = [t for t in result.failed if t not in listed]
    assert not unexpected, (
        f"failing and not in NOT_APPLICABLE.md: {unexpected}\n"
        f"{result.output}"
    )
    stale = [t for t in listed
             if t.startswith(suite.name + "::") and t in result.passed]
    assert not stale, f"listed in NOT_APPLICABLE.md but passing: {stale}"


def test_not_applicable_entries_name_a_reason_and_our_test():
    """Each entry: a known suite, a reason, and an existing test of ours
    (`tests/...py::test_name`) that checks the same property."""
    known = {s.name for s in runner.all_suites()}
    for test_id, (reason, ours) in runner.read_not_applicable().items():
        suite = test_id.split("::")[0]
        # keras-hub's files may be absent here; their names are not checked.
        assert suite in known or suite.startswith("keras-hub/"), test_id
        assert len(reason) > 20, (test_id, reason)
        match = re.search(r"`(tests/[\w/]+\.py)::(\w+)", ours)
        assert match, (test_id, ours)
        path = runner.REPO_ROOT / match.group(1)
        assert re.search(rf"^def {match.group(2)}\(", path.read_text(),
                         re.M), (test_id, ours)


PEER_FILE = textwrap.dedent("""\
    import numpy as np
    from keras.src import layers
    from keras.src import ops as peer_ops
    from peer.modeling.thing import (
        Thing,
    )

    def test_it():
        from peer.modeling.other import Other as O
        assert layers.Dense and Thing and O
""")
RULES = {
    "keras.src.layers.MultiHeadAttention": ("keras_attn.layers:X",),
    "peer.modeling.thing.Thing": ("a:Missing", "keras_attn.layers:Thing"),
    "peer.modeling.other.Other": ("keras_attn.layers:Other",),
}


def test_rewrite_changes_only_import_statements():
    source, shim, used = runner.rewrite_imports(PEER_FILE, RULES)
    assert used == set(RULES)
    assert source.splitlines()[:4] == [
        "import numpy as np",
        "from _peer_imports import layers",
        "from keras.src import ops as peer_ops",
        "from _peer_imports import Thing",
    ]
    assert "    from _peer_imports import Other as O\n" in source
    body = lambda s: [ln for ln in s.splitlines()  # noqa: E731
                      if "import" not in ln and ln.strip() not in (
                          "Thing,", ")")]
    assert body(source) == body(PEER_FILE)
    assert ("layers = overlay('keras.src.layers', {'MultiHeadAttention': "
            "('keras_attn.layers:X',)})") in shim
    assert ("Thing = resolve(('a:Missing', 'keras_attn.layers:Thing'))"
            in shim)


def test_rewrite_refuses_an_unredirected_class_under_test():
    with pytest.raises(ValueError, match="peer.modeling.thing import Thing"):
        runner.rewrite_imports(PEER_FILE, {}, must_rewrite=("peer.modeling",))


def test_overlay_and_resolve():
    module = runner.overlay("pathlib", {"Path": ("nowhere:Path", "re:compile")})
    assert module.Path is re.compile  # the redirected member
    assert module.PurePath is pathlib.PurePath  # everything else: the peer's
    with pytest.raises(ImportError, match="None of"):
        runner.resolve(("nowhere:x", "re:nothing_here"))


def test_junit_report_parsing(tmp_path):
    suite = runner.keras_suites()[0]
    report = tmp_path / "report.xml"
    report.write_text(
        '<testsuites><testsuite>'
        '<testcase classname="multi_head_attention_test.T" name="test_a"/>'
        '<testcase classname="multi_head_attention_test.T" name="test_b">'
        '<failure message="x"/></testcase>'
        '<testcase classname="multi_head_attention_test.T" name="test_c">'
        '<skipped/></testcase>'
        '<testcase classname="" name="multi_head_attention_test">'
        '<error message="collection"/></testcase>'
        '</testsuite></testsuites>'
    )
    result = runner.parse_junit(suite, report)
    prefix = f"{suite.name}::T::"
    assert result.passed == [prefix + "test_a"]
    assert result.failed == [prefix + "test_b",
                             f"{suite.name}::multi_head_attention_test"]
    assert result.skipped == [prefix + "test_c"]
