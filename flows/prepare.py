"""Prepare stage: patches, spatially blocked split and normalisation statistics."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows._cli import run_stage
from flows.layout import LAYOUT
from pipeline.config import PrepareParams, load_params
from pipeline.data.bigearthnet import is_bigearthnet, prepare_bigearthnet
from pipeline.data.prepare import prepare_dataset
from pipeline.data.scene import SceneDescription, scene_folders
from pipeline.spark import spark_session
from pipeline.stage_clock import CLOCK, WORK


@task(cache_policy=NO_CACHE)
def prepare_patches(spark: object, raw: str, out: str, params: PrepareParams) -> dict:
    """Cut and split the patches of the scene (or BigEarthNet patches) in ``raw`` into ``out``."""
    if is_bigearthnet(Path(raw)):
        return prepare_bigearthnet(Path(raw), Path(out), params, spark)
    return prepare_dataset(Path(raw), Path(out), params, spark)


@flow(name="prepare", log_prints=True)
def prepare_flow(params: str = LAYOUT.params, raw: str = LAYOUT.raw,
                 out: str = LAYOUT.prepared) -> dict:
    """Prepare the patch dataset of the data in ``raw`` into ``out``; windows run on Spark."""
    config = load_params(params)
    if not is_bigearthnet(Path(raw)):
        for folder in scene_folders(Path(raw)).values():
            SceneDescription.load(folder)  # fail fast, before Spark starts
    with spark_session(config.spark) as spark, CLOCK.phase(WORK):
        manifest = prepare_patches(spark, raw, out, config.prepare)
    print(f"prepared {manifest['task']} patches {manifest['split_sizes']} over "
          f"{len(manifest['classes'])} classes, dropped {manifest['dropped_patches']}, "
          f"fingerprint {manifest['fingerprint'][:19]}... -> {out}")
    return manifest["split_sizes"]


def main(argv: list[str] | None = None) -> None:
    """``python -m flows.prepare [--params P] [--raw DIR] [--out DIR]``."""
    run_stage(prepare_flow, __doc__,
              {"params": LAYOUT.params, "raw": LAYOUT.raw, "out": LAYOUT.prepared}, argv)


if __name__ == "__main__":
    main()
