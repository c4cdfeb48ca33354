"""What the sub-commands share: argument types, the `--conv` choices and `CommandError`.

An argument type raises `argparse.ArgumentTypeError`, which argparse turns
into a one-line usage error (exit status 2).
"""

import argparse
import json


class CommandError(Exception):
    """A user error the CLI reports in one line."""


def conv_choices():
    """The names `--conv` accepts: every registered convolution method."""
    from keras_effconv.conv_methods import conv_method_names

    return conv_method_names()


def parse_shape(text):
    """A per-sample input shape `"H,W,C"` -> `(H, W, C)` of positive integers."""
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers like 224,224,3, got {text!r}")
    if len(shape) != 3 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected three positive integers like 224,224,3, got {text!r}")
    return shape


def _positive(convert, what):
    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


positive_int = _positive(int, "a positive integer")
positive_int.__doc__ = "An integer >= 1."
positive_float = _positive(float, "a positive number")
positive_float.__doc__ = "A number > 0."


def json_dict(text):
    """A JSON object such as `'{"part": 8}'` -> dict."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON ({error.msg}): {text!r}")
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f'expected a JSON object like \'{{"part": 8}}\', got {text!r}')
    return value
