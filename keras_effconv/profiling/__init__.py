"""Cost accounting: analytic MACs/params per layer, measured latency and training speed."""

from keras_effconv.profiling.latency import measure_latency
from keras_effconv.profiling.latency import measure_training_speed
from keras_effconv.profiling.latency import time_interleaved
from keras_effconv.profiling.profiler import LayerCost
from keras_effconv.profiling.profiler import Profile
from keras_effconv.profiling.profiler import profile

__all__ = ["LayerCost", "Profile", "measure_latency", "measure_training_speed", "profile", "time_interleaved"]
