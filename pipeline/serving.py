"""The trained network behind a single input tensor, the form MLflow's pyfunc serving takes.

``MultimodalCNN`` takes a dict of modality tensors; MLflow's PyTorch flavour predicts from one
array. ``StackedInputModel`` takes the modalities stacked along the channel axis, in the order of
the model's ``config.channels`` (the prepared dataset's modality order), already normalised with
the prepared dataset's statistics, and splits them again before calling the network.
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.model import MultimodalCNN


class StackedInputModel(nn.Module):
    """``(B, sum of channels, h, w)`` float32 -> logits ``(B, num_classes)``."""

    def __init__(self, model: MultimodalCNN) -> None:
        super().__init__()
        self.model = model
        self.modalities = list(model.config.channels)
        self.channels = [model.config.channels[m] for m in self.modalities]

    def stack(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Modality tensors ``{name: (B, C, h, w)}`` -> one ``(B, sum C, h, w)`` float32 tensor."""
        return torch.cat([inputs[m].float() for m in self.modalities], dim=1)

    def forward(self, stacked: torch.Tensor) -> torch.Tensor:
        """Split ``stacked`` by modality and run the network."""
        if stacked.shape[1] != sum(self.channels):
            raise ValueError(f"expected {sum(self.channels)} stacked channels "
                             f"({dict(zip(self.modalities, self.channels, strict=True))}), "
                             f"got {stacked.shape[1]}")
        parts = torch.split(stacked, self.channels, dim=1)
        logits: torch.Tensor = self.model(dict(zip(self.modalities, parts, strict=True)))
        return logits
