"""Evaluate stage: test metrics with a modality ablation, the land-cover map and inference.

The validation split's headline metrics are logged too (``val_*``): the compare stage chooses
the model on them, the test split is only reported.

Inference is timed the way the scheme deploys; everything is written for DVC and logged to the
model's MLflow run.

Writes ``metrics`` (a flat DVC metrics file: quality, ablation, map counts, inference figures) and
the ``reports`` folder (per-class table, confusion matrix JSON + PNG, ablation, map GeoTIFF + PNG,
inference timings), which also become the run's ``evaluation/`` artifacts.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows._cli import run_stage
from flows.layout import LAYOUT
from pipeline.config import ALL_SCHEMES, EvaluateParams, Params, load_params
from pipeline.data.dataset import PreparedDataset
from pipeline.data.scene import SCENE_FILE, holds_scenes
from pipeline.evaluation import Evaluation, evaluate_split, selection_metrics, write_reports
from pipeline.inference.landcover_map import (
    map_file_names,
    map_jobs_for,
    write_landcover_map,
    write_map_preview,
)
from pipeline.inference.schemes import time_scheme_inference
from pipeline.io import atomic_path, write_json
from pipeline.model_store import load_model
from pipeline.objective import SINGLE_LABEL
from pipeline.spark import spark_session
from pipeline.stage_clock import CLOCK, WORK
from pipeline.tracking import (
    log_evaluation,
    log_evaluation_artifacts,
    read_run_reference,
    resumed_run,
)
from pipeline.training.trainer import parallel_settings

TIMINGS_FILE = "inference.json"


@task
def score_model(model: str, data: str, threshold: float,
                resamples: int) -> tuple[Evaluation, dict[str, float]]:
    """Test-split scores of ``model`` with the modality ablation; its validation ``val_*``.

    The compare stage chooses the model on the ``val_*`` scores; the test split is only reported.
    """
    network, class_names = load_model(Path(model))
    dataset = PreparedDataset.open(data)
    return (evaluate_split(network, dataset.split("test"), class_names, threshold,
                           resamples=resamples),
            selection_metrics(network, dataset.split("val"), threshold))


@task(cache_policy=NO_CACHE)
def draw_map(spark: object, raw: str, model: str, data: str, config: Params, out_dir: Path,
             scheme: str) -> dict[str, float]:
    """The land-cover map (GeoTIFF + PNG) of each scene with ``model``, window by window on Spark.

    One scene: ``landcover_map.tif``/``.png``; many: ``landcover_map_<scene>.tif``/``.png`` each,
    on the scene's own grid. The figures are summed over the scenes.
    """
    settings = config.evaluate.map
    jobs = map_jobs_for(Path(raw), Path(model), PreparedDataset.open(data).manifest,
                        settings.stride, config.prepare.max_nodata_fraction, settings.batch_size)
    figures: dict[str, float] = {}
    for name, job in jobs.items():
        map_file, preview_file = map_file_names(name)
        scene_figures = write_landcover_map(job, out_dir / map_file, spark, settings.window_size,
                                            tags={"SCHEME": scheme} | (
                                                {"SCENE": name} if name else {}))
        write_map_preview(out_dir / map_file, out_dir / preview_file,
                          title=f"land-cover map{f' of {name}' if name else ''}, {scheme} model "
                          f"(stride {settings.stride})")
        for key, value in scene_figures.items():
            figures[key] = figures.get(key, 0.0) + value
    return figures


@task(cache_policy=NO_CACHE)
def time_inference(spark: object, config: Params, scheme: str, model: str, data: str,
                   evaluate: EvaluateParams) -> tuple[dict[str, float], dict]:
    """Inference timed as ``scheme`` deploys, and the single-process baseline."""
    figures, timings = time_scheme_inference(
        spark, parallel_settings(config.train, scheme), Path(model), Path(data),
        evaluate.inference, evaluate.threshold)
    details = {name: {k: v for k, v in asdict(t).items() if k != "decisions"}
               for name, t in timings.items()}
    return figures, details


def scheme_of(model: str, config: Params) -> str:
    """The scheme a model folder was trained under.

    That is its name (``models/<scheme>``), else ``train.scheme``.
    """
    name = Path(model).name
    return name if name in ALL_SCHEMES else config.train.scheme


@flow(name="evaluate", log_prints=True)
def evaluate_flow(params: str = LAYOUT.params, model: str = LAYOUT.model_dir("data_parallel"),
                  data: str = LAYOUT.prepared,
                  metrics: str = LAYOUT.metrics_file("data_parallel"), raw: str = LAYOUT.raw,
                  reports: str | None = None, scheme: str | None = None) -> dict[str, float]:
    """Evaluate, map and time the model in ``model``.

    Writes ``metrics`` and ``reports`` (default ``reports/<scheme>``) and logs both to the
    model's MLflow run.
    """
    config = load_params(params)
    scheme = scheme or scheme_of(model, config)
    config = config.for_scheme(scheme)
    reports = reports or LAYOUT.reports_dir(scheme)
    with resumed_run(read_run_reference(Path(model)), config.tracking), CLOCK.phase(WORK):
        evaluation, validation = score_model(model, data, config.evaluate.threshold,
                                             config.evaluate.bootstrap_resamples)
        results = dict(evaluation.metrics)
        figures: dict[str, float] = {}
        with atomic_path(reports) as folder:
            folder.mkdir()
            write_reports(evaluation, folder, title=scheme)
            started = time.perf_counter()
            with spark_session(config.spark) as spark:
                figures["spark_startup_s"] = time.perf_counter() - started
                if evaluation.task == SINGLE_LABEL and holds_scenes(Path(raw)):
                    figures |= draw_map(spark, raw, model, data, config, folder, scheme)
                else:
                    print(f"no land-cover map: {raw} holds no scene ({SCENE_FILE}) or the task is "
                          "multi-label")
                timing, details = time_inference(spark, config, scheme, model, data,
                                                 config.evaluate)
            figures |= timing
            write_json(folder / TIMINGS_FILE, {"scheme": scheme, "figures": timing, **details})
        with CLOCK.phase("tracking"):
            log_evaluation(results)
            log_evaluation(validation | figures, prefix="")
            log_evaluation_artifacts(Path(reports))
        write_json(metrics, results | validation | figures)
    print(f"{scheme} test metrics (95 % interval over {results['ci_blocks']:.0f} blocks): "
          + ", ".join(f"{k}={v:.4f} [{results[f'{k}_ci_low']:.4f}, "
                      f"{results[f'{k}_ci_high']:.4f}]" if f"{k}_ci_low" in results
                      else f"{k}={v:.4f}"
                      for k, v in results.items()
                      if not k.startswith(("ablation_", "ci_")) and "_ci_" not in k))
    print(f"{scheme} inference: {figures['inference_samples_per_s']:,.0f} samples/s, "
          f"{figures['inference_ratio_to_single_process']:.2f} x single-process "
          f"({figures['inference_single_process_samples_per_s']:,.0f} samples/s); "
          f"p50/p95 batch {figures['inference_batch_p50_ms']:.1f}/"
          f"{figures['inference_batch_p95_ms']:.1f} ms; Spark start-up "
          f"{figures['spark_startup_s']:.1f}s")
    return results | figures


def main(argv: list[str] | None = None) -> None:
    """Run the evaluate stage from the command line.

    ``python -m flows.evaluate [--params P] [--scheme S] [--model DIR] [--data DIR]
    [--raw DIR] [--metrics FILE] [--reports DIR]``.
    """
    run_stage(evaluate_flow, __doc__, {
        "params": LAYOUT.params, "scheme": None, "model": LAYOUT.model_dir("data_parallel"),
        "data": LAYOUT.prepared, "raw": LAYOUT.raw,
        "metrics": LAYOUT.metrics_file("data_parallel"), "reports": None}, argv,
        tracked=True)


if __name__ == "__main__":
    main()
