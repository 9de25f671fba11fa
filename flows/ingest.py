"""Ingest stage: write the scene's modalities and labels as GeoTIFFs."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task

from flows._cli import run_stage
from flows.layout import LAYOUT
from pipeline.config import load_params
from pipeline.data.synthetic import write_synthetic_scene


@task(retries=2, retry_delay_seconds=[2, 5])
def write_scene(params_path: str, out_dir: str) -> dict:
    """Generate the embedded synthetic scene into ``out_dir``."""
    params = load_params(params_path)
    scene = write_synthetic_scene(params.ingest.synthetic, Path(out_dir))
    return {"source": scene.source, "modalities": sorted(scene.modalities),
            "classes": len(scene.classes)}


@flow(name="ingest", log_prints=True)
def ingest_flow(params: str = LAYOUT.params, out: str = LAYOUT.raw) -> dict:
    """Write the ingested scene to ``out``."""
    load_params(params)  # fail fast on bad params, before any task runs
    summary = write_scene(params, out)
    print(f"ingested {summary['source']} scene: modalities {summary['modalities']}, "
          f"{summary['classes']} classes -> {out}")
    return summary


def main(argv: list[str] | None = None) -> None:
    """``python -m flows.ingest [--params P] [--out DIR]``."""
    run_stage(ingest_flow, __doc__, {"params": LAYOUT.params, "out": LAYOUT.raw}, argv)


if __name__ == "__main__":
    main()
