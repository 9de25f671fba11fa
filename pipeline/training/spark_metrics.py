"""Spark's own side of a training run: task times and the bytes Spark moved, from its REST API.

The figures sit next to the process-group traffic: what the barrier stage cost Spark (task run
and CPU time, result bytes returned to the driver, shuffle and input bytes), read from the
application's UI (``/api/v1``, on 127.0.0.1 for local masters). Empty when the UI is disabled.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from typing import Any

FIELDS = {  # REST field -> (metric name, scale)
    "executorRunTime": ("spark_task_run_s", 1e-3),
    "executorCpuTime": ("spark_task_cpu_s", 1e-9),
    "resultSize": ("spark_result_bytes", 1.0),
    "inputBytes": ("spark_input_bytes", 1.0),
    "shuffleReadBytes": ("spark_shuffle_read_bytes", 1.0),
    "shuffleWriteBytes": ("spark_shuffle_write_bytes", 1.0),
    "numCompleteTasks": ("spark_tasks", 1.0),
}


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def prime(spark: Any) -> None:
    """Make the UI's REST layer ready in the background (its first request takes seconds).

    Started with a job, so that reading that job's figures afterwards does not wait for it.
    """
    base = spark.sparkContext.uiWebUrl
    if not base:
        return

    def request() -> None:
        try:
            _get(f"{base}/api/v1/version")
        except OSError:  # the figures are read later with their own error handling
            pass

    threading.Thread(target=request, name="spark-rest-prime", daemon=True).start()


def job_group_metrics(spark: Any, group: str, attempts: int = 10) -> dict[str, float]:
    """Sum of :data:`FIELDS` over the completed stages of Spark job group ``group``."""
    context = spark.sparkContext
    base = context.uiWebUrl
    if not base:
        return {}
    api = f"{base}/api/v1/applications/{context.applicationId}"
    for _ in range(attempts):  # the status store is updated asynchronously
        try:
            jobs = [j for j in _get(f"{api}/jobs")  # a barrier job may be resubmitted
                    if j.get("jobGroup") == group and j.get("status") == "SUCCEEDED"]
            stage_ids = {s for j in jobs for s in j.get("stageIds", [])}
            stages = [s for s in _get(f"{api}/stages") if s["stageId"] in stage_ids
                      and s.get("status") == "COMPLETE"]
        except OSError as exc:  # a first request can time out on a busy machine: again
            if isinstance(getattr(exc, "reason", exc), ConnectionRefusedError):
                return {}  # no UI to ask
        else:
            if stages and len({s["stageId"] for s in stages}) == len(stage_ids):
                return {name: sum(float(s.get(key, 0)) for s in stages) * scale
                        for key, (name, scale) in FIELDS.items()}
        time.sleep(0.5)
    return {}
