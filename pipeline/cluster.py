"""A Spark standalone cluster on this machine: a master and workers as separate JVMs.

For trying the pipeline on a real cluster without one (``make cluster-up``, then
``spark.master: spark://127.0.0.1:7077``) and for the tests that run training on it. It uses the
``spark-class`` launcher the pip-installed PySpark ships; everything binds to 127.0.0.1 and is
stopped by PID (each daemon leads its own process group, so executors go with it).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyspark

from pipeline.runtime import require_java

SPARK_HOME = Path(pyspark.__file__).resolve().parent
STATE_FILE = "cluster.json"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class StandaloneCluster:
    """A master and ``workers`` workers of ``cores`` cores each, state under ``state_dir``."""

    state_dir: Path
    workers: int = 2
    cores: int = 1
    memory: str = "1g"
    host: str = "127.0.0.1"
    port: int = 0  # 0: a free port
    master_url: str = ""
    webui_url: str = ""
    pids: list[int] = field(default_factory=list)

    def _environment(self) -> dict[str, str]:
        return os.environ | {
            "SPARK_HOME": str(SPARK_HOME), "SPARK_LOCAL_IP": self.host,
            "SPARK_LOG_DIR": str(self.state_dir / "logs"),
            "SPARK_WORKER_DIR": str(self.state_dir / "work"),
            "PYSPARK_PYTHON": sys.executable, "SPARK_NO_DAEMONIZE": "1",
        }

    def _launch(self, name: str, *args: str) -> int:
        log = open(self.state_dir / f"{name}.log", "wb")  # noqa: SIM115 (outlives this call)
        process = subprocess.Popen(
            [str(SPARK_HOME / "bin" / "spark-class"), *args], stdout=log,
            stderr=subprocess.STDOUT, env=self._environment(), start_new_session=True)
        self.pids.append(process.pid)
        return process.pid

    def start(self, timeout_s: float = 120) -> StandaloneCluster:
        """Start the master and the workers; return when every worker has registered."""
        require_java()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        port = self.port or free_port(self.host)
        webui = free_port(self.host)
        self.master_url = f"spark://{self.host}:{port}"
        self.webui_url = f"http://{self.host}:{webui}"
        self._launch("master", "org.apache.spark.deploy.master.Master", "--host", self.host,
                     "--port", str(port), "--webui-port", str(webui))
        for index in range(self.workers):
            self._launch(f"worker{index}", "org.apache.spark.deploy.worker.Worker",
                         self.master_url, "--host", self.host, "--cores", str(self.cores),
                         "--memory", self.memory, "--webui-port", str(free_port(self.host)),
                         "--work-dir", str(self.state_dir / "work"))
        self._save()
        deadline = time.monotonic() + timeout_s
        while self.alive_workers() < self.workers:
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the Spark standalone cluster did not come up within "
                                   f"{timeout_s:g} s; see the logs in {self.state_dir}")
            time.sleep(1)
        return self

    def alive_workers(self) -> int:
        """Workers the master reports ALIVE (0 while it is not answering)."""
        try:
            with urllib.request.urlopen(f"{self.webui_url}/json/", timeout=2) as response:
                state = json.load(response)
        except OSError:
            return 0
        return sum(1 for w in state.get("workers", []) if w.get("state") == "ALIVE")

    def stop(self) -> None:
        """Stop every daemon (and its executors) by process group: SIGTERM, then SIGKILL."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self.pids:
                try:
                    os.killpg(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 15
            while any(_running(pid) for pid in self.pids) and time.monotonic() < deadline:
                time.sleep(0.5)
        (self.state_dir / STATE_FILE).unlink(missing_ok=True)

    def _save(self) -> None:
        state = asdict(self) | {"state_dir": str(self.state_dir)}
        (self.state_dir / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")

    @classmethod
    def load(cls, state_dir: Path) -> StandaloneCluster:
        """The cluster recorded in ``state_dir`` by :meth:`start`."""
        state = json.loads((state_dir / STATE_FILE).read_text())
        return cls(**(state | {"state_dir": Path(state["state_dir"])}))

    def __enter__(self) -> StandaloneCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _running(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def main(argv: list[str] | None = None) -> None:
    """``python -m pipeline.cluster up|down [--workers N --cores C --port P]``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument("--state-dir", type=Path, default=Path(".spark-cluster"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--memory", default="2g")
    parser.add_argument("--port", type=int, default=7077)
    args = parser.parse_args(argv)
    if args.action == "down":
        if not (args.state_dir / STATE_FILE).exists():
            print(f"no cluster recorded in {args.state_dir}")
            return
        StandaloneCluster.load(args.state_dir).stop()
        print("cluster stopped")
        return
    cluster = StandaloneCluster(args.state_dir.resolve(), args.workers, args.cores, args.memory,
                                port=args.port).start()
    print(f"Spark standalone cluster up: master {cluster.master_url}, UI {cluster.webui_url}, "
          f"{cluster.workers} workers x {cluster.cores} cores.\nUse it: set spark.master: "
          f"{cluster.master_url} in params.yaml. Stop it: make cluster-down")


if __name__ == "__main__":
    main()
