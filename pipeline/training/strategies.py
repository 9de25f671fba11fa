"""What one worker does in one optimiser step, per parallelisation scheme.

A strategy owns the worker's share of the model and its optimiser. The epoch loop in
:mod:`pipeline.training.worker` is the same for every scheme: it hands each strategy the global
batch, and each strategy takes its own share of it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, cast

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks, powerSGD_hook
from torch.nn.parallel import DistributedDataParallel

from pipeline.data.dataset import PatchSplit, TrainingSplit
from pipeline.model import LOGITS, MultimodalCNN, predict
from pipeline.objective import correct_and_total, decide, per_sample_loss
from pipeline.training.batches import shard
from pipeline.training.comm import Comm
from pipeline.training.job import TrainJob
from pipeline.training.layout import Layout, layout_for
from pipeline.training.layout_runner import LayoutRunner

VALIDATION_CHUNK = 512


def build_model(job: TrainJob) -> MultimodalCNN:
    """The initial model: identical on every worker because it is built from the job's seed."""
    torch.manual_seed(job.seed)
    return MultimodalCNN(job.model)


def _grad(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor.grad``, which backward has set."""
    assert tensor.grad is not None
    return tensor.grad


class Strategy(ABC):
    """One worker's part of training under a scheme."""

    def __init__(self, job: TrainJob, rank: int, world_size: int, comm: Comm,
                 patch_size: int | None = None) -> None:
        """``patch_size``: the inputs' patch (default: the prepared data's, ``job.data_dir``)."""
        self.job, self.rank, self.world_size, self.comm = job, rank, world_size, comm
        self.patch_size = patch_size

    @property
    @abstractmethod
    def parameters(self) -> list[nn.Parameter]:
        """The parameters this worker holds and updates."""

    @property
    def input_modalities(self) -> list[str] | None:
        """The modalities whose patches this worker reads (``None``: every one)."""
        return None

    def param_bytes(self) -> int:
        """Bytes of the parameters this worker holds."""
        return sum(p.numel() * p.element_size() for p in self.parameters)

    @abstractmethod
    def step(self, train: TrainingSplit, batch: np.ndarray) -> tuple[float, int]:
        """One optimiser step on global batch ``batch``.

        Returns (sum of losses, samples) seen by this worker's loss (zero on workers that
        compute no loss).
        """

    @abstractmethod
    def correct_predictions(self, val: PatchSplit) -> tuple[float, float]:
        """(correct, total) on ``val`` as counted by this worker (zero where it counts none)."""

    @abstractmethod
    def local_state(self) -> dict[str, torch.Tensor]:
        """This worker's entries of the full model's state dict.

        Empty where it holds a copy that another worker already contributes.
        """

    @property
    @abstractmethod
    def named_parameters(self) -> dict[str, nn.Parameter]:
        """This worker's parameters by their name in the full model's state dict."""

    @property
    @abstractmethod
    def optimizer(self) -> torch.optim.Optimizer:
        """The optimiser of this worker's parameters."""

    def checkpoint_state(self) -> dict[str, Any]:
        """What this worker must save to resume exactly: its parameters and optimiser state."""
        return {"params": {k: p.detach().clone() for k, p in self.named_parameters.items()},
                "optimizer": self.optimizer.state_dict()}

    @torch.no_grad()
    def load_checkpoint_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`checkpoint_state` saved."""
        for name, param in self.named_parameters.items():
            param.copy_(state["params"][name])
        self.optimizer.load_state_dict(state["optimizer"])


POWERSGD_WARMUP_STEPS = 2  # PowerSGD all-reduces uncompressed gradients for this many steps first


class DataParallelStrategy(Strategy):
    """A full replica; DDP all-reduces gradients through a counted communication hook.

    With ``sync_every = k > 1`` (local SGD), gradients are not synchronised; parameters are
    averaged every ``k`` steps instead.
    """

    def __init__(self, job: TrainJob, rank: int, world_size: int, comm: Comm,
                 patch_size: int | None = None) -> None:
        super().__init__(job, rank, world_size, comm, patch_size)
        self.model = build_model(job)
        self.net: nn.Module = self.model
        settings = job.parallel
        if world_size > 1:
            # Every worker built the same weights from the seed: no start-up broadcast needed.
            self.net = DistributedDataParallel(self.model, init_sync=False,
                                               bucket_cap_mb=settings.bucket_cap_mb)
            self.net.register_comm_hook(*self._hook(settings.gradient_compression))
        self._optimizer = torch.optim.SGD(self.model.parameters(), lr=job.learning_rate,
                                          momentum=job.momentum)
        self.steps = 0

    def _hook(self, compression: str) -> tuple[Any, Callable[..., Any]]:
        hooks: dict[str, Callable[..., torch.futures.Future[torch.Tensor]]] = {
            "none": default_hooks.allreduce_hook, "fp16": default_hooks.fp16_compress_hook,
            "bf16": default_hooks.bf16_compress_hook, "powersgd": powerSGD_hook.powerSGD_hook}
        inner = hooks[compression]
        state = (powerSGD_hook.PowerSGDState(
            process_group=None, matrix_approximation_rank=self.job.parallel.powersgd_rank,
            start_powerSGD_iter=POWERSGD_WARMUP_STEPS, random_seed=self.job.seed)
            if compression == "powersgd"
            else None)
        comm = self.comm
        comm.attribute_all_reduce("gradients")

        # Unannotated: DDP compares a hook's annotations with its types at runtime, and
        # `from __future__ import annotations` turns them into strings it rejects.
        def counted_hook(hook_state, bucket):  # type: ignore[no-untyped-def]  # noqa: ANN001, ANN202
            comm.bucket_ready()
            return inner(hook_state, bucket)  # in flight while backward goes on

        return state, counted_hook

    @property
    def parameters(self) -> list[nn.Parameter]:
        """The whole model."""
        return list(self.model.parameters())

    @property
    def named_parameters(self) -> dict[str, nn.Parameter]:
        """The whole model, by name."""
        return dict(self.model.named_parameters())

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """SGD over the whole replica."""
        return self._optimizer

    def checkpoint_state(self) -> dict[str, Any]:
        """The replica, its optimiser, and the step count that paces local SGD."""
        return super().checkpoint_state() | {"steps": self.steps}

    def load_checkpoint_state(self, state: dict[str, Any]) -> None:
        """Restore the replica, its optimiser and the step count."""
        super().load_checkpoint_state(state)
        self.steps = int(state["steps"])

    def step(self, train: TrainingSplit, batch: np.ndarray) -> tuple[float, int]:
        """Forward and backward on this worker's shard; gradients averaged by DDP."""
        inputs, labels = train.batch(shard(batch, self.rank, self.world_size))
        self.optimizer.zero_grad(set_to_none=True)
        local_sgd = self.job.parallel.sync_every > 1 and self.world_size > 1
        task = self.job.model.task
        if local_sgd:
            with cast(DistributedDataParallel, self.net).no_sync():  # local SGD: world > 1
                loss = per_sample_loss(self.net(inputs), labels, task).mean()
                loss.backward()
        else:
            loss = per_sample_loss(self.net(inputs), labels, task).mean()
            loss.backward()  # returns once DDP's last gradient bucket is reduced
            self.comm.add_exposed_time()
        self.optimizer.step()
        self.steps += 1
        if local_sgd and self.steps % self.job.parallel.sync_every == 0:
            self._average_parameters()
        return loss.item() * len(labels), len(labels)

    @torch.no_grad()
    def _average_parameters(self) -> None:
        flat = torch.cat([p.detach().flatten() for p in self.parameters])
        self.comm.all_reduce(flat, "parameters")
        flat /= self.world_size
        offset = 0
        for p in self.parameters:
            p.copy_(flat[offset:offset + p.numel()].view_as(p))
            offset += p.numel()

    def correct_predictions(self, val: PatchSplit) -> tuple[float, float]:
        """Rank 0 evaluates its replica; the others count nothing."""
        if self.rank != 0:
            return 0.0, 0.0
        return correct_and_total(predict(self.model, val.inputs), val.labels)

    def local_state(self) -> dict[str, torch.Tensor]:
        """Rank 0's replica (all replicas are equal)."""
        if self.rank != 0:
            return {}
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}


class ModelParallelStrategy(Strategy):
    """The units of this worker's local rank in a :class:`Layout`; activations cross by p2p.

    Each global batch is sharded over replicas, and each shard split into micro-batches that
    flow through the ranks GPipe-style: all forwards, then all backwards in reverse order, the
    gradients accumulating; replicas then all-reduce each part's gradients, and every worker steps
    its own optimiser.
    """

    def __init__(self, job: TrainJob, rank: int, world_size: int, comm: Comm,
                 patch_size: int | None = None) -> None:
        super().__init__(job, rank, world_size, comm, patch_size)
        model = build_model(job)
        self.layout: Layout = layout_for(job.model, job.parallel, model)
        if self.layout.world_size != world_size:
            raise RuntimeError(f"{job.parallel.scheme} needs {self.layout.world_size} workers, "
                               f"{world_size} were started")
        self.runner = LayoutRunner(model, self.layout, rank, comm,
                                   patch_size or _patch_size(job),
                                   job.parallel.activation_dtype)
        mine = {id(p) for u in self.runner.units for m in u.modules for p in m.parameters()}
        self.named = {k: p for k, p in model.named_parameters() if id(p) in mine}
        self._optimizer = torch.optim.SGD(list(self.named.values()), lr=job.learning_rate,
                                          momentum=job.momentum)
        # Every worker creates every replica group, in the same order (a collective call).
        self.replica_group = None
        if self.layout.replicas > 1:
            for local in range(self.layout.ranks_per_replica):
                ranks = [r * self.layout.ranks_per_replica + local
                         for r in range(self.layout.replicas)]
                group = dist.new_group(ranks)
                if local == self.runner.local_rank:
                    self.replica_group = group

    @property
    def input_modalities(self) -> list[str] | None:
        """The modalities read by this worker's units (its branches): none if it holds none."""
        return sorted({key.removesuffix("/input") for unit in self.runner.units
                       for key in unit.inputs if key.endswith("/input")})

    @property
    def parameters(self) -> list[nn.Parameter]:
        """This worker's units' parameters."""
        return list(self.named.values())

    @property
    def named_parameters(self) -> dict[str, nn.Parameter]:
        """This worker's units' parameters, by name."""
        return self.named

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """SGD over this worker's parameters."""
        return self._optimizer

    def step(self, train: TrainingSplit, batch: np.ndarray) -> tuple[float, int]:
        """GPipe schedule over this replica's shard of ``batch``."""
        own = shard(batch, self.runner.replica, self.layout.replicas)
        micro_batches = np.array_split(own, self.job.parallel.micro_batches)
        works: list[dist.Work] = []
        saved = []
        loss_sum, seen = 0.0, 0
        for micro, index in enumerate(micro_batches):
            inputs, labels = train.batch(index)
            env, received, sent = self.runner.forward(inputs, len(index), micro, "activations",
                                                      works)
            loss = None
            if self.runner.produces_logits:
                total = per_sample_loss(env[LOGITS], labels, self.job.model.task).sum()
                loss = total / len(own)
                loss_sum += total.item()
                seen += len(labels)
            saved.append((env, received, sent, loss))
        for micro in reversed(range(len(micro_batches))):
            env, received, sent, loss = saved[micro]
            tensors, grads = [], []
            if loss is not None:
                tensors.append(loss)
                grads.append(torch.ones_like(loss))
            incoming: dict[str, torch.Tensor] = {}
            for key, dst in sent:
                buffer = torch.empty_like(env[key], dtype=self.runner.wire)
                self.comm.recv(buffer, self.runner.global_rank(dst), "activation_gradients",
                               self.runner.tag(key, micro, backward=True))
                incoming[key] = incoming.get(key, 0) + buffer.float()
            for key, grad in incoming.items():
                tensors.append(env[key])
                grads.append(grad)
            if tensors:
                torch.autograd.backward(tensors, grads)
            for key in received:
                works.append(self.comm.send(
                    _grad(env[key]).to(self.runner.wire),
                    self.runner.global_rank(self.runner.producer[key]), "activation_gradients",
                    self.runner.tag(key, micro, backward=True)))
        self.comm.wait(works)
        if self.replica_group is not None:
            self._average_gradients()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_sum, seen

    @torch.no_grad()
    def _average_gradients(self) -> None:
        params = self.parameters
        flat = torch.cat([_grad(p).flatten() for p in params])
        self.comm.all_reduce(flat, "gradients", group=self.replica_group)
        flat /= self.layout.replicas
        offset = 0
        for p in params:
            _grad(p).copy_(flat[offset:offset + p.numel()].view_as(p))
            offset += p.numel()

    @torch.no_grad()
    def correct_predictions(self, val: PatchSplit) -> tuple[float, float]:
        """Replica 0 runs the validation split through its ranks; the loss rank counts."""
        if self.runner.replica != 0:
            return 0.0, 0.0
        correct = total = 0.0
        works: list[dist.Work] = []
        for micro, start in enumerate(range(0, len(val), VALIDATION_CHUNK)):
            index = np.arange(start, min(start + VALIDATION_CHUNK, len(val)))
            inputs, labels = val.batch(index)
            env, _, _ = self.runner.forward(inputs, len(index), micro, "validation", works)
            if self.runner.produces_logits:
                right, count = correct_and_total(decide(env[LOGITS], self.job.model.task),
                                                 labels)
                correct += right
                total += count
        self.comm.wait(works)
        return correct, total

    def local_state(self) -> dict[str, torch.Tensor]:
        """This rank's parameters, from replica 0 only (the replicas are equal)."""
        if self.runner.replica != 0:
            return {}
        return {k: p.detach().clone() for k, p in self.named.items()}


def _patch_size(job: TrainJob) -> int:
    from pipeline.data.dataset import PreparedDataset

    return int(PreparedDataset.open(job.data_dir).manifest["patch_size"])


STRATEGIES: dict[str, type[Strategy]] = {
    "data_parallel": DataParallelStrategy,
    "branch_parallel": ModelParallelStrategy,
    "pipeline_parallel": ModelParallelStrategy,
    "hybrid": ModelParallelStrategy,
}
