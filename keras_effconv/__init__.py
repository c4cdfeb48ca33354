"""keras_effconv: efficient convolutions as exact multi-backend Keras 3 layers."""

from keras_effconv import applications
from keras_effconv import datasets
from keras_effconv import decompose
from keras_effconv import export
from keras_effconv import layers
from keras_effconv import profiling
from keras_effconv.applications import convert
from keras_effconv.profiling import profile
from keras_effconv.version import __version__
