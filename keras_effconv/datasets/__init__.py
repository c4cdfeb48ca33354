"""Offline-first dataset loaders."""

from keras_effconv.datasets.fashion_mnist import fashion_mnist
