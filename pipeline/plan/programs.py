"""Each scheme's optimiser step as the operations every worker performs, in the code's order.

The programs follow :mod:`pipeline.training.strategies` step for step, with the durations of the
compute profile:

- ``data_parallel``: index the shard, forward, loss, backward unit by unit in reverse; each DDP
  gradient bucket is posted for all-reduce as soon as backward has produced its last gradient,
  and the step waits for the last bucket before the optimiser step. Local SGD (``sync_every``)
  all-reduces the parameters every k-th step instead.
- model-parallel schemes: for each micro-batch, index it (every worker does), then each unit of
  the worker in model order, receiving the activations it reads from other workers and sending
  what it produces to the workers that read it; then, micro-batch by micro-batch in reverse, wait
  for the gradients of what was sent, run backward over the worker's units, send the gradients of
  what was received; then replicas all-reduce each part's gradients, and the optimiser steps.

Every worker also pays the step's measured overhead (:meth:`ComputeProfile.overhead`) once.

With a scheme profile (:mod:`pipeline.plan.scheme_profile`: the scheme's real strategy run on
local processes), :func:`scaled_to` scales each worker's compute operations, keeping their
proportions, so that they sum to the CPU time per step that worker measured.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np
import torch

from pipeline.model import LOGITS, MultimodalCNN, input_key
from pipeline.plan.profile import ComputeProfile
from pipeline.plan.simulate import (
    AllReduce,
    Compute,
    Op,
    Program,
    Recv,
    Send,
    WaitAllReduces,
    WaitSends,
)
from pipeline.training.job import TrainJob
from pipeline.training.layout import WIRE_DTYPES, Layout, activation_shapes, layout_for

POWERSGD_MIN_COMPRESSION = 2.0  # PowerSGD leaves a tensor uncompressed below this rate
POWERSGD_START_ITER = 2  # steps of plain all-reduce before PowerSGD (as the strategy sets it)


def shard_sizes(total: int, parts: int) -> list[int]:
    """Sizes of ``parts`` strided shards of ``total`` samples (they differ by at most one)."""
    return [len(range(r, total, parts)) for r in range(parts)]


def gradient_order(model: MultimodalCNN, patch_size: int) -> list[str]:
    """Parameter names in the order backward produces their gradients (one real backward)."""
    order: list[str] = []
    handles = [param.register_post_accumulate_grad_hook(lambda _p, name=name: order.append(name))
               for name, param in model.named_parameters()]
    try:
        inputs = {m: torch.randn(2, c, patch_size, patch_size)
                  for m, c in model.config.channels.items()}
        model(inputs).sum().backward()
    finally:
        for handle in handles:
            handle.remove()
        model.zero_grad(set_to_none=True)
    return order


def ddp_buckets(model: MultimodalCNN, cap_mb: float, patch_size: int) -> list[list[str]]:
    """DDP's gradient buckets after its first step: parameter names, in gradient order.

    After the first step DDP rebuilds its buckets in the order the gradients became ready; a
    bucket closes once it holds at least ``cap_mb`` MiB. (DDP's smaller first bucket applies
    only when no cap is given; the strategy always gives one. The first step runs with one
    bucket.)
    """
    sizes = {n: p.numel() * p.element_size() for n, p in model.named_parameters()}
    buckets, current, size, cap = [], [], 0, int(cap_mb * 1024 * 1024)
    for name in gradient_order(model, patch_size):
        current.append(name)
        size += sizes[name]
        if size >= cap:
            buckets.append(current)
            current, size = [], 0
    if current:
        buckets.append(current)
    return buckets


def powersgd_bytes(shape: tuple[int, ...], rank: int) -> float:
    """Bytes PowerSGD all-reduces for a gradient of ``shape``: its P and Q, or all of it."""
    numel = int(np.prod(shape))
    if len(shape) < 2:
        return numel * 4.0
    rows, cols = shape[0], numel // shape[0]
    r = min(rank, rows, cols)
    compressed = (rows + cols) * r
    return compressed * 4.0 if numel / compressed >= POWERSGD_MIN_COMPRESSION else numel * 4.0


def compute_s(program: Program, step: int = POWERSGD_START_ITER) -> float:
    """Seconds of compute in ``program``'s step ``step`` (a steady one by default)."""
    return sum(op.seconds for op in program(step) if isinstance(op, Compute))


def scaled_to(program: Program, seconds: float) -> Program:
    """``program`` with every compute operation scaled so that a step computes ``seconds``."""
    total = compute_s(program)
    factor = seconds / total if total > 0 else 1.0

    def scaled(step: int) -> Iterator[Op]:
        for op in program(step):
            yield replace(op, seconds=op.seconds * factor) if isinstance(op, Compute) else op

    return scaled


def batch_sizes(job: TrainJob) -> set[int]:
    """The batch sizes a worker computes at under ``job``: the profile must hold them."""
    parallel, batch = job.parallel, job.batch_size
    if parallel.scheme == "data_parallel":
        return set(shard_sizes(batch, parallel.workers))
    layout = layout_for(job.model, parallel)
    return {m for s in shard_sizes(batch, layout.replicas)
            for m in shard_sizes(s, parallel.micro_batches)}


@dataclass
class SchemePrograms:
    """The programs of one training job's workers, and what they are built from."""

    job: TrainJob
    profile: ComputeProfile
    patch_size: int

    @cached_property
    def model(self) -> MultimodalCNN:
        """The network (shapes and parameter names only)."""
        return MultimodalCNN(self.job.model)

    @cached_property
    def unit_params(self) -> dict[str, list[str]]:
        """Parameter names each unit uses."""
        ids = {id(p): n for n, p in self.model.named_parameters()}
        return {u.name: [ids[id(p)] for m in u.modules for p in m.parameters()]
                for u in self.model.units}

    @cached_property
    def param_bytes(self) -> dict[str, int]:
        """Bytes of each parameter."""
        return {n: p.numel() * p.element_size() for n, p in self.model.named_parameters()}

    def programs(self) -> list[Program]:
        """One program per worker (global rank order)."""
        if self.job.parallel.scheme == "data_parallel":
            return [self._data_parallel(rank) for rank in range(self.job.parallel.workers)]
        layout = layout_for(self.job.model, self.job.parallel, self.model)
        return [self._model_parallel(layout, rank) for rank in range(layout.world_size)]

    # data parallel ------------------------------------------------------------------------

    def _data_parallel(self, rank: int) -> Program:
        parallel, profile = self.job.parallel, self.profile
        workers = parallel.workers
        batch = shard_sizes(self.job.batch_size, workers)[rank]
        group = tuple(range(workers))
        units = [u.name for u in self.model.units]
        buckets = ddp_buckets(self.model, parallel.bucket_cap_mb, self.patch_size)
        # the unit after whose backward each bucket is complete
        done_after: dict[str, list[int]] = {}
        order = list(reversed(units))
        for index, bucket in enumerate(buckets):
            last = max(order.index(self._unit_of(name)) for name in bucket)
            done_after.setdefault(order[last], []).append(index)
        shapes = {n: tuple(p.shape) for n, p in self.model.named_parameters()}

        def bucket_bytes(index: int, step: int) -> float:
            names = buckets[index]
            compression = parallel.gradient_compression
            if compression in ("fp16", "bf16"):
                return sum(self.param_bytes[n] for n in names) / 2
            if compression == "powersgd" and step >= POWERSGD_START_ITER:
                return sum(powersgd_bytes(shapes[n], parallel.powersgd_rank) for n in names)
            return float(sum(self.param_bytes[n] for n in names))

        local_sgd = parallel.sync_every > 1 and workers > 1

        def program(step: int) -> Iterator[Op]:
            yield Compute(profile.fetch(batch), "fetch")
            yield Compute(sum(profile.forward(u, batch) for u in units), "forward")
            yield Compute(profile.loss(batch), "loss")
            for unit in order:
                yield Compute(profile.backward(unit, batch), "backward")
                if workers > 1 and not local_sgd:
                    for index in done_after.get(unit, []):
                        yield AllReduce(group, bucket_bytes(index, step), ("bucket", step, index),
                                        post=True)
            if workers > 1 and not local_sgd:
                yield WaitAllReduces()
            yield Compute(profile.optimizer(units), "optimizer")
            yield Compute(profile.overhead(batch), "step overhead")
            if local_sgd and (step + 1) % parallel.sync_every == 0:
                yield AllReduce(group, float(sum(self.param_bytes.values())),
                                ("parameters", step))

        return program

    def _unit_of(self, param: str) -> str:
        return next(u for u, names in self.unit_params.items() if param in names)

    # model parallel -----------------------------------------------------------------------

    def _model_parallel(self, layout: Layout, rank: int) -> Program:
        parallel, profile, model = self.job.parallel, self.profile, self.model
        replica, local = divmod(rank, layout.ranks_per_replica)
        own = [u for u in model.units if layout.rank_of_unit[u.name] == local]
        producer = {k: layout.rank_of_unit[u.name] for u in model.units for k in u.outputs}
        consumers: dict[str, set[int]] = {}
        for unit in model.units:
            for key in unit.inputs:
                consumers.setdefault(key, set()).add(layout.rank_of_unit[unit.name])
        shapes = activation_shapes(model, self.patch_size)
        element = torch.empty(0, dtype=WIRE_DTYPES[parallel.activation_dtype]).element_size()
        per_sample = {k: float(np.prod(s)) * element for k, s in shapes.items()}
        shard = shard_sizes(self.job.batch_size, layout.replicas)[replica]
        micro = shard_sizes(shard, parallel.micro_batches)
        base = replica * layout.ranks_per_replica
        own_names = [u.name for u in own]
        own_bytes = float(sum(self.param_bytes[n] for u in own_names
                              for n in self.unit_params[u]))
        group = tuple(r * layout.ranks_per_replica + local for r in range(layout.replicas))
        reads = {m for m in model.modalities
                 if any(input_key(m) in u.inputs for u in own)}

        def program(step: int) -> Iterator[Op]:
            plan = []
            for index, size in enumerate(micro):
                yield Compute(profile.fetch(size), "fetch")
                env, received, sent = set(), [], []
                for unit in own:
                    for key in unit.inputs:
                        if key in env:
                            continue
                        if key.endswith("/input") and key.removesuffix("/input") in reads:
                            env.add(key)
                            continue
                        yield Recv(base + producer[key], (step, index, key))
                        env.add(key)
                        received.append(key)
                    yield Compute(profile.forward(unit.name, size), "forward")
                    for key in unit.outputs:
                        env.add(key)
                        for dst in sorted(consumers.get(key, set()) - {local}):
                            yield Send(base + dst, per_sample[key] * size, (step, index, key))
                            sent.append((key, dst))
                if LOGITS in {k for u in own for k in u.outputs}:
                    yield Compute(profile.loss(size), "loss")
                plan.append((size, received, sent))
            for index in reversed(range(len(micro))):
                size, received, sent = plan[index]
                for key, dst in sent:
                    yield Recv(base + dst, (step, index, key, "grad"))
                yield Compute(sum(profile.backward(u, size) for u in own_names), "backward")
                for key in received:
                    yield Send(base + producer[key], per_sample[key] * size,
                               (step, index, key, "grad"))
            yield WaitSends()
            if layout.replicas > 1:
                yield AllReduce(group, own_bytes, ("replicas", step, local))
            yield Compute(profile.optimizer(own_names), "optimizer")
            yield Compute(profile.overhead(max(micro)), "step overhead")

        return program
