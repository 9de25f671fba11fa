"""The multimodal CNN: one convolutional branch per modality, features fused, a classifier head.

GroupNorm rather than BatchNorm: its output for a sample does not depend on the rest of the batch,
so a batch split across data-parallel workers computes exactly what one process computes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the network. ``channels`` maps modality name to its number of bands."""

    channels: dict[str, int]
    num_classes: int
    branch_width: int = 16
    branch_depth: int = 2
    fusion_width: int = 64

    def __post_init__(self) -> None:
        if not self.channels:
            raise ValueError("ModelConfig.channels needs at least one modality")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {self.num_classes}")

    def to_dict(self) -> dict:
        """A JSON-serialisable form, saved next to the weights."""
        return asdict(self)


def _groups(width: int) -> int:
    return next(g for g in (8, 4, 2, 1) if width % g == 0)


class ModalityBranch(nn.Module):
    """Conv blocks over one modality's patch, then global average pooling to a feature vector."""

    def __init__(self, in_channels: int, width: int, depth: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for _ in range(depth):
            layers += [nn.Conv2d(channels, width, kernel_size=3, padding=1),
                       nn.GroupNorm(_groups(width), width), nn.ReLU()]
            channels = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, h, w)`` -> ``(B, width)``."""
        return self.pool(self.features(x)).flatten(1)


class FusionHead(nn.Module):
    """Concatenated branch features -> hidden layer -> class logits."""

    def __init__(self, in_features: int, fusion_width: int, num_classes: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(in_features, fusion_width), nn.ReLU(),
                                    nn.Linear(fusion_width, num_classes))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, sum of branch widths)`` -> ``(B, num_classes)``."""
        return self.layers(features)


class MultimodalCNN(nn.Module):
    """Late-fusion CNN over several co-registered modalities."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.modalities = list(config.channels)
        self.branches = nn.ModuleDict({
            name: ModalityBranch(c, config.branch_width, config.branch_depth)
            for name, c in config.channels.items()
        })
        self.head = FusionHead(config.branch_width * len(config.channels), config.fusion_width,
                               config.num_classes)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Patches per modality ``{name: (B, C, h, w)}`` -> logits ``(B, num_classes)``."""
        missing = set(self.modalities) - set(inputs)
        if missing:
            raise KeyError(f"inputs lack modalities {sorted(missing)}; the model expects "
                           f"{self.modalities}")
        features = torch.cat([self.branches[name](inputs[name]) for name in self.modalities], 1)
        return self.head(features)


@torch.no_grad()
def predict(model: MultimodalCNN, inputs: dict[str, torch.Tensor],
            batch_size: int = 1024) -> torch.Tensor:
    """Class indices for every sample of ``inputs``, in batches."""
    model.eval()
    total = next(iter(inputs.values())).shape[0]
    out = [model({k: v[i:i + batch_size] for k, v in inputs.items()}).argmax(1)
           for i in range(0, total, batch_size)]
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)
