"""Ingest stage: the modalities and labels the pipeline learns from, chosen by ``ingest.source``.

- ``synthetic``: the embedded, deterministic Sentinel-2 + Sentinel-1 scene (no user data needed);
- ``scene``: the user's rasters (``ingest.scene``), aligned onto the label raster's grid (a list:
  many scenes, each on its own grid);
- ``bigearthnet``: BigEarthNet-MM S1 + S2 patch folders (the package's examples by default).
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task

from flows._cli import run_stage
from flows.layout import LAYOUT
from pipeline.config import SceneParams, load_params
from pipeline.data.bigearthnet import ingest_bigearthnet
from pipeline.data.ingest import ingest_scene, ingest_scenes
from pipeline.data.synthetic import write_synthetic_scene
from pipeline.stage_clock import CLOCK, WORK


@task(retries=2, retry_delay_seconds=[2, 5],
      retry_condition_fn=lambda task, run, state: not isinstance(
          state.result(raise_on_failure=False), ValueError))
def write_scene(params_path: str, out_dir: str) -> dict:
    """Write the configured source into ``out_dir`` (relative paths: from the params' folder)."""
    params = load_params(params_path)
    ingest = params.ingest
    base = Path(params_path).resolve().parent
    if ingest.source == "bigearthnet":
        index = ingest_bigearthnet(ingest.bigearthnet, base, Path(out_dir))
        return {"source": "bigearthnet", "modalities": ["optical", "sar"],
                "classes": len(index["classes"]), "pairs": len(index["pairs"])}
    if ingest.source == "scene" and isinstance(ingest.scene, list):
        scenes = ingest_scenes(ingest.scene, base, Path(out_dir))
        first = next(iter(scenes.values()))
        return {"source": f"scene ({len(scenes)} scenes: {', '.join(scenes)})",
                "modalities": sorted(first.modalities), "classes": len(first.classes)}
    if ingest.source == "scene":
        assert isinstance(ingest.scene, SceneParams)  # the config requires it for this source
        scene = ingest_scene(ingest.scene, base, Path(out_dir))
    else:
        scene = write_synthetic_scene(ingest.synthetic, Path(out_dir))
    return {"source": scene.source, "modalities": sorted(scene.modalities),
            "classes": len(scene.classes)}


@flow(name="ingest", log_prints=True)
def ingest_flow(params: str = LAYOUT.params, out: str = LAYOUT.raw) -> dict:
    """Write the ingested data to ``out``."""
    load_params(params)  # fail fast on bad params, before any task runs
    with CLOCK.phase(WORK):
        summary = write_scene(params, out)
    print(f"ingested {summary['source']} data: modalities {summary['modalities']}, "
          f"{summary['classes']} classes -> {out}")
    return summary


def main(argv: list[str] | None = None) -> None:
    """``python -m flows.ingest [--params P] [--out DIR]``."""
    run_stage(ingest_flow, __doc__, {"params": LAYOUT.params, "out": LAYOUT.raw}, argv)


if __name__ == "__main__":
    main()
