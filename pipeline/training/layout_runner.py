"""One worker's share of a model-parallel layout: its units, and the activations it exchanges.

Training (:class:`~pipeline.training.strategies.ModelParallelStrategy`) and inference
(:mod:`pipeline.inference.model_parallel`) run the same forward: each unit of this rank in order,
receiving the activations it reads from the ranks that produce them and sending the activations
it produces to the ranks that read them, all through a counting
:class:`~pipeline.training.comm.Comm`.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from pipeline.model import LOGITS, MultimodalCNN, input_key
from pipeline.training.comm import Comm
from pipeline.training.layout import WIRE_DTYPES, Layout, activation_shapes


class LayoutRunner:
    """The units global ``rank`` holds under ``layout``, run with point-to-point sends."""

    def __init__(self, model: MultimodalCNN, layout: Layout, rank: int, comm: Comm,
                 patch_size: int, wire_dtype: str = "float32") -> None:
        self.layout, self.comm = layout, comm
        self.replica, self.local_rank = divmod(rank, layout.ranks_per_replica)
        self.units = [u for u in model.units if layout.rank_of_unit[u.name] == self.local_rank]
        self.producer = {key: layout.rank_of_unit[u.name] for u in model.units for key in u.outputs}
        self.consumers: dict[str, set[int]] = {}
        for unit in model.units:
            for key in unit.inputs:
                self.consumers.setdefault(key, set()).add(layout.rank_of_unit[unit.name])
        self.keys = sorted(set(self.producer) | set(self.consumers))
        self.shapes = activation_shapes(model, patch_size)
        self.wire = WIRE_DTYPES[wire_dtype]

    @property
    def produces_logits(self) -> bool:
        """Whether this worker computes the logits (and so the loss and the decisions)."""
        return self.producer[LOGITS] == self.local_rank

    @property
    def reads_inputs(self) -> bool:
        """Whether this worker runs a unit that reads a modality's input patches."""
        return any(key.endswith("/input") for u in self.units for key in u.inputs)

    def global_rank(self, local_rank: int) -> int:
        """The global rank of ``local_rank`` in this worker's replica."""
        return self.replica * self.layout.ranks_per_replica + local_rank

    def tag(self, key: str, batch: int, backward: bool = False) -> int:
        """The message tag of activation ``key`` (or its gradient) of (micro-)batch ``batch``."""
        return (batch * len(self.keys) + self.keys.index(key)) * 2 + int(backward)

    def forward(self, inputs: dict[str, torch.Tensor], size: int, batch: int, purpose: str,
                works: list[dist.Work]
                ) -> tuple[dict[str, torch.Tensor], list[str], list[tuple[str, int]]]:
        """Run this worker's units on (micro-)batch ``batch`` of ``size`` samples.

        ``inputs`` holds the samples per modality, where this worker reads them. Activations
        for other ranks are sent without waiting (their works appended to ``works``); received
        ones require grad when grad is enabled. Returns the activations, the keys received and
        the (key, local rank) pairs sent.
        """
        env: dict[str, torch.Tensor] = {}
        received: list[str] = []
        sent: list[tuple[str, int]] = []
        for unit in self.units:
            for key in unit.inputs:
                if key in env:
                    continue
                modality = key.removesuffix("/input")
                if key == input_key(modality) and modality in inputs:
                    env[key] = inputs[modality]
                else:
                    buffer = torch.empty((size, *self.shapes[key]), dtype=self.wire)
                    self.comm.recv(buffer, self.global_rank(self.producer[key]), purpose,
                                   self.tag(key, batch))
                    env[key] = buffer.float().requires_grad_(torch.is_grad_enabled())
                    received.append(key)
            env.update(unit(env))
            for key in unit.outputs:
                for dst in sorted(self.consumers.get(key, set()) - {self.local_rank}):
                    works.append(self.comm.send(env[key].detach().to(self.wire),
                                                self.global_rank(dst), purpose,
                                                self.tag(key, batch)))
                    sent.append((key, dst))
        return env, received, sent
