"""PyTorch workers started directly in Spark barrier tasks, one process per task.

The mechanism ``TorchDistributor(local_mode=False)`` uses, without its ``torchrun`` agent (which
cost 25-35 s per launch on 2 cores): one barrier task per worker; rank 0's task address (from
``BarrierTaskContext.getTaskInfos``) is the master address, rank 0 picks a free port there and
``allGather`` shares it. Each task then forks one worker process with ``RANK``, ``WORLD_SIZE``,
``MASTER_ADDR`` and ``MASTER_PORT`` set (the ``env://`` rendezvous of
``torch.distributed.init_process_group``), runs the function in it and waits for it.

The worker runs in a process of its own so that its task can tell how it ended: its result, its
own failure report (:mod:`pipeline.training.failures`), or the signal that killed it and where
it was then. Every task returns an :class:`~pipeline.training.failures.Outcome`, so the driver
hears from all workers, not only the first that failed. The worker process is named
``landcover-r<rank>`` (``ps``, ``psutil``) and dies with its task (``PR_SET_PDEATHSIG``), so a
cancelled Spark job leaves no worker behind.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import pickle
import signal
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from typing import Any

from pipeline.errors import TrainingError
from pipeline.training.failures import FAILURE_MARK, Outcome, Whereabouts, signal_name

WORKER_NAME = "landcover-r{rank}"  # the worker process's name (at most 15 characters)
_PR_SET_PDEATHSIG, _PR_SET_NAME = 1, 15
_WHEREABOUTS_BYTES = 256


def run_workers(spark: Any, function: Callable[[Any], Any], argument: Any, world_size: int,
                timeout_s: float, group: str | None = None) -> list[Outcome]:
    """Run ``function(argument)`` in ``world_size`` worker processes on Spark barrier tasks.

    Returns every worker's outcome, by rank. Raises :class:`TrainingError` if they outlast
    ``timeout_s`` (the Spark job is cancelled and the workers stopped).
    """
    def task(_: Iterator[int]) -> Iterator[Outcome]:
        yield _run_in_task(function, argument, world_size)

    rdd = (spark.sparkContext.parallelize(range(world_size), world_size)
           .barrier().mapPartitions(task))
    outcomes = run_with_timeout(spark, rdd.collect, timeout_s, group)
    return sorted(outcomes, key=lambda o: o.rank)


def _run_in_task(function: Callable[[Any], Any], argument: Any, world_size: int) -> Outcome:
    from pyspark import BarrierTaskContext

    context = BarrierTaskContext.get()
    rank = context.partitionId()
    master = context.getTaskInfos()[0].address.split(":")[0]
    port = int(context.allGather(str(_free_port(master) if rank == 0 else 0))[0])
    env = {"MASTER_ADDR": master, "MASTER_PORT": str(port), "RANK": str(rank),
           "WORLD_SIZE": str(world_size), "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1",
           "CUDA_VISIBLE_DEVICES": ""}
    return run_worker_process(function, argument, rank, env)


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def run_worker_process(function: Callable[[Any], Any], argument: Any, rank: int,
                       env: dict[str, str]) -> Outcome:
    """Run ``function(argument)`` in a forked process with ``env``; how it ended."""
    forked = multiprocessing.get_context("fork")
    receiver, sender = forked.Pipe(duplex=False)
    whereabouts = forked.Array("c", _WHEREABOUTS_BYTES, lock=False)
    process = forked.Process(target=_worker_main, name=WORKER_NAME.format(rank=rank),
                             args=(function, argument, rank, env, sender, whereabouts))
    process.start()
    sender.close()
    try:
        kind, value = pickle.loads(receiver.recv_bytes())
    except EOFError:  # it died before it could say anything
        kind, value = "", None
    process.join(timeout=30)
    if process.is_alive():  # it said what it had to say but does not end
        process.kill()
        process.join()
    code = process.exitcode or 0
    where = whereabouts.value.decode(errors="replace")
    if kind == "ok":
        return Outcome(rank, result=value)
    if kind == "failed":
        return Outcome(rank, failure=value)
    if code < 0:
        return Outcome(rank, killed=f"killed by {signal_name(-code)} (signal {-code}, pid "
                                    f"{process.pid})", where=where)
    return Outcome(rank, failure=f"worker rank {rank} exited with status {code} without a "
                                 f"result, {where}")


def _worker_main(function: Callable[[Any], Any], argument: Any, rank: int, env: dict[str, str],
                 sender: Connection, whereabouts: Any) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # dies with its task
    libc.prctl(_PR_SET_NAME, WORKER_NAME.format(rank=rank).encode())
    os.environ.update(env)

    def publish(text: str) -> None:
        whereabouts.value = text.encode()[:_WHEREABOUTS_BYTES - 1]

    Whereabouts.publish = publish
    try:
        result = function(argument)
    except BaseException as exc:
        notes = [n for n in getattr(exc, "__notes__", []) if n.startswith(FAILURE_MARK)]
        report = (notes[0].removeprefix(FAILURE_MARK).strip() if notes
                  else f"worker rank {rank} failed: {type(exc).__name__}: {exc}")
        sender.send_bytes(pickle.dumps(("failed", report)))
    else:  # plain pickle: torch's own would pass tensors as handles to memory that dies with it
        sender.send_bytes(pickle.dumps(("ok", result)))
    sender.close()
    os._exit(0)  # at once: the interpreter's teardown (gloo's threads) can wait on a dead peer


def run_with_timeout(spark: Any, run: Callable[[], Any], timeout_s: float,
                     group: str | None = None) -> Any:
    """Run ``run`` (which starts Spark jobs) in Spark job group ``group``.

    A new group is made if none is given. The group is cancelled if it outlasts ``timeout_s``
    or the driver is interrupted.
    """
    context = spark.sparkContext
    group = group or f"landcover-{uuid.uuid4().hex}"
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            context.setJobGroup(group, "landcover-mlops training", interruptOnCancel=True)
            outcome["result"] = run()
        except BaseException as exc:  # handed to the calling thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="landcover-training", daemon=True)
    thread.start()
    try:
        thread.join(timeout_s)
    except BaseException:  # Ctrl-C or SIGTERM on the driver: stop the workers, then go
        context.cancelJobGroup(group)
        thread.join(60)
        raise
    if thread.is_alive():
        context.cancelJobGroup(group)
        thread.join(120)
        raise TrainingError(
            f"training did not finish within train.timeout_s = {timeout_s:g} s; its Spark job "
            "was cancelled and the workers stopped. Fix: look for a hung worker in the log "
            "above, or raise train.timeout_s for longer runs")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("result")
