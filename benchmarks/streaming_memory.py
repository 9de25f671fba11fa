"""A training worker's memory and throughput: streaming from the prepared store vs in memory.

For synthetic scenes whose prepared training split grows 1x, 2x, 4x, 8x (``--sides``), a fresh
worker process per (size, path) opens the prepared dataset as a training worker does, then runs
``--steps`` optimiser steps of the default model on the default batch size:

- ``stream``: ``PreparedDataset.stream("train")``, each batch's patches cut from the memory-mapped
  scene arrays (what training workers do);
- ``memory``: ``PreparedDataset.split("train")``, the whole split materialised as tensors first
  (the path before streaming; evaluation still uses it).

Memory is the worker's peak anonymous RSS (``RssAnon`` of ``/proc/self/status``, sampled at every
step): the memory it owns. The store's pages it reads are file-backed page cache, shared and
reclaimable by the kernel, and reported apart (``VmHWM``, total peak RSS). Throughput is samples
per second over the steps after a warm-up, at the default scene size (``--default-side``),
median of ``--repeats`` runs. Targets: streaming's peak anonymous RSS within 20 % across sizes;
its throughput within 10 % of the in-memory path at the default size.
Writes ``benchmarks/results/streaming_memory.{json,png}``.

    python -m benchmarks.streaming_memory [--sides 512 724 1024 1448] [--steps 60]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import RESULTS, machine, save


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def worker(data_dir: str, path: str, steps: int, warmup: int) -> dict[str, float]:
    """One worker process's figures: peak anonymous RSS, peak RSS, samples per second."""
    import numpy as np
    import torch

    from pipeline.config import Params
    from pipeline.data.dataset import PreparedDataset
    from pipeline.model import MultimodalCNN
    from pipeline.objective import per_sample_loss
    from pipeline.training.batches import epoch_batches
    from pipeline.training.trainer import model_config

    torch.set_num_threads(1)
    params = Params()
    peak_anon = _status_kib("RssAnon")
    dataset = PreparedDataset.open(data_dir)
    train = dataset.stream("train") if path == "stream" else dataset.split("train")
    peak_anon = max(peak_anon, _status_kib("RssAnon"))
    model = MultimodalCNN(model_config(params.model, dataset))
    optimizer = torch.optim.SGD(model.parameters(), lr=params.train.learning_rate,
                                momentum=params.train.momentum)
    batches = epoch_batches(len(train), params.train.batch_size, 0, 0)
    batches = [batches[i % len(batches)] for i in range(steps + warmup)]
    start = 0.0
    for step, index in enumerate(batches):
        if step == warmup:
            start = time.perf_counter()
        inputs, labels = train.batch(np.asarray(index))
        optimizer.zero_grad(set_to_none=True)
        loss = per_sample_loss(model(inputs), labels, dataset.task).mean()
        loss.backward()
        optimizer.step()
        peak_anon = max(peak_anon, _status_kib("RssAnon"))
    seconds = time.perf_counter() - start
    return {"samples": len(train), "peak_anon_mib": peak_anon / 1024,
            "peak_rss_mib": _status_kib("VmHWM") / 1024,
            "samples_per_s": steps * params.train.batch_size / seconds}


def prepared(side: int, workdir: Path) -> Path:
    """A synthetic scene of ``side`` pixels square, prepared in-process with the defaults."""
    from pipeline.config import Params
    from pipeline.data.prepare import prepare_dataset
    from pipeline.data.synthetic import write_synthetic_scene

    params = Params()
    raw, out = workdir / f"raw_{side}", workdir / f"prepared_{side}"
    write_synthetic_scene(params.ingest.synthetic.model_copy(
        update={"height": side, "width": side}), raw)
    prepare_dataset(raw, out, params.prepare)
    return out


def run_worker(data_dir: Path, path: str, steps: int, warmup: int) -> dict[str, float]:
    """``worker`` in a fresh process (its own peak RSS)."""
    code = ("import json, sys; from benchmarks.streaming_memory import worker; "
            f"print(json.dumps(worker({str(data_dir)!r}, {path!r}, {steps}, {warmup})))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, cwd=Path(__file__).resolve().parents[1])
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def plot(figures: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for path, style in (("stream", "o-"), ("memory", "s--")):
        rows = figures["sizes"]
        ax.plot([r["samples"] for r in rows], [r[path]["peak_anon_mib"] for r in rows], style,
                label=f"{path}: peak anonymous RSS")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("samples in the prepared training split")
    ax.set_ylabel("MiB per worker")
    ax.set_title("Training worker memory: streaming vs in memory")
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "streaming_memory.png", dpi=90)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sides", type=int, nargs="+", default=[512, 724, 1024, 1448])
    parser.add_argument("--default-side", type=int, default=256)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory(prefix="streaming_memory_") as tmp:
        sizes = []
        for side in args.sides:
            data = prepared(side, Path(tmp))
            row: dict = {"side": side}
            for path in ("stream", "memory"):
                row[path] = run_worker(data, path, args.steps, args.warmup)
            row["samples"] = row["stream"]["samples"]
            sizes.append(row)
            print(json.dumps(row), flush=True)
        default = prepared(args.default_side, Path(tmp))
        rates: dict[str, list[float]] = {"stream": [], "memory": []}
        for _ in range(args.repeats):
            for path in rates:
                rates[path].append(run_worker(default, path, args.steps,
                                              args.warmup)["samples_per_s"])
    anon = [r["stream"]["peak_anon_mib"] for r in sizes]
    throughput = {p: statistics.median(v) for p, v in rates.items()}
    figures = {
        "machine": machine(), "load_average": os.getloadavg(), "steps": args.steps,
        "sizes": sizes, "growth": sizes[-1]["samples"] / sizes[0]["samples"],
        "stream_peak_anon_spread": max(anon) / min(anon) - 1,
        "memory_peak_anon_growth": sizes[-1]["memory"]["peak_anon_mib"]
        / sizes[0]["memory"]["peak_anon_mib"] - 1,
        "default_side": args.default_side, "throughput_samples_per_s": throughput,
        "throughput_runs": rates,
        "stream_vs_memory_throughput": throughput["stream"] / throughput["memory"],
    }
    save("streaming_memory", figures)
    plot(figures)
    print(json.dumps({k: v for k, v in figures.items() if k not in ("sizes", "machine")},
                     indent=2))


if __name__ == "__main__":
    main()
