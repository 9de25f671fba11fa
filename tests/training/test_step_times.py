"""The step-time quantiles a worker reports: warm-up steps left out, the spread kept."""

from __future__ import annotations

import pytest

from pipeline.training.worker import WARMUP_STEPS, step_time_quantiles


def test_warm_up_steps_are_left_out() -> None:
    times = [5.0, 4.0] + [1.0] * 9 + [2.0]
    assert WARMUP_STEPS == 2
    figures = step_time_quantiles(times)
    assert figures["step_s_p50"] == 1.0
    assert figures["step_s_p90"] == pytest.approx(1.1)  # the slow last step shows in the spread
    assert step_time_quantiles(times, "step_comm_s")["step_comm_s_p10"] == 1.0


def test_a_run_too_short_for_a_warm_up_keeps_every_step() -> None:
    assert step_time_quantiles([3.0, 1.0])["step_s_p50"] == 2.0
    assert step_time_quantiles([]) == {}
