"""Shared fixtures. The process environment is set before anything imports Prefect or Spark."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="prefect-home-"))
from pipeline.runtime import configure_environment  # noqa: E402

configure_environment(Path(__file__).resolve().parents[1])

from pipeline.config import (  # noqa: E402
    Params,
    PrepareParams,
    SparkParams,
    SyntheticSceneParams,
)
from pipeline.data.prepare import prepare_dataset  # noqa: E402
from pipeline.data.synthetic import write_synthetic_scene  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parents[1]

SMALL_SCENE = SyntheticSceneParams(seed=7, height=96, width=96, region_scale_px=6.0)
SMALL_PREPARE = PrepareParams(patch_size=7, stride=3, block_size=16, seed=1)


@pytest.fixture(scope="session")
def scene_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic scene written as GeoTIFFs (read-only for tests)."""
    out = tmp_path_factory.mktemp("scene") / "raw"
    write_synthetic_scene(SMALL_SCENE, out)
    return out


@pytest.fixture(scope="session")
def prepared_dir(scene_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small scene's prepared patches (read-only for tests)."""
    out = tmp_path_factory.mktemp("prepared") / "prepared"
    prepare_dataset(scene_dir, out, SMALL_PREPARE)
    return out


@pytest.fixture(scope="session")
def spark() -> Iterator[object]:
    """A real local SparkSession with two task slots, shared by the Spark tests."""
    from pipeline.spark import spark_session

    with spark_session(SparkParams(master="local[4]", app_name="landcover-tests")) as session:
        yield session


@pytest.fixture
def default_params() -> Params:
    return Params()
