"""Predicted step time, bytes and memory of a training job, per worker, before it runs.

:func:`predict` builds the job's worker programs (:mod:`pipeline.plan.programs`) from a measured
compute profile, plays them on the network (:mod:`pipeline.plan.simulate`) and reads off:

- the step time (mean over the steady steps, as every worker measures its own) and samples/s;
- the busiest worker's compute per step, and the rest of its step (communication, and waiting on
  a peer or a core);
- payload bytes each worker sends per step (an all-reduce as a ring moves it, as the runs count
  it) and the wire bytes a shaper charges for them (with TCP/IP framing);
- parameter bytes and the memory each worker needs: parameters, gradients, momentum (and DDP's
  gradient buckets), the activations autograd keeps for backward and the batch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

from pipeline.plan.profile import ComputeProfile
from pipeline.plan.programs import SchemePrograms, batch_sizes, scaled_to, shard_sizes
from pipeline.plan.scheme_profile import SchemeProfile
from pipeline.plan.simulate import Network, simulate, wire_bytes
from pipeline.training.job import TrainJob
from pipeline.training.layout import activation_shapes, cross_rank_edges, layout_for

SIMULATED_STEPS = 8
WARMUP_STEPS = 3  # left out: the first steps start with idle links and cores
BYTES_PER_FLOAT = 4


@dataclass(frozen=True)
class Prediction:
    """What one scheme is predicted to do per optimiser step (``modelled``, all of it)."""

    scheme: str
    workers: int
    batch_size: int
    step_s: float
    compute_s: float  # the busiest worker's compute
    waiting_s: float  # the rest of its simulated step: communication, waiting on peers/cores
    payload_bytes_sent_per_worker: float  # the busiest sender's
    wire_bytes_sent_per_worker: float
    max_worker_param_bytes: float
    max_worker_memory_bytes: float
    payload_bytes_sent_by_worker: tuple[float, ...] = ()  # per step, in rank order
    param_bytes_by_worker: tuple[float, ...] = ()
    # the rest of ``step_s`` (measured): what the scheme profile's step held beyond its own
    # simulation, counted with compute (the cores' sharing), not with waiting
    unmodelled_s: float = 0.0

    @property
    def samples_per_s(self) -> float:
        """Global batch over step time."""
        return self.batch_size / self.step_s

    @property
    def bound(self) -> str:
        """``compute`` where the busiest worker mostly computes, else ``network``."""
        return "compute" if self.compute_s >= self.waiting_s else "network"

    def to_dict(self) -> dict[str, float | str]:
        """A JSON-serialisable form, with the derived figures."""
        return asdict(self) | {"samples_per_s": self.samples_per_s, "bound": self.bound}


def predict(job: TrainJob, patch_size: int, profile: ComputeProfile, network: Network,
            scheme_profile: SchemeProfile | None = None,
            profiled_on: Network | None = None) -> Prediction:
    """Predict ``job`` (its scheme, model, batch and settings) on ``network``.

    With ``scheme_profile`` (the job's strategy measured on local processes sharing this
    machine's cores), each worker computes what its process measured per step (the training
    thread and gloo's threads, which copy every message and need a core as much: measured,
    they add 5-50 % to the training thread's CPU, most for hybrid's four processes), and the
    co-run slowdown is not applied again (it is inside the measurement).

    With ``profiled_on`` too (the network the scheme profile ran on:
    :func:`pipeline.plan.scheme_profile.profiled_on`), and workers that share cores as those
    processes did (``network.shared_cores``), the same programs are also simulated there, and
    what the profile's measured step held beyond that simulation (the scheduler switching four
    processes and their gloo threads on two cores, cache misses, the kernel's share of each
    message) is added to the step: ``unmodelled_s``, measured, not modelled.
    """
    built = SchemePrograms(job, profile, patch_size)
    missing = batch_sizes(job) - profile.batch_sizes
    if missing:
        raise ValueError(f"the compute profile lacks batch sizes {sorted(missing)}; measure "
                         "them first (pipeline.plan.profile.load_or_measure)")
    warmup, steps = WARMUP_STEPS, SIMULATED_STEPS
    if job.parallel.scheme == "data_parallel" and job.parallel.sync_every > 1:
        # whole local-SGD periods, in the warm-up and after it: every average counts once
        every = job.parallel.sync_every
        warmup = -(-WARMUP_STEPS // every) * every
        steps = warmup + 2 * every
    programs = built.programs()
    if scheme_profile is not None:
        if len(scheme_profile.cpu_s) != len(programs):
            raise ValueError(f"the scheme profile has {len(scheme_profile.cpu_s)} workers, "
                             f"{job.parallel.scheme} runs {len(programs)}; measure it for this "
                             "job (pipeline.plan.scheme_profile.load_or_measure)")
        programs = [scaled_to(p, cpu) for p, cpu in zip(programs, scheme_profile.compute_s,
                                                        strict=True)]
        network = replace(network, corun_slowdown=())
    elif network.shared_cores:
        network = replace(network, corun_slowdown=tuple(profile.corun_slowdown))
    traces = simulate(programs, network, steps)
    step_times = [t.steady_step_s(warmup) for t in traces]
    busiest = max(range(len(traces)), key=step_times.__getitem__)
    compute = traces[busiest].compute_s / steps
    unmodelled = 0.0
    if scheme_profile is not None and profiled_on is not None and network.shared_cores:
        reference = replace(profiled_on, corun_slowdown=())
        simulated = max(t.steady_step_s(warmup) for t in simulate(programs, reference, steps))
        unmodelled = max(scheme_profile.wall_s) - simulated
    step = max(step_times[busiest] + unmodelled, compute)  # never below its own compute
    sent = max(t.payload_sent for t in traces) / steps
    memory = memory_per_worker(built, profile)
    return Prediction(
        scheme=job.parallel.scheme, workers=len(traces), batch_size=job.batch_size,
        step_s=step, compute_s=compute, waiting_s=max(step_times[busiest] - compute, 0.0),
        payload_bytes_sent_per_worker=sent, wire_bytes_sent_per_worker=wire_bytes(sent),
        max_worker_param_bytes=float(max(memory["param_bytes"])),
        max_worker_memory_bytes=float(max(memory["total_bytes"])),
        payload_bytes_sent_by_worker=tuple(t.payload_sent / steps for t in traces),
        param_bytes_by_worker=tuple(float(b) for b in memory["param_bytes"]),
        unmodelled_s=step - step_times[busiest])


def memory_per_worker(built: SchemePrograms, profile: ComputeProfile) -> dict[str, list[float]]:
    """Each worker's parameter bytes and the training memory it needs at its peak.

    Parameters, their gradients and SGD's momentum buffers (three copies; data parallel adds
    DDP's gradient buckets), the activations autograd keeps for backward for every sample in
    flight (all micro-batches of a GPipe step are), those received from other workers, and the
    indexed batch.
    """
    job = built.job
    parallel = job.parallel
    channels = sum(job.model.channels.values())
    batch_per_sample = channels * built.patch_size ** 2 * BYTES_PER_FLOAT
    units = [u.name for u in built.model.units]
    params, totals = [], []
    if parallel.scheme == "data_parallel":
        for shard in shard_sizes(job.batch_size, parallel.workers):
            own = float(sum(built.param_bytes.values()))
            saved = sum(profile.saved_bytes_per_sample[u] for u in units) * shard
            copies = 4 if parallel.workers > 1 else 3
            params.append(own)
            totals.append(copies * own + saved + batch_per_sample * shard)
        return {"param_bytes": params, "total_bytes": totals}
    layout = layout_for(job.model, parallel, built.model)
    shards = shard_sizes(job.batch_size, layout.replicas)
    shapes = activation_shapes(built.model, built.patch_size)
    edges = cross_rank_edges(built.model, layout)
    for rank in range(layout.world_size):
        replica, local = divmod(rank, layout.ranks_per_replica)
        own_units = layout.placement[local]
        own = float(sum(built.param_bytes[n] for u in own_units for n in built.unit_params[u]))
        received = sum(math.prod(shapes[e.key]) * BYTES_PER_FLOAT for e in edges
                       if e.dst == local)  # held as float32 leaves until backward
        saved = (sum(profile.saved_bytes_per_sample[u] for u in own_units) + received) \
            * shards[replica]
        largest_micro = max(shard_sizes(shards[replica], parallel.micro_batches))
        params.append(own)
        totals.append(3 * own + saved + batch_per_sample * largest_micro)
    return {"param_bytes": params, "total_bytes": totals}
