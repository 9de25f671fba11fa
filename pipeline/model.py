"""The multimodal CNN: one convolutional branch per modality, features fused, a classifier head.

The network is also described as an ordered list of *units* (one conv block of one branch, the
fusion layer, the classifier), each reading and writing named activations. ``forward`` runs the
units in order, and the model-parallel schemes place groups of the same units on different
workers, so every scheme computes exactly the function single-process training computes.

GroupNorm rather than BatchNorm: a sample's output does not depend on the rest of its batch, so a
batch split across workers or into micro-batches gives the same result as one process.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, cast

import torch
from torch import nn

from pipeline.objective import SINGLE_LABEL, TASKS, decide

Activations = dict[str, torch.Tensor]


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the network. ``channels`` maps modality name to its number of bands."""

    channels: dict[str, int]
    num_classes: int
    branch_width: int = 16
    branch_depth: int = 2
    fusion_width: int = 64
    task: str = SINGLE_LABEL
    downsample_every: int = 0  # k > 0: a 2x2 max-pool after every k-th block, then twice the width

    def __post_init__(self) -> None:
        if not self.channels:
            raise ValueError("ModelConfig.channels needs at least one modality")
        if self.downsample_every < 0:
            raise ValueError(f"downsample_every must be 0 (none) or positive, got "
                             f"{self.downsample_every}")
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {self.num_classes}")

    def downsamples_after(self, block: int) -> bool:
        """Whether block ``block`` ends with a 2x2 max-pool (never the last: it pools globally)."""
        every = self.downsample_every
        return every > 0 and (block + 1) % every == 0 and block < self.branch_depth - 1

    @property
    def block_widths(self) -> tuple[int, ...]:
        """Output channels of each block of a branch: the width doubles after each max-pool."""
        widths, width = [], self.branch_width
        for block in range(self.branch_depth):
            widths.append(width)
            width *= 2 if self.downsamples_after(block) else 1
        return tuple(widths)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form, saved next to the weights."""
        return asdict(self)


def _groups(width: int) -> int:
    return next(g for g in (8, 4, 2, 1) if width % g == 0)


class ConvBlock(nn.Sequential):
    """3x3 convolution, GroupNorm, ReLU: ``(B, C_in, h, w)`` -> ``(B, width, h, w)``.

    With ``downsample``, a 2x2 max-pool follows: ``(B, width, ceil(h/2), ceil(w/2))``.
    """

    def __init__(self, in_channels: int, width: int, downsample: bool = False) -> None:
        layers = [nn.Conv2d(in_channels, width, kernel_size=3, padding=1),
                  nn.GroupNorm(_groups(width), width), nn.ReLU()]
        if downsample:
            layers.append(nn.MaxPool2d(2, ceil_mode=True))  # no parameters: same state dict
        super().__init__(*layers)


class ModalityBranch(nn.Module):
    """Conv blocks over one modality's patch; the last is followed by global average pooling."""

    def __init__(self, in_channels: int, config: ModelConfig) -> None:
        super().__init__()
        widths = config.block_widths
        self.blocks = nn.ModuleList(
            ConvBlock(in_channels if i == 0 else widths[i - 1], width,
                      config.downsamples_after(i)) for i, width in enumerate(widths))


class FusionHead(nn.Module):
    """Concatenated branch features -> hidden layer (ReLU) -> class logits."""

    def __init__(self, in_features: int, fusion_width: int, num_classes: int) -> None:
        super().__init__()
        self.hidden = nn.Linear(in_features, fusion_width)
        self.classifier = nn.Linear(fusion_width, num_classes)


@dataclass(frozen=True)
class Unit:
    """One step of the network: reads ``inputs`` activations, writes ``outputs``.

    ``layer`` orders units by depth (all branches' k-th blocks share layer k), which is where
    pipeline parallelism may cut. ``modules`` are the submodules whose parameters it uses.
    """

    name: str
    layer: int
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    modules: tuple[nn.Module, ...]
    fn: Callable[[Activations], Activations]

    def __call__(self, env: Activations) -> Activations:
        """Apply the unit to the activations ``env``."""
        return self.fn(env)


def input_key(modality: str) -> str:
    """The activation name of a modality's input patch."""
    return f"{modality}/input"


LOGITS = "logits"


class MultimodalCNN(nn.Module):
    """Late-fusion CNN over several co-registered modalities."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.modalities = list(config.channels)
        self.branches = nn.ModuleDict({
            name: ModalityBranch(c, config) for name, c in config.channels.items()
        })
        self.head = FusionHead(config.block_widths[-1] * len(config.channels), config.fusion_width,
                               config.num_classes)
        self.units = self._build_units()  # a plain list: not registered, state_dict unchanged

    def _build_units(self) -> list[Unit]:
        depth = self.config.branch_depth
        units = []
        for k in range(depth):
            for m in self.modalities:
                block = cast(ModalityBranch, self.branches[m]).blocks[k]
                source = input_key(m) if k == 0 else f"{m}/block{k - 1}"
                target = f"{m}/features" if k == depth - 1 else f"{m}/block{k}"
                pool = k == depth - 1
                units.append(Unit(f"{m}.block{k}", k, (source,), (target,), (block,),
                                  _block_fn(block, source, target, pool)))
        features = tuple(f"{m}/features" for m in self.modalities)
        hidden, classifier = self.head.hidden, self.head.classifier
        units.append(Unit("head.hidden", depth, features, ("hidden",), (hidden,),
                          lambda env: {"hidden": torch.relu(
                              hidden(torch.cat([env[k] for k in features], 1)))}))
        units.append(Unit("head.classifier", depth + 1, ("hidden",), (LOGITS,), (classifier,),
                          lambda env: {LOGITS: classifier(env["hidden"])}))
        return units

    @property
    def num_layers(self) -> int:
        """Number of distinct unit layers (conv blocks, fusion, classifier)."""
        return self.config.branch_depth + 2

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Patches per modality ``{name: (B, C, h, w)}`` -> logits ``(B, num_classes)``."""
        missing = set(self.modalities) - set(inputs)
        if missing:
            raise KeyError(f"inputs lack modalities {sorted(missing)}; the model expects "
                           f"{self.modalities}")
        env = {input_key(m): inputs[m] for m in self.modalities}
        for unit in self.units:
            env.update(unit(env))
        return env[LOGITS]


def _block_fn(block: nn.Module, source: str, target: str,
              pool: bool) -> Callable[[Activations], Activations]:
    def run(env: Activations) -> Activations:
        x = block(env[source])
        return {target: x.mean(dim=(2, 3)) if pool else x}
    return run


@torch.no_grad()
def logits_of(model: MultimodalCNN, inputs: dict[str, torch.Tensor],
              batch_size: int = 1024) -> torch.Tensor:
    """Logits ``(N, num_classes)`` for every sample of ``inputs``, in batches."""
    model.eval()
    total = next(iter(inputs.values())).shape[0]
    out = [model({k: v[i:i + batch_size] for k, v in inputs.items()})
           for i in range(0, total, batch_size)]
    return torch.cat(out) if out else torch.empty(0, model.config.num_classes)


def predict(model: MultimodalCNN, inputs: dict[str, torch.Tensor], batch_size: int = 1024,
            threshold: float = 0.5) -> torch.Tensor:
    """Decisions for every sample: class indices, or multi-hot rows for a multi-label model."""
    return decide(logits_of(model, inputs, batch_size), model.config.task, threshold)
