import os
import sys
from pathlib import Path

import pytest

from pipeline.config import SparkParams
from pipeline.runtime import (
    allocator_environment,
    environment_defaults,
    retain_freed_memory,
)
from pipeline.spark import spark_conf


def test_environment_keeps_spark_on_loopback_and_telemetry_off(tmp_path: Path) -> None:
    env = environment_defaults(tmp_path)
    assert env["SPARK_LOCAL_IP"] == "127.0.0.1"
    assert env["PYSPARK_PYTHON"] == sys.executable
    assert env["PREFECT_HOME"].startswith(str(tmp_path))
    assert env["MLFLOW_DISABLE_TELEMETRY"] == "true" and env["DVC_NO_ANALYTICS"] == "1"


def test_spark_python_workers_start_with_torch_and_the_training_loop_imported(
        spark: object) -> None:
    # forked from pipeline.spark_daemon: a task does not pay the imports (lambda: by value,
    # so unpickling it imports nothing)
    seen = spark.sparkContext.parallelize([0, 1], 2).map(  # type: ignore[attr-defined]
        lambda _: sorted(m for m in ("torch", "pipeline.training.worker", "rasterio",
                                     "mlflow", "prefect") if m in sys.modules)).collect()
    assert seen == [["pipeline.training.worker", "rasterio", "torch"]] * 2


def test_spark_python_workers_keep_freed_memory(spark: object) -> None:
    # A 1-thread forward of the default model: 15.5 ms per batch when malloc hands memory back
    # to the kernel after every batch, 6.1 ms when it keeps it (benchmarks/ measure it).
    seen = spark.sparkContext.parallelize([0, 1], 2).map(  # type: ignore[attr-defined]
        lambda _: {key: os.environ.get(key) for key in allocator_environment()}).collect()
    assert seen == [allocator_environment()] * 2
    conf = spark_conf(SparkParams(master="spark://cluster:7077"))  # executors on other hosts
    assert all(conf[f"spark.executorEnv.{key}"] == value
               for key, value in allocator_environment().items())


def test_a_users_own_allocator_setting_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "0")
    assert retain_freed_memory() is False
    assert spark_conf(SparkParams())["spark.executorEnv.MALLOC_TRIM_THRESHOLD_"] == "0"
