"""Training: the parallelisation schemes, the rank-aware worker loop, traffic accounting."""

from pipeline.training.job import Fault, ParallelSettings, TrainJob, TrainResult
from pipeline.training.schemes import SCHEMES, expected_bytes_per_step, fit, world_size

__all__ = ["SCHEMES", "Fault", "ParallelSettings", "TrainJob", "TrainResult",
           "expected_bytes_per_step", "fit", "world_size"]
