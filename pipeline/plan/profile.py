"""The compute profile: what each unit of the network costs on this machine, measured.

For a model configuration, a patch size and a thread count, a short profiling run times, at every
batch size asked for:

- each unit's forward and its backward (the unit run alone, on inputs that require grad where a
  scheme would hand it an activation), the median of ``repeats`` runs after a warm-up;
- the loss (forward and backward) and the indexing of a batch out of the in-memory split;
- each unit's share of an SGD-with-momentum step;
- a whole training step (forward, loss, backward, optimiser) of one process: what it takes
  beyond its parts timed alone is the step's overhead, which every worker pays once a step;
- the bytes autograd keeps for backward, per sample, of each unit (the activation memory);
- where workers share the machine's cores, how much slower the model computes with 1, 2, ...
  cores busy at once (:mod:`pipeline.plan.corun`).

Profiles are cached as JSON, one file per model configuration, patch size, threads and machine,
so that planning again costs nothing; batch sizes not measured yet are added to the same file.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from pipeline.io import write_json
from pipeline.model import ModelConfig, MultimodalCNN, Unit, input_key
from pipeline.objective import MULTI_LABEL, per_sample_loss

PROFILE_VERSION = 3  # bump when what is measured changes: old cache files are then ignored


def default_cache_dir() -> Path:
    """``$LANDCOVER_CACHE_DIR`` or ``~/.cache/landcover-mlops``, plus ``compute-profiles``."""
    root = os.environ.get("LANDCOVER_CACHE_DIR") or Path.home() / ".cache" / "landcover-mlops"
    return Path(root) / "compute-profiles"


def machine_id() -> str:
    """The machine a profile holds for: host name, CPU model, cores, torch version."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.node()} | {cpu} | {os.cpu_count()} cores | torch {torch.__version__}"


@dataclass
class ComputeProfile:
    """Measured seconds per unit and batch size (batch sizes are JSON keys, so strings)."""

    machine: str
    threads: int
    forward_s: dict[str, dict[str, float]] = field(default_factory=dict)
    backward_s: dict[str, dict[str, float]] = field(default_factory=dict)
    loss_s: dict[str, float] = field(default_factory=dict)
    fetch_s: dict[str, float] = field(default_factory=dict)
    optimizer_s: dict[str, float] = field(default_factory=dict)
    saved_bytes_per_sample: dict[str, float] = field(default_factory=dict)
    corun_slowdown: list[float] = field(default_factory=lambda: [1.0])  # k busy cores, k-1
    step_s: dict[str, float] = field(default_factory=dict)  # a whole training step, by batch

    @property
    def batch_sizes(self) -> set[int]:
        """The batch sizes measured."""
        return {int(b) for b in self.loss_s}

    def parts_s(self, batch: int) -> float:
        """The parts of one whole step at ``batch``, each timed alone, added up."""
        key = str(batch)
        return (self.fetch_s[key] + self.loss_s[key] + sum(self.optimizer_s.values())
                + sum(self.forward_s[u][key] + self.backward_s[u][key] for u in self.forward_s))

    def overhead(self, batch: int) -> float:
        """Seconds a whole step at ``batch`` takes beyond its parts timed alone.

        The step's own work no part has (zeroing gradients, starting the autograd engine over
        the whole graph, reading the loss), and what timing a part alone on warm caches
        leaves out. Paid once per step by every worker.
        """
        key = str(batch)
        return max(self.step_s[key] - self.parts_s(batch), 0.0) if key in self.step_s else 0.0

    def forward(self, unit: str, batch: int) -> float:
        """Seconds of ``unit``'s forward at ``batch`` samples."""
        return self.forward_s[unit][str(batch)]

    def backward(self, unit: str, batch: int) -> float:
        """Seconds of ``unit``'s backward at ``batch`` samples."""
        return self.backward_s[unit][str(batch)]

    def loss(self, batch: int) -> float:
        """Seconds of the loss, forward and backward, at ``batch`` samples."""
        return self.loss_s[str(batch)]

    def fetch(self, batch: int) -> float:
        """Seconds to index ``batch`` samples of every modality out of the split."""
        return self.fetch_s[str(batch)]

    def optimizer(self, units: Iterable[str]) -> float:
        """Seconds of an optimiser step over the parameters of ``units``."""
        return sum(self.optimizer_s[u] for u in units)


MIN_TIMED_S = 0.05  # short operations are repeated until they have run this long...
MAX_RUNS = 200  # ...or this many times


def _median_time(run: Callable[[], object], repeats: int,
                 before: Callable[[], object] | None = None) -> float:
    """Median seconds of ``run`` over at least ``repeats`` runs after a warm-up.

    Operations of microseconds are repeated until they have run ``MIN_TIMED_S`` in all, so
    that their median is not one scheduler tick.
    """
    times: list[float] = []
    for attempt in range(MAX_RUNS + 1):  # the first is a warm-up
        if before is not None:
            before()
        start = time.perf_counter()
        run()
        if attempt:
            times.append(time.perf_counter() - start)
        if len(times) >= repeats and sum(times) >= MIN_TIMED_S:
            break
    return statistics.median(times)


def _random_inputs(config: ModelConfig, batch: int, patch_size: int) -> dict[str, torch.Tensor]:
    return {input_key(m): torch.randn(batch, c, patch_size, patch_size)
            for m, c in config.channels.items()}


def _storage(tensor: torch.Tensor) -> tuple[int, int]:
    return tensor.untyped_storage().data_ptr(), tensor.untyped_storage().nbytes()


def _saved_bytes_per_sample(model: MultimodalCNN, batch: int, patch_size: int
                            ) -> dict[str, float]:
    """Per unit, the bytes of the tensors autograd keeps for backward in a whole forward pass.

    Each tensor counts once, for the unit that first saves it; parameters and the input patches
    (the batch, counted apart) do not count.
    """
    env: dict[str, torch.Tensor] = _random_inputs(model.config, batch, patch_size)
    seen = {_storage(t) for t in env.values()}
    saved = {u.name: 0 for u in model.units}
    params = {_storage(p) for p in model.parameters()}
    current = [""]

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        key = _storage(tensor)
        if key not in seen and key not in params:
            seen.add(key)
            saved[current[0]] += key[1]
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        for unit in model.units:
            current[0] = unit.name
            env.update(unit(env))
    return {name: nbytes / batch for name, nbytes in saved.items()}


def _time_unit(model: MultimodalCNN, unit: Unit, env: dict[str, torch.Tensor], raw: set[str],
               repeats: int) -> tuple[float, float]:
    """Median seconds of ``unit``'s forward and of its backward, on the activations ``env``."""
    held: dict[str, dict[str, torch.Tensor]] = {}

    def inputs() -> dict[str, torch.Tensor]:
        return {k: env[k] if k in raw else env[k].detach().requires_grad_() for k in unit.inputs}

    def zero() -> None:
        model.zero_grad(set_to_none=True)

    def forward() -> None:
        held["out"] = unit(inputs())

    def prepare_backward() -> None:
        zero()
        forward()

    def backward() -> None:
        outputs = list(held["out"].values())
        torch.autograd.backward(outputs, [torch.ones_like(o) for o in outputs])

    return (_median_time(forward, repeats, zero),
            _median_time(backward, repeats, prepare_backward))


def _measure_batch(model: MultimodalCNN, profile: ComputeProfile, batch: int, patch_size: int,
                   repeats: int) -> None:
    config = model.config
    env = _random_inputs(config, batch, patch_size)
    raw = set(env)
    with torch.no_grad():
        for unit in model.units:
            env.update(unit(env))
    key = str(batch)
    for unit in model.units:
        forward, backward = _time_unit(model, unit, env, raw, repeats)
        profile.forward_s.setdefault(unit.name, {})[key] = forward
        profile.backward_s.setdefault(unit.name, {})[key] = backward
    logits = env["logits"]
    labels = (torch.randint(0, 2, logits.shape).float() if config.task == MULTI_LABEL
              else torch.randint(0, config.num_classes, (batch,)))

    def loss() -> None:
        leaf = logits.detach().requires_grad_()
        per_sample_loss(leaf, labels, config.task).mean().backward()

    profile.loss_s[key] = _median_time(loss, repeats)
    pool = {m: torch.randn(4 * batch, c, patch_size, patch_size)
            for m, c in config.channels.items()}
    pool_labels = (torch.randint(0, 2, (4 * batch, config.num_classes)).float()
                   if config.task == MULTI_LABEL
                   else torch.randint(0, config.num_classes, (4 * batch,)))
    index = torch.randperm(4 * batch)[:batch]
    profile.fetch_s[key] = _median_time(
        lambda: ({m: x[index] for m, x in pool.items()}, pool_labels[index]), repeats)
    profile.step_s[key] = _time_step(model, pool, pool_labels, batch, repeats)


def _time_step(model: MultimodalCNN, pool: dict[str, torch.Tensor], labels: torch.Tensor,
               batch: int, repeats: int) -> float:
    """Median seconds of a whole single-process training step at ``batch``, as training runs it."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-6, momentum=0.9)

    def step() -> None:
        index = torch.randperm(len(labels))[:batch]
        inputs = {m: x[index] for m, x in pool.items()}
        optimizer.zero_grad(set_to_none=True)
        loss = per_sample_loss(model(inputs), labels[index], model.config.task).mean()
        loss.backward()
        optimizer.step()
        loss.item()

    return _median_time(step, max(repeats, 3))


def _measure_optimizer(model: MultimodalCNN, profile: ComputeProfile, repeats: int) -> None:
    for unit in model.units:
        params = [p for m in unit.modules for p in m.parameters()]
        for p in params:
            p.grad = torch.randn_like(p)
        optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9)
        profile.optimizer_s[unit.name] = _median_time(optimizer.step, repeats)


def measure(config: ModelConfig, patch_size: int, batch_sizes: Iterable[int], threads: int = 1,
            repeats: int = 5, profile: ComputeProfile | None = None,
            shared_cores: int | None = None) -> ComputeProfile:
    """Time every unit of ``config``'s model at each of ``batch_sizes`` with ``threads`` threads.

    Adds to ``profile`` where given (the batch sizes it lacks). With ``shared_cores``, also
    measures how much slower the model computes with 1 .. that many cores busy at once
    (:mod:`pipeline.plan.corun`), at the largest batch size.
    """
    batch_sizes = set(batch_sizes)
    profile = profile or ComputeProfile(machine=machine_id(), threads=threads)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        model = MultimodalCNN(config)
        model.train()
        for batch in sorted(set(batch_sizes) - profile.batch_sizes):
            _measure_batch(model, profile, batch, patch_size, repeats)
        if not profile.optimizer_s:
            _measure_optimizer(model, profile, repeats)
            profile.saved_bytes_per_sample = _saved_bytes_per_sample(model, 8, patch_size)
    finally:
        torch.set_num_threads(before)
    if shared_cores and shared_cores > 1 and len(profile.corun_slowdown) != shared_cores:
        from pipeline.plan.corun import corun_slowdown

        profile.corun_slowdown = list(corun_slowdown(config, patch_size, max(batch_sizes),
                                                     shared_cores))
    return profile


def cache_key(config: ModelConfig, patch_size: int, threads: int) -> str:
    """The name of a profile's cache file (configuration, patch, threads and machine)."""
    blob = json.dumps({"model": config.to_dict(), "patch_size": patch_size, "threads": threads,
                       "machine": machine_id(), "version": PROFILE_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_or_measure(config: ModelConfig, patch_size: int, batch_sizes: Iterable[int],
                    threads: int = 1, cache_dir: Path | None = None, repeats: int = 5,
                    shared_cores: int | None = None) -> ComputeProfile:
    """The cached profile, extended with what it lacks (measured now, then saved)."""
    batch_sizes = set(batch_sizes)
    path = (cache_dir or default_cache_dir()) / f"{cache_key(config, patch_size, threads)}.json"
    profile = None
    if path.exists():
        try:
            profile = ComputeProfile(**json.loads(path.read_text()))
        except (ValueError, TypeError):
            profile = None  # a file from another version: measure afresh
    corun_known = not shared_cores or shared_cores < 2 or (
        profile is not None and len(profile.corun_slowdown) == shared_cores)
    if profile is not None and batch_sizes <= profile.batch_sizes and corun_known:
        return profile
    missing = sorted(batch_sizes - (profile.batch_sizes if profile else set()))
    print(f"[plan] profiling the model at batch sizes {missing} with {threads} thread(s) ...",
          flush=True)
    started = time.perf_counter()
    profile = measure(config, patch_size, batch_sizes, threads, repeats, profile, shared_cores)
    print(f"[plan] profiled in {time.perf_counter() - started:.1f} s; cached in {path}",
          flush=True)
    write_json(path, asdict(profile))
    return profile
