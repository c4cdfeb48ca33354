"""Networks built from efficient convolutions, mirroring `keras.applications`."""

import difflib
import fnmatch
import functools
import inspect

import keras

from keras_effconv import _validation

from keras_effconv.applications._common import EffConvModel
from keras_effconv.applications.cifar import EffResNet20
from keras_effconv.applications.cifar import EffResNet56
from keras_effconv.applications.conversion import ConversionReport
from keras_effconv.applications.conversion import convert
from keras_effconv.applications.factorized import FactorizedResNet20
from keras_effconv.applications.factorized import FactorizedResNet50
from keras_effconv.applications.factorized import FactorizedResNet56
from keras_effconv.applications.factorized import FactorizedResNet101
from keras_effconv.applications.factorized import FactorizedVGG16
from keras_effconv.applications.igc import IGCResNet18
from keras_effconv.applications.igc import IGCResNetCIFAR
from keras_effconv.applications.imagenet import decode_predictions
from keras_effconv.applications.imagenet import preprocess_input
from keras_effconv.applications.resnet import EffResNet18
from keras_effconv.applications.resnet import EffResNet34
from keras_effconv.applications.resnet import EffResNet50
from keras_effconv.applications.resnet import EffResNet101
from keras_effconv.applications.resnet import EffResNet152
from keras_effconv.applications.shufflenet import ShuffleNetV2
from keras_effconv.applications.vgg import EffVGG16

# Lower-case names used by the command line (`keras-effconv profile eff_resnet50`).
MODELS = {
    "eff_resnet20": EffResNet20,
    "eff_resnet56": EffResNet56,
    "eff_resnet18": EffResNet18,
    "eff_resnet34": EffResNet34,
    "eff_resnet50": EffResNet50,
    "eff_resnet101": EffResNet101,
    "eff_resnet152": EffResNet152,
    "eff_vgg16": EffVGG16,
    # The CIFAR VGG-16 (`style="cifar"`) for 28-32 px data, e.g. in the training recipe.
    "eff_vgg16_cifar": functools.partial(EffVGG16, style="cifar", classes=10),
    # The SIC paper's networks (their own knobs instead of `conv`/`conv_config`).
    "factorized_resnet20": FactorizedResNet20,
    "factorized_resnet56": FactorizedResNet56,
    "factorized_resnet50": FactorizedResNet50,
    "factorized_resnet101": FactorizedResNet101,
    "factorized_vgg16": FactorizedVGG16,
    "factorized_vgg16_cifar": functools.partial(FactorizedVGG16, style="cifar", classes=10),
    # IGCV1's networks (knobs `variant`, `regular` in `conv_config`).
    "igc_resnet18": IGCResNet18,
    "igc_resnet_cifar": IGCResNetCIFAR,
    # ShuffleNet V2 (a standard network; its knobs, e.g. `width_multiplier`, go in `conv_config`).
    "shufflenet_v2": ShuffleNetV2,
    "shufflenet_v2_cifar": functools.partial(ShuffleNetV2, style="cifar", classes=10),
}

# The network each fixed-design name is compared with (`create(name, conv="standard")`).
STANDARD_COUNTERPARTS = {
    "factorized_resnet20": "eff_resnet20",
    "factorized_resnet56": "eff_resnet56",
    "factorized_resnet50": "eff_resnet50",
    "factorized_resnet101": "eff_resnet101",
    "factorized_vgg16": "eff_vgg16",
    "factorized_vgg16_cifar": "eff_vgg16_cifar",
}


# Networks designed around one method (no `conv` argument): name -> that method.
FIXED_DESIGN_METHODS = {
    **{name: "factorized" for name in STANDARD_COUNTERPARTS},
    "igc_resnet18": "igc",
    "igc_resnet_cifar": "igc",
}


_METHOD_LABELS = {"factorized": "SIC", "igc": "IGC"}


def _has_conv_argument(name):
    return "conv" in inspect.signature(MODELS[name]).parameters


def default_conv(name):
    """The conv method a network of `MODELS` uses when none is given.

    The default of its `conv` argument; `"factorized"` for the SIC networks
    and `"standard"` for the other fixed designs (ShuffleNet V2), which have
    none.
    """
    if name in FIXED_DESIGN_METHODS:
        return FIXED_DESIGN_METHODS[name]
    if not _has_conv_argument(name):
        return "standard"
    return inspect.signature(MODELS[name]).parameters["conv"].default


def create(name, conv=None, conv_config=None, **kwargs):
    """Builds a network of `MODELS` by name, the way the CLI and the training recipe do.

    `Eff*` networks take `conv` and `conv_config`. The SIC paper's
    `factorized_*` networks are built from SIC layers by design: `conv` must
    be `None` or `"factorized"`, and `conv_config` holds their knobs (e.g.
    `{"grid": (1, 8), "window": (1, 2)}`); `conv="standard"` builds their
    standard counterpart (`STANDARD_COUNTERPARTS`), the network they are
    measured against. IGCV1's `igc_resnet*` networks likewise take
    `conv="igc"` and their knobs (`{"variant": "L24M2"}`); `conv="standard"`
    builds the regular ResNet of about equal parameters (`regular=True`).
    Standard fixed designs (`shufflenet_v2*`) take
    `conv=None` or `"standard"` and their knobs (`{"width_multiplier": 0.5}`)
    in `conv_config`.

    Args:
        name: a key of `MODELS`.
        conv: a registered conv method name, or None for the network's default.
        conv_config: the method's arguments (`Eff*`) or the knobs
            (`factorized_*`), or None.
        **kwargs: keras.applications arguments (`input_shape`, `classes`, ...).

    Returns:
        A `keras_effconv.applications.EffConvModel`.

    Raises:
        ValueError: for an unknown `name`, a `conv` other than
            `"factorized"`/`"standard"` for a `factorized_*` network, or
            other than `"standard"` for a standard fixed design.

    Example:

    >>> model = create("factorized_resnet20", conv_config={"sic_units": 2}, input_shape=(28, 28, 1))
    >>> model.get_layer("stack1_block1_1_conv").num_units
    2
    """
    if name not in MODELS:
        raise ValueError(f"Invalid value for argument `name`: expected one of {sorted(MODELS)}. Received: name={name!r}")
    if name in FIXED_DESIGN_METHODS:
        method = FIXED_DESIGN_METHODS[name]
        if conv == "standard":
            if name in STANDARD_COUNTERPARTS:
                return MODELS[STANDARD_COUNTERPARTS[name]](conv="standard", **kwargs)
            return MODELS[name](**{**(conv_config or {}), "regular": True}, **kwargs)
        if conv not in (None, method):
            counterpart = STANDARD_COUNTERPARTS.get(name, "its regular counterpart")
            raise ValueError(
                f"Invalid value for argument `conv`: model {name!r} is built from {_METHOD_LABELS[method]} layers "
                f"by design; "
                f"expected None, {method!r} (its knobs go in `conv_config`) or 'standard' "
                f"({counterpart!r}). Received: conv={conv!r}"
            )
        return MODELS[name](**(conv_config or {}), **kwargs)
    if not _has_conv_argument(name):
        if conv not in (None, "standard"):
            raise ValueError(
                f"Invalid value for argument `conv`: model {name!r} is a standard network with a fixed design; "
                f"expected None or 'standard' (its knobs go in `conv_config`). Received: conv={conv!r}"
            )
        return MODELS[name](**(conv_config or {}), **kwargs)
    if conv is not None:
        kwargs["conv"] = conv
    return MODELS[name](conv_config=conv_config, **kwargs)


# timm's argument names a timm user may try, and what keras_effconv calls them.
_TIMM_ARGUMENTS = {
    "in_chans": "keras' `input_shape`, e.g. input_shape=(224, 224, 1)",
    "global_pool": "keras' `pooling` ('avg' or 'max', with include_top=False)",
    "checkpoint_path": "keras' `weights`, the path of a weights file",
    "out_indices": "`feature_levels`, e.g. feature_levels=('P3', 'P4', 'P5')",
    "pretrained_cfg": "nothing: no pretrained weights exist",
}


def list_models(pattern=None):
    """The names `create_model` accepts, sorted, like timm's `list_models`.

    Listing the names builds nothing; they are the keys of `MODELS`.

    Args:
        pattern: None for every name, a shell-style wildcard matched
            against the whole name (`fnmatch`, case-insensitive), e.g.
            `"*resnet*"`, or a list/tuple of them (a name matching any is
            listed).

    Returns:
        A sorted list of names; empty when nothing matches.

    Raises:
        ValueError: if `pattern` is not None, a string or a list/tuple of
            strings.

    Example:

    >>> list_models("eff_resnet5*")
    ['eff_resnet50', 'eff_resnet56']
    >>> list_models(["*vgg16_cifar", "shufflenet*"])
    ['eff_vgg16_cifar', 'factorized_vgg16_cifar', 'shufflenet_v2', 'shufflenet_v2_cifar']
    """
    names = sorted(MODELS)
    if pattern is None:
        return names
    patterns = [pattern] if isinstance(pattern, str) else pattern
    if not isinstance(patterns, (list, tuple)) or not all(isinstance(p, str) for p in patterns):
        raise _validation.invalid_value(
            "pattern", "expected None, a wildcard string such as '*resnet*' or a list of them", pattern
        )
    return [n for n in names if any(fnmatch.fnmatchcase(n, p.lower()) for p in patterns)]


def _check_model_name(name):
    if isinstance(name, str) and name in MODELS:
        return name
    close = difflib.get_close_matches(name, MODELS, n=3) if isinstance(name, str) else []
    hint = f"; closest: {', '.join(map(repr, close))}" if close else ""
    raise _validation.invalid_value("name", f"expected one of {list_models()} (see `list_models()`){hint}", name)


def _feature_extractor(model, feature_levels):
    levels = sorted(model.pyramid_outputs, key=lambda level: int(level[1:]))
    if feature_levels is None:
        feature_levels = levels
    elif not isinstance(feature_levels, (list, tuple)) or not feature_levels or any(
        level not in levels for level in feature_levels
    ):
        raise _validation.invalid_value(
            "feature_levels", f"expected None or a non-empty list of levels of {model.name!r} among {levels}",
            feature_levels,
        )
    outputs = {level: model.pyramid_outputs[level] for level in feature_levels}
    return keras.Model(model.input, outputs, name=model.name)


def create_model(
    name,
    pretrained=False,
    *,
    conv=None,
    conv_config=None,
    weights=None,
    num_classes=None,
    features_only=False,
    feature_levels=None,
    **kwargs,
):
    """Builds a network of `list_models()` by name, like timm's `create_model`.

    A timm/kimm-style front door to the applications: it validates the
    arguments, then builds through `create(name, conv, conv_config, ...)`,
    as the CLI and the training recipe do. Keras' argument names are the
    native ones (`classes`, `input_shape`, `include_top`, `pooling`,
    `weights`, `classifier_activation`, `name`); timm's `num_classes` is
    accepted as an alias of `classes`, and `features_only` returns a
    multi-scale feature extractor.

    Args:
        name: a name from `list_models()`, e.g. `"eff_resnet50"`.
        pretrained: must be False: no pretrained weights exist for these
            networks and nothing is ever downloaded. Pass `weights=` the
            path of a file saved with `model.save_weights(...)` instead.
        conv: the conv method replacing the standard convolutions (a name
            of `keras_effconv.conv_methods.conv_method_names()`), or None
            for the network's default (`default_conv(name)`). For the
            fixed designs (`factorized_*`, `igc_*`, `shufflenet_v2*`) only
            their own method or `"standard"` (their standard counterpart),
            as in `create`.
        conv_config: the method's arguments, or the fixed design's knobs
            (e.g. `{"variant": "L24M2"}`), or None.
        weights: None (random initialization) or the path of a weights file
            of the network built with the same arguments (`include_top` and
            `classes` included, also with `features_only=True`).
        num_classes: timm's name for keras' `classes`: the number of
            classes of the classifier. `0` means no classifier, as in timm:
            `include_top=False` and `pooling="avg"` (unless given), so the
            model returns pooled features.
        features_only: if True, return a `keras.Model` with the same input
            whose output is a dict `{level: feature map}` of the network's
            `pyramid_outputs` (level `"P{i}"` has stride `2**i`), like
            timm's `features_only` and keras-hub backbones. The network is
            built with `include_top=False` unless `include_top` is given
            (e.g. to load a classifier's `weights`); the head is dropped.
        feature_levels: with `features_only=True`, which levels to output
            (e.g. `("P3", "P4", "P5")`); None for all of them.
        **kwargs: the network's other keras.applications arguments
            (`input_shape`, `include_top`, `pooling`, `classes`, ...) and
            the fixed designs' knobs.

    Returns:
        A `keras_effconv.applications.EffConvModel`, or with
        `features_only=True` a `keras.Model` with dict outputs.

    Raises:
        ValueError: for an unknown `name` (listing the names), `pretrained`
            other than False, `num_classes` that is not an integer >= 0 or
            disagrees with `classes` (or `include_top=True` with
            `num_classes=0`), an argument the network does not take (naming
            it and listing the accepted ones), `feature_levels` that are not
            levels of the network (listing them) or given without
            `features_only=True`, and whatever `create` and the network
            reject (`conv`, `input_shape`, `weights`, ...).

    Example:

    >>> model = create_model("eff_resnet20", conv="standard", num_classes=5, input_shape=(32, 32, 3))
    >>> model.output_shape
    (None, 5)
    >>> features = create_model("eff_resnet20", conv="standard", features_only=True, input_shape=(32, 32, 3))
    >>> {level: tuple(tensor.shape) for level, tensor in features.output.items()}
    {'P0': (None, 32, 32, 16), 'P1': (None, 16, 16, 32), 'P2': (None, 8, 8, 64)}
    """
    name = _check_model_name(name)
    if pretrained is not False and pretrained is not None:
        raise _validation.invalid_value(
            "pretrained",
            "expected False: keras_effconv has no pretrained weights and never downloads any; pass "
            "`weights=` the path of a file saved with `model.save_weights(...)`",
            pretrained,
        )
    target = STANDARD_COUNTERPARTS[name] if conv == "standard" and name in STANDARD_COUNTERPARTS else name
    allowed = sorted(set(inspect.signature(MODELS[target]).parameters) - {"conv", "conv_config", "weights"})
    for key in kwargs:
        if key not in allowed:
            hint = f" ({key!r} is {_TIMM_ARGUMENTS[key]})" if key in _TIMM_ARGUMENTS else ""
            raise _validation.invalid_value(
                key, f"create_model({name!r}) takes no argument {key!r}; its arguments are {allowed}{hint}",
                kwargs[key],
            )
    if num_classes is not None:
        num_classes = _validation.check_int(num_classes, "num_classes", minimum=0)
        if "classes" in kwargs and kwargs["classes"] != num_classes:
            raise _validation.invalid_value(
                "num_classes", "expected the same value as `classes` (its keras name) or only one of them",
                received=f"num_classes={num_classes!r}, classes={kwargs['classes']!r}",
            )
        if num_classes == 0:
            if kwargs.get("include_top", False):
                raise _validation.invalid_value(
                    "num_classes", "expected a positive integer with include_top=True (0 means no classifier)",
                    received=f"num_classes=0, include_top={kwargs['include_top']!r}",
                )
            kwargs["include_top"] = False
            kwargs.setdefault("pooling", "avg")
        else:
            kwargs["classes"] = num_classes
    if not isinstance(features_only, bool):
        raise _validation.invalid_value("features_only", "expected True or False", features_only)
    if feature_levels is not None and not features_only:
        raise _validation.invalid_value(
            "feature_levels", "expected None unless features_only=True", feature_levels
        )
    if features_only:
        kwargs.setdefault("include_top", False)
    model = create(name, conv, conv_config, weights=weights, **kwargs)
    if features_only:
        return _feature_extractor(model, feature_levels)
    return model


__all__ = [
    "ConversionReport",
    "EffConvModel",
    "EffResNet101",
    "EffResNet152",
    "EffResNet18",
    "EffResNet20",
    "EffResNet34",
    "EffResNet50",
    "EffResNet56",
    "EffVGG16",
    "FactorizedResNet101",
    "FactorizedResNet20",
    "FactorizedResNet50",
    "FactorizedResNet56",
    "FactorizedVGG16",
    "FIXED_DESIGN_METHODS",
    "IGCResNet18",
    "IGCResNetCIFAR",
    "MODELS",
    "STANDARD_COUNTERPARTS",
    "ShuffleNetV2",
    "convert",
    "create",
    "create_model",
    "default_conv",
    "decode_predictions",
    "list_models",
    "preprocess_input",
]
