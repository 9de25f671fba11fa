"""Where each unit of the network runs under the model-parallel schemes, and the implied traffic.

A :class:`Layout` assigns every unit of :class:`~pipeline.model.MultimodalCNN` to a local rank of a
replica; ``replicas`` copies of that layout train on disjoint shards of each global batch (hybrid).
Activations cross from one rank to another wherever a unit reads an activation produced on another
rank; their gradients cross back.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from pipeline.model import ModelConfig, MultimodalCNN, input_key
from pipeline.training.comm import all_reduce_bytes
from pipeline.training.job import ParallelSettings

WIRE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class Layout:
    """``placement[r]`` lists the unit names on local rank ``r`` of each replica."""

    placement: tuple[tuple[str, ...], ...]
    replicas: int = 1

    @property
    def ranks_per_replica(self) -> int:
        """Workers in one copy of the model."""
        return len(self.placement)

    @property
    def world_size(self) -> int:
        """Workers in total."""
        return self.ranks_per_replica * self.replicas

    @cached_property
    def rank_of_unit(self) -> dict[str, int]:
        """Local rank of every unit."""
        return {unit: rank for rank, units in enumerate(self.placement) for unit in units}


def branch_layout(model: MultimodalCNN, head_placement: str, replicas: int = 1) -> Layout:
    """One local rank per modality branch; the head on its own rank or with the last branch."""
    ranks = [[u.name for u in model.units if u.name.startswith(f"{m}.")]
             for m in model.modalities]
    head = [u.name for u in model.units if u.name.startswith("head.")]
    if head_placement == "own":
        ranks.append(head)
    elif head_placement == "shared":
        ranks[-1] += head
    else:
        raise ValueError(f"head_placement must be 'shared' or 'own', got {head_placement!r}")
    return Layout(tuple(tuple(r) for r in ranks), replicas)


def pipeline_layout(model: MultimodalCNN, stages: int) -> Layout:
    """The network's layers cut into ``stages`` contiguous stages, as evenly as possible."""
    if not 2 <= stages <= model.num_layers:
        raise ValueError(f"train.model_parallel.pipeline_stages must be between 2 and "
                         f"{model.num_layers} (the model's layers), got {stages}")
    groups = np.array_split(np.arange(model.num_layers), stages)
    return Layout(tuple(tuple(u.name for u in model.units if u.layer in set(g.tolist()))
                        for g in groups))


@dataclass(frozen=True)
class Edge:
    """An activation produced on local rank ``src`` and read on local rank ``dst``."""

    key: str
    src: int
    dst: int


def cross_rank_edges(model: MultimodalCNN, layout: Layout) -> list[Edge]:
    """Activations that cross ranks, in the model's unit order."""
    producer = {key: layout.rank_of_unit[u.name] for u in model.units for key in u.outputs}
    edges: list[Edge] = []
    for unit in model.units:
        dst = layout.rank_of_unit[unit.name]
        for key in unit.inputs:
            if key in producer and producer[key] != dst:
                edge = Edge(key, producer[key], dst)
                if edge not in edges:
                    edges.append(edge)
    return edges


def activation_shapes(model: MultimodalCNN, patch_size: int) -> dict[str, tuple[int, ...]]:
    """Per-sample shape of every activation, from one dry forward pass of one sample."""
    env = {input_key(m): torch.zeros(1, c, patch_size, patch_size)
           for m, c in model.config.channels.items()}
    with torch.no_grad():
        for unit in model.units:
            env.update(unit(env))
    return {key: tuple(value.shape[1:]) for key, value in env.items()}


def unit_param_bytes(model: MultimodalCNN, unit_names: tuple[str, ...]) -> int:
    """Bytes of the parameters the named units use."""
    params = {id(p): p for u in model.units if u.name in unit_names
              for m in u.modules for p in m.parameters()}
    return sum(p.numel() * p.element_size() for p in params.values())


def model_parallel_bytes_per_step(config: ModelConfig, layout: Layout, batch_size: int,
                                  patch_size: int, wire_dtype: str) -> dict[str, float]:
    """Analytic bytes sent per optimiser step, summed over workers, by purpose.

    Every crossing activation is sent once forward and its gradient once backward, for every
    sample of the global batch; replicas all-reduce the gradients of each part (float32).
    """
    model = MultimodalCNN(config)
    shapes = activation_shapes(model, patch_size)
    element = torch.empty(0, dtype=WIRE_DTYPES[wire_dtype]).element_size()
    per_sample = sum(int(np.prod(shapes[e.key])) * element
                     for e in cross_rank_edges(model, layout))
    gradients = sum(layout.replicas * all_reduce_bytes(unit_param_bytes(model, units),
                                                       layout.replicas)
                    for units in layout.placement)
    return {"activations": float(per_sample * batch_size),
            "activation_gradients": float(per_sample * batch_size), "gradients": gradients}


def layout_for(config: ModelConfig, parallel: ParallelSettings,
               model: MultimodalCNN | None = None) -> Layout:
    """The layout of a model-parallel scheme."""
    model = model or MultimodalCNN(config)
    if parallel.scheme == "branch_parallel":
        return branch_layout(model, parallel.head_placement)
    if parallel.scheme == "hybrid":
        return branch_layout(model, parallel.head_placement, replicas=parallel.replicas)
    if parallel.scheme == "pipeline_parallel":
        return pipeline_layout(model, parallel.pipeline_stages)
    raise ValueError(f"{parallel.scheme!r} has no model-parallel layout")
