"""A Spark standalone cluster on this machine: a master and workers as separate JVMs.

For trying the pipeline on a real cluster without one (``make cluster-up``, then
``spark.master: spark://127.0.0.1:7077``) and for the tests that run training on it. It uses the
``spark-class`` launcher the pip-installed PySpark ships and stops every daemon by PID (each
daemon leads its own process group, so executors go with it).

Two networks: ``loopback`` (everything on 127.0.0.1, as before: bandwidth is practically
unlimited) and ``emulated`` (:mod:`pipeline.emulated_network`: each worker, and so its executor
and the training processes that executor starts, in a network namespace of its own behind links
limited to ``link_rate``; the master and the driver on the bridge's address).
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
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyspark

from pipeline.config import ClusterParams
from pipeline.emulated_network import EmulatedNetwork
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
    network: EmulatedNetwork | None = None  # None: every daemon on ``host`` (loopback)

    @classmethod
    def from_params(cls, state_dir: Path, params: ClusterParams) -> StandaloneCluster:
        """The cluster ``params.yaml``'s ``cluster`` section describes."""
        network = (EmulatedNetwork(params.workers, params.link_rate)
                   if params.network == "emulated" else None)
        return cls(state_dir, params.workers, params.cores, params.memory, port=params.port,
                   network=network)

    def _environment(self, worker: int | None = None) -> dict[str, str]:
        env = os.environ | {
            "SPARK_HOME": str(SPARK_HOME), "SPARK_LOCAL_IP": self.host,
            "SPARK_LOG_DIR": str(self.state_dir / "logs"),
            "SPARK_WORKER_DIR": str(self.state_dir / "work"),
            "PYSPARK_PYTHON": sys.executable, "SPARK_NO_DAEMONIZE": "1",
        }
        if self.network is not None and worker is not None:
            env |= self.network.worker_environment(worker)  # inherited by its executors
        return env

    def _launch(self, name: str, *args: str, worker: int | None = None) -> int:
        command = [str(SPARK_HOME / "bin" / "spark-class"), *args]
        if self.network is not None and worker is not None:
            command = self.network.command_in(worker, command)
        log = open(self.state_dir / f"{name}.log", "wb")  # noqa: SIM115 (outlives this call)
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                   env=self._environment(worker), start_new_session=True)
        self.pids.append(process.pid)
        self._save()
        return process.pid

    def start(self, timeout_s: float = 120) -> StandaloneCluster:
        """Start the network (if emulated), the master and the workers.

        Returns when every worker has registered. On any failure or interruption everything
        started so far is stopped and removed before the error propagates.

        Raises:
            NetworkEmulationError: the emulated network cannot be built here (says why).
            RuntimeError: the workers did not register within ``timeout_s``.
        """
        require_java()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._start(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, timeout_s: float) -> None:
        if self.network is not None:
            self._save()  # first, so `cluster down` finds the network even if we die now
            self.network.create()
            self.host = self.network.driver_address
        self._save()
        port = self.port or free_port(self.host)
        webui = free_port(self.host)
        self.master_url = f"spark://{self.host}:{port}"
        self.webui_url = f"http://{self.host}:{webui}"
        deadline = time.monotonic() + timeout_s
        self._launch("master", "org.apache.spark.deploy.master.Master", "--host", self.host,
                     "--port", str(port), "--webui-port", str(webui))
        # A worker that finds no master retries only after Spark's fixed 5-15 s back-off: the
        # workers start once the master answers (its UI is up after its RPC port).
        self._wait_until(lambda: self._master_state() is not None, deadline, timeout_s)
        for index in range(self.workers):
            host = self.network.spark_address(index) if self.network else self.host
            self._launch(f"worker{index}", "org.apache.spark.deploy.worker.Worker",
                         self.master_url, "--host", host, "--cores", str(self.cores),
                         "--memory", self.memory, "--webui-port", "0",
                         "--work-dir", str(self.state_dir / "work"), worker=index)
        self._wait_until(lambda: self.alive_workers() >= self.workers, deadline, timeout_s)

    def _wait_until(self, ready: Callable[[], bool], deadline: float, timeout_s: float) -> None:
        while not ready():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Spark standalone cluster did not come up within "
                                   f"{timeout_s:g} s; see the logs in {self.state_dir}")
            time.sleep(0.2)

    def _master_state(self) -> dict[str, Any] | None:
        """The master's state (its UI's JSON); ``None`` while it is not answering."""
        try:
            with urllib.request.urlopen(f"{self.webui_url}/json/", timeout=2) as response:
                state: dict[str, Any] = json.load(response)
        except OSError:
            return None
        return state

    def alive_workers(self) -> int:
        """Workers the master reports ALIVE (0 while it is not answering)."""
        state = self._master_state() or {}
        return sum(1 for w in state.get("workers", []) if w.get("state") == "ALIVE")

    def stop(self) -> None:
        """Stop every daemon (and its executors) by process group, then remove the network.

        SIGTERM first, SIGKILL for what is still running 15 s later.
        """
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self.pids:
                try:
                    os.killpg(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 15
            while any(_running(pid) for pid in self.pids) and time.monotonic() < deadline:
                time.sleep(0.5)
        if self.network is not None:
            self.network.destroy()
        (self.state_dir / STATE_FILE).unlink(missing_ok=True)

    def _save(self) -> None:
        state = asdict(self) | {"state_dir": str(self.state_dir)}
        temporary = self.state_dir / f".{STATE_FILE}.tmp"
        temporary.write_text(json.dumps(state, indent=2) + "\n")
        temporary.replace(self.state_dir / STATE_FILE)

    @classmethod
    def load(cls, state_dir: Path) -> StandaloneCluster:
        """The cluster recorded in ``state_dir`` by :meth:`start`."""
        state = json.loads((state_dir / STATE_FILE).read_text())
        network = EmulatedNetwork(**state["network"]) if state.get("network") else None
        return cls(**(state | {"state_dir": Path(state["state_dir"]), "network": network}))

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


_INTERRUPTIBLE_PID = os.getpid()  # the process whose SIGTERM means "clean up, then stop"


def _interrupt_on_sigterm(signum: int, frame: object) -> None:
    if os.getpid() != _INTERRUPTIBLE_PID:
        # A forked child inherits this handler: pyroute2's namespace helpers are SIGTERMed when
        # done, and one that raised here instead of ending left `up --net` waiting on it forever.
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> None:
    """``python -m pipeline.cluster up|down|set-rate [--net RATE] [--workers N] ...``.

    ``up`` reads ``params.yaml``'s ``cluster`` section; the options override it, and ``--net
    RATE`` means an emulated network of that link rate.
    """
    from pipeline.config import load_params

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("action", choices=["up", "down", "set-rate"])
    parser.add_argument("rate", nargs="?", help="set-rate: the new link rate, e.g. 100mbit")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--state-dir", type=Path, default=Path(".spark-cluster"))
    parser.add_argument("--net", help="emulated network with this link rate (e.g. 1gbit); "
                        "'loopback': none")
    parser.add_argument("--workers", type=int)
    parser.add_argument("--cores", type=int)
    parser.add_argument("--memory")
    parser.add_argument("--port", type=int)
    args = parser.parse_args(argv)
    recorded = (args.state_dir / STATE_FILE).exists()
    if args.action in ("down", "set-rate") and not recorded:
        print(f"no cluster recorded in {args.state_dir}")
        if args.action == "set-rate":
            sys.exit(1)
        return
    if args.action == "down":
        StandaloneCluster.load(args.state_dir).stop()
        print("cluster stopped")
        return
    if args.action == "set-rate":
        cluster = StandaloneCluster.load(args.state_dir)
        if cluster.network is None or args.rate is None:
            sys.exit("set-rate needs a running emulated cluster (make cluster-up NET=...) and a "
                     "rate, e.g. `python -m pipeline.cluster set-rate 100mbit`")
        cluster.network.set_rate(args.rate)
        cluster._save()
        print(f"every worker's links now at {args.rate}")
        return
    if recorded:
        sys.exit(f"a cluster is already recorded in {args.state_dir}: stop it first "
                 "(make cluster-down)")
    settings = load_params(args.params).cluster
    overrides = {key: getattr(args, key) for key in ("workers", "cores", "memory", "port")
                 if getattr(args, key) is not None}
    if args.net:
        overrides |= ({"network": "loopback"} if args.net == "loopback"
                      else {"network": "emulated", "link_rate": args.net})
    settings = type(settings).model_validate(settings.model_dump() | overrides)
    global _INTERRUPTIBLE_PID
    _INTERRUPTIBLE_PID = os.getpid()
    signal.signal(signal.SIGTERM, _interrupt_on_sigterm)  # clean up also when terminated
    try:
        cluster = StandaloneCluster.from_params(args.state_dir.resolve(), settings).start()
    except KeyboardInterrupt:
        sys.exit("interrupted: everything the cluster had started was stopped and removed")
    network = (f"emulated network, every worker behind {settings.link_rate} links "
               f"(Spark {cluster.network.driver_address}/24, process group "
               f"{cluster.network.pg_address(0)}/24)" if cluster.network else "loopback")
    print(f"Spark standalone cluster up: master {cluster.master_url}, UI {cluster.webui_url}, "
          f"{cluster.workers} workers x {cluster.cores} cores, {network}.\nUse it: set "
          f"spark.master: {cluster.master_url} in params.yaml. Stop it: make cluster-down")


if __name__ == "__main__":
    main()
