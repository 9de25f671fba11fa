"""Process-group communication that counts its payload bytes and time, by purpose.

Every tensor a worker hands to the process group goes through a :class:`Comm`, which counts its
*payload*: point-to-point tensors count their exact size; an all-reduce of ``n`` bytes among
``W`` workers is *modelled* as ``2 (W - 1) / W * n`` sent and received per worker, the traffic of
the bandwidth-optimal ring algorithm. What actually crosses a link (headers, the algorithm gloo
really runs) is measured apart, from the interface counters (:mod:`pipeline.training.wire`);
the emulated-network tests hold the two against each other. DDP's communication hooks (plain,
fp16, bf16, PowerSGD) call ``dist.all_reduce`` themselves, some from completion callbacks on
gloo's threads; :meth:`Comm.attribute_all_reduce` counts those calls too, without waiting on
them, so gradient buckets stay in flight while backward goes on, as in plain DDP.
"""

from __future__ import annotations

import pickle
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist

PURPOSES = ("gradients", "parameters", "activations", "activation_gradients", "control",
            "validation")


def tensor_bytes(tensor: torch.Tensor) -> int:
    """Payload bytes of ``tensor``."""
    return tensor.numel() * tensor.element_size()


def all_reduce_bytes(payload: float, world_size: int) -> float:
    """Bytes each worker sends (and receives) in a ring all-reduce of ``payload`` bytes."""
    return 2.0 * (world_size - 1) / world_size * payload if world_size > 1 else 0.0


class Comm:
    """Counting wrappers around the ``torch.distributed`` calls the schemes use."""

    def __init__(self) -> None:
        self.sent: dict[str, float] = defaultdict(float)
        self.received: dict[str, float] = defaultdict(float)
        self.seconds = 0.0  # wall time spent blocked in communication
        self._lock = threading.Lock()  # hooks count from gloo's completion threads
        self._last_bucket = 0.0
        self.buckets = 0  # gradient buckets DDP handed over

    @contextmanager
    def _timed(self) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - start

    def _count(self, purpose: str, sent: float, received: float) -> None:
        if purpose not in PURPOSES:
            raise ValueError(f"unknown traffic purpose {purpose!r}; use one of {PURPOSES}")
        with self._lock:
            self.sent[purpose] += sent
            self.received[purpose] += received

    def all_reduce(self, tensor: torch.Tensor, purpose: str, group: Any = None) -> None:
        """Sum ``tensor`` in place across ``group`` (blocking)."""
        world = dist.get_world_size(group)
        volume = all_reduce_bytes(tensor_bytes(tensor), world)
        self._count(purpose, volume, volume)
        with self._timed():
            _ORIGINAL_ALL_REDUCE(tensor, group=group)

    def send(self, tensor: torch.Tensor, dst: int, purpose: str, tag: int = 0) -> dist.Work:
        """Start sending ``tensor`` to rank ``dst``; wait on the returned work before reuse."""
        self._count(purpose, tensor_bytes(tensor), 0)
        with self._timed():
            work = dist.isend(tensor.contiguous(), dst, tag=tag)
        assert work is not None  # None only for a rank outside the default group
        return work

    def recv(self, tensor: torch.Tensor, src: int, purpose: str, tag: int = 0) -> torch.Tensor:
        """Receive into ``tensor`` from rank ``src`` (blocking)."""
        self._count(purpose, 0, tensor_bytes(tensor))
        with self._timed():
            dist.recv(tensor, src, tag=tag)
        return tensor

    def wait(self, works: list[dist.Work]) -> None:
        """Wait for pending sends."""
        with self._timed():
            for work in works:
                work.wait()

    def gather_to_zero(self, obj: Any, purpose: str = "control") -> list[Any] | None:
        """Gather a picklable object from every rank on rank 0 (``None`` elsewhere)."""
        size = len(pickle.dumps(obj))
        rank = dist.get_rank()
        self._count(purpose, size if rank != 0 else 0, 0)
        out: list[Any] | None = [None] * dist.get_world_size() if rank == 0 else None
        with self._timed():
            dist.gather_object(obj, out, dst=0)
        if out is not None:
            self._count(purpose, 0, sum(len(pickle.dumps(o)) for o in out[1:]))
        return out

    def attribute_all_reduce(self, purpose: str) -> None:
        """Count every ``dist.all_reduce`` made from now on (by DDP's hooks) as ``purpose``.

        Until :meth:`close`. Calls made through :meth:`all_reduce` are counted once, as theirs.
        """

        def counted(tensor: torch.Tensor, op: Any = dist.ReduceOp.SUM, group: Any = None,
                    async_op: bool = False) -> Any:
            volume = all_reduce_bytes(tensor_bytes(tensor), dist.get_world_size(group))
            self._count(purpose, volume, volume)
            return _ORIGINAL_ALL_REDUCE(tensor, op=op, group=group, async_op=async_op)

        dist.all_reduce = counted

    def bucket_ready(self) -> None:
        """A DDP hook's note that backward handed a gradient bucket to the network."""
        self._last_bucket = time.perf_counter()
        self.buckets += 1

    def add_exposed_time(self) -> None:
        """After backward: count the time it waited past its last bucket as communication.

        That is the communication that overlapping with backward did not hide.
        """
        if self._last_bucket:
            self.seconds += max(time.perf_counter() - self._last_bucket, 0.0)
            self._last_bucket = 0.0

    def close(self) -> None:
        """Stop :meth:`attribute_all_reduce`'s counting."""
        dist.all_reduce = _ORIGINAL_ALL_REDUCE

    def totals(self) -> dict[str, float]:
        """Payload bytes sent and received, in total and per purpose, and the time blocked."""
        with self._lock:
            out = {"payload_bytes_sent": sum(self.sent.values()),
                   "payload_bytes_received": sum(self.received.values()),
                   "comm_s": self.seconds, "gradient_buckets": float(self.buckets)}
            for purpose in PURPOSES:
                out[f"payload_bytes_sent_{purpose}"] = self.sent.get(purpose, 0.0)
                out[f"payload_bytes_received_{purpose}"] = self.received.get(purpose, 0.0)
        return out


_ORIGINAL_ALL_REDUCE = dist.all_reduce
