"""Networks built from efficient convolutions, mirroring `keras.applications`."""

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
from keras_effconv.applications.imagenet import decode_predictions
from keras_effconv.applications.imagenet import preprocess_input
from keras_effconv.applications.resnet import EffResNet50
from keras_effconv.applications.resnet import EffResNet101
from keras_effconv.applications.resnet import EffResNet152
from keras_effconv.applications.vgg import EffVGG16

# Lower-case names used by the command line (`keras-effconv profile eff_resnet50`).
MODELS = {
    "eff_resnet20": EffResNet20,
    "eff_resnet56": EffResNet56,
    "eff_resnet50": EffResNet50,
    "eff_resnet101": EffResNet101,
    "eff_resnet152": EffResNet152,
    "eff_vgg16": EffVGG16,
    # The SIC paper's networks (their own knobs instead of `conv`/`conv_config`).
    "factorized_resnet20": FactorizedResNet20,
    "factorized_resnet56": FactorizedResNet56,
    "factorized_resnet50": FactorizedResNet50,
    "factorized_resnet101": FactorizedResNet101,
    "factorized_vgg16": FactorizedVGG16,
}

__all__ = [
    "ConversionReport",
    "EffConvModel",
    "EffResNet101",
    "EffResNet152",
    "EffResNet20",
    "EffResNet50",
    "EffResNet56",
    "EffVGG16",
    "FactorizedResNet101",
    "FactorizedResNet20",
    "FactorizedResNet50",
    "FactorizedResNet56",
    "FactorizedVGG16",
    "MODELS",
    "convert",
    "decode_predictions",
    "preprocess_input",
]
