"""Training recipes with plain `model.fit` (see `recipe`)."""

from keras_effconv.training.distribute import data_parallel_scope
from keras_effconv.training.recipe import TrainConfig
from keras_effconv.training.recipe import train

__all__ = ["TrainConfig", "data_parallel_scope", "train"]
