"""The argument checks: one rule for integers everywhere (ints and NumPy
integers pass; floats, even whole, and bools do not), Keras's message."""

import math

import numpy as np
import pytest

from keras_attn_runtime import checks


@pytest.mark.parametrize("value", [1, 7, np.int64(3), np.uint8(2)])
def test_positive_int_accepts_integers(value):
    result = checks.positive_int(value, "x")
    assert result == value and type(result) is int


@pytest.mark.parametrize("value", [0, -1, 3.0, 2.5, True, "3", None,
                                   np.float32(2.0), np.bool_(True)])
def test_positive_int_rejects_the_rest(value):
    with pytest.raises(ValueError) as info:
        checks.positive_int(value, "num_heads")
    assert str(info.value) == (
        "Received an invalid value for argument `num_heads`, expected a "
        f"positive integer. Received: num_heads={value!r}"
    )


def test_other_checks():
    assert checks.positive_int(None, "x", allow_none=True) is None
    assert checks.non_negative_int(0, "x") == 0
    with pytest.raises(ValueError, match="non-negative integer. Received: "
                                         "x=-1"):
        checks.non_negative_int(-1, "x")
    with pytest.raises(ValueError, match="an integer. Received: seed=1.0"):
        checks.integer(1.0, "seed")
    assert checks.positive_number(0.5, "x") == 0.5
    for bad in (0, -1.0, True, float("nan")):
        with pytest.raises(ValueError, match="positive number"):
            checks.positive_number(bad, "x")
    assert checks.rate(0, "dropout") == 0.0
    with pytest.raises(ValueError, match=r"float in \[0, 1\)"):
        checks.rate(1.0, "dropout")
    with pytest.raises(ValueError, match=r"number in \(0, 1\]"):
        checks.number_in(0, "top_p", 0, 1, low_open=True)
    with pytest.raises(ValueError, match="finite number >= 0"):
        checks.number_in(math.inf, "t", 0, math.inf, high_open=True)
    with pytest.raises(ValueError, match="expected a bool. Received: x=1"):
        checks.boolean(1, "x")
    with pytest.raises(ValueError, match=r"one of \('a', 'b'\)"):
        checks.one_of("c", "x", ("a", "b"))
    with pytest.raises(TypeError, match=r"texts\[1\]=3"):
        checks.text_list(["a", 3], "texts")
    with pytest.raises(TypeError, match="texts='ab'"):
        checks.text_list("ab", "texts")


def test_token_id_checks():
    assert checks.token_ids(np.array([1, 2], np.int32), 5, "ids") == [1, 2]
    assert checks.token_ids((1, np.int64(4)), 5, "ids") == [1, 4]
    with pytest.raises(TypeError, match="ids=\\[1.5\\]"):
        checks.token_ids([1.5], 5, "ids")
    with pytest.raises(TypeError, match="ids=\\[True\\]"):
        checks.token_ids([True], 5, "ids")
    with pytest.raises(ValueError, match=r"outside \[0, 5\)"):
        checks.token_ids(np.array([5]), 5, "ids")
    with pytest.raises(TypeError, match="integer token id"):
        checks.token_id(2.0, 5, "stop_token_id")
    assert checks.short(list(range(100))).endswith("...")
    assert len(checks.short(list(range(100)))) == 80
