"""Offline-first dataset loaders."""

from keras_effconv.datasets.cifar10 import cifar10
from keras_effconv.datasets.fashion_mnist import fashion_mnist
from keras_effconv.datasets.image_folder import image_folder
from keras_effconv.datasets.prepare import DATASETS
from keras_effconv.datasets.prepare import TrainingData
from keras_effconv.datasets.prepare import load_dataset
