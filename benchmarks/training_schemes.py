"""Training throughput and traffic of every scheme, against single-process training.

    python -m benchmarks.training_schemes [--batch-sizes 32 128 512] [--epochs 8]

Writes ``benchmarks/results/training_schemes.json`` and ``.png``. All figures come from one run on
one machine: each scheme at each batch size on real Spark barrier tasks, the single-process
baseline (the same model, ``cores`` threads: the threads all data-parallel workers have together)
at the same batch sizes, the traffic knobs of data parallelism at one batch size, and the analytic
traffic of data- and branch-parallelism across model widths (where they cross over).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from benchmarks.common import RESULTS, machine, prepared_default_data, save  # noqa: E402
from pipeline.config import Params, SparkParams, load_params  # noqa: E402
from pipeline.model import ModelConfig  # noqa: E402
from pipeline.runtime import configure_environment  # noqa: E402
from pipeline.spark import spark_session  # noqa: E402
from pipeline.training import ParallelSettings, TrainJob, fit, modelled_payload_per_step  # noqa: E402
from pipeline.training.trainer import make_job  # noqa: E402
from pipeline.training.worker import train_worker  # noqa: E402

KNOBS: dict[str, dict[str, Any]] = {
    "none": {},
    "fp16": {"gradient_compression": "fp16"},
    "bf16": {"gradient_compression": "bf16"},
    "powersgd_rank2": {"gradient_compression": "powersgd", "powersgd_rank": 2},
    "local_sgd_k4": {"sync_every": 4},
}


def run_scheme(spark: object, job: TrainJob, patch_size: int) -> dict[str, float]:
    """Train ``job`` on Spark and keep the figures the report compares."""
    result = fit(spark, job, patch_size)
    metrics = result.metrics()
    return {k: metrics[k] for k in (
        "samples_per_s", "payload_bytes_sent_per_sample", "payload_bytes_sent_per_step",
        "modelled_payload_bytes_per_step",
        "payload_ratio_counted_to_modelled", "max_worker_param_bytes", "max_worker_peak_rss_mb",
        "training_time_s", "world_size")} | {
        "final_val_accuracy": result.history[-1].get("val_accuracy", float("nan")),
        "comm_share": sum(w["comm_s"] for w in result.workers)
        / max(sum(w["wall_s"] for w in result.workers), 1e-9)}


def single_process(job: TrainJob, threads: int) -> dict[str, float]:
    """The baseline: the same job in this process, one worker with ``threads`` threads."""
    os.environ.pop("RANK", None)
    os.environ.pop("WORLD_SIZE", None)
    result = train_worker(replace(job, parallel=ParallelSettings(workers=1),
                                  threads_per_worker=threads))
    assert result is not None  # one process: rank 0
    return {"samples_per_s": result.samples / result.wall_time_s,
            "param_bytes": result.workers[0]["param_bytes"],
            "peak_rss_mb": result.workers[0]["peak_rss_mb"]}


def crossover(params: Params, patch_size: int, batches: list[int]) -> dict:
    """Analytic bytes per step of each scheme as the batch grows, at the configured model size:
    parameter-bound data parallelism stays flat, activation-bound model parallelism grows."""
    config = ModelConfig(channels={"optical": 4, "sar": 2}, num_classes=6,
                         **params.model.shape())
    rows = []
    for batch in batches:
        job = TrainJob(data_dir="", model=config, batch_size=batch, epochs=1, learning_rate=0.1,
                       momentum=0.9, seed=0)
        row: dict[str, float] = {"batch_size": batch}
        for scheme in ("data_parallel", "branch_parallel", "pipeline_parallel", "hybrid"):
            figures = modelled_payload_per_step(
                replace(job, parallel=ParallelSettings(scheme=scheme)), patch_size)
            row[scheme] = sum(figures.values())
        rows.append(row)
    return {"model": params.model.model_dump(), "rows": rows}


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and write its figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128, 512])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    configure_environment()
    params = load_params(args.params)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-"))
    data = prepared_default_data(params, workdir)
    patch = params.prepare.patch_size
    cores = os.cpu_count() or 1
    started = time.perf_counter()

    figures: dict = {"machine": machine(), "epochs": args.epochs, "baseline_threads": cores,
                     "schemes": {}, "single_process": {}, "knobs": {}}
    train = params.train.model_copy(update={"epochs": args.epochs})
    with spark_session(SparkParams(master=f"local[{max(4, cores)}]")) as spark:
        for batch in args.batch_sizes:
            train_b = train.model_copy(update={"batch_size": batch})
            base = make_job(train_b, params.model, data)
            figures["single_process"][str(batch)] = single_process(base, cores)
            for scheme in params.train.compare:
                print(f"[bench] {scheme} batch {batch}", flush=True)
                result = run_scheme(spark, make_job(train_b, params.model, data, scheme), patch)
                result["throughput_ratio_to_single_process"] = (
                    result["samples_per_s"]
                    / figures["single_process"][str(batch)]["samples_per_s"])
                figures["schemes"].setdefault(scheme, {})[str(batch)] = result
        knob_batch = params.train.batch_size
        base = make_job(train.model_copy(update={"batch_size": knob_batch}), params.model, data,
                        "data_parallel")
        for name, settings in KNOBS.items():
            print(f"[bench] data_parallel knob {name}", flush=True)
            job = replace(base, parallel=replace(base.parallel, **settings))
            figures["knobs"][name] = run_scheme(spark, job, patch)
    figures["knob_batch_size"] = knob_batch
    figures["crossover"] = crossover(params, patch, [16, 64, 256, 1024, 4096, 16384])
    figures["wall_s"] = time.perf_counter() - started
    path = save("training_schemes", figures)
    plot(figures, RESULTS / "training_schemes.png")
    print(f"wrote {path} and training_schemes.png in {figures['wall_s']:.0f}s")


def plot(figures: dict, out: Path) -> None:
    """Four panels: bytes/sample and throughput ratio vs batch size; knobs; crossover."""
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.5))
    for scheme, by_batch in figures["schemes"].items():
        batches = sorted(by_batch, key=int)
        axes[0].plot([int(b) for b in batches],
                     [by_batch[b]["payload_bytes_sent_per_sample"] for b in batches], "o-",
                     label=scheme)
        axes[1].plot([int(b) for b in batches],
                     [by_batch[b]["throughput_ratio_to_single_process"] for b in batches], "o-",
                     label=scheme)
    axes[0].set(xscale="log", yscale="log", xlabel="global batch size",
                ylabel="bytes sent per sample (all workers)", title="Traffic vs batch size")
    axes[1].axhline(0.8, color="grey", ls="--", lw=1)
    axes[1].set(xscale="log", xlabel="global batch size",
                ylabel="samples/s ÷ single process", title="Throughput vs single process")
    knobs = figures["knobs"]
    axes[2].bar(list(knobs), [k["payload_bytes_sent_per_sample"] for k in knobs.values()])
    axes[2].set(ylabel="bytes sent per sample",
                title=f"data_parallel knobs (batch {figures['knob_batch_size']})")
    axes[2].tick_params(axis="x", rotation=30)
    rows = figures["crossover"]["rows"]
    for scheme in ("data_parallel", "branch_parallel", "pipeline_parallel", "hybrid"):
        axes[3].plot([r["batch_size"] for r in rows], [r[scheme] for r in rows], "o-",
                     label=scheme)
    axes[3].set(xscale="log", yscale="log", xlabel="global batch size",
                ylabel="analytic bytes per step", title="Where traffic crosses over")
    for ax in (axes[0], axes[1], axes[3]):
        ax.legend(fontsize=8)
    fig.suptitle(f"Training schemes on {figures['machine']['cores']} cores")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
