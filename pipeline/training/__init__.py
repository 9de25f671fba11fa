"""Training: the rank-aware worker loop and the parallelisation schemes that launch it on Spark."""

from pipeline.training.job import TrainJob, TrainResult
from pipeline.training.schemes import SCHEMES, TrainingScheme, scheme_for

__all__ = ["SCHEMES", "TrainJob", "TrainResult", "TrainingScheme", "scheme_for"]
