"""Patches per second of the prepare stage vs the raw rasterio read rate of the same windows.

Generates a synthetic scene (``--side`` pixels square), then on the same machine:

- raw: reads every window (with its halo) of every raster with rasterio, one after the other;
- prepare: ``prepare_dataset`` on a running local Spark session (Spark start-up excluded):
  windowed reads in Spark tasks, patch extraction, gathering, split, statistics, writing the
  ``.npz`` files, fingerprint and preview PNG; and the same without Spark (in-process loop).

Both rates are patches of the prepared dataset per second. Writes
``benchmarks/results/prepare_throughput.json``.

    python -m benchmarks.prepare_throughput [--side 768] [--window 256] [--master local[2]]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import rasterio
from rasterio.windows import Window

from pipeline.config import PrepareParams, SparkParams, SyntheticSceneParams
from pipeline.data.prepare import plan_windows, prepare_dataset
from pipeline.data.scene import SceneDescription
from pipeline.data.synthetic import write_synthetic_scene
from pipeline.runtime import configure_environment
from pipeline.spark import spark_session

RESULTS = Path(__file__).resolve().parent / "results"


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--side", type=int, default=768)
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--master", default="local[2]")
    args = parser.parse_args()
    configure_environment(Path.cwd())
    params = PrepareParams(window_size=args.window)
    with tempfile.TemporaryDirectory() as tmp:
        scene_dir = Path(tmp) / "raw"
        write_synthetic_scene(SyntheticSceneParams(height=args.side, width=args.side), scene_dir)
        raw_s = min(raw_read_seconds(scene_dir, params) for _ in range(3))
        with spark_session(SparkParams(master=args.master)) as spark:
            prepare_dataset(scene_dir, Path(tmp) / "warmup", params, spark)  # warm workers
            start = time.perf_counter()
            manifest = prepare_dataset(scene_dir, Path(tmp) / "prepared", params, spark)
            prepare_s = time.perf_counter() - start
        start = time.perf_counter()
        prepare_dataset(scene_dir, Path(tmp) / "in_process", params)  # same code, no Spark
        in_process_s = time.perf_counter() - start
    patches = sum(manifest["split_sizes"].values())
    report = {
        "scene_px": [args.side, args.side], "window_size": args.window,
        "windows": manifest["windows"], "patches": patches,
        "patch_size": params.patch_size, "stride": params.stride, "spark_master": args.master,
        "raw_read_s": round(raw_s, 3), "prepare_s": round(prepare_s, 3),
        "raw_read_patches_per_s": round(patches / raw_s), "prepare_patches_per_s":
        round(patches / prepare_s), "ratio": round(raw_s / prepare_s, 3), "target_ratio": 0.5,
        "in_process_prepare_s": round(in_process_s, 3),
        "in_process_ratio": round(raw_s / in_process_s, 3),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "prepare_throughput.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
