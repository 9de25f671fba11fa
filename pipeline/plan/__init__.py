"""The cost model: predict every scheme's step time, bytes and memory before training.

:func:`plan` is the entry point: from ``params.yaml`` (typed), it measures (or loads from the
cache) the model's compute profile on this machine and the per-message latency, then predicts
each scheme (:mod:`pipeline.plan.predict`) on the configured cluster. With ``scheme_profiles``
(``python -m pipeline.plan``), each scheme's workers compute what its real strategy measured on
local processes (:mod:`pipeline.plan.scheme_profile`, cached), and on cores shared as there,
the step those processes measured beyond the model's simulation of them is carried over: the
model validated by ``benchmarks/plan_accuracy.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.config import ALL_SCHEMES, Params
from pipeline.model import ModelConfig
from pipeline.plan import inputs, machine_probe, profile, scheme_profile
from pipeline.plan.predict import Prediction, predict
from pipeline.plan.programs import batch_sizes
from pipeline.plan.simulate import Network
from pipeline.training.job import TrainJob


@dataclass
class Plan:
    """The jobs, the measured profile, the cluster setting and the model's inputs."""

    params: Params
    config: ModelConfig
    config_source: str
    patch_size: int
    jobs: dict[str, TrainJob]
    profile: profile.ComputeProfile
    setting: inputs.PlanSetting
    schemes: dict[str, scheme_profile.SchemeProfile] | None = None  # per job, measured
    profiled_on: Network | None = None  # where ``schemes`` were measured: loopback, this machine

    def predict(self, link_rate: str | None = None, network: Network | None = None
                ) -> list[Prediction]:
        """Every scheme's prediction at ``link_rate`` (default: the setting's)."""
        network = network or self.setting.network(link_rate)
        return [predict(job, self.patch_size, self.profile, network,
                        self.schemes[name] if self.schemes else None, self.profiled_on)
                for name, job in self.jobs.items()]


def plan(params: Params, prepared: Path, schemes: list[str] | None = None,
         cache_dir: Path | None = None, batch_size: int | None = None,
         scheme_profiles: bool = False) -> Plan:
    """Measure what the model needs (cached) and set up the predictions of ``schemes``.

    ``scheme_profiles``: also run each scheme's strategy on local processes (seconds, the first
    time for a model configuration and machine; cached) and predict from what its workers
    measured; without, from the per-unit profile and the co-run slowdown (cheaper, less exact).
    """
    if batch_size is not None:
        params = params.model_copy(update={"train": params.train.model_copy(
            update={"batch_size": batch_size})})
    config, patch, source = inputs.model_config(params, prepared)
    jobs = inputs.jobs(params, config, list(schemes or ALL_SCHEMES), str(prepared))
    threads = next(iter(jobs.values())).threads_per_worker
    sizes = set().union(*(batch_sizes(j) for j in jobs.values()))
    probe = machine_probe.load_or_measure(cache_dir)
    setting = inputs.setting(params, probe)
    measured = profile.load_or_measure(config, patch, sizes, threads, cache_dir,
                                       shared_cores=setting.shared_cores)
    measured_schemes, profiled_on = None, None
    if scheme_profiles:
        names = list(jobs)
        measured_schemes = dict(zip(names, scheme_profile.load_or_measure(
            [jobs[n] for n in names], patch, cache_dir), strict=True))
        profiled_on = scheme_profile.profiled_on(probe)
    return Plan(params, config, source, patch, jobs, measured, setting, measured_schemes,
                profiled_on)


__all__ = ["Plan", "Prediction", "plan", "predict"]
