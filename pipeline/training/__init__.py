"""Training: the parallelisation schemes, the rank-aware worker loop, traffic accounting."""

from pipeline.training.job import Fault, ParallelSettings, TrainJob, TrainResult
from pipeline.training.schemes import SCHEMES, fit, modelled_payload_per_step, world_size

__all__ = ["SCHEMES", "Fault", "ParallelSettings", "TrainJob", "TrainResult",
           "modelled_payload_per_step", "fit", "world_size"]
