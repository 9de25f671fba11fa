"""The cost model's schedule against closed forms: the GPipe bubble, DDP overlap, shared cores.

The schemes' programs are played with a profile whose every duration is set by the test, so the
step time each scheme should take is known in closed form.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from pipeline.model import ModelConfig, MultimodalCNN
from pipeline.plan.predict import predict
from pipeline.plan.profile import ComputeProfile
from pipeline.plan.programs import ddp_buckets
from pipeline.plan.simulate import (
    Compute,
    Network,
    Op,
    Program,
    Recv,
    Send,
    simulate,
    wire_bytes,
)
from pipeline.training.job import ParallelSettings, TrainJob

CONFIG = ModelConfig(channels={"optical": 4, "sar": 2}, num_classes=6, branch_width=8,
                     branch_depth=2, fusion_width=16)
FREE = Network(rate_bytes_s=None, latency_s=0.0)  # communication costs nothing
PATCH = 9


ONE_BRANCH = replace(CONFIG, channels={"optical": 4})  # one unit per layer


def profile_with(forward_per_layer: float, backward_per_layer: float, batches: list[int],
                 config: ModelConfig = CONFIG) -> ComputeProfile:
    """Every layer takes the given time per sample (split over its units); nothing else costs."""
    model = MultimodalCNN(config)
    per_layer = {}
    for unit in model.units:
        per_layer.setdefault(unit.layer, []).append(unit.name)
    profile = ComputeProfile(machine="test", threads=1)
    for names in per_layer.values():
        for name in names:
            profile.forward_s[name] = {str(b): forward_per_layer * b / len(names)
                                       for b in batches}
            profile.backward_s[name] = {str(b): backward_per_layer * b / len(names)
                                        for b in batches}
            profile.optimizer_s[name] = 0.0
            profile.saved_bytes_per_sample[name] = 0.0
    profile.loss_s = {str(b): 0.0 for b in batches}
    profile.fetch_s = {str(b): 0.0 for b in batches}
    return profile


def job(parallel: ParallelSettings, batch: int = 64, config: ModelConfig = CONFIG) -> TrainJob:
    return TrainJob(data_dir="", model=config, batch_size=batch, epochs=1, learning_rate=0.1,
                    momentum=0.9, seed=0, parallel=parallel)


@pytest.mark.parametrize("micro_batches", [1, 2, 4, 8])
def test_a_pipeline_step_takes_micro_batches_plus_stages_minus_one_slots(
        micro_batches: int) -> None:
    stages = 4  # one layer, of one unit, per stage
    profile = profile_with(1e-3, 2e-3, [64 // micro_batches], ONE_BRANCH)
    settings = ParallelSettings(scheme="pipeline_parallel", pipeline_stages=stages,
                                micro_batches=micro_batches)
    predicted = predict(job(settings, config=ONE_BRANCH), 9, profile, FREE)
    slot = (1e-3 + 2e-3) * 64 / micro_batches  # one micro-batch through one stage and back
    assert predicted.step_s == pytest.approx((micro_batches + stages - 1) * slot)
    # the bubble: each stage idles for (stages - 1) slots of every step
    assert predicted.waiting_s == pytest.approx((stages - 1) * slot)


def test_ddp_hides_an_all_reduce_that_fits_in_the_rest_of_backward() -> None:
    batch, workers = 64, 2
    profile = profile_with(1e-3, 2e-3, [batch // workers])
    settings = ParallelSettings(scheme="data_parallel", workers=workers, bucket_cap_mb=0.0001)
    model = MultimodalCNN(CONFIG)
    compute = (1e-3 + 2e-3) * (batch // workers) * model.num_layers
    assert len(ddp_buckets(model, settings.bucket_cap_mb, PATCH)) > 2
    # a link fast enough that every bucket is reduced while backward goes on: no exposed time
    fast = Network(rate_bytes_s=1e12, latency_s=0.0)
    assert predict(job(settings), 9, profile, fast).step_s == pytest.approx(compute, rel=1e-3)


def test_one_bucket_is_exposed_whole_after_backward() -> None:
    batch, workers = 64, 2
    profile = profile_with(1e-3, 2e-3, [batch // workers])
    settings = ParallelSettings(scheme="data_parallel", workers=workers, bucket_cap_mb=1024)
    model = MultimodalCNN(CONFIG)
    params = sum(p.numel() * 4 for p in model.parameters())
    assert len(ddp_buckets(model, settings.bucket_cap_mb, PATCH)) == 1
    network = Network(rate_bytes_s=1e5, latency_s=1e-3)
    compute = (1e-3 + 2e-3) * (batch // workers) * model.num_layers
    ring = 2 * (workers - 1) * (network.latency_s + wire_bytes(params / workers) / 1e5)
    assert predict(job(settings), 9, profile, network).step_s == pytest.approx(compute + ring)


def test_workers_sharing_cores_queue_for_them() -> None:
    def busy(step: int):  # noqa: ARG001
        yield Compute(1.0)

    alone = simulate([busy] * 4, FREE, steps=3)
    shared = simulate([busy] * 4, replace(FREE, shared_cores=2), steps=3)
    assert [t.steady_step_s(1) for t in alone] == [1.0] * 4
    # four workers' steps on two cores: two at a time, so every step period is two seconds
    assert max(t.steady_step_s(1) for t in shared) == pytest.approx(2.0)


def test_the_per_worker_payload_is_the_activations_it_sends_and_their_gradients() -> None:
    batch = 64
    profile = profile_with(1e-3, 2e-3, [batch])
    predicted = predict(job(ParallelSettings(scheme="branch_parallel")), 9, profile, FREE)
    features = CONFIG.block_widths[-1] * 4  # one branch's pooled features, float32, per sample
    # the sar branch's worker sends its features; the head's sends their gradient back
    assert predicted.payload_bytes_sent_per_worker == features * batch


def test_a_shaped_link_charges_framing_on_top_of_the_payload() -> None:
    network = Network(rate_bytes_s=1e6, latency_s=0.0)
    assert network.transfer_s(1448 * 1000) == pytest.approx(1.0 * 1448 * 1000 * (1 + 99 / 1448)
                                                            / 1e6)


def _woken_for(seconds: float) -> Program:
    """A worker that waits for a message from worker 2, then computes ``seconds``."""
    def program(step: int) -> Iterator[Op]:
        yield Recv(2, ("go", step))
        yield Compute(seconds)
    return program


def test_a_worker_woken_on_busy_cores_waits_at_most_a_time_slice() -> None:
    long = _busy(1.0)
    sender = _sends_after_latency()
    one_core = replace(FREE, shared_cores=1, latency_s=0.05)
    fifo = simulate([long, _woken_for(0.1), sender], one_core, steps=1)
    assert fifo[1].step_s[0] == pytest.approx(1.1)  # behind the whole of worker 0's compute
    sliced = simulate([long, _woken_for(0.1), sender],
                      replace(one_core, time_slice_s=0.004), steps=1)
    assert sliced[1].step_s[0] == pytest.approx(0.05 + 0.004 + 0.1)


def test_workers_that_keep_computing_still_share_a_time_sliced_core() -> None:
    shared = simulate([_busy(0.1)] * 2, replace(FREE, shared_cores=1, time_slice_s=0.004),
                      steps=4)
    # neither was woken: they take turns, each step period is both workers' compute
    assert [t.steady_step_s(1) for t in shared] == pytest.approx([0.2, 0.2])


def _busy(seconds: float) -> Program:
    def program(step: int) -> Iterator[Op]:
        yield Compute(seconds)
    return program


def _sends_after_latency() -> Program:
    def program(step: int) -> Iterator[Op]:
        yield Send(1, 0.0, ("go", step))
    return program
