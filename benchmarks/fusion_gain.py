"""Fused vs single-modality models on the embedded scene: is the product's multimodality worth it?

Trains the same MultimodalCNN three times in one process (``train_worker``, no Spark): with both
modalities, with optical only, with SAR only; the test split's overall accuracy of each. Repeats
that for several seeds (each a new split, ``prepare.seed``, and a new initialisation,
``train.seed``) and reports the fusion gain (fused minus the best single modality, in points) as
its mean with a 95 % interval over the seeds (Student's t). Writes
``benchmarks/results/fusion_gain.json`` and ``.png``.

    python -m benchmarks.fusion_gain [--params params.yaml] [--seeds 5] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy import stats

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


def seed_gains(params: Params, seeds: int, work: Path) -> list[dict[str, object]]:
    """Per seed ``s`` (split ``prepare.seed + s``, initialisation ``train.seed + s``): the
    accuracies and the gain over the best single modality, in points."""
    runs = []
    for offset in range(seeds):
        prepare = params.prepare.model_copy(update={"seed": params.prepare.seed + offset})
        train = params.train.model_copy(update={"seed": params.train.seed + offset})
        acc = modality_accuracies(params.ingest.synthetic, prepare, params.model, train,
                                  work / f"seed-{offset}")
        best_single = max(v for k, v in acc.items() if k != "fused")
        runs.append({"prepare_seed": prepare.seed, "train_seed": train.seed,
                     "overall_accuracy": acc, "gain_points": 100 * (acc["fused"] - best_single)})
    return runs


def mean_interval(values: list[float], level: float = 0.95) -> dict[str, float]:
    """Mean and its ``level`` interval (Student's t over the values; one value: no interval)."""
    data = np.asarray(values, dtype=np.float64)
    mean = float(data.mean())
    if len(data) < 2:
        return {"mean": mean, "ci_low": float("nan"), "ci_high": float("nan")}
    half = float(stats.t.ppf(0.5 + level / 2, len(data) - 1) * data.std(ddof=1)
                 / np.sqrt(len(data)))
    return {"mean": mean, "ci_low": mean - half, "ci_high": mean + half}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--seeds", type=int, default=5, help="splits and initialisations")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder of the results")
    args = parser.parse_args()
    params: Params = load_params(args.params)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        runs = seed_gains(params, args.seeds, Path(tmp))
    gain = mean_interval([float(r["gain_points"]) for r in runs])  # type: ignore[arg-type]
    variants = list(runs[0]["overall_accuracy"])  # type: ignore[call-overload]
    accuracy = {v: mean_interval([r["overall_accuracy"][v] for r in runs])  # type: ignore[index]
                for v in variants}
    report = {"gain_over_best_single_points": {k: round(x, 2) for k, x in gain.items()},
              "gain_exceeds_zero": bool(gain["ci_low"] > 0),
              "overall_accuracy": accuracy, "seeds": runs,
              "scene": params.ingest.synthetic.model_dump(), "epochs": params.train.epochs,
              "wall_time_s": round(time.perf_counter() - start, 1)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fusion_gain.json").write_text(json.dumps(report, indent=2) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    means = [100 * accuracy[v]["mean"] for v in variants]
    errors = [[100 * (accuracy[v]["mean"] - accuracy[v]["ci_low"]) for v in variants],
              [100 * (accuracy[v]["ci_high"] - accuracy[v]["mean"]) for v in variants]]
    ax.bar(variants, means, yerr=None if len(runs) < 2 else errors, capsize=4,
           color=["#444", "#2a9d8f", "#e76f51"])
    ax.set_ylabel(f"test overall accuracy (%), mean of {len(runs)} seeds")
    ax.set_title(f"fused vs best single modality: {gain['mean']:+.1f} points "
                 f"[{gain['ci_low']:+.1f}, {gain['ci_high']:+.1f}]", fontsize=10)
    for i, v in enumerate(means):
        ax.text(i, v + 0.5, f"{v:.1f}", ha="center")
    ax.set_ylim(0, 105)
    fig.tight_layout()
    fig.savefig(args.out / "fusion_gain.png", dpi=90)
    print(json.dumps({k: report[k] for k in ("gain_over_best_single_points",
                                             "gain_exceeds_zero", "overall_accuracy")}, indent=2))


if __name__ == "__main__":
    main()
