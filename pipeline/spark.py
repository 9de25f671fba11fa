"""The SparkSession, built from ``params.yaml``'s ``spark`` section.

Nothing here assumes a local master: ``spark.master`` decides. For local masters the driver binds
to 127.0.0.1, and with ``SPARK_LOCAL_IP=127.0.0.1`` (set by :mod:`pipeline.runtime`) so does the
Spark UI, whose REST API the training reads Spark's own task metrics from.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from pipeline.config import SparkParams
from pipeline.runtime import allocator_environment, require_java
from pipeline.stage_clock import CLOCK

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def spark_conf(params: SparkParams) -> dict[str, str]:
    """The Spark settings for ``params``: safe defaults, then the user's ``spark.conf``."""
    conf = {
        "spark.python.worker.reuse": "true",
        "spark.python.daemon.module": "pipeline.spark_daemon",  # workers start with torch
        "spark.ui.showConsoleProgress": "false",
        "spark.executorEnv.PYSPARK_PYTHON": os.environ.get("PYSPARK_PYTHON", sys.executable),
    } | {f"spark.executorEnv.{key}": os.environ.get(key, value)
         for key, value in allocator_environment().items()}
    driver = "127.0.0.1" if params.master.startswith("local") else _route_to(params.master)
    if driver is not None:
        conf |= {"spark.driver.host": driver, "spark.driver.bindAddress": driver}
    return conf | dict(params.conf)


def _route_to(master: str) -> str | None:
    """This machine's address on the route to a ``spark://host:port`` master.

    The executors must reach the driver at that address (with ``SPARK_LOCAL_IP=127.0.0.1`` the
    driver would otherwise bind to loopback, which only works when everything is on this
    machine's loopback). ``None`` for other masters (YARN, Kubernetes: Spark decides).
    """
    if not master.startswith("spark://"):
        return None
    host = master.removeprefix("spark://").split(",")[0].rsplit(":", 1)[0]
    try:
        address = str(socket.getaddrinfo(host, None, socket.AF_INET)[0][4][0])  # AF_INET: a str
        if ipaddress.ip_address(address).is_loopback:
            return address
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((address, 7077))  # no packet is sent: this only picks the route
            return str(probe.getsockname()[0])
    except OSError:
        return None


@contextmanager
def spark_session(params: SparkParams) -> Iterator[SparkSession]:
    """Start a SparkSession for ``params`` and stop it on exit.

    If a session is already active in this process (a notebook, a test suite), it is reused and
    left running: only a session started here is stopped here.

    Raises:
        JavaNotFoundError: no Java runtime is installed.
    """
    require_java()
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        yield active
        return
    builder = SparkSession.builder.master(params.master).appName(params.app_name)
    for key, value in spark_conf(params).items():
        builder = builder.config(key, value)
    with CLOCK.phase("spark start"):
        session = builder.getOrCreate()
        session.sparkContext.setLogLevel("ERROR")
    try:
        yield session
    finally:
        with CLOCK.phase("spark stop"):
            session.stop()
