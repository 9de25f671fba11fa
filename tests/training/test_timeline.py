"""The resource sampler of a worker, read by hand (the thread only calls ``sample`` on a timer)."""

from __future__ import annotations

import socket

import pytest

from pipeline.training.comm import Comm
from pipeline.training.timeline import TimelineSampler, timeline_metrics
from pipeline.training.wire import WireMeter


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
