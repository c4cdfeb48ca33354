"""Argument validation for the whole package: one module, one message form.

Every check raises with Keras' message form, which names the argument, what
is allowed and the value received:

    Invalid value for argument `x`: <what is allowed>. Received: x=<repr>

Bad values raise `ValueError`; `check_type` raises `TypeError` (for callers
that already raise TypeError for a wrong kind of object). Integers are
Python or NumPy integers, never booleans (`True` is not a kernel size);
numbers are any real number except booleans.

This module sits at the bottom of the package's dependency graph: it imports
nothing from `keras_effconv` and no deep-learning framework at import time
(`normalize_data_format` asks Keras for the default only when called).
"""

import numbers

_MISSING = object()


def invalid_value(name, expected, value=_MISSING, received=None, error=ValueError):
    """The exception for a bad argument, in the package's one message form.

    Args:
        name: the argument's name, e.g. `"filters"`.
        expected: what is allowed, e.g. `"expected a positive integer"`
            (no trailing period).
        value: the value received; shown as `name=repr(value)`.
        received: text to show after `Received: ` instead of
            `name=repr(value)`, e.g. `"part=3, filters=8"` when the value
            is wrong only together with another one.
        error: the exception class (default `ValueError`).

    Returns:
        An instance of `error`, to `raise`.

    Example:

    >>> str(invalid_value("part", "expected a positive integer", 0))
    'Invalid value for argument `part`: expected a positive integer. Received: part=0'
    """
    if received is None:
        received = f"{name}={value!r}"
    expected = str(expected).rstrip(".")
    return error(f"Invalid value for argument `{name}`: {expected}. Received: {received}")


def is_int(value):
    """Whether `value` is a Python or NumPy integer (booleans are not)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value):
    """Whether `value` is a real number: int, float or NumPy scalar (booleans are not)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _with_hint(text, hint):
    return text if not hint else f"{text} ({hint})"


def _alternatives(options):
    """`"a"`, `"a or b"`, `"a, b or c"`."""
    options = list(options)
    if len(options) == 1:
        return options[0]
    return ", ".join(options[:-1]) + " or " + options[-1]


def _int_phrase(minimum):
    if minimum is None:
        return "an integer"
    if minimum == 1:
        return "a positive integer"
    return f"an integer >= {minimum}"


def _matches(value, option):
    """`value == option`, without `1 == True` or `"1" == 1`, and safe for arrays."""
    if isinstance(value, str) or isinstance(option, str):
        return isinstance(value, str) and isinstance(option, str) and value == option
    if isinstance(value, bool) != isinstance(option, bool):
        return False
    try:
        return bool(value == option)
    except (TypeError, ValueError):
        return False


def check_int(value, name, minimum=1, allow_none=False, also=(), hint=None):
    """Validates an integer argument and returns it as a Python `int`.

    Args:
        value: the value to check. Python and NumPy integers are accepted,
            booleans are not.
        name: the argument's name (for the message).
        minimum: the smallest allowed value (default 1), or None for no bound.
        allow_none: whether None is allowed (then returned as None).
        also: other values allowed as they are, e.g. `("auto",)`; returned
            unchanged.
        hint: optional reason shown in parentheses after what is allowed.

    Returns:
        `int(value)`, or `value` itself when it is None (with `allow_none`)
        or one of `also`.

    Raises:
        ValueError: for anything else.

    Example:

    >>> check_int(3, "groups")
    3
    >>> check_int("auto", "depth", also=("auto",))
    'auto'
    """
    if value is None and allow_none:
        return None
    for option in also:
        if _matches(value, option):
            return value
    if is_int(value) and (minimum is None or value >= minimum):
        return int(value)
    options = [repr(option) for option in also] + [_int_phrase(minimum)]
    if allow_none:
        options.append("None")
    raise invalid_value(name, _with_hint(f"expected {_alternatives(options)}", hint), value)


def check_positive_int(value, name, allow_none=False):
    """Validates a strictly positive integer argument (`check_int` with `minimum=1`).

    Args:
        value: the value to check (Python or NumPy integer, not a boolean).
        name: the argument's name.
        allow_none: whether None is allowed (then returned as None).

    Returns:
        `int(value)`, or None.

    Raises:
        ValueError: if `value` is not an integer >= 1 (or None when allowed).
    """
    return check_int(value, name, minimum=1, allow_none=allow_none)


def _interval(low, high, low_inclusive, high_inclusive):
    if low is not None and high is not None:
        return f"a number in {'[' if low_inclusive else '('}{low}, {high}{']' if high_inclusive else ')'}"
    if low is not None:
        return f"a number {'>=' if low_inclusive else '>'} {low}"
    if high is not None:
        return f"a number {'<=' if high_inclusive else '<'} {high}"
    return "a number"


def check_number(
    value, name, low=None, high=None, low_inclusive=True, high_inclusive=True, allow_none=False, hint=None
):
    """Validates a real-number argument, optionally within bounds, and returns it as a `float`.

    Args:
        value: the value to check: int, float or NumPy scalar; booleans and
            NaN are rejected.
        name: the argument's name.
        low, high: optional bounds.
        low_inclusive, high_inclusive: whether each bound itself is allowed.
        allow_none: whether None is allowed (then returned as None).
        hint: optional meaning shown in parentheses after what is allowed.

    Returns:
        `float(value)`, or None.

    Raises:
        ValueError: for a non-number or a number outside the bounds.

    Example:

    >>> check_number(0.5, "ratio", low=0, high=1, low_inclusive=False)
    0.5
    """
    if value is None and allow_none:
        return None
    if is_number(value):
        number = float(value)
        # Written so that NaN fails every bound.
        above = low is None or (number >= low if low_inclusive else number > low)
        below = high is None or (number <= high if high_inclusive else number < high)
        if above and below and number == number:
            return number
    options = [_interval(low, high, low_inclusive, high_inclusive)] + (["None"] if allow_none else [])
    raise invalid_value(name, _with_hint(f"expected {_alternatives(options)}", hint), value)


def check_choice(value, name, allowed, allow_none=False, lower=False):
    """Validates that an argument is one of a fixed set of values.

    Strings match only strings and booleans only booleans, so `1` is not
    accepted for `True` nor `"1"` for `1`.

    Args:
        value: the value to check.
        name: the argument's name.
        allowed: the allowed values (shown in the message as a tuple).
        allow_none: whether None is allowed as well (then returned as None).
        lower: compare strings case-insensitively and return them in lower
            case (as Keras does for `padding` and `data_format`); `allowed`
            must then be lower case.

    Returns:
        `value` (lower-cased with `lower=True`), or None.

    Raises:
        ValueError: if `value` is not one of `allowed`.

    Example:

    >>> check_choice("SAME", "padding", ("valid", "same"), lower=True)
    'same'
    """
    allowed = tuple(allowed)
    if value is None and allow_none:
        return None
    candidate = value.lower() if lower and isinstance(value, str) else value
    if any(_matches(candidate, option) for option in allowed):
        return candidate
    expected = f"expected one of {allowed}" + (" or None" if allow_none else "")
    raise invalid_value(name, expected, value)


def check_type(value, name, types, expected):
    """Raises `TypeError` unless `value` is an instance of `types`.

    Args:
        value: the value to check.
        name: the argument's name.
        types: a class or tuple of classes for `isinstance`.
        expected: how the message names them, e.g. `"a keras.Model"`.

    Returns:
        `value`.

    Raises:
        TypeError: naming the argument, what is allowed and the value and
            type received.
    """
    if isinstance(value, types):
        return value
    raise invalid_value(
        name,
        f"expected {expected}",
        received=f"{name}={value!r} of type {type(value).__name__}",
        error=TypeError,
    )


def divisors_message(value):
    """The positive divisors of `value`, as text: `divisors_message(6) == "1, 2, 3, 6"`."""
    return ", ".join(str(d) for d in range(1, value + 1) if value % d == 0)


def check_divides(value, name, total, what, hint=None):
    """Validates that `value` divides `total` (e.g. `groups` divides the channels).

    Args:
        value: a positive integer, already validated.
        name: the argument's name.
        total: the positive integer `value` must divide.
        what: how the message names `total`, e.g. `"filters"` or
            `"input channels"`; the message shows `what=total`.
        hint: optional condition shown in parentheses, e.g.
            `"with secondary_groups=None"`.

    Returns:
        `value`.

    Raises:
        ValueError: listing the divisors of `total` when `value` is not one.
    """
    if total % value:
        raise invalid_value(
            name,
            _with_hint(f"expected a divisor of {what}, one of {divisors_message(total)}", hint),
            received=f"{name}={value}, {what}={total}",
        )
    return value


def normalize_tuple(value, n, name):
    """Like Keras' `standardize_tuple`: an int or `n` ints -> a tuple of `n` positive ints.

    Args:
        value: a positive integer (repeated `n` times) or an iterable of `n`
            positive integers (Python or NumPy, not booleans).
        n: the length of the result.
        name: the argument's name.

    Returns:
        A tuple of `n` Python ints.

    Raises:
        ValueError: for anything else.

    Example:

    >>> normalize_tuple(3, 2, "kernel_size")
    (3, 3)
    """
    if is_int(value):
        values = (value,) * n
    else:
        try:
            values = tuple(value)
        except TypeError:
            values = ()
    if len(values) != n or not all(is_int(v) and v > 0 for v in values):
        raise invalid_value(
            name, f"expected a positive integer or a tuple of {n} positive integers", value
        )
    return tuple(int(v) for v in values)


_PADDINGS = ("valid", "same")
_DATA_FORMATS = ("channels_last", "channels_first")


def normalize_padding(padding):
    """Validates `padding` (`"valid"` or `"same"`, any case) and returns it in lower case.

    Raises:
        ValueError: for any other value.
    """
    return check_choice(padding, "padding", _PADDINGS, lower=True)


def normalize_data_format(data_format):
    """Validates `data_format` and returns it in lower case.

    Args:
        data_format: `"channels_last"`, `"channels_first"` (any case) or None,
            which means `keras.config.image_data_format()`.

    Returns:
        `"channels_last"` or `"channels_first"`.

    Raises:
        ValueError: for any other value.
    """
    value = check_choice(data_format, "data_format", _DATA_FORMATS, allow_none=True, lower=True)
    if value is None:
        import keras  # only here: this module must stay cheap to import

        return keras.config.image_data_format()
    return value


def check_input_shape(layer, input_shape):
    """Validates a rank-4 image input of `layer` and returns its channel count.

    Args:
        layer: the layer being built; its `name` and `data_format` are read.
        input_shape: the input shape, batch dimension included.

    Returns:
        int, the number of channels (on the axis `layer.data_format` names).

    Raises:
        ValueError: if the shape is not rank 4 or its channel count is unknown.
    """
    input_shape = tuple(input_shape)
    if len(input_shape) != 4:
        raise ValueError(
            f"Layer '{layer.name}' ({type(layer).__name__}) expects rank-4 "
            "inputs (batch, height, width, channels) or (batch, channels, "
            f"height, width). Received: input_shape={input_shape}"
        )
    axis = -1 if layer.data_format == "channels_last" else 1
    channels = input_shape[axis]
    if channels is None:
        raise ValueError(
            f"Layer '{layer.name}' ({type(layer).__name__}) needs a known "
            f"channel dimension (axis {axis} for data_format='{layer.data_format}'). "
            f"Received: input_shape={input_shape}"
        )
    return int(channels)
