"""``python -m pipeline.plan`` (``make plan``): a ranked plan a user can act on, and its errors.

Real compute profiles of the default tiny model on this machine, and a real probe, measured by
the first test that needs them and cached in the test session's cache folder
(``LANDCOVER_CACHE_DIR``, set by ``tests/conftest.py``), where later tests' stage commands (the
end-to-end compare stage) find the probe and any profile of the same model; the latency is set
in ``params.yaml``, as a user may.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from pipeline.config import ALL_SCHEMES, write_overrides
from pipeline.plan.__main__ import main

PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cache() -> Path:
    """The session's cache of profiles and probe."""
    return Path(os.environ["LANDCOVER_CACHE_DIR"])


@pytest.fixture
def params(tmp_path: Path) -> Path:
    path = tmp_path / "params.yaml"
    shutil.copy(PROJECT / "params.yaml", path)
    write_overrides(path, {"plan.latency_us": 150, "plan.shared_cores": 2})
    return path


def ranked_schemes(text: str) -> list[str]:
    return re.findall(r"^\d+\s+(\w+)\s+\d+\s", text, flags=re.MULTILINE)


def test_the_plan_ranks_every_scheme_and_recommends_the_fastest(
        params: Path, prepared_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["--params", str(params), "--prepared", str(prepared_dir), "--rate", "100mbit"])
    out = capsys.readouterr().out
    ranking = ranked_schemes(out)
    assert sorted(ranking) == sorted(ALL_SCHEMES)
    assert "100 Mbit/s links" in out and "150 us per message (params.yaml)" in out
    assert f"Recommended: {ranking[0]} (" in out
    assert f"train.scheme: {ranking[0]}" in out
    assert re.search(r"\((compute|network)-bound: ", out)


def test_the_sweep_says_where_the_recommendation_changes(
        params: Path, prepared_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["--params", str(params), "--prepared", str(prepared_dir), "--sweep", "1mbit",
          "10gbit"])
    out = capsys.readouterr().out.split("Sweep over link rates")[1]
    rows = dict(re.findall(r"^\s+([\d,.]+ [MG]bit/s): (\w+) ", out, flags=re.MULTILINE))
    assert set(rows) == {"1 Mbit/s", "10.00 Gbit/s"}
    change = re.search(r"Below about ([\d,.]+ [MG]bit/s) choose (\w+); above it, (\w+)\.", out)
    if rows["1 Mbit/s"] == rows["10.00 Gbit/s"]:
        assert change is None and f"is {rows['1 Mbit/s']} at every rate" in out
    else:  # the crossover agrees with the rankings on either side
        assert change is not None
        assert (change.group(2), change.group(3)) == (rows["1 Mbit/s"], rows["10.00 Gbit/s"])
    # a 32 KB all-reduce per step at 1 Mbit/s is slower than sending 4 KB of features
    assert rows["1 Mbit/s"] != "data_parallel"


def test_a_memory_budget_no_scheme_fits_is_said_with_the_fix(
        params: Path, prepared_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_overrides(params, {"plan.worker_memory": "500k"})
    main(["--params", str(params), "--prepared", str(prepared_dir)])
    out = capsys.readouterr().out
    assert "No recommendation: memory-bound: no scheme fits in 0.5 MB per worker" in out
    assert "give workers more memory" in out


def test_a_bad_link_rate_is_one_clear_error(params: Path, prepared_dir: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--params", str(params), "--prepared", str(prepared_dir), "--rate", "fast"])
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: link rate 'fast' is not a rate") and "'100mbit'" in err


def test_the_plan_runs_each_scheme_once_then_uses_the_cache(
        params: Path, prepared_dir: Path, cache: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """``make plan`` predicts from the scheme profiles (the validated model), measured once."""
    main(["--params", str(params), "--prepared", str(prepared_dir)])
    first = capsys.readouterr().out
    assert "each scheme's compute as its strategy measured on local processes" in first
    assert len(list(cache.glob("compute-profiles/scheme-*.json"))) >= len(ALL_SCHEMES)
    main(["--params", str(params), "--prepared", str(prepared_dir)])
    again = capsys.readouterr().out
    assert "scheme(s) on local processes" not in again  # nothing measured the second time
    assert ranked_schemes(again) == ranked_schemes(first)


def test_the_unit_profile_option_skips_running_the_schemes(
        params: Path, prepared_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["--params", str(params), "--prepared", str(prepared_dir), "--unit-profile"])
    out = capsys.readouterr().out
    assert "a per-unit compute profile measured on this machine" in out
    assert "scheme(s) on local processes" not in out
    assert sorted(ranked_schemes(out)) == sorted(ALL_SCHEMES)
