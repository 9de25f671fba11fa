import pytest
import torch

from pipeline.inference.timing import Timing, compare, tiled


def timing(walls: list[float], batches: list[float], samples: int = 100) -> Timing:
    return Timing(deployment="x", workers=2, samples=samples, pass_seconds=walls,
                  batch_seconds=batches, bytes_moved=10.0)


def test_figures_are_medians_with_the_spread_of_the_passes() -> None:
    figures = timing([1.0, 2.0, 4.0], [0.01] * 19 + [0.1]).metrics()
    assert figures["inference_wall_s"] == 2.0
    assert (figures["inference_wall_s_min"], figures["inference_wall_s_max"]) == (1.0, 4.0)
    assert figures["inference_samples_per_s"] == 50.0
    assert (figures["inference_samples_per_s_min"], figures["inference_samples_per_s_max"]) == (
        25.0, 100.0)
    assert figures["inference_batch_p50_ms"] == pytest.approx(10.0)
    assert figures["inference_batch_p95_ms"] == pytest.approx(10.0 + 0.05 * 90.0)
    assert figures["inference_repeats"] == 3.0


def test_compare_names_the_baseline_and_the_ratio() -> None:
    figures = compare(timing([2.0], [0.1]), timing([1.0], [0.1]))
    assert figures["inference_ratio_to_single_process"] == pytest.approx(0.5)
    assert figures["inference_single_process_samples_per_s"] == 100.0
    assert figures["inference_samples_per_s"] == 50.0


def test_a_timing_needs_a_timed_pass() -> None:
    with pytest.raises(ValueError, match="at least one timed pass"):
        timing([], [])


def test_tiled_repeats_the_samples_in_order() -> None:
    out = tiled({"a": torch.arange(3).view(3, 1)}, 7)
    assert out["a"].view(-1).tolist() == [0, 1, 2, 0, 1, 2, 0]


def test_latency_runs_from_a_batchs_submission_to_its_decisions() -> None:
    from pipeline.inference.timing import submission_to_decision

    # two branch workers read the inputs (the earlier start counts), a third decides
    workers = [{"submitted": {(1, 0): 10.0, (1, 1): 10.5}},
               {"submitted": {(1, 0): 10.1, (1, 1): 10.4}, "decided": {}},
               {"decided": {(1, 0): 10.3, (1, 1): 10.9}}]
    assert submission_to_decision(workers) == pytest.approx([0.3, 0.5])


def test_a_data_parallel_worker_builds_only_its_own_shard(prepared_dir) -> None:  # noqa: ANN001
    from pipeline.inference.data_parallel import shard_inputs, shard_ranges
    from pipeline.inference.job import InferJob, timed_inputs
    from pipeline.training.job import ParallelSettings

    job = InferJob(model_dir="unused", data_dir=str(prepared_dir),
                   parallel=ParallelSettings(workers=2), samples=300)
    whole = timed_inputs(job.data_dir, "test", job.samples)  # what a worker built before
    for _, start, stop in shard_ranges(job.samples, 2):
        mine = shard_inputs(job, start, stop)
        for name, x in mine.items():
            assert x.shape[0] == stop - start
            assert torch.equal(x, whole[name][start:stop])
