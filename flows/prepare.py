"""Prepare stage: patches, spatially blocked split and normalisation statistics."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task

from flows._cli import run_stage
from flows.layout import LAYOUT
from pipeline.config import PrepareParams, load_params
from pipeline.data.prepare import prepare_dataset


@task
def prepare_patches(raw: str, out: str, params: PrepareParams) -> dict:
    """Cut and split the patches of the scene in ``raw`` into ``out``."""
    return prepare_dataset(Path(raw), Path(out), params)


@flow(name="prepare", log_prints=True)
def prepare_flow(params: str = LAYOUT.params, raw: str = LAYOUT.raw,
                 out: str = LAYOUT.prepared) -> dict:
    """Prepare the patch dataset of the scene in ``raw`` into ``out``."""
    manifest = prepare_patches(raw, out, load_params(params).prepare)
    print(f"prepared patches {manifest['split_sizes']} over classes {manifest['classes']} "
          f"-> {out}")
    return manifest["split_sizes"]


def main(argv: list[str] | None = None) -> None:
    """``python -m flows.prepare [--params P] [--raw DIR] [--out DIR]``."""
    run_stage(prepare_flow, __doc__,
              {"params": LAYOUT.params, "raw": LAYOUT.raw, "out": LAYOUT.prepared}, argv)


if __name__ == "__main__":
    main()
