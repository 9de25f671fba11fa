"""The resource sampler of a worker, read by hand (the thread only calls ``sample`` on a timer)."""

from __future__ import annotations

import socket
from pathlib import Path

import mlflow
import pytest

from pipeline.config import Params, TrackingParams
from pipeline.tracking import log_timelines, training_run
from pipeline.training.comm import Comm
from pipeline.training.timeline import TimelineSampler, timeline_metrics
from pipeline.training.wire import WireMeter

from ..conftest import seed_mlflow_store


def test_wire_rates_add_up_to_the_bytes_a_link_carried() -> None:
    sampler = TimelineSampler(Comm(), WireMeter({"process_group": "lo"}), interval_s=1.0)
    payload = b"x" * 1_000_000
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.create_connection(server.getsockname()) as client:
            peer, _ = server.accept()
            with peer:
                client.sendall(payload)
                received = 0
                while received < len(payload):
                    received += len(peer.recv(1 << 20))
    sample = sampler.sample()
    assert sample["wire_sent_bytes_per_s"] * sample["dt_s"] >= len(payload)  # lo: others too
    assert sample["payload_sent_bytes_per_s"] == 0 and sample["rss_mb"] > 0


def test_without_links_there_is_no_wire_timeline() -> None:
    sample = TimelineSampler(Comm(), WireMeter({}), interval_s=1.0).sample()
    assert "wire_sent_bytes_per_s" not in sample and sample["cpu_percent"] >= 0


def test_metrics_are_named_by_quantity_and_rank_with_steps_and_timestamps() -> None:
    samples = {1: [{"time": 10.5, "dt_s": 1.0, "cpu_percent": 50.0, "rss_mb": 100.0}],
               0: [{"time": 10.0, "dt_s": 1.0, "cpu_percent": 90.0, "rss_mb": 120.0},
                   {"time": 11.0, "dt_s": 1.0, "cpu_percent": 80.0, "rss_mb": 121.0}]}
    metrics = timeline_metrics(samples)
    assert ("timeline/cpu_percent_w0", 80.0, 11000, 1) in metrics
    assert ("timeline/rss_mb_w1", 100.0, 10500, 0) in metrics
    assert len(metrics) == 6


def test_a_sampler_of_interval_zero_samples_nothing() -> None:
    sampler = TimelineSampler(Comm(), WireMeter({}), interval_s=0).start()
    assert sampler.stop() == []


@pytest.mark.parametrize("interval", [0.01])
def test_stop_takes_a_last_sample(interval: float) -> None:
    sampler = TimelineSampler(Comm(), WireMeter({}), interval_s=interval).start()
    assert len(sampler.stop()) >= 1


def test_timelines_are_metrics_of_the_run_with_steps_and_timestamps(tmp_path: Path) -> None:
    seed_mlflow_store(tmp_path)
    params = Params(tracking=TrackingParams(uri=f"sqlite:///{tmp_path / 'mlflow.db'}"))
    timelines = {rank: [{"time": 100.0 + i, "dt_s": 1.0, "cpu_percent": 10.0 * (i + rank),
                         "rss_mb": 300.0, "payload_sent_bytes_per_s": 5.0,
                         "payload_received_bytes_per_s": 5.0} for i in range(3)]
                 for rank in range(2)}
    with training_run(params) as run:
        log_timelines(timelines)
    client = mlflow.MlflowClient(params.tracking.uri)
    for rank in range(2):
        history = client.get_metric_history(run.info.run_id, f"timeline/cpu_percent_w{rank}")
        assert sorted((m.step, m.timestamp, m.value) for m in history) == [
            (i, (100 + i) * 1000, 10.0 * (i + rank)) for i in range(3)]


def test_a_short_last_interval_is_folded_into_the_sample_before_it() -> None:
    # CPU time moves in 10 ms ticks: over a last interval of a few ms, utilisation would read
    # as several hundred percent of a core; stop() widens the last sample instead.
    sampler = TimelineSampler(Comm(), WireMeter({}), interval_s=0.2).start()
    while len(sampler.samples) < 2:
        sum(i * i for i in range(10_000))  # keep a core busy so CPU time advances
    samples = sampler.stop()
    assert all(s["dt_s"] >= 0.1 for s in samples)
    assert all(0 <= s["cpu_percent"] <= 100 * 1.5 for s in samples)
