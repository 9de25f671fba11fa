"""A discrete-event simulation of the workers' programs on shared cores and rate-limited links.

Each worker runs a *program*: the operations one optimiser step of its scheme performs, in the
order the code performs them (:mod:`pipeline.plan.programs` writes them). The simulation plays
every worker's program for a few steps at once:

- ``Compute(seconds)`` needs the worker and one core. Workers that share a machine share its
  cores (``Network.shared_cores``); with more workers computing than cores, they queue, and a
  computation that starts while other cores compute takes the measured co-run slowdown longer.
  With ``Network.time_slice_s`` the cores are a round-robin scheduler, as the operating system's
  is: a worker woken (after waiting on a message or a collective) on busy cores waits at most a
  time slice before it runs, and the work it displaces runs after it (that core's queue grows
  by what it computes); a worker that goes on computing queues behind the core's work.
- ``Send`` is non-blocking, as ``isend`` is. The message occupies the sender's outgoing link and
  the receiver's incoming link for its wire bytes at the link rate (messages on a link go one after
  another), and arrives a per-message latency after its last byte left.
- ``Recv`` blocks until the message has arrived (one that already has does not block);
  ``WaitSends`` until this worker's sends have left.
- ``AllReduce`` is a ring all-reduce of a group: it starts when every member has posted it (and
  the group's previous all-reduce is done), and takes ``2 (W - 1)`` phases, each a latency plus
  ``n / W`` wire bytes at the link rate. Blocking, or posted (DDP's gradient buckets, which go on
  the wire while backward goes on) and waited for with ``WaitAllReduces``.

The result is each worker's step times, as the workers measure them (from the start of a step to
its end), and its bytes.
"""

from __future__ import annotations

import heapq
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

MSS_BYTES = 1448  # TCP payload per 1500-byte frame (IPv4, TCP timestamps)
FRAME_HEADER_BYTES = 66  # Ethernet 14 + IPv4 20 + TCP 32 (with timestamps)
ACK_SHARE = 0.5  # delayed ACKs: one 66-byte frame per two segments, on the reverse link


def wire_bytes(payload: float) -> float:
    """Bytes a shaper charges for ``payload`` bytes of TCP payload.

    Each 1448-byte segment carries 66 bytes of headers, and its share of an ACK (one per two
    segments) uses the other direction of the same link pair, which every scheme's traffic also
    uses, so it is charged here too.
    """
    return payload * (1 + FRAME_HEADER_BYTES * (1 + ACK_SHARE) / MSS_BYTES)


@dataclass(frozen=True)
class Network:
    """The links between workers and the machines they run on.

    ``rate_bytes_s``: each worker's link, each direction (None: no shaper, as on loopback).
    ``copy_bytes_s`` / ``duplex_bytes_s``: the bulk rate two processes reach one way, and each
    way when both send at once (measured: the stack's copying, and TCP on the links).
    ``latency_s``: a message's fixed cost, from the send call to the receiver holding it.
    ``shared_cores``: the cores of the one machine every worker runs on (None: each worker has
    cores of its own). ``time_slice_s``: how long the scheduler lets a computation run before a
    woken worker gets its core (None: a computation, once started, keeps its core to the end).
    """

    rate_bytes_s: float | None
    latency_s: float
    copy_bytes_s: float = float("inf")
    duplex_bytes_s: float = float("inf")
    shared_cores: int | None = None
    corun_slowdown: tuple[float, ...] = ()  # compute time with k shared cores busy, over alone
    time_slice_s: float | None = None  # the shared cores' scheduler slice (None: FIFO per op)

    def slowdown(self, busy: int) -> float:
        """How much longer compute takes with ``busy`` of the shared cores computing."""
        if not self.corun_slowdown or busy < 1:
            return 1.0
        return self.corun_slowdown[min(busy, len(self.corun_slowdown)) - 1]

    def transfer_s(self, payload: float, duplex: bool = False) -> float:
        """Seconds a link is busy with ``payload`` bytes (``duplex``: while the other way is).

        The two-way rate applies to unshaped links only: on shaped links a ring all-reduce was
        measured moving at the one-way rate in both directions at once (100 Mbit/s: 10.9 MB
        each way in 0.95 s), where the two-processes probe reads half of it.
        """
        if self.rate_bytes_s is None:
            return payload / (self.duplex_bytes_s if duplex else self.copy_bytes_s)
        return max(wire_bytes(payload) / self.rate_bytes_s, payload / self.copy_bytes_s)


@dataclass(frozen=True)
class Compute:
    """Busy on one core for ``seconds``; ``what`` names it (forward, backward, optimiser...)."""

    seconds: float
    what: str = "compute"


Tag = tuple[object, ...]  # names a message or a collective, e.g. ("grad", step, bucket)


@dataclass(frozen=True)
class Send:
    """Start sending ``nbytes`` to ``dst``; ``tag`` pairs it with the receive."""

    dst: int
    nbytes: float
    tag: Tag


@dataclass(frozen=True)
class Recv:
    """Wait for the message ``tag`` from ``src``."""

    src: int
    tag: Tag


@dataclass(frozen=True)
class WaitSends:
    """Wait until every send of this worker has left its link."""


@dataclass(frozen=True)
class AllReduce:
    """A ring all-reduce of ``nbytes`` among ``group``; ``post`` returns at once (DDP buckets)."""

    group: tuple[int, ...]
    nbytes: float
    tag: Tag
    post: bool = False


@dataclass(frozen=True)
class WaitAllReduces:
    """Wait for every all-reduce this worker posted."""


Op = Compute | Send | Recv | WaitSends | AllReduce | WaitAllReduces
Program = Callable[[int], Iterator[Op]]  # step index -> that step's operations


@dataclass
class WorkerTrace:
    """What one worker did in the simulation."""

    step_s: list[float] = field(default_factory=list)
    compute_s: float = 0.0
    payload_sent: float = 0.0
    payload_received: float = 0.0

    def steady_step_s(self, warmup: int) -> float:
        """Mean step time after the first ``warmup`` steps."""
        timed = self.step_s[warmup:] or self.step_s
        return statistics.fmean(timed)


def all_reduce_payload(nbytes: float, world: int) -> float:
    """Bytes each member sends (and receives) in a ring all-reduce of ``nbytes``."""
    return 2.0 * (world - 1) / world * nbytes if world > 1 else 0.0


class _Simulation:
    def __init__(self, programs: list[Program], network: Network, steps: int) -> None:
        self.network, self.steps = network, steps
        self.programs = programs
        self.traces = [WorkerTrace() for _ in programs]
        cores = network.shared_cores
        self.cores = [0.0] * cores if cores else None
        self.tx_free = [0.0] * len(programs)
        self.rx_free = [0.0] * len(programs)
        self.arrivals: dict[Tag, float] = {}  # (src, dst, tag) -> arrival time
        self.waiting_recv: dict[Tag, int] = {}  # (src, dst, tag) -> waiting worker
        self.last_send_done = [0.0] * len(programs)
        self.collectives: dict[Tag, dict[int, float]] = defaultdict(dict)  # tag -> posts
        self.collective_done: dict[Tag, float] = {}
        self.group_free: dict[Tag, float] = defaultdict(float)
        self.posted: list[list[Tag]] = [[] for _ in programs]
        self.blocked_on: dict[int, Tag] = {}  # worker -> collective tag it blocks on
        self.waiting_all: dict[int, float] = {}  # worker -> time it began waiting
        self.queue: list[tuple[float, int, int]] = []
        self.seq = 0

    def resume(self, worker: int, at: float) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (at, self.seq, worker))

    def run(self) -> list[WorkerTrace]:
        self.ops = [self._ops(w) for w in range(len(self.programs))]
        self.step_start = [0.0] * len(self.programs)
        self.ran_until = [0.0] * len(self.programs)  # when each worker's last compute ended
        for worker in range(len(self.programs)):
            self.resume(worker, 0.0)
        while self.queue:
            now, _, worker = heapq.heappop(self.queue)
            self._advance(worker, now)
        unfinished = [w for w, t in enumerate(self.traces) if len(t.step_s) < self.steps]
        if unfinished:
            raise RuntimeError(f"the simulated programs deadlock: workers {unfinished} never "
                               "finish (a receive without its send?)")
        return self.traces

    def _ops(self, worker: int) -> Iterator[Op | str]:
        for step in range(self.steps):
            yield "start"
            yield from self.programs[worker](step)
            yield "end"

    def _advance(self, worker: int, now: float) -> None:
        """Run ``worker``'s operations from time ``now`` until it must wait."""
        trace = self.traces[worker]
        for op in self.ops[worker]:
            if op == "start":
                self.step_start[worker] = now
            elif op == "end":
                trace.step_s.append(now - self.step_start[worker])
            elif isinstance(op, Compute):
                start, seconds = now, op.seconds
                if self.cores is not None:
                    core = min(range(len(self.cores)), key=self.cores.__getitem__)
                    free = self.cores[core]
                    start = max(now, free)
                    woken = now > self.ran_until[worker]
                    time_slice = self.network.time_slice_s
                    if time_slice is not None and woken and free > now:
                        start = min(free, now + time_slice)
                    busy = 1 + sum(1 for c, f in enumerate(self.cores)
                                   if c != core and f > start)
                    seconds *= self.network.slowdown(busy)
                    self.cores[core] = max(free, start) + seconds
                trace.compute_s += seconds
                self.ran_until[worker] = start + seconds
                self.resume(worker, start + seconds)
                return
            elif isinstance(op, Send):
                self._send(worker, op, now)
            elif isinstance(op, Recv):
                key = (op.src, worker, op.tag)
                if key not in self.arrivals:
                    self.waiting_recv[key] = worker
                    return
                arrival = self.arrivals.pop(key)
                if arrival > now:
                    self.resume(worker, arrival)
                    return
            elif isinstance(op, WaitSends):
                if self.last_send_done[worker] > now:
                    self.resume(worker, self.last_send_done[worker])
                    return
            elif isinstance(op, AllReduce):
                self._post(worker, op, now)
                if not op.post:
                    self.blocked_on[worker] = op.tag
                    self._maybe_release(op.tag)
                    return
                self.posted[worker].append(op.tag)
                self._maybe_release(op.tag)
            elif isinstance(op, WaitAllReduces):
                tags = self.posted[worker]
                if all(t in self.collective_done for t in tags):
                    done = max([now] + [self.collective_done[t] for t in tags])
                    self.posted[worker] = []
                    if done > now:
                        self.resume(worker, done)
                        return
                else:
                    self.waiting_all[worker] = now
                    return
        # the program is done

    def _send(self, worker: int, op: Send, now: float) -> None:
        start = max(now, self.tx_free[worker], self.rx_free[op.dst])
        end = start + self.network.transfer_s(op.nbytes)
        self.tx_free[worker] = self.rx_free[op.dst] = end
        self.last_send_done[worker] = max(self.last_send_done[worker], end)
        self.traces[worker].payload_sent += op.nbytes
        self.traces[op.dst].payload_received += op.nbytes
        key = (worker, op.dst, op.tag)
        arrival = end + self.network.latency_s
        if key in self.waiting_recv:
            self.resume(self.waiting_recv.pop(key), arrival)
        else:
            self.arrivals[key] = arrival

    def _post(self, worker: int, op: AllReduce, now: float) -> None:
        posts = self.collectives[op.tag]
        posts[worker] = now
        if len(posts) < len(op.group):
            return
        group, world = op.group, len(op.group)
        start = max([*posts.values(), self.group_free[group],
                     *(self.tx_free[m] for m in group), *(self.rx_free[m] for m in group)])
        chunk = op.nbytes / world
        phases = 2 * (world - 1)
        end = start + phases * (self.network.latency_s
                                + self.network.transfer_s(chunk, duplex=True))
        self.group_free[group] = end
        for member in group:
            self.tx_free[member] = self.rx_free[member] = end
            volume = all_reduce_payload(op.nbytes, world)
            self.traces[member].payload_sent += volume
            self.traces[member].payload_received += volume
        self.collective_done[op.tag] = end

    def _maybe_release(self, tag: Tag) -> None:
        if tag not in self.collective_done:
            return
        done = self.collective_done[tag]
        for worker, blocked in list(self.blocked_on.items()):
            if blocked == tag:
                del self.blocked_on[worker]
                self.resume(worker, done)
        for worker, since in list(self.waiting_all.items()):
            tags = self.posted[worker]
            if all(t in self.collective_done for t in tags):
                del self.waiting_all[worker]
                self.posted[worker] = []
                self.resume(worker, max([since] + [self.collective_done[t] for t in tags]))


def simulate(programs: list[Program], network: Network, steps: int) -> list[WorkerTrace]:
    """Play ``programs`` (one per worker) for ``steps`` optimiser steps on ``network``."""
    return _Simulation(programs, network, steps).run()
