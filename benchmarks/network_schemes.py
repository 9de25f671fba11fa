"""Every scheme on an emulated cluster network: throughput and bytes vs link rate and model size.

A standalone Spark cluster of four workers, each in its own network namespace behind links of
the rate under test (:mod:`pipeline.emulated_network`; the rate is changed between points with
``set_rate``, the cluster stays up). For each link rate x model size x batch size, every scheme
trains ``--steps`` (32) optimiser steps of the default scene, and the same model trains as one
process (two threads) in this process, in the same run. Per point:

- samples/s from the median step time after the warm-up (``step_s_p50``; the spread is the
  10th-90th percentile of the steps, each step a repeat);
- the step split into communication (the median step's time blocked in the process group, the
  busiest worker) and the rest (compute, and waiting on a peer's compute);
- payload and wire bytes (process-group link) sent per worker per step, measured;
- the largest parameter bytes a worker holds, and the ratio to one process;
- what the cost model takes, measured in the same run: per rate, the per-message latency and
  the bulk rates (one way, both ways at once) between two workers of the cluster, and each
  model's compute profile.

Writes ``benchmarks/results/network_schemes.{json,png}``. Needs root (network namespaces); without
it the figures say why they are missing.

    python -m benchmarks.network_schemes [--rates 10gbit 1gbit 100mbit] [--sizes tiny large]
        [--batch-sizes 64 256] [--schemes hybrid ...] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, machine, prepared_default_data, save  # noqa: E402
from pipeline.cluster import StandaloneCluster  # noqa: E402
from pipeline.config import ModelParams, ModelSize, SparkParams, load_params  # noqa: E402
from pipeline.data.dataset import PreparedDataset  # noqa: E402
from pipeline.emulated_network import EmulatedNetwork, check_support, parse_rate  # noqa: E402
from pipeline.errors import NetworkEmulationError  # noqa: E402
from pipeline.io import write_with  # noqa: E402
from pipeline.plan import machine_probe, profile, scheme_profile  # noqa: E402
from pipeline.plan.programs import batch_sizes  # noqa: E402
from pipeline.runtime import configure_environment  # noqa: E402
from pipeline.spark import spark_session  # noqa: E402
from pipeline.training import ParallelSettings, TrainJob, TrainResult, fit  # noqa: E402
from pipeline.training.trainer import model_config  # noqa: E402
from pipeline.training.worker import train_worker  # noqa: E402

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

STEP_PURPOSES = ("gradients", "parameters", "activations", "activation_gradients")
SCHEMES = {
    "data_parallel": ParallelSettings(scheme="data_parallel", workers=2),
    "branch_parallel": ParallelSettings(scheme="branch_parallel"),
    "pipeline_parallel": ParallelSettings(scheme="pipeline_parallel", pipeline_stages=2,
                                          micro_batches=4),
    "hybrid": ParallelSettings(scheme="hybrid", replicas=2, micro_batches=2),
}


def point(result: TrainResult, batch: int) -> dict[str, Any]:
    """The figures of one scheme's run at one grid point."""
    workers = result.workers
    steps = max(result.steps, 1)
    median = max(w["step_s_p50"] for w in workers)
    comm = max(w["step_comm_s_p50"] for w in workers)
    return {
        "samples_per_s": batch / median,
        "step_s_p10": max(w["step_s_p10"] for w in workers), "step_s_p50": median,
        "step_s_p90": max(w["step_s_p90"] for w in workers),
        "comm_s_per_step": comm,
        "compute_s_per_step": median - comm,
        "payload_bytes_sent_per_worker_step": max(w["payload_bytes_sent"] for w in workers)
        / steps,
        # without the loop's one control all-reduce (the epoch's loss totals)
        "step_payload_bytes_sent_per_worker_step": max(
            sum(w.get(f"payload_bytes_sent_{p}", 0.0) for p in STEP_PURPOSES) for w in workers)
        / steps,
        "wire_bytes_sent_per_worker_step": max(w["wire_bytes_sent_process_group"]
                                               for w in workers) / steps,
        "wire_bytes_sent_per_sample": sum(w["wire_bytes_sent_process_group"] for w in workers)
        / steps / batch,
        "tcp_retransmitted_segments": sum(w.get("tcp_retransmitted_segments", 0)
                                          for w in workers),
        "max_worker_param_bytes": max(w["param_bytes"] for w in workers),
        "workers": len(workers),
        "steps": result.steps,
        # each worker's training-thread CPU per step (median step), as the cost model's
        # scheme profile measures it
        "step_cpu_s_p50_by_worker": [w.get("step_cpu_s_p50", 0.0) for w in workers],
    }


def single_process(job: TrainJob) -> dict[str, float]:
    """The same model and batch as one process with two threads, here."""
    os.environ.pop("RANK", None)
    os.environ.pop("WORLD_SIZE", None)
    result = train_worker(replace(job, parallel=ParallelSettings(workers=1),
                                  threads_per_worker=2))
    assert result is not None  # one process: rank 0
    worker = result.workers[0]
    return {"samples_per_s": job.batch_size / worker["step_s_p50"],
            "step_s_p50": worker["step_s_p50"], "param_bytes": worker["param_bytes"]}


def run_grid(spark: SparkSession, network: EmulatedNetwork, data: Path, rates: list[str],
             sizes: list[ModelSize], batches: list[int], steps: int,
             repeats: int = 2, schemes: list[str] | None = None) -> tuple[list[dict], dict]:
    """Every scheme at every rate x size x batch, ``repeats`` times; one record per point.

    Every point runs once before any runs again, so that a slow phase of the machine falls on
    several points rather than on all repeats of one. A point's figures are the median over its
    repeats; ``step_s_p50_repeats`` and ``repeat_spread`` ((max - min) / median of the repeats'
    median steps) say how much they moved.

    Also, for the cost model's check (``benchmarks.plan_accuracy``), what it takes as input,
    measured here in the same run (first repeat): at each rate, the per-message latency between
    two workers of the cluster (a probe job of two barrier tasks), each model's compute
    profile and each job's scheme profile (:mod:`pipeline.plan.scheme_profile`: its strategy on
    local processes) with the probe between two local processes the scheme profiles ran over
    (``loopback_probes``), so that the model's inputs and the runs share the machine's state.
    ``schemes``: only these (default: all of :data:`SCHEMES`).
    """
    chosen = {s: SCHEMES[s] for s in (schemes or SCHEMES)}
    dataset = PreparedDataset.open(data)
    patch = int(dataset.manifest["patch_size"])
    baselines: dict[tuple[str, int], dict] = {}
    inputs: dict[str, dict] = {"probes": {}, "profiles": {}, "scheme_profiles": {},
                               "loopback_probes": {}}
    runs: dict[tuple[str, ModelSize, int, str], list[dict]] = {}
    total = len(rates) * len(sizes) * len(batches) * len(chosen) * repeats
    started, done = time.perf_counter(), 0
    for repeat in range(repeats):
        for rate in rates:
            network.set_rate(rate)
            if repeat == 0:
                inputs["probes"][rate] = asdict(machine_probe.measure_on_spark(spark))
            for size in sizes:
                config = model_config(ModelParams(size=size), dataset)
                if repeat == 0:
                    jobs = [TrainJob(data_dir=str(data), model=config, batch_size=b, epochs=1,
                                     learning_rate=0.01, momentum=0.9, seed=0, parallel=settings)
                            for b in batches for settings in chosen.values()]
                    inputs["profiles"].setdefault(rate, {})[size] = asdict(profile.measure(
                        config, patch, set().union(*(batch_sizes(j) for j in jobs)),
                        shared_cores=os.cpu_count()))
                    by_job = inputs["scheme_profiles"].setdefault(rate, {})
                    if rate not in inputs["loopback_probes"]:  # where scheme profiles run
                        inputs["loopback_probes"][rate] = asdict(machine_probe.measure())
                    for job, measured in zip(jobs, scheme_profile.measure_many(jobs, patch),
                                             strict=True):
                        by_job[f"{size}/{job.batch_size}/{job.parallel.scheme}"] = asdict(measured)
                for batch in batches:
                    job = TrainJob(data_dir=str(data), model=config, batch_size=batch, epochs=1,
                                   learning_rate=0.01, momentum=0.9, seed=0, max_steps=steps,
                                   validate=False)
                    if (size, batch) not in baselines:
                        baselines[size, batch] = single_process(job)
                    for scheme, settings in chosen.items():
                        result = fit(spark, replace(job, parallel=settings), patch)
                        figures = point(result, batch)
                        runs.setdefault((rate, size, batch, scheme), []).append(figures)
                        done += 1
                        elapsed = time.perf_counter() - started
                        print(f"[network_schemes] {done}/{total} (repeat {repeat + 1}) {rate} "
                              f"{size} batch {batch} {scheme}: "
                              f"{figures['samples_per_s']:,.0f} samples/s, "
                              f"{figures['wire_bytes_sent_per_worker_step']:,.0f} wire "
                              f"B/worker/step | elapsed {elapsed:.0f}s, "
                              f"ETA {elapsed / done * (total - done):.0f}s", flush=True)
    records = []
    for (rate, size, batch, scheme), repeated in runs.items():
        merged = median_of_repeats(repeated)
        single = baselines[size, batch]
        merged["ratio_to_single_process"] = merged["samples_per_s"] / single["samples_per_s"]
        records.append({"link_rate": rate, "link_rate_bps": parse_rate(rate),
                        "model_size": size, "batch_size": batch, "scheme": scheme,
                        **merged, "single_process": single})
    return records, inputs


def median_of_repeats(runs: list[dict]) -> dict:
    """One point's figures over its repeats: each number's median (lists: element-wise).

    Adds ``step_s_p50_repeats`` (each repeat's median step) and ``repeat_spread``.
    """
    out: dict = {}
    for key, value in runs[0].items():
        values = [r[key] for r in runs]
        if isinstance(value, list):
            out[key] = [statistics.median(v) for v in zip(*values, strict=True)]
        else:
            out[key] = statistics.median(values)
    steps = [r["step_s_p50"] for r in runs]
    out["samples_per_s"] = runs[0]["samples_per_s"] * runs[0]["step_s_p50"] / out["step_s_p50"]
    out["step_s_p50_repeats"] = steps
    out["repeat_spread"] = (max(steps) - min(steps)) / statistics.median(steps)
    out["repeats"] = len(runs)
    return out


def plot(records: list[dict], path: Path) -> None:
    """Throughput vs link rate per scheme (a panel per size and batch); bytes/sample vs size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = sorted({(r["model_size"], r["batch_size"]) for r in records})
    fig, axes = plt.subplots(1, len(cases) + 1, figsize=(4.2 * (len(cases) + 1), 4))
    for ax, (size, batch) in zip(axes, cases, strict=False):
        for scheme in SCHEMES:
            rows = sorted((r for r in records if r["model_size"] == size
                           and r["batch_size"] == batch and r["scheme"] == scheme),
                          key=lambda r: r["link_rate_bps"])
            ax.errorbar([r["link_rate_bps"] / 1e6 for r in rows],
                        [r["samples_per_s"] for r in rows],
                        yerr=[[r["samples_per_s"] - batch / r["step_s_p90"] for r in rows],
                              [batch / r["step_s_p10"] - r["samples_per_s"] for r in rows]],
                        marker="o", label=scheme, capsize=2)
        ax.set(xscale="log", xlabel="link rate (Mbit/s)", ylabel="samples/s (median step)",
               title=f"{size} model, batch {batch}")
        ax.legend(fontsize=7)
    ax = axes[-1]
    fastest = max(r["link_rate_bps"] for r in records)
    for scheme in SCHEMES:
        rows = [r for r in records if r["scheme"] == scheme and r["link_rate_bps"] == fastest
                and r["batch_size"] == min(b for _, b in cases)]
        ax.bar([f"{r['model_size']}\n{scheme[:6]}" for r in rows],
               [r["wire_bytes_sent_per_sample"] for r in rows], label=scheme)
    ax.set(yscale="log", ylabel="wire bytes sent per sample (all workers)",
           title="bytes per sample vs model size")
    ax.tick_params(axis="x", labelsize=6)
    fig.tight_layout()
    write_with(path, lambda p: fig.savefig(p, dpi=100))
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    """Run the grid on an emulated cluster and write its figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--rates", nargs="+", default=["10gbit", "1gbit", "100mbit"])
    parser.add_argument("--sizes", nargs="+", default=["tiny", "large"])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--steps", type=int, default=32,
                        help="optimiser steps per run (16 left a point's median step moving "
                        "by up to a third between repeats)")
    parser.add_argument("--schemes", nargs="+", default=list(SCHEMES), choices=list(SCHEMES),
                        help="only these schemes (e.g. to rerun failing points alone)")
    parser.add_argument("--name", default="network_schemes",
                        help="results file name (a run of some points: not the grid's)")
    parser.add_argument("--repeats", type=int, default=2,
                        help="runs of every point (all points once before any again)")
    args = parser.parse_args(argv)
    configure_environment()
    try:
        check_support()
    except NetworkEmulationError as exc:
        save("network_schemes", {"machine": machine(), "skipped": str(exc)})
        print(f"[network_schemes] skipped: {exc}")
        return
    params = load_params(args.params)
    workdir = Path(tempfile.mkdtemp(prefix="bench-network-"))
    data = prepared_default_data(params, workdir)
    network = EmulatedNetwork(workers=4, link_rate=args.rates[0])
    started = time.perf_counter()
    with StandaloneCluster(workdir / "cluster", workers=4, cores=1, memory="2g",
                           network=network) as cluster, \
            spark_session(SparkParams(master=cluster.master_url, app_name="network-schemes",
                                      conf={"spark.executor.memory": "1500m"})) as spark:
        records, inputs = run_grid(spark, network, data, args.rates, args.sizes,
                                   args.batch_sizes, args.steps, args.repeats, args.schemes)
    figures = {"machine": machine(), "seconds": time.perf_counter() - started,
               "steps": args.steps, "repeats": args.repeats,
               "cluster": "4 workers x 1 core, emulated links",
               "patch_size": params.prepare.patch_size, "points": records, **inputs}
    save(args.name, figures)
    plot(records, RESULTS / f"{args.name}.png")
    print(f"[network_schemes] {len(records)} points in {figures['seconds']:.0f} s")


if __name__ == "__main__":
    main()
