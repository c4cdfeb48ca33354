"""Tests for `keras_effconv._validation`: the one argument-validation module."""

import ast
import pathlib
import re

import numpy as np
import pytest

import keras

from keras_effconv import _validation as v

# "Invalid value for argument `x`: <what is allowed>. Received: <what was received>"
FORM = re.compile(r"^Invalid value for argument `(?P<name>[^`]+)`: (?P<expected>.+)\. Received: (?P<received>.+)$", re.S)


def message(excinfo):
    text = str(excinfo.value)
    match = FORM.match(text)
    assert match, f"not in the one message form: {text!r}"
    return match


def test_module_sits_at_the_bottom_of_the_dependency_graph():
    path = pathlib.Path(v.__file__)
    tree = ast.parse(path.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "no relative imports"
            imported.add(node.module)
    assert not any(name.split(".")[0] == "keras_effconv" for name in imported), imported
    # Only keras, imported lazily inside normalize_data_format, besides the stdlib.
    top_level = {alias.name for node in tree.body if isinstance(node, ast.Import) for alias in node.names}
    assert "keras" not in top_level and "tensorflow" not in top_level


def test_invalid_value_message_form():
    error = v.invalid_value("filters", "expected a positive integer.", 0)
    assert isinstance(error, ValueError)
    assert str(error) == "Invalid value for argument `filters`: expected a positive integer. Received: filters=0"
    error = v.invalid_value("part", "expected a divisor", received="part=3, filters=8", error=TypeError)
    assert isinstance(error, TypeError) and str(error).endswith("Received: part=3, filters=8")
    assert "Received: x='a'" in str(v.invalid_value("x", "no", "a"))


@pytest.mark.parametrize("value", [1, 7, np.int64(3), np.int32(2), np.uint8(5)])
def test_check_int_accepts_python_and_numpy_ints(value):
    result = v.check_int(value, "n")
    assert result == int(value) and type(result) is int


@pytest.mark.parametrize("value", [True, False, np.bool_(True), 2.0, 1.5, "3", None, [1], np.array([1, 2])])
def test_check_int_rejects_non_integers_and_bools(value):
    with pytest.raises(ValueError) as excinfo:
        v.check_int(value, "n", minimum=None)
    match = message(excinfo)
    assert match["name"] == "n" and match["expected"] == "expected an integer"
    assert match["received"] == f"n={value!r}"


def test_check_int_bounds_none_and_extra_values():
    assert v.check_int(0, "warmup", minimum=0) == 0
    with pytest.raises(ValueError, match=r"expected an integer >= 0\. Received: warmup=-1$"):
        v.check_int(-1, "warmup", minimum=0)
    with pytest.raises(ValueError, match=r"expected an integer >= 2\. Received: block_size=1$"):
        v.check_int(1, "block_size", minimum=2)
    with pytest.raises(ValueError, match=r"expected a positive integer\. Received: groups=0$"):
        v.check_int(0, "groups")
    assert v.check_int(-5, "offset", minimum=None) == -5
    assert v.check_int(None, "steps", allow_none=True) is None
    with pytest.raises(ValueError, match=r"expected a positive integer or None \(a reason\)\. Received: steps=0"):
        v.check_int(0, "steps", allow_none=True, hint="a reason")
    with pytest.raises(ValueError, match="expected a positive integer. Received: steps=None"):
        v.check_int(None, "steps")
    assert v.check_int("auto", "depth", also=("auto",)) == "auto"
    assert v.check_int(np.int64(2), "depth", also=("auto",)) == 2
    with pytest.raises(ValueError, match=r"expected 'auto' or a positive integer\. Received: depth='deep'"):
        v.check_int("deep", "depth", also=("auto",))
    # `also` matches strings only to strings and never 1 to True.
    with pytest.raises(ValueError):
        v.check_int(True, "depth", minimum=None, also=(1,))


def test_check_positive_int():
    assert v.check_positive_int(np.int16(4), "part") == 4
    assert v.check_positive_int(None, "secondary_groups", allow_none=True) is None
    for bad in (0, -3, True, 2.0, "2"):
        with pytest.raises(ValueError, match=r"`part`: expected a positive integer\. Received: part="):
            v.check_positive_int(bad, "part")


@pytest.mark.parametrize("value", [0.5, 1, np.float32(0.25), np.float64(1.0), np.int64(1)])
def test_check_number_accepts_numbers_in_range(value):
    result = v.check_number(value, "ratio", low=0, high=1, low_inclusive=False)
    assert result == float(value) and type(result) is float


@pytest.mark.parametrize("value", [0, 0.0, 1.5, -0.1, float("nan"), True, "half", None, np.bool_(True)])
def test_check_number_rejects_bad_values(value):
    with pytest.raises(ValueError) as excinfo:
        v.check_number(value, "ratio", low=0, high=1, low_inclusive=False, hint="a share")
    match = message(excinfo)
    assert match["expected"] == "expected a number in (0, 1] (a share)"
    assert match["received"] == f"ratio={value!r}"


def test_check_number_bounds_and_none():
    assert v.check_number(None, "energy", low=0, high=1, allow_none=True) is None
    assert v.check_number(float("inf"), "x") == float("inf")
    with pytest.raises(ValueError, match=r"expected a number > 0\. Received: gamma=0$"):
        v.check_number(0, "gamma", low=0, low_inclusive=False)
    with pytest.raises(ValueError, match=r"expected a number <= 1 or None\. Received: p=2"):
        v.check_number(2, "p", high=1, allow_none=True)
    with pytest.raises(ValueError, match=r"expected a number in \[0, 1\)\. Received: p=1"):
        v.check_number(1, "p", low=0, high=1, high_inclusive=False)
    with pytest.raises(ValueError, match=r"expected a number\. Received: p=nan"):
        v.check_number(float("nan"), "p")


def test_check_choice():
    assert v.check_choice("svd", "method", ("svd", "data")) == "svd"
    assert v.check_choice("SAME", "padding", ("valid", "same"), lower=True) == "same"
    assert v.check_choice(None, "data_format", ("channels_last",), allow_none=True) is None
    with pytest.raises(ValueError) as excinfo:
        v.check_choice("pca", "method", ("svd", "data"))
    match = message(excinfo)
    assert match["expected"] == "expected one of ('svd', 'data')" and match["received"] == "method='pca'"
    with pytest.raises(ValueError, match=r"expected one of \('a',\) or None\. Received: x=3"):
        v.check_choice(3, "x", ["a"], allow_none=True)
    # No cross-type matches, and arrays do not crash the comparison.
    for value, allowed in [(1, (True,)), (True, (1,)), ("1", (1,)), (1, ("1",)), (np.array([1, 2]), (1,))]:
        with pytest.raises(ValueError):
            v.check_choice(value, "x", allowed)
    assert v.check_choice(2, "x", (1, 2)) == 2


def test_check_type_raises_type_error():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    assert v.check_type(model, "model", keras.Model, "a keras.Model") is model
    with pytest.raises(TypeError) as excinfo:
        v.check_type("resnet50", "model", keras.Model, "a keras.Model")
    match = message(excinfo)
    assert match["expected"] == "expected a keras.Model" and match["received"] == "model='resnet50' of type str"


def test_check_divides_lists_the_divisors():
    assert v.check_divides(4, "part", 8, "filters") == 4
    with pytest.raises(ValueError) as excinfo:
        v.check_divides(3, "part", 8, "filters", hint="because")
    match = message(excinfo)
    assert match["expected"] == "expected a divisor of filters, one of 1, 2, 4, 8 (because)"
    assert match["received"] == "part=3, filters=8"
    assert v.divisors_message(12) == "1, 2, 3, 4, 6, 12"
    assert v.divisors_message(1) == "1"


def test_normalize_tuple():
    assert v.normalize_tuple(3, 2, "kernel_size") == (3, 3)
    assert v.normalize_tuple([np.int64(1), 2], 2, "strides") == (1, 2)
    assert all(type(x) is int for x in v.normalize_tuple(np.int32(2), 2, "strides"))
    for bad in (0, (3, 0), (3,), (3, 3, 3), True, (True, 3), (1.0, 2), "33", None, {"a": 1}):
        with pytest.raises(ValueError) as excinfo:
            v.normalize_tuple(bad, 2, "kernel_size")
        match = message(excinfo)
        assert match["expected"] == "expected a positive integer or a tuple of 2 positive integers"
        assert match["received"] == f"kernel_size={bad!r}"


def test_normalize_padding_and_data_format():
    assert v.normalize_padding("VALID") == "valid"
    with pytest.raises(ValueError, match=r"`padding`: expected one of \('valid', 'same'\)\. Received: padding='full'"):
        v.normalize_padding("full")
    with pytest.raises(ValueError, match="Received: padding=1"):
        v.normalize_padding(1)
    assert v.normalize_data_format("Channels_First") == "channels_first"
    assert v.normalize_data_format(None) == keras.config.image_data_format()
    with pytest.raises(ValueError, match=r"or None\. Received: data_format='NHWC'"):
        v.normalize_data_format("NHWC")


def test_check_input_shape():
    layer = keras.layers.Layer(name="probe")
    layer.data_format = "channels_first"
    assert v.check_input_shape(layer, (None, 3, 8, 8)) == 3
    layer.data_format = "channels_last"
    assert v.check_input_shape(layer, [2, 8, 8, 5]) == 5
    with pytest.raises(ValueError, match=r"'probe' \(Layer\) expects rank-4.*Received: input_shape=\(2, 8\)"):
        v.check_input_shape(layer, (2, 8))
    with pytest.raises(ValueError, match=r"known channel dimension.*Received: input_shape=\(2, 8, 8, None\)"):
        v.check_input_shape(layer, (2, 8, 8, None))


def test_is_int_and_is_number():
    assert v.is_int(3) and v.is_int(np.int8(3)) and not v.is_int(True) and not v.is_int(3.0)
    assert v.is_number(3) and v.is_number(np.float16(1)) and not v.is_number(False) and not v.is_number("1")
