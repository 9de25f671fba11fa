import sys
from pathlib import Path

from pipeline.runtime import environment_defaults


def test_environment_keeps_spark_on_loopback_and_telemetry_off(tmp_path: Path) -> None:
    env = environment_defaults(tmp_path)
    assert env["SPARK_LOCAL_IP"] == "127.0.0.1"
    assert env["PYSPARK_PYTHON"] == sys.executable
    assert env["PREFECT_HOME"].startswith(str(tmp_path))
    assert env["MLFLOW_DISABLE_TELEMETRY"] == "true" and env["DVC_NO_ANALYTICS"] == "1"
