"""Rank the schemes' predictions, recommend one and say why; find where the choice changes."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from pipeline.plan.predict import Prediction

MB = 1e6


@dataclass(frozen=True)
class Recommendation:
    """The ranking (fastest first) and the chosen scheme with the reason."""

    ranking: list[Prediction]
    fits: dict[str, bool]
    chosen: Prediction | None
    reason: str


def fits_in(prediction: Prediction, budget: int | None) -> bool:
    """Whether the predicted training memory of every worker is within ``budget`` bytes."""
    return budget is None or prediction.max_worker_memory_bytes <= budget


def recommend(predictions: list[Prediction], budget: int | None) -> Recommendation:
    """The fastest scheme whose workers fit in ``budget`` bytes each (``None``: no limit)."""
    ranking = sorted(predictions, key=lambda p: p.step_s)
    fits = {p.scheme: fits_in(p, budget) for p in ranking}
    fitting = [p for p in ranking if fits[p.scheme]]
    if not fitting:
        assert budget is not None  # with no budget every scheme fits
        smallest = min(ranking, key=lambda p: p.max_worker_memory_bytes)
        return Recommendation(ranking, fits, None,
                              f"memory-bound: no scheme fits in {budget / MB:,.1f} MB per worker "
                              f"(the smallest, {smallest.scheme}, needs "
                              f"{smallest.max_worker_memory_bytes / MB:,.1f} MB); give workers "
                              "more memory, or lower train.batch_size or the model's size")
    chosen = fitting[0]
    if chosen is not ranking[0]:
        fastest = ranking[0]
        assert budget is not None  # with no budget the fastest fits
        reason = (f"memory-bound: {fastest.scheme} would be faster but needs "
                  f"{fastest.max_worker_memory_bytes / MB:,.0f} MB per worker, more than "
                  f"{budget / MB:,.0f} MB")
    else:
        share = chosen.waiting_s / chosen.step_s
        if chosen.bound == "compute":
            reason = (f"compute-bound: its busiest worker computes {1 - share:.0%} of each step")
        else:
            reason = (f"network-bound: its busiest worker waits on the network or its peers "
                      f"{share:.0%} of each step")
        if len(fitting) > 1:
            runner_up = fitting[1]
            reason += (f"; {runner_up.step_s / chosen.step_s:.2f}x faster than the next, "
                       f"{runner_up.scheme}")
    return Recommendation(ranking, fits, chosen, reason)


@dataclass(frozen=True)
class Crossover:
    """Between ``below`` and ``above`` bits/s the recommendation changes at about ``at``."""

    below_bps: float
    above_bps: float
    at_bps: float
    slower_link_choice: str
    faster_link_choice: str


def crossovers(rates_bps: list[float], choose: Callable[[float], str],
               iterations: int = 12) -> list[Crossover]:
    """Where ``choose(rate)`` changes between consecutive ``rates_bps`` (bisected, log scale)."""
    rates = sorted(rates_bps)
    choices = [choose(r) for r in rates]
    out = []
    for (low, low_choice), (high, high_choice) in zip(zip(rates, choices, strict=True),
                                                      zip(rates[1:], choices[1:], strict=True),
                                                      strict=False):
        if low_choice == high_choice:
            continue
        lo, hi = math.log(low), math.log(high)
        for _ in range(iterations):
            middle = (lo + hi) / 2
            if choose(math.exp(middle)) == low_choice:
                lo = middle
            else:
                hi = middle
        out.append(Crossover(low, high, math.exp((lo + hi) / 2), low_choice, high_choice))
    return out
