"""Seeded layer fuzzing against independent references (issue 17).

For every public layer, configurations drawn from a fixed seed (`fuzzing.py`:
filters, kernel sizes 1 to 5 incl. even ones, strides 1/2, "same"/"valid",
dilation, the method's own arguments, biases, activations, odd input sizes
and width == filters) must either

- run, with a channels_last output equal to the NumPy reference of the
  documented math, a channels_first twin (same weights) equal to it
  transposed, output shapes equal to `compute_output_shape`, and, for the
  linear layers, `keras.ops.conv` with `dense_kernel()` giving the same
  output; or
- be refused with our own validation: a `ValueError`/`TypeError` whose
  message is ours ("Invalid value for argument ..." or "Layer '<name>' ...").

Counted per layer: `ran`, `clean_errors`, `wrong` (a result, shape or
format twin that differs, or a refusal by the channels_first twin only),
`leaks` (any other exception: a backend's error or another type) and
`misjudged` (the layer accepted what its documentation forbids, or refused
a documented-valid configuration). Each test prints its counts (also
without `-s`) and fails unless wrong, leaks and misjudged are all 0.

The default run fuzzes the first `DEFAULT_CONFIGS` configurations of every
layer; `-m slow` runs `FULL_CONFIGS` (the same seed, so a superset).
"""

import collections
import inspect

import numpy as np
import pytest

from keras import ops

import reference
from conftest import BACKEND, randomize
from fuzzing import ACTIVATIONS, LAYERS

SEED = 17
DEFAULT_CONFIGS = 12
FULL_CONFIGS = 120
RTOL = 1e-4  # of max(|reference|, 1): float32 layers against a float64 reference

CLEAN_ERRORS = (ValueError, TypeError)


def _clean(error, layer_name):
    """Whether `error` is our own validation: the right type and one of our message forms."""
    message = str(error)
    return type(error) in CLEAN_ERRORS and (
        message.startswith("Invalid value for argument") or message.startswith(f"Layer '{layer_name}'")
    )


def _mismatch(actual, expected):
    """None when `actual` equals `expected` within RTOL, else a description."""
    if actual.shape != expected.shape:
        return f"shape {actual.shape} != reference {expected.shape}"
    scale = max(float(np.abs(expected).max(initial=0.0)), 1.0)
    error = float(np.abs(actual - expected).max(initial=0.0))
    if not error <= RTOL * scale:  # also NaN
        return f"max abs error {error:.3g} > {RTOL * scale:.3g}"
    return None


def _first(shape):
    return (shape[0], shape[3], shape[1], shape[2])


def _refusal(error, layer_name, case, label, twin=False):
    text = f"{label}: {type(error).__name__}: {str(error)[:300]}"
    if not _clean(error, layer_name):
        return "leak", text
    if twin:
        return "wrong", f"{text} (channels_first refused what channels_last ran)"
    if not case.problems:
        return "misjudged", f"{text} (refused a documented-valid configuration)"
    return "clean", None


def _dense_output(layer, x, kwargs):
    """`keras.ops.conv` with `dense_kernel()`, then the bias and activation in NumPy."""
    geometry = {k: kwargs[k] for k in ("strides", "padding", "dilation_rate") if k in kwargs}
    y = reference.to_numpy(ops.conv(x, layer.dense_kernel(), **geometry))
    if layer.bias is not None:
        y = y + reference.to_numpy(layer.bias)
    return ACTIVATIONS[kwargs.get("activation")](y)


def _apply(layer, x):
    """`layer(x)`; on JAX inside one `jax.jit`, as Keras runs JAX models (eagerly, JAX
    compiles every operation anew for every new shape: the default run took 3x longer)."""
    if BACKEND == "jax":
        import jax

        return jax.jit(layer)(x)
    return layer(x)


def run_config(name, index):
    """Draws configuration `index` of layer `name`, runs it; returns (outcome, detail)."""
    spec = LAYERS[name]
    rng = np.random.default_rng([SEED, list(LAYERS).index(name), index])
    case = spec.case(rng)
    x = rng.standard_normal(case.shape).astype("float32")
    label = f"{name} config {index}: {case.kwargs}, input {case.shape}"
    layer_name = f"fuzz_{index}"
    # The weights are drawn below: skip the random initializers (on JAX each new shape compiles one).
    init = {"kernel_initializer": "zeros"} if "kernel_initializer" in inspect.signature(spec.cls).parameters else {}
    try:
        last = spec.cls(**case.kwargs, **init, data_format="channels_last", name=layer_name)
        last.build(case.shape)
        randomize(last, rng, scale=0.5)
        y_last = reference.to_numpy(_apply(last, x))
    except Exception as error:  # noqa: BLE001 - classifying every exception is the point
        return _refusal(error, layer_name, case, label)
    if case.problems:
        return "misjudged", f"{label}: accepted although {case.problems}"

    problems = []
    expected = spec.reference(last, x.astype(np.float64), case.kwargs)
    if tuple(last.compute_output_shape(case.shape)) != y_last.shape:
        problems.append(f"compute_output_shape {last.compute_output_shape(case.shape)} != output {y_last.shape}")
    mismatch = _mismatch(y_last, expected)
    if mismatch:
        problems.append(f"channels_last vs NumPy reference: {mismatch}")
    if spec.linear:
        mismatch = _mismatch(y_last, _dense_output(last, x, case.kwargs))
        if mismatch:
            problems.append(f"layer vs keras.ops.conv with dense_kernel(): {mismatch}")

    twin_name = f"{layer_name}_cf"
    try:
        first = spec.cls(**case.kwargs, **init, data_format="channels_first", name=twin_name)
        first.build(_first(case.shape))
        first.set_weights(last.get_weights())
        y_first = reference.to_numpy(_apply(first, np.transpose(x, (0, 3, 1, 2))))
    except Exception as error:  # noqa: BLE001
        return _refusal(error, twin_name, case, label, twin=True)
    if tuple(first.compute_output_shape(_first(case.shape))) != y_first.shape:
        problems.append(f"channels_first compute_output_shape != output {y_first.shape}")
    mismatch = _mismatch(np.transpose(y_first, (0, 2, 3, 1)), y_last)
    if mismatch:
        problems.append(f"channels_first vs transposed channels_last: {mismatch}")
    if problems:
        return "wrong", f"{label}: " + "; ".join(problems)
    return "ran", None


def fuzz(name, count):
    counts = collections.Counter()
    details = []
    for index in range(count):
        outcome, detail = run_config(name, index)
        counts[outcome] += 1
        if detail:
            details.append(f"[{outcome}] {detail}")
    line = (
        f"fuzz {name} on {BACKEND}: configs={count} ran={counts['ran']} clean_errors={counts['clean']} "
        f"wrong={counts['wrong']} leaks={counts['leak']} misjudged={counts['misjudged']}"
    )
    return line, counts, details


def _check(name, count, capsys):
    line, counts, details = fuzz(name, count)
    with capsys.disabled():
        print(f"\n{line}")
    assert not details, line + "\n" + "\n".join(details[:12])
    # A fuzz that only ever hits validation would prove nothing about the results.
    assert counts["ran"] >= count // 3, line


@pytest.mark.parametrize("name", list(LAYERS))
def test_fuzz_subset(name, capsys):
    _check(name, DEFAULT_CONFIGS, capsys)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(LAYERS))
def test_fuzz_full(name, capsys):
    _check(name, FULL_CONFIGS, capsys)
