"""What the sub-commands share: argument types, the choice lists, `CommandError`, networks by name.

An argument type raises `argparse.ArgumentTypeError`, which argparse turns
into a one-line usage error (exit status 2).

Choice lists without Keras: `--conv`, `--model`, `--dataset`, ... list names
defined in modules that import Keras (and so TensorFlow, JAX or torch),
which `--help` must not pay for. `conv_choices()`, `model_names()` and
`module_constant()` take them from the defining module itself: the live
value when that module is already imported (a method registered at run
time included), else read from its source with `ast` without running it
(the registry's `register_conv_method("name", ...)` calls, `MODELS`' keys,
a literal constant), else, should the source not be readable, by importing
it. The names stay defined in one place; `tests/test_cli.py` checks that
the source reading equals the imported values.
"""

import argparse
import ast
import functools
import importlib
import json
import os
import sys


class CommandError(Exception):
    """A user error the CLI reports in one line."""


@functools.lru_cache(maxsize=None)
def _source_tree(module):
    """The parsed source of a `keras_effconv` module, found without importing it (or its package)."""
    import keras_effconv

    base = os.path.join(os.path.dirname(keras_effconv.__file__), *module.split(".")[1:])
    for path in (base + ".py", os.path.join(base, "__init__.py")):
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                return ast.parse(f.read(), path)
    raise LookupError(f"no source for {module}")


def _assigned(tree, name):
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return node.value
    raise LookupError(name)


def module_constant(module, name):
    """`module.name` (a literal tuple/list/str) without importing `module` unless it already is.

    Args:
        module: a `keras_effconv` module, e.g. `"keras_effconv.datasets.prepare"`.
        name: a module-level constant assigned a literal, e.g. `"DATASETS"`.

    Returns:
        The value.
    """
    if module in sys.modules:
        return getattr(sys.modules[module], name)
    try:
        return ast.literal_eval(_assigned(_source_tree(module), name))
    except (LookupError, ValueError, SyntaxError, OSError):
        return getattr(importlib.import_module(module), name)


def model_names():
    """The network names of `keras_effconv.applications.MODELS`, in its order."""
    module = "keras_effconv.applications"
    if module in sys.modules:
        return tuple(sys.modules[module].MODELS)
    try:
        keys = _assigned(_source_tree(module), "MODELS").keys
        return tuple(ast.literal_eval(key) for key in keys)  # a `**spread` key (None) falls back
    except (LookupError, ValueError, SyntaxError, OSError, AttributeError):
        return tuple(importlib.import_module(module).MODELS)


def conv_choices():
    """The names `--conv` accepts: every registered convolution method, in registration order."""
    module = "keras_effconv.conv_methods"
    if module in sys.modules:
        return sys.modules[module].conv_method_names()
    try:
        names = []
        for node in _source_tree(module).body:
            call = node.value if isinstance(node, ast.Expr) else None
            if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "register_conv_method":
                names.append(ast.literal_eval(call.args[0]))
        if names:
            return tuple(names)
    except (LookupError, ValueError, SyntaxError, OSError, IndexError):
        pass
    return importlib.import_module(module).conv_method_names()


def dataset_names():
    """The names `--dataset` accepts (`keras_effconv.datasets.DATASETS`)."""
    return module_constant("keras_effconv.datasets.prepare", "DATASETS")


def network(name, conv=None, conv_config=None, input_shape=None, include_top=True, classes=None):
    """A network by CLI name (`eff_resnet50`, ...) or loaded from a `.keras` file.

    Raises:
        CommandError: for a name that is neither a `MODELS` name nor a `.keras` path.
    """
    if name.endswith(".keras"):
        from keras_effconv._files import load_keras_model

        return load_keras_model(name, argument="model")
    if name not in model_names():
        raise CommandError(f"unknown model {name!r}; choose one of {sorted(model_names())} or pass a .keras file")
    from keras_effconv import applications

    kwargs = {"include_top": include_top}
    if input_shape is not None:
        kwargs["input_shape"] = input_shape
    if classes is not None:
        kwargs["classes"] = classes
    return applications.create(name, conv, conv_config, **kwargs)


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
