"""Networks built from efficient convolutions, mirroring `keras.applications`."""

import functools
import inspect

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
    "default_conv",
    "decode_predictions",
    "preprocess_input",
]
