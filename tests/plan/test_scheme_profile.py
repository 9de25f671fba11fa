"""Scheme profiles: each scheme's real strategy measured on local processes, then used to scale
the cost model's programs so that every worker computes what it measured."""

from __future__ import annotations

import json
from dataclasses import replace
from itertools import islice
from pathlib import Path

import pytest

from pipeline.plan import scheme_profile
from pipeline.plan.predict import predict
from pipeline.plan.programs import SchemePrograms, scaled_to
from pipeline.plan.scheme_profile import SchemeProfile
from pipeline.plan.simulate import simulate
from pipeline.training.job import ParallelSettings
from tests.plan.test_simulate import CONFIG, FREE, PATCH, job, profile_with

DATA_PARALLEL = ParallelSettings(scheme="data_parallel", workers=2)
HYBRID = ParallelSettings(scheme="hybrid", replicas=2, micro_batches=2)


def measured(cpu: tuple[float, ...]) -> SchemeProfile:
    return SchemeProfile(machine="test", scheme="test", cpu_s=cpu, process_cpu_s=cpu,
                         wall_s=cpu)


@pytest.mark.parametrize(("settings", "cpu"), [(DATA_PARALLEL, (0.03, 0.05)),
                                               (HYBRID, (0.01, 0.02, 0.03, 0.04))])
def test_scaled_programs_compute_what_each_worker_measured(
        settings: ParallelSettings, cpu: tuple[float, ...]) -> None:
    profile = profile_with(1e-4, 2e-4, [8, 16, 32, 64])
    built = SchemePrograms(job(settings), profile, PATCH)
    programs = [scaled_to(p, c) for p, c in zip(built.programs(), cpu, strict=True)]
    steps = 4
    traces = simulate(programs, FREE, steps)
    assert [t.compute_s / steps for t in traces] == pytest.approx(cpu)
    # the proportions of a worker's operations stay those of the unit profile
    original = [op.seconds for op in built.programs()[0](2) if hasattr(op, "seconds")]
    scaled = [op.seconds for op in programs[0](2) if hasattr(op, "seconds")]
    assert [s / sum(scaled) for s in scaled] == pytest.approx([o / sum(original)
                                                                for o in original])


def test_a_scheme_profile_replaces_the_corun_slowdown() -> None:
    profile = profile_with(1e-4, 2e-4, [32])
    profile.corun_slowdown = [1.0, 3.0]  # would triple compute with both cores busy
    network = replace(FREE, shared_cores=2)
    with_profile = predict(job(DATA_PARALLEL), PATCH, profile, network, measured((0.02, 0.02)))
    assert with_profile.compute_s == pytest.approx(0.02)
    without = predict(job(DATA_PARALLEL), PATCH, profile, network)
    assert without.compute_s > 2 * predict(job(DATA_PARALLEL), PATCH, profile, FREE).compute_s


def test_the_profiled_step_beyond_its_simulation_is_carried_over_on_shared_cores() -> None:
    """Hybrid's four processes measured 5 ms per step more than the model plays them on the
    loopback they ran on: a link-rate's prediction on shared cores gets those 5 ms too; workers
    with cores of their own (a real cluster, nothing measured there) do not."""
    profile = profile_with(1e-4, 2e-4, [16, 32])
    loopback = replace(FREE, latency_s=1e-4, shared_cores=2, time_slice_s=0.004)
    cpu = (0.010, 0.012, 0.011, 0.012)
    bare = predict(job(HYBRID), PATCH, profile, loopback, measured(cpu))
    profiled = replace(measured(cpu), wall_s=(bare.step_s + 0.005,) * 4)
    # played back where it was measured, the prediction is the measured step
    again = predict(job(HYBRID), PATCH, profile, loopback, profiled, profiled_on=loopback)
    assert again.step_s == pytest.approx(max(profiled.wall_s))
    assert again.unmodelled_s == pytest.approx(0.005)
    slow = replace(loopback, rate_bytes_s=1e6)  # 8 Mbit/s links, the same shared cores
    on_links = predict(job(HYBRID), PATCH, profile, slow, profiled, profiled_on=loopback)
    assert on_links.step_s == pytest.approx(
        predict(job(HYBRID), PATCH, profile, slow, profiled).step_s + 0.005)
    own_cores = replace(slow, shared_cores=None)
    assert predict(job(HYBRID), PATCH, profile, own_cores, profiled,
                   profiled_on=loopback).unmodelled_s == 0.0
    # a profile faster than its simulation takes time off, never below the step's compute
    quick = replace(profiled, wall_s=(0.0,) * 4)
    floor = predict(job(HYBRID), PATCH, profile, loopback, quick, profiled_on=loopback)
    assert floor.step_s == pytest.approx(floor.compute_s)


def test_a_scheme_profile_of_another_worker_count_is_refused() -> None:
    profile = profile_with(1e-4, 2e-4, [32])
    with pytest.raises(ValueError, match="scheme profile has 3 workers"):
        predict(job(DATA_PARALLEL), PATCH, profile, FREE, measured((0.1, 0.1, 0.1)))


def test_the_cache_key_follows_model_scheme_settings_and_batch() -> None:
    base = job(DATA_PARALLEL)
    key = scheme_profile.cache_key(base, PATCH)
    assert scheme_profile.cache_key(job(DATA_PARALLEL), PATCH) == key
    others = [job(replace(DATA_PARALLEL, sync_every=4)), job(DATA_PARALLEL, batch=32),
              job(HYBRID), job(DATA_PARALLEL, config=replace(CONFIG, branch_width=16))]
    keys = {scheme_profile.cache_key(j, PATCH) for j in others}
    assert key not in keys and len(keys) == len(others)
    assert scheme_profile.cache_key(base, PATCH + 2) != key


def test_a_job_with_prepared_data_is_profiled_on_its_store_and_the_runs_batches(
        prepared_dir: Path) -> None:
    """A run cuts every batch out of the store (a millisecond of a first pipeline stage's ten):
    the profile's steps do too, on the run's own batches, epoch after epoch."""
    from pipeline.data.dataset import PreparedDataset, StreamingSplit
    from pipeline.training.batches import epoch_batches

    on_data = replace(job(DATA_PARALLEL, batch=16), data_dir=str(prepared_dir), seed=3)
    samples = len(PreparedDataset.open(prepared_dir).stream("train"))
    per_epoch = samples // 16
    split, batches = scheme_profile.training_feed(on_data, ["optical"], PATCH)
    assert isinstance(split, StreamingSplit) and list(split.mean) == ["optical"]
    expected = epoch_batches(samples, 16, 3, 0) + epoch_batches(samples, 16, 3, 1)[:2]
    taken = list(islice(batches, per_epoch + 2))
    assert all((b == e).all() for b, e in zip(taken, expected, strict=True))
    # without data: random inputs of the job's shapes, the same batch every step
    split, batches = scheme_profile.training_feed(job(DATA_PARALLEL, batch=16), None, PATCH)
    assert len(split.labels) == 16 and split.inputs["optical"].shape == (16, 4, PATCH, PATCH)
    assert all((b == list(range(16))).all() for b in islice(batches, 3))
    # the two are cached apart
    assert scheme_profile.cache_key(on_data, PATCH) != scheme_profile.cache_key(
        replace(on_data, data_dir=""), PATCH)


def test_short_steps_are_measured_for_long_enough() -> None:
    """A 4 ms step measured 12 times (50 ms in all) moved by half between two profiles."""
    assert scheme_profile.measured_steps(0.100) == scheme_profile.MEASURED_STEPS
    assert scheme_profile.measured_steps(0.004) * 0.004 >= scheme_profile.MEASURED_SECONDS
    assert scheme_profile.measured_steps(1e-9) == scheme_profile.MAX_MEASURED_STEPS


def test_schemes_are_measured_on_local_processes_once_then_read_from_the_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    jobs = [job(DATA_PARALLEL, batch=16), job(ParallelSettings(scheme="branch_parallel"),
                                              batch=16)]
    first = scheme_profile.load_or_measure(jobs, PATCH, tmp_path)
    for profile, workers in zip(first, (2, 2), strict=True):
        assert len(profile.cpu_s) == workers
        assert all(c > 0 for c in profile.cpu_s)
        # the training thread's CPU is part of its process's
        assert all(c <= p for c, p in zip(profile.cpu_s, profile.process_cpu_s, strict=True))
    assert [p.scheme for p in first] == ["data_parallel", "branch_parallel"]

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("measured again although cached")

    monkeypatch.setattr(scheme_profile, "measure_many", refuse)
    assert scheme_profile.load_or_measure(jobs, PATCH, tmp_path) == first
    files = sorted(tmp_path.glob("scheme-*.json"))
    assert len(files) == 2
    assert all(json.loads(f.read_text())["machine"] == first[0].machine for f in files)


def test_workers_compute_their_process_cpu_with_gloos_threads() -> None:
    """gloo's threads copy the messages on the same shared cores: the model counts them."""
    profile = profile_with(1e-4, 2e-4, [8, 16, 32, 64])
    threads_only = (0.008, 0.010, 0.009, 0.009)
    with_gloo = (0.010, 0.015, 0.013, 0.013)
    scheme = SchemeProfile(machine="test", scheme="hybrid", cpu_s=threads_only,
                           process_cpu_s=with_gloo, wall_s=with_gloo)
    network = replace(FREE, shared_cores=2)
    predicted = predict(job(HYBRID), PATCH, profile, network, scheme)
    assert predicted.compute_s == pytest.approx(max(with_gloo))
    # four processes on two cores: the step takes at least their CPU over the cores
    assert predicted.step_s >= sum(with_gloo) / 2 * 0.999
