"""The cost model against measurement: every point of the emulated-network grid, predicted.

Reads the measured grid (``benchmarks/results/network_schemes.json``, written by
``benchmarks.network_schemes`` just before in ``make bench``) with the cost model's inputs that
run measured (each model's compute profile and the per-message latency between two workers of
the cluster, at each rate; a grid without them gets profiles measured now,
``--profile-repeats`` times, and the latency between two local processes), and predicts every
point: its scheme, model, batch and link rate, on four
workers sharing this machine's cores. Each job's compute per step and worker comes from its
scheme profile (its real strategy run on local processes, measured in the grid's run;
:mod:`pipeline.plan.scheme_profile`), with what those processes' measured step held beyond the
model's simulation of them on their loopback carried over, and the shared cores are
scheduled with this machine's time slice (:func:`pipeline.plan.corun.time_slice`, measured
now); ``--compute units`` predicts from the per-unit compute profile and the co-run slowdown
instead. Per point: predicted vs measured step
time (the measured one is the busiest worker's median step, the median over the grid's repeats;
the error against each repeat gives the spread), payload bytes per worker per step (the model's
against the runs' count) and wire bytes (the model's framing against the interface counters).

Targets (issue #16): payload exact; wire within the stated framing; step time median absolute
error <= 15 % and worst <= 30 %; at every point the predicted fastest scheme is the measured
fastest, or within 5 % of it. Writes ``benchmarks/results/plan_accuracy.{json,png}``.

    python -m benchmarks.plan_accuracy [--grid F ...] [--profile-repeats 3] [--compute units]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, machine, prepared_default_data, save  # noqa: E402
from benchmarks.network_schemes import SCHEMES  # noqa: E402
from pipeline.config import ModelParams, load_params  # noqa: E402
from pipeline.data.dataset import PreparedDataset  # noqa: E402
from pipeline.io import write_with  # noqa: E402
from pipeline.plan import corun, machine_probe, profile, scheme_profile  # noqa: E402
from pipeline.plan.predict import predict  # noqa: E402
from pipeline.plan.programs import batch_sizes  # noqa: E402
from pipeline.plan.simulate import Network  # noqa: E402
from pipeline.runtime import configure_environment  # noqa: E402
from pipeline.training import TrainJob  # noqa: E402
from pipeline.training.trainer import model_config  # noqa: E402

TARGETS = {"median_abs_error": 0.15, "worst_abs_error": 0.30, "winner_slack": 0.05}


def jobs_of(points: list[dict], data: Path) -> dict[tuple[str, int, str], TrainJob]:
    """The job of every (model size, batch, scheme) of the grid, as the grid trained it."""
    dataset = PreparedDataset.open(data)
    jobs = {}
    for p in points:
        key = (p["model_size"], p["batch_size"], p["scheme"])
        if key not in jobs:
            config = model_config(ModelParams(size=p["model_size"]), dataset)
            jobs[key] = TrainJob(data_dir=str(data), model=config, batch_size=p["batch_size"],
                                 epochs=1, learning_rate=0.01, momentum=0.9, seed=0,
                                 parallel=SCHEMES[p["scheme"]], validate=False)
    return jobs


def profiles_of(jobs: dict, patch: int, repeats: int) -> list[dict[str, profile.ComputeProfile]]:
    """``repeats`` fresh compute profiles of every model size, each at the batches it needs."""
    sizes: dict[str, set[int]] = {}
    configs = {}
    for (size, _, _), job in jobs.items():
        configs[size] = job.model
        sizes.setdefault(size, set()).update(batch_sizes(job))
    out = []
    for _ in range(repeats):
        out.append({size: profile.measure(configs[size], patch, sizes[size],
                                          shared_cores=os.cpu_count())
                    for size in configs})
    return out


def predicted_points(points: list[dict], jobs: dict, patch: int,
                     profiles: dict[str, list[dict]],
                     probes: dict[str, machine_probe.MachineProbe],
                     schemes: dict | None = None, time_slice_s: float | None = None,
                     loopback: dict[str, machine_probe.MachineProbe] | None = None
                     ) -> list[dict]:
    """Every measured point with its predictions (``probes[rate]``: the cluster's, at ``rate``).

    ``profiles[rate]`` lists the profiles per model size to predict the points at ``rate``
    with, the first being the one measured for it; the others give the spread. ``schemes``:
    per rate, each job's scheme profile (None: compute from the unit profiles and the co-run
    slowdown); ``loopback``: per rate, the probe between two local processes the scheme
    profiles ran over (their step beyond the model's simulation there is carried over).
    """
    out = []
    for p in points:
        key = (p["model_size"], p["batch_size"], p["scheme"])
        job = jobs[key]
        probe = probes[p["link_rate"]]
        network = Network(rate_bytes_s=p["link_rate_bps"] / 8, latency_s=probe.latency_s,
                          copy_bytes_s=probe.copy_bytes_s, duplex_bytes_s=probe.duplex_bytes_s,
                          shared_cores=os.cpu_count(), time_slice_s=time_slice_s)
        measured_scheme = schemes[p["link_rate"]][key] if schemes else None
        profiled_on = (scheme_profile.profiled_on(replace(loopback[p["link_rate"]],
                                                          time_slice_s=time_slice_s))
                       if measured_scheme and loopback else None)
        predictions = [predict(job, patch, prof[p["model_size"]], network, measured_scheme,
                               profiled_on)
                       for prof in profiles[p["link_rate"]]]
        steps = [q.step_s for q in predictions]
        first = predictions[0]
        measured_payload = p.get("step_payload_bytes_sent_per_worker_step")
        repeats = p.get("step_s_p50_repeats", [p["step_s_p50"]])
        errors = [first.step_s / r - 1 for r in repeats]
        out.append({
            "measured_step_s_repeats": repeats,
            "measured_repeat_spread": p.get("repeat_spread", 0.0),
            "step_error_by_repeat": errors,
            "measured_step_cpu_s_by_worker": p.get("step_cpu_s_p50_by_worker"),
            "profiled_step_cpu_s_by_worker": (list(measured_scheme.cpu_s)
                                              if measured_scheme else None),
            "profiled_process_cpu_s_by_worker": (list(measured_scheme.process_cpu_s)
                                                 if measured_scheme else None),
            "profiled_step_wall_s_by_worker": (list(measured_scheme.wall_s)
                                               if measured_scheme else None),
            **{k: p[k] for k in ("link_rate", "link_rate_bps", "model_size", "batch_size",
                                 "scheme")},
            "measured_step_s": p["step_s_p50"], "measured_step_s_p10": p["step_s_p10"],
            "measured_step_s_p90": p["step_s_p90"],
            "predicted_step_s": first.step_s, "predicted_step_s_min": min(steps),
            "predicted_step_s_max": max(steps),
            "step_error": first.step_s / p["step_s_p50"] - 1,
            "predicted_compute_s": first.compute_s,
            "predicted_unmodelled_s": first.unmodelled_s,
            "measured_payload_bytes_per_worker_step": measured_payload,
            "predicted_payload_bytes_per_worker_step": first.payload_bytes_sent_per_worker,
            "measured_wire_bytes_per_worker_step": p["wire_bytes_sent_per_worker_step"],
            "predicted_wire_bytes_per_worker_step": first.wire_bytes_sent_per_worker,
        })
    return out


def winners(records: list[dict]) -> list[dict]:
    """Per (rate, size, batch): the measured and the predicted fastest scheme."""
    cases: dict[tuple[Any, ...], list[dict]] = {}
    for r in records:
        cases.setdefault((r["link_rate_bps"], r["link_rate"], r["model_size"], r["batch_size"]),
                         []).append(r)
    out = []
    for (bps, rate, size, batch), rows in sorted(cases.items()):
        measured = min(rows, key=lambda r: r["measured_step_s"])
        predicted = min(rows, key=lambda r: r["predicted_step_s"])
        slower = predicted["measured_step_s"] / measured["measured_step_s"] - 1
        out.append({"link_rate": rate, "link_rate_bps": bps, "model_size": size,
                    "batch_size": batch, "measured_fastest": measured["scheme"],
                    "predicted_fastest": predicted["scheme"],
                    "predicted_choice_slower_by": slower,
                    "ok": slower <= TARGETS["winner_slack"]})
    return out


def summary(records: list[dict], cases: list[dict]) -> dict:
    """The headline errors against the targets."""
    errors = [abs(r["step_error"]) for r in records]
    payload = [r for r in records if r["measured_payload_bytes_per_worker_step"] is not None]
    payload_ok = all(abs(r["predicted_payload_bytes_per_worker_step"]
                         - r["measured_payload_bytes_per_worker_step"]) < 0.5 for r in payload)
    wire = [r["measured_wire_bytes_per_worker_step"] / r["predicted_wire_bytes_per_worker_step"]
            for r in records]
    spreads = [r["measured_repeat_spread"] for r in records]
    by_repeat = [max(abs(e) for e in r["step_error_by_repeat"]) for r in records]
    return {
        "points": len(records),
        "median_abs_step_error": statistics.median(errors),
        # how much the measurement itself moved: (max - min) / median of a point's repeats
        "median_repeat_spread": statistics.median(spreads),
        "max_repeat_spread": max(spreads),
        # the error against the repeat it is furthest from, per point
        "median_abs_step_error_worst_repeat": statistics.median(by_repeat),
        "worst_abs_step_error_worst_repeat": max(by_repeat),
        "worst_abs_step_error": max(errors),
        "worst_point": max(records, key=lambda r: abs(r["step_error"])),
        "payload_exact": payload_ok if payload else None,
        "wire_measured_to_predicted_min": min(wire),
        "wire_measured_to_predicted_max": max(wire),
        "winner_ok": sum(c["ok"] for c in cases), "cases": len(cases),
        "targets_met": (statistics.median(errors) <= TARGETS["median_abs_error"]
                        and max(errors) <= TARGETS["worst_abs_error"]
                        and all(c["ok"] for c in cases) and payload_ok is not False),
    }


def plot(records: list[dict], cases: list[dict], path: Path) -> None:
    """Predicted vs measured step time per scheme; the winner map over link rate x model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    schemes = list(dict.fromkeys(r["scheme"] for r in records))
    fig, axes = plt.subplots(1, len(schemes) + 1, figsize=(4 * (len(schemes) + 1), 4))
    for ax, scheme in zip(axes, schemes, strict=False):
        rows = [r for r in records if r["scheme"] == scheme]
        xs = [r["measured_step_s"] * 1e3 for r in rows]
        ys = [r["predicted_step_s"] * 1e3 for r in rows]
        xerr = [[r["measured_step_s"] * 1e3 - r["measured_step_s_p10"] * 1e3 for r in rows],
                [r["measured_step_s_p90"] * 1e3 - r["measured_step_s"] * 1e3 for r in rows]]
        yerr = [[(r["predicted_step_s"] - r["predicted_step_s_min"]) * 1e3 for r in rows],
                [(r["predicted_step_s_max"] - r["predicted_step_s"]) * 1e3 for r in rows]]
        ax.errorbar(xs, ys, xerr=xerr, yerr=yerr, fmt="o", capsize=2, ms=4)
        low, high = min(xs + ys) * 0.8, max(xs + ys) * 1.25
        ax.plot([low, high], [low, high], "k-", lw=0.8, label="exact")
        ax.fill_between([low, high], [low * 0.85, high * 0.85], [low * 1.15, high * 1.15],
                        color="tab:green", alpha=0.15, label="±15 %")
        ax.set(xscale="log", yscale="log", xlabel="measured step ms (p10-p90)",
               ylabel="predicted step ms", title=scheme)
        ax.legend(fontsize=7)
    ax = axes[-1]
    rates = sorted({c["link_rate_bps"] for c in cases})
    models = sorted({(c["model_size"], c["batch_size"]) for c in cases})
    colours = {s: f"C{i}" for i, s in enumerate(schemes)}
    for c in cases:
        x, y = rates.index(c["link_rate_bps"]), models.index((c["model_size"], c["batch_size"]))
        ax.add_patch(Rectangle((x - 0.5, y - 0.5), 1, 1,
                                   color=colours[c["measured_fastest"]], alpha=0.6))
        mark = "" if c["predicted_fastest"] == c["measured_fastest"] else (
            f"\npredicted {c['predicted_fastest'][:8]}\n(+{c['predicted_choice_slower_by']:.0%})")
        ax.text(x, y, c["measured_fastest"][:8] + mark, ha="center", va="center", fontsize=7)
    ax.set(xlim=(-0.5, len(rates) - 0.5), ylim=(-0.5, len(models) - 0.5),
           xticks=range(len(rates)), yticks=range(len(models)),
           title="measured fastest (predicted where it differs)")
    ax.set_xticklabels([f"{r / 1e6:,.0f} Mbit/s" for r in rates], fontsize=7)
    ax.set_yticklabels([f"{s}, batch {b}" for s, b in models], fontsize=7)
    fig.tight_layout()
    write_with(path, lambda p: fig.savefig(p, dpi=100))
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    """Predict the measured grid and write the errors."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--grid", default=str(RESULTS / "network_schemes.json"),
                        help="the measured grid (network_schemes' JSON)")
    parser.add_argument("--profile-repeats", type=int, default=3)
    parser.add_argument("--name", default="plan_accuracy", help="results file name")
    parser.add_argument("--compute", choices=["scheme", "units"], default="scheme",
                        help="workers' compute from scheme profiles (default) or unit profiles")
    args = parser.parse_args(argv)
    configure_environment()
    grid = json.loads(Path(args.grid).read_text())
    if "skipped" in grid:
        save(args.name, {"machine": machine(), "skipped": f"no measured grid: {grid['skipped']}"})
        return
    started = time.perf_counter()
    params = load_params(args.params)
    data = prepared_default_data(params, Path(tempfile.mkdtemp(prefix="bench-plan-")))
    patch = int(grid["patch_size"])
    jobs = jobs_of(grid["points"], data)
    rates = list(dict.fromkeys(p["link_rate"] for p in grid["points"]))
    if "profiles" in grid:  # measured in the grid's run, rate by rate
        measured = {r: {size: profile.ComputeProfile(**f) for size, f in by_size.items()}
                    for r, by_size in grid["profiles"].items()}
        profiles = {r: [measured[r]] + [measured[o] for o in rates if o != r] for r in rates}
        probes = {r: machine_probe.MachineProbe(**f) for r, f in grid["probes"].items()}
        source = "measured in the grid's run (per rate; the spread: the other rates' profiles)"
    else:
        print(f"[plan_accuracy] profiling {len({k[0] for k in jobs})} model sizes "
              f"x {args.profile_repeats} ...", flush=True)
        fresh = profiles_of(jobs, patch, args.profile_repeats)
        profiles = dict.fromkeys(rates, fresh)
        probes = dict.fromkeys(rates, machine_probe.measure())
        source = f"measured now, {args.profile_repeats} times (the spread)"
    schemes, time_slice_s, loopback = None, None, None
    if args.compute == "scheme":
        keys = list(jobs)
        what = ("the time slice" if "scheme_profiles" in grid
                else f"{len(keys)} scheme profiles and the time slice")
        print(f"[plan_accuracy] measuring {what} ...", flush=True)
        if "scheme_profiles" in grid:  # measured in the grid's run, rate by rate
            schemes = {r: {k: scheme_profile.SchemeProfile.from_dict(
                by_job["/".join(map(str, k))]) for k in keys}
                for r, by_job in grid["scheme_profiles"].items()}
        else:
            now = dict(zip(keys, scheme_profile.measure_many([jobs[k] for k in keys], patch),
                           strict=True))
            schemes = dict.fromkeys(rates, now)
        time_slice_s = corun.time_slice(os.cpu_count() or 1)
        probes = {r: replace(p, time_slice_s=time_slice_s) for r, p in probes.items()}
        if "loopback_probes" in grid:  # measured in the grid's run, next to the profiles
            loopback = {r: machine_probe.MachineProbe(**f)
                        for r, f in grid["loopback_probes"].items()}
        else:
            loopback = dict.fromkeys(rates, machine_probe.measure())
    records = predicted_points(grid["points"], jobs, patch, profiles, probes, schemes,
                               time_slice_s, loopback)
    cases = winners(records)
    figures = {"machine": machine(), "grid": str(args.grid), "grid_machine": grid["machine"],
               "inputs": source,
               "latency_s": {r: p.latency_s for r, p in probes.items()},
               "bulk_bytes_s": {r: [p.copy_bytes_s, p.duplex_bytes_s]
                                for r, p in probes.items()},
               "corun_slowdown": {r: {s: f.corun_slowdown for s, f in profiles[r][0].items()}
                                  for r in rates},
               "compute": args.compute, "time_slice_s": time_slice_s,
               "grid_repeats": grid.get("repeats", 1),
               "targets": TARGETS,
               "summary": summary(records, cases), "cases": cases, "points": records,
               "seconds": time.perf_counter() - started}
    save(args.name, figures)
    plot(records, cases, RESULTS / f"{args.name}.png")
    s = figures["summary"]
    print(f"[plan_accuracy] {s['points']} points: step time median |error| "
          f"{s['median_abs_step_error']:.1%}, worst {s['worst_abs_step_error']:.1%} (repeats "
          f"spread median {s['median_repeat_spread']:.1%}, max {s['max_repeat_spread']:.1%}); "
          f"fastest "
          f"scheme right (or within 5 %) at {s['winner_ok']}/{s['cases']}; payload exact: "
          f"{s['payload_exact']}; targets met: {s['targets_met']}", flush=True)


if __name__ == "__main__":
    main()
