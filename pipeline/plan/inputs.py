"""From ``params.yaml`` to what the cost model takes: each scheme's job, the network, the budget."""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict
from urllib.parse import urlparse

from pipeline.config import Params
from pipeline.data.dataset import PreparedDataset
from pipeline.data.prepared_store import MANIFEST_FILE
from pipeline.emulated_network import parse_rate
from pipeline.errors import ParamsError
from pipeline.model import ModelConfig
from pipeline.objective import SINGLE_LABEL
from pipeline.plan.machine_probe import MachineProbe
from pipeline.plan.simulate import Network
from pipeline.training.job import TrainJob
from pipeline.training.trainer import parallel_settings


class _Scene(TypedDict):
    channels: dict[str, int]
    num_classes: int
    task: str


EMBEDDED_SCENE: _Scene = {
    "channels": {"optical": 4, "sar": 2}, "num_classes": 6, "task": SINGLE_LABEL}
_MEMORY = re.compile(r"^(\d+(?:\.\d+)?)([kmgt])b?$", re.IGNORECASE)


def parse_memory(text: str) -> int:
    """Bytes of a JVM-style size: ``"1500m"``, ``"2g"``."""
    match = _MEMORY.match(text.strip())
    if match is None:
        raise ValueError(f"memory size {text!r} is not a size such as '1500m' or '2g'")
    return int(float(match.group(1)) * 1024 ** "kmgt".index(match.group(2).lower()) * 1024)


@dataclass(frozen=True)
class PlanSetting:
    """The cluster a plan is for: links, latency, cores, threads and memory per worker."""

    link_rate: str | None  # None: unshaped (loopback)
    latency_s: float
    latency_source: str  # "measured" or "params.yaml"
    shared_cores: int | None
    threads_per_worker: int
    worker_memory_bytes: int | None
    copy_bytes_s: float
    duplex_bytes_s: float
    time_slice_s: float | None = None  # the shared cores' scheduler slice (measured)

    def network(self, link_rate: str | None = None) -> Network:
        """The network at ``link_rate`` (default: this setting's)."""
        rate = link_rate if link_rate is not None else self.link_rate
        return Network(rate_bytes_s=parse_rate(rate) / 8 if rate else None,
                       latency_s=self.latency_s, copy_bytes_s=self.copy_bytes_s,
                       duplex_bytes_s=self.duplex_bytes_s, shared_cores=self.shared_cores,
                       time_slice_s=self.time_slice_s if self.shared_cores else None)


def model_config(params: Params, prepared: Path) -> tuple[ModelConfig, int, str]:
    """The network's shape; its inputs, classes and patch from the prepared data if there is one.

    Returns the configuration, the patch size and where they came from. Without prepared data,
    the embedded scene's (synthetic source) modalities and ``prepare.patch_size`` are assumed.

    Raises:
        ParamsError: no prepared data and a source other than the embedded scene.
    """
    shape = params.model.shape()
    if (prepared / MANIFEST_FILE).is_file():
        dataset = PreparedDataset.open(prepared)
        return (ModelConfig(channels=dataset.channels, num_classes=len(dataset.class_names),
                            task=dataset.task, **shape),
                int(dataset.manifest["patch_size"]), str(prepared))
    if params.ingest.source != "synthetic":
        raise ParamsError("params.yaml", "ingest.source",
                          f"the plan needs the modalities and classes of your data, and "
                          f"{prepared} holds no prepared dataset",
                          "run `dvc repro prepare` first (seconds for a scene)")
    return (ModelConfig(**EMBEDDED_SCENE, **shape), params.prepare.patch_size,
            "the embedded scene (not prepared yet)")


def jobs(params: Params, config: ModelConfig, schemes: list[str],
         data_dir: str = "") -> dict[str, TrainJob]:
    """The job each scheme would train on ``data_dir``, as the train stage would build it."""
    train = params.train
    return {scheme: TrainJob(data_dir=data_dir, model=config, batch_size=train.batch_size,
                             epochs=train.epochs, learning_rate=train.learning_rate,
                             momentum=train.momentum, seed=train.seed,
                             parallel=parallel_settings(train, scheme),
                             threads_per_worker=_threads(params))
            for scheme in schemes}


def _threads(params: Params) -> int:
    return int(params.spark.conf.get("spark.task.cpus", "1"))


def runs_here(master: str) -> bool:
    """Whether Spark's workers run on this machine: a local master, or one at a local address."""
    if master.startswith("local"):
        return True
    host = urlparse(master).hostname
    if not host:
        return False
    try:
        address = socket.gethostbyname(host)
        with socket.socket() as probe:
            probe.bind((address, 0))  # only an address of this machine can be bound
        return True
    except OSError:
        return False


def setting(params: Params, probe: MachineProbe | None) -> PlanSetting:
    """The plan's cluster from ``params.yaml`` (``plan``, ``cluster`` and ``spark``).

    ``probe`` supplies the latency and the unshaped copy rate measured on this machine
    (``None``: unlimited copying, and ``plan.latency_us`` must be set).
    """
    plan = params.plan
    rate = plan.link_rate
    if rate is None and params.cluster.network == "emulated":
        rate = params.cluster.link_rate
    if plan.latency_us is not None:
        latency, source = plan.latency_us / 1e6, "params.yaml"
    elif probe is not None:
        latency, source = probe.latency_s, "measured"
    else:
        raise ValueError("a latency is needed: set plan.latency_us or measure one "
                         "(pipeline.plan.machine_probe)")
    cores = plan.shared_cores
    if cores is None:
        cores = os.cpu_count() if runs_here(params.spark.master) else 0
    memory = plan.worker_memory or params.spark.conf.get("spark.executor.memory")
    if memory is None and not params.spark.master.startswith("local"):
        memory = params.cluster.memory
    return PlanSetting(link_rate=rate, latency_s=latency, latency_source=source,
                       shared_cores=cores or None, threads_per_worker=_threads(params),
                       worker_memory_bytes=parse_memory(memory) if memory else None,
                       copy_bytes_s=probe.copy_bytes_s if probe else float("inf"),
                       duplex_bytes_s=probe.duplex_bytes_s if probe else float("inf"),
                       time_slice_s=probe.time_slice_s if probe else None)

