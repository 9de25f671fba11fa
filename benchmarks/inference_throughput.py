"""Inference throughput of every deployment as a ratio to the single-process baseline.

    python -m benchmarks.inference_throughput [--samples 65536] [--batch-size 256] [--repeats 5]
        [--schemes data_parallel branch_parallel pipeline_parallel hybrid]

Writes ``benchmarks/results/inference_throughput.json``. Everything is measured in one run, in one
SparkSession: Spark's start-up (the session, then each deployment's set-up: the DataFrame, cache
and broadcast, or TorchDistributor's processes) is reported separately from the timed passes,
which start after the warm-up. The baseline (the whole model in this process, as many PyTorch
threads as the machine has cores) is measured right before and right after each deployment, and
each ratio is taken to the mean of those two, so the machine's drift (this shared virtual machine's
speed varies by up to 2x over minutes) affects both sides alike and shows as their spread.
The model has the default ``params.yaml`` shape with random weights (throughput does not depend on
the weights); the samples are the default scene's test split, repeated to ``--samples``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from benchmarks.common import machine, prepared_default_data, save
from pipeline.config import InferenceParams, load_params
from pipeline.data.dataset import PreparedDataset
from pipeline.inference.data_parallel import time_data_parallel
from pipeline.inference.job import InferJob, timed_inputs
from pipeline.inference.model_parallel import time_model_parallel
from pipeline.inference.single import time_single_process
from pipeline.model import MultimodalCNN
from pipeline.model_store import save_model
from pipeline.runtime import configure_environment
from pipeline.spark import spark_session
from pipeline.training.trainer import model_config, parallel_settings

TARGET_DATA_PARALLEL = 0.8


def main(argv: list[str] | None = None) -> dict:
    configure_environment(Path.cwd())
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--samples", type=int, default=65536)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--schemes", nargs="+",
                        default=["data_parallel", "branch_parallel", "pipeline_parallel",
                                 "hybrid"])
    parser.add_argument("--workdir", default=None, help="keeps the prepared data between runs")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-inference-"))
    data = prepared_default_data(params, workdir)
    dataset = PreparedDataset.open(data)
    config = model_config(params.model, dataset)
    model = MultimodalCNN(config).eval()
    model_dir = workdir / "model"
    save_model(model_dir, model.state_dict(), config, dataset.class_names)
    inputs = timed_inputs(str(data), "test", args.samples)
    settings = InferenceParams(batch_size=args.batch_size, samples=args.samples,
                               repeats=args.repeats, warmup=1)
    cores = os.cpu_count() or 1

    def baseline() -> dict[str, float]:
        return time_single_process(model, inputs, settings.batch_size, settings.repeats,
                                   settings.warmup, threads=cores).metrics()

    figures: dict = {"machine": machine(), "samples": args.samples,
                     "batch_size": args.batch_size, "repeats": args.repeats,
                     "spark_master": params.spark.master, "baseline_threads": cores,
                     "deployments": {}}
    figures["single_process"], figures["ratio_to_single_process"] = {}, {}
    started = time.perf_counter()
    with spark_session(params.spark) as spark:
        figures["spark_startup_s"] = time.perf_counter() - started
        print(f"Spark session started in {figures['spark_startup_s']:.1f}s")
        for scheme in args.schemes:
            parallel = parallel_settings(params.train, scheme)
            job = InferJob(model_dir=str(model_dir), data_dir=str(data), parallel=parallel,
                           samples=args.samples, batch_size=args.batch_size,
                           repeats=args.repeats)
            deploy = time_data_parallel if scheme == "data_parallel" else time_model_parallel
            before = baseline()
            timing = deploy(spark, job)
            after = baseline()
            reference = (before["inference_samples_per_s"] + after["inference_samples_per_s"]) / 2
            figures["deployments"][scheme] = timing.metrics()
            figures["single_process"][scheme] = {"before": before, "after": after,
                                                 "samples_per_s": reference}
            figures["ratio_to_single_process"][scheme] = (
                timing.metrics()["inference_samples_per_s"] / reference)
            print(f"{scheme}: {timing.metrics()['inference_samples_per_s']:,.0f} samples/s on "
                  f"{timing.workers} workers (set-up {timing.setup_s:.1f}s); single process "
                  f"{before['inference_samples_per_s']:,.0f} before, "
                  f"{after['inference_samples_per_s']:,.0f} after")
    if "data_parallel" in figures["ratio_to_single_process"]:
        ratio = figures["ratio_to_single_process"]["data_parallel"]
        figures["data_parallel_target"] = TARGET_DATA_PARALLEL
        figures["data_parallel_target_met"] = bool(ratio >= TARGET_DATA_PARALLEL)
    path = save("inference_throughput", figures)
    for scheme, ratio in figures["ratio_to_single_process"].items():
        print(f"  {scheme:18s} {ratio:.2f} x single-process")
    print(f"Spark start-up (reported separately): {figures['spark_startup_s']:.1f}s; "
          f"written to {path}")
    return figures


if __name__ == "__main__":
    main()
