"""What each model size weighs: parameter bytes, and the bytes every boundary carries per sample.

``python -m pipeline.model_summary --patch 33`` prints, for each ``model.size`` (and the
modalities of the embedded scene: 4 optical bands, 2 SAR bands, 6 classes), the parameters and
their bytes, and the float32 bytes per sample of every activation a model-parallel scheme may send:
each block's output (where ``pipeline_parallel`` cuts between layers) and each branch's features
(where ``branch_parallel`` cuts). The figures are computed from the shapes (one dry forward pass).
"""

from __future__ import annotations

import argparse
from typing import TypedDict

import numpy as np

from pipeline.config import MODEL_SIZES, ModelParams
from pipeline.model import ModelConfig, MultimodalCNN, input_key
from pipeline.training.layout import activation_shapes


class _Scene(TypedDict):
    channels: dict[str, int]
    num_classes: int


class ModelSummary(TypedDict):
    """What ``summary`` returns."""

    parameters: int
    parameter_bytes: int
    activation_bytes_per_sample: dict[str, int]
    shapes: dict[str, list[int]]


EMBEDDED_SCENE: _Scene = {"channels": {"optical": 4, "sar": 2}, "num_classes": 6}


def summary(config: ModelConfig, patch_size: int) -> ModelSummary:
    """Parameters, parameter bytes and per-sample activation bytes of ``config``'s model."""
    model = MultimodalCNN(config)
    params = sum(p.numel() for p in model.parameters())
    shapes = activation_shapes(model, patch_size)
    boundaries = {key: int(np.prod(shape)) * 4 for key, shape in shapes.items()
                  if key not in {input_key(m) for m in config.channels}}
    return {"parameters": params, "parameter_bytes": params * 4,
            "activation_bytes_per_sample": boundaries,
            "shapes": {key: list(shape) for key, shape in shapes.items()}}


def main(argv: list[str] | None = None) -> None:
    """Print the summary of every size at ``--patch``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patch", type=int, default=33, help="patch side in pixels")
    args = parser.parse_args(argv)
    for size in MODEL_SIZES:
        config = ModelConfig(**EMBEDDED_SCENE, **ModelParams(size=size).shape())
        figures = summary(config, args.patch)
        print(f"{size}: {figures['parameters']:,} parameters, "
              f"{figures['parameter_bytes'] / 1e6:.2f} MB at float32; per sample at "
              f"{args.patch}x{args.patch}:")
        for key, nbytes in figures["activation_bytes_per_sample"].items():
            shape = "x".join(map(str, figures["shapes"][key]))
            print(f"  {key:18s} {shape:>12s} {nbytes:>10,} B")


if __name__ == "__main__":
    main()
