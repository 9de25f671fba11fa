"""Fused vs single-modality models on the embedded scene: is the product's multimodality worth it?

Trains the same MultimodalCNN three times in one process (``train_worker``, no Spark): with both
modalities, with optical only, with SAR only; the test split's overall accuracy of each. Writes
``benchmarks/results/fusion_gain.json`` and ``.png``.

    python -m benchmarks.fusion_gain [--params params.yaml]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from pipeline.config import (
    ModelParams,
    Params,
    PrepareParams,
    SyntheticSceneParams,
    TrainParams,
    load_params,
)
from pipeline.data.dataset import PreparedDataset
from pipeline.data.prepare import prepare_dataset
from pipeline.data.synthetic import write_synthetic_scene
from pipeline.model import MultimodalCNN, predict
from pipeline.training.job import TrainJob
from pipeline.training.worker import train_worker

RESULTS = Path(__file__).resolve().parent / "results"


def modality_accuracies(scene: SyntheticSceneParams, prepare: PrepareParams, model: ModelParams,
                        train: TrainParams, work: Path) -> dict[str, float]:
    """Test overall accuracy of the fused model and of each single-modality model."""
    os.environ.pop("RANK", None)
    os.environ.pop("WORLD_SIZE", None)
    write_synthetic_scene(scene, work / "raw")
    prepare_dataset(work / "raw", work / "prepared", prepare)
    dataset = PreparedDataset.open(work / "prepared")
    test = dataset.split("test")
    channels = dataset.channels
    variants = {"fused": channels} | {name: {name: c} for name, c in channels.items()}
    out = {}
    for variant, chans in variants.items():
        config = _config(chans, len(dataset.class_names), model)
        job = TrainJob(data_dir=str(work / "prepared"), model=config,
                       batch_size=train.batch_size, epochs=train.epochs,
                       learning_rate=train.learning_rate, momentum=train.momentum,
                       seed=train.seed, threads_per_worker=max(1, torch.get_num_threads()))
        result = train_worker(job)
        assert result is not None  # one process: rank 0
        net = MultimodalCNN(config)
        net.load_state_dict(result.state_dict)
        out[variant] = float((predict(net, test.inputs) == test.labels).double().mean())
    return out


def _config(channels: dict[str, int], num_classes: int, model: ModelParams):  # noqa: ANN202
    from pipeline.model import ModelConfig

    return ModelConfig(channels=channels, num_classes=num_classes, **model.shape())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    params: Params = load_params(args.params)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        acc = modality_accuracies(params.ingest.synthetic, params.prepare, params.model,
                                  params.train, Path(tmp))
    best_single = max(v for k, v in acc.items() if k != "fused")
    report = {"overall_accuracy": acc, "gain_over_best_single_points":
              round(100 * (acc["fused"] - best_single), 2),
              "scene": params.ingest.synthetic.model_dump(), "epochs": params.train.epochs,
              "wall_time_s": round(time.perf_counter() - start, 1)}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "fusion_gain.json").write_text(json.dumps(report, indent=2) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.bar(list(acc), [100 * v for v in acc.values()], color=["#444", "#2a9d8f", "#e76f51"])
    ax.set_ylabel("test overall accuracy (%)")
    ax.set_title(f"fused vs single modality: +{report['gain_over_best_single_points']} points")
    for i, v in enumerate(acc.values()):
        ax.text(i, 100 * v + 0.5, f"{100 * v:.1f}", ha="center")
    ax.set_ylim(0, 105)
    fig.tight_layout()
    fig.savefig(RESULTS / "fusion_gain.png", dpi=90)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
