"""Patches per second of the prepare stage vs the raw rasterio read rate of the same windows.

For each of ``--scenes`` (``SIDE:WINDOW``: a synthetic scene of ``SIDE`` pixels square, cut into
windows of ``WINDOW``; by default a small one, where Spark's fixed cost per task weighs most, and
a large one, the case Spark is for), on the same machine, ``--repeats`` times in turn (the CPU
may be shared: the figures are medians):

- raw: reads every window (with its halo) of every raster with rasterio, one after the other;
- prepare on Spark: ``prepare_dataset`` on a running local Spark session (start-up excluded, a
  warm-up run first): windowed reads, features, training-statistics sums and writes of the scene
  arrays in Spark tasks; gathering the centres, split, statistics, fingerprint, writing the
  splits and the preview PNG on the driver;
- prepare in-process: the same without Spark (a plain loop over the windows);
- an empty Spark job of as many tasks as windows: Spark's fixed cost per job on this machine.

Both prepare runs are timed by phase (the functions ``pipeline.data.prepare`` calls to run them).

Both rates are patches of the prepared dataset per second; the ratio is raw read time over
prepare time (target: at least 0.5). Writes ``benchmarks/results/prepare_throughput.{json,png}``.

    python -m benchmarks.prepare_throughput [--scenes 768:256 4096:2048] [--master local[2]]
                                            [--repeats 3] [--name prepare_throughput]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from benchmarks.common import RESULTS, machine, save
from pipeline.config import PrepareParams, SparkParams, SyntheticSceneParams
from pipeline.data import prepare
from pipeline.data.prepare import prepare_dataset
from pipeline.data.scene import SceneDescription
from pipeline.data.synthetic import write_synthetic_scene
from pipeline.data.windows import plan_windows
from pipeline.runtime import configure_environment
from pipeline.spark import spark_session

# The prepare stage's phases, as the names pipeline.data.prepare calls them by (np.savez: the npz).
PHASES = {"windows (read, features, write)": "run_tasks", "gather": "gather_centres",
          "statistics": "training_stats", "fingerprint": "fingerprint",
          "write npz": "savez", "preview": "scene_preview"}


def raw_read_seconds(scene_dir: Path, params: PrepareParams) -> float:
    """Seconds to read every window (with halo) of every raster of the scene, sequentially."""
    scene = SceneDescription.load(scene_dir)
    paths = [scene_dir / scene.labels] + [scene_dir / m.path for m in scene.modalities.values()]
    with rasterio.open(paths[0]) as src:
        height, width = src.height, src.width
    half = params.patch_size // 2
    start = time.perf_counter()
    for r0, c0, h, w in plan_windows(height, width, params.window_size):
        top, left = max(0, r0 - half), max(0, c0 - half)
        window = Window(left, top, min(width, c0 + w + half) - left,
                        min(height, r0 + h + half) - top)
        for path in paths:
            with rasterio.open(path) as src:
                src.read(window=window)
    return time.perf_counter() - start


@contextlib.contextmanager
def phase_timer(timings: dict[str, float]) -> Iterator[None]:
    """Wrap the phase functions ``pipeline.data.prepare`` calls so that their time adds up."""
    def timed(name: str, func: Callable) -> Callable:
        @functools.wraps(func)
        def wrapper(*args: object, **kwargs: object) -> object:
            start = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                timings[name] = timings.get(name, 0.0) + time.perf_counter() - start
        return wrapper

    originals = {attr: getattr(prepare, attr) for attr in PHASES.values() if attr != "savez"}
    savez = np.savez
    try:
        for phase, attr in PHASES.items():
            if attr == "savez":
                np.savez = timed(phase, savez)
            else:
                setattr(prepare, attr, timed(phase, originals[attr]))
        yield
    finally:
        np.savez = savez
        for attr, func in originals.items():
            setattr(prepare, attr, func)


def timed_prepare(scene_dir: Path, out: Path, params: PrepareParams, spark: object | None
                  ) -> tuple[float, dict, dict[str, float]]:
    """Seconds of one ``prepare_dataset`` run, its manifest, and seconds per phase."""
    timings: dict[str, float] = {}
    with phase_timer(timings):
        start = time.perf_counter()
        manifest = prepare_dataset(scene_dir, out, params, spark)
        seconds = time.perf_counter() - start
    timings["other"] = seconds - sum(timings.values())
    return seconds, manifest, timings


def empty_job_seconds(spark: object, tasks: int) -> float:
    """Seconds of a Spark job of ``tasks`` tasks that do nothing and return nothing."""
    start = time.perf_counter()
    spark.sparkContext.parallelize(range(tasks), tasks).map(lambda _: None).collect()  # type: ignore[attr-defined]
    return time.perf_counter() - start


def folder_bytes(folder: Path, pattern: str) -> int:
    """Total size of the files matching ``pattern`` under ``folder``."""
    return sum(p.stat().st_size for p in folder.rglob(pattern))


def measure_scene(side: int, window: int, repeats: int, spark: object, workdir: Path) -> dict:
    """The figures of one synthetic scene of ``side`` x ``side`` pixels, windows of ``window``."""
    params = PrepareParams(window_size=window)
    raw, on_spark, in_process, empty, phases, spark_phases = [], [], [], [], [], []
    scene_dir = workdir / "raw"
    write_synthetic_scene(SyntheticSceneParams(height=side, width=side), scene_dir)
    prepare_dataset(scene_dir, workdir / "warmup", params, spark)  # warm workers
    prepare_dataset(scene_dir, workdir / "warmup", params)
    for i in range(repeats):
        raw.append(raw_read_seconds(scene_dir, params))
        seconds, manifest, timings = timed_prepare(scene_dir, workdir / "spark", params, spark)
        on_spark.append(seconds)
        spark_phases.append(timings)
        empty.append(empty_job_seconds(spark, manifest["windows"]))
        seconds, _, timings = timed_prepare(scene_dir, workdir / "local", params, None)
        in_process.append(seconds)
        phases.append(timings)
        print(f"{side} x {side}, repeat {i + 1}/{repeats}: raw {raw[-1]:.3f}s, Spark "
              f"{on_spark[-1]:.3f}s, in-process {in_process[-1]:.3f}s, empty Spark job "
              f"{empty[-1]:.3f}s", flush=True)
    patches = sum(manifest["split_sizes"].values())
    bands = sum(len(m["bands"]) for m in manifest["modalities"].values())
    raw_s, spark_s, local_s = (statistics.median(x) for x in (raw, on_spark, in_process))
    return {
        "scene_px": [side, side], "window_size": window, "windows": manifest["windows"],
        "patches": patches, "patch_size": params.patch_size, "stride": params.stride,
        "raw_read_s": round(raw_s, 4), "prepare_s": round(spark_s, 4),
        "in_process_prepare_s": round(local_s, 4),
        "raw_read_patches_per_s": round(patches / raw_s),
        "prepare_patches_per_s": round(patches / spark_s),
        "in_process_patches_per_s": round(patches / local_s),
        "ratio": round(raw_s / spark_s, 3),
        "in_process_ratio": round(raw_s / local_s, 3),
        "ratio_per_repeat": [round(r / s, 3) for r, s in zip(raw, on_spark, strict=True)],
        "in_process_ratio_per_repeat": [round(r / s, 3)
                                        for r, s in zip(raw, in_process, strict=True)],
        "in_process_phases_s": {k: round(statistics.median(t.get(k, 0.0) for t in phases), 4)
                                for k in [*PHASES, "other"]},
        "spark_phases_s": {k: round(statistics.median(t.get(k, 0.0) for t in spark_phases), 4)
                           for k in [*PHASES, "other"]},
        "spark_empty_job_s": round(statistics.median(empty), 4),
        "ratio_without_spark_job_cost": round(raw_s / max(spark_s - statistics.median(empty),
                                                          1e-9), 3),
        "samples_s": {"raw_read": [round(x, 4) for x in raw],
                      "prepare_spark": [round(x, 4) for x in on_spark],
                      "prepare_in_process": [round(x, 4) for x in in_process],
                      "spark_empty_job": [round(x, 4) for x in empty]},
        "sizes_bytes": {"scene_tif": folder_bytes(scene_dir, "*.tif"),
                        "prepared_arrays": folder_bytes(workdir / "spark", "*.np[yz]"),
                        # what the patches layout stored: every patch's pixels, label, centre
                        "patches_layout_arrays": patches * (bands * params.patch_size ** 2 * 4
                                                            + 8 + 2 * 4)},
    }


def plot(report: dict, out: Path) -> None:
    """Per scene: patches/s of raw read and prepare, and the seconds of each prepare phase."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenes = report["scenes"]
    fig, axes = plt.subplots(len(scenes), 2, figsize=(10, 3.6 * len(scenes)), squeeze=False)
    for (left, right), scene in zip(axes, scenes, strict=True):
        names = ["raw read", "prepare\n(Spark)", "prepare\n(in-process)"]
        rates = [scene["raw_read_patches_per_s"], scene["prepare_patches_per_s"],
                 scene["in_process_patches_per_s"]]
        left.bar(names, rates, color=["#7f7f7f", "#1f4e99", "#98df8a"])
        left.axhline(report["target_ratio"] * rates[0], color="#d62728", ls="--",
                     label=f"target: {report['target_ratio']} x raw")
        for i, rate in enumerate(rates):
            left.text(i, rate, f"{rate:,.0f}", ha="center", va="bottom", fontsize=8)
        left.set_ylabel("patches / s (median)")
        left.set_title(f"{scene['scene_px'][0]} x {scene['scene_px'][1]} px, "
                       f"{scene['windows']} windows of {scene['window_size']}, "
                       f"{scene['patches']:,} patches: ratio {scene['ratio']} (Spark), "
                       f"{scene['in_process_ratio']} (in-process)", fontsize=8)
        left.legend(fontsize=8)
        names = list(scene["in_process_phases_s"])
        y = np.arange(len(names))
        right.barh(y - 0.2, [scene["spark_phases_s"][k] for k in names], height=0.4,
                   color="#1f4e99", label="Spark")
        right.barh(y + 0.2, [scene["in_process_phases_s"][k] for k in names], height=0.4,
                   color="#98df8a", label="in-process")
        right.axvline(scene["raw_read_s"], color="#7f7f7f", ls="--", label="raw read (all)")
        right.axvline(scene["spark_empty_job_s"], color="#d62728", ls=":",
                      label="empty Spark job")
        right.set_yticks(y, names, fontsize=8)
        right.invert_yaxis()
        right.set_xlabel("seconds per phase (median)")
        right.legend(fontsize=8)
    fig.suptitle(f"prepare throughput on Spark {report['spark_master']} vs raw rasterio read",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def main() -> None:
    """Measure every scene, write the JSON and the PNG, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scenes", nargs="+", default=["768:256", "4096:2048"],
                        help="scenes as SIDE:WINDOW (pixels)")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--name", default="prepare_throughput",
                        help="results file name in benchmarks/results/ (.json, .png)")
    args = parser.parse_args()
    configure_environment(Path.cwd())
    sizes = [tuple(int(x) for x in scene.split(":")) for scene in args.scenes]
    scenes = []
    with spark_session(SparkParams(master=args.master)) as spark:
        for side, window in sizes:
            with tempfile.TemporaryDirectory() as tmp:
                scenes.append(measure_scene(side, window, args.repeats, spark, Path(tmp)))
    report = {"scenes": scenes, "target_ratio": 0.5, "spark_master": args.master,
              "repeats": args.repeats, "machine": machine()}
    RESULTS.mkdir(exist_ok=True)
    save(args.name, report)
    plot(report, RESULTS / f"{args.name}.png")
    for scene in scenes:
        print(f"{scene['scene_px'][0]} x {scene['scene_px'][1]}, windows of "
              f"{scene['window_size']}: ratio (median of {args.repeats}) {scene['ratio']} with "
              f"Spark, {scene['in_process_ratio']} in-process; target {report['target_ratio']}")


if __name__ == "__main__":
    main()
