"""Training recipes with plain `model.fit` (see `recipe`)."""

from keras_effconv.training.distribute import data_parallel_scope
from keras_effconv.training.precise_bn import PreciseBatchNormalization
from keras_effconv.training.precise_bn import recompute_batchnorm_statistics
from keras_effconv.training.recipe import TrainConfig
from keras_effconv.training.recipe import train
from keras_effconv.training.separable import expand_decompose_finetune

__all__ = [
    "PreciseBatchNormalization",
    "TrainConfig",
    "data_parallel_scope",
    "expand_decompose_finetune",
    "recompute_batchnorm_statistics",
    "train",
]
