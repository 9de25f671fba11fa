"""Run every benchmark in one go and write one report: ``make bench``.

Each benchmark runs in its own process (one SparkContext per process) and writes
``benchmarks/results/<name>.json`` (+ ``.png``); this script times them and writes
``benchmarks/results/report.md``: the machine, then each benchmark's headline figures, each a
ratio measured side by side in one run, with its plot.

    python -m benchmarks.report [--only NAME ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.common import RESULTS, load, machine
from flows.layout import LAYOUT
from pipeline.io import write_with
from pipeline.stage_clock import WORK
from pipeline.training.worker import WARMUP_STEPS


def _training(figures: dict) -> list[str]:
    lines = ["| scheme | batch | samples/s | ÷ single process | payload B/sample "
             "| counted ÷ modelled | max worker param KB | max worker peak RSS MB | comm share |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for scheme, by_batch in figures["schemes"].items():
        for batch, f in sorted(by_batch.items(), key=lambda kv: int(kv[0])):
            lines.append(
                f"| {scheme} | {batch} | {f['samples_per_s']:,.0f} | "
                f"{f['throughput_ratio_to_single_process']:.2f} | "
                f"{f['payload_bytes_sent_per_sample']:,.0f} | "
                f"{f['payload_ratio_counted_to_modelled']:.3f}"
                f" | {f['max_worker_param_bytes'] / 1024:,.1f} | {f['max_worker_peak_rss_mb']:,.0f}"
                f" | {f['comm_share']:.2f} |")
    lines += ["", f"data_parallel traffic knobs at batch {figures['knob_batch_size']}:", "",
              "| knob | payload B/sample | samples/s | final val accuracy |",
              "| --- | --- | --- | --- |"]
    for name, f in figures["knobs"].items():
        lines.append(f"| {name} | {f['payload_bytes_sent_per_sample']:,.0f} "
                     f"| {f['samples_per_s']:,.0f} "
                     f"| {f['final_val_accuracy']:.3f} |")
    return lines


def _inference(figures: dict) -> list[str]:
    lines = [f"{figures['samples']:,} samples, batch {figures['batch_size']}, "
             f"{figures['repeats']} timed passes after a warm-up; the single process "
             f"({figures['baseline_threads']} threads) timed right before and after each "
             f"deployment. Spark start-up, reported separately: "
             f"{figures['spark_startup_s']:.1f} s.", "",
             "| deployment | workers | samples/s | single process before / after "
             "| ÷ single process "
             "| batch p50 ms | batch p95 ms | bytes moved per pass | set-up s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for scheme, f in figures["deployments"].items():
        single = figures["single_process"][scheme]
        lines.append(
            f"| {scheme} | {f['inference_workers']:.0f} | {f['inference_samples_per_s']:,.0f} | "
            f"{single['before']['inference_samples_per_s']:,.0f} / "
            f"{single['after']['inference_samples_per_s']:,.0f} | "
            f"{figures['ratio_to_single_process'][scheme]:.2f} | "
            f"{f['inference_batch_p50_ms']:.1f} | {f['inference_batch_p95_ms']:.1f} | "
            f"{f['inference_bytes_moved']:,.0f} | {f['inference_setup_s']:.1f} |")
    return lines


def _prepare(figures: dict) -> list[str]:
    lines = [f"Spark `{figures['spark_master']}`, medians of {figures['repeats']} repeats; target: "
             f"prepare on Spark at least {figures['target_ratio']} x the raw read rate.", "",
             "| scene px | windows | patches | raw read s | Spark s | ÷ raw (Spark) | in-process s "
             "| ÷ raw (in-process) | empty Spark job s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for f in figures["scenes"]:
        lines.append(
            f"| {f['scene_px'][0]} x {f['scene_px'][1]} | {f['windows']} of {f['window_size']} | "
            f"{f['patches']:,} | {f['raw_read_s']:.2f} | {f['prepare_s']:.2f} | "
            f"{f['ratio']:.2f} | {f['in_process_prepare_s']:.2f} | {f['in_process_ratio']:.2f} | "
            f"{f['spark_empty_job_s']:.2f} |")
    return lines


def _network(figures: dict) -> list[str]:
    if "skipped" in figures:
        return [f"Not measured: {figures['skipped']}"]
    points = figures["points"]
    lines = [f"{figures['cluster']}, {figures['steps']} steps per point (the first "
             f"{WARMUP_STEPS} left out), "
             f"{figures['patch_size']}x{figures['patch_size']} patches; samples/s from the "
             "median step, the range from the 10th and 90th percentile steps; bytes per worker "
             "per step are the busiest worker's; one process (2 threads) measured in the same "
             "run.", "",
             "| link | model | batch | scheme | samples/s (p90-p10 step) | ÷ one process | "
             "comm / compute ms per step | payload / wire B per worker-step | max param KB |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for p in points:
        b = p["batch_size"]
        lines.append(
            f"| {p['link_rate']} | {p['model_size']} | {b} | {p['scheme']} | "
            f"{p['samples_per_s']:,.0f} ({b / p['step_s_p90']:,.0f}-{b / p['step_s_p10']:,.0f})"
            f" | {p['ratio_to_single_process']:.2f} | {p['comm_s_per_step'] * 1e3:,.1f} / "
            f"{p['compute_s_per_step'] * 1e3:,.1f} | {p['payload_bytes_sent_per_worker_step']:,.0f}"
            f" / {p['wire_bytes_sent_per_worker_step']:,.0f} | "
            f"{p['max_worker_param_bytes'] / 1024:,.1f} |")
    lines += ["", "Fastest scheme per point (samples/s of the median step):", ""]
    cases = sorted({(p["link_rate_bps"], p["link_rate"], p["model_size"], p["batch_size"])
                    for p in points}, reverse=True)
    for _, rate, size, batch in cases:
        rows = {p["scheme"]: p for p in points if p["link_rate"] == rate
                and p["model_size"] == size and p["batch_size"] == batch}
        best = max(rows, key=lambda s: rows[s]["samples_per_s"])
        versus = ", ".join(f"{s} {r['samples_per_s'] / rows['data_parallel']['samples_per_s']:.2f}"
                           for s, r in rows.items() if s != "data_parallel")
        lines.append(f"- {rate}, {size}, batch {batch}: **{best}**; ÷ data_parallel: {versus}")
    lines += ["", "`data_parallel` on the slowest link vs the fastest, against what its wire bytes "
              "predict (the fastest link's step plus the busiest worker's wire bytes sent per "
              "step at each rate; sending and receiving overlap on a full-duplex link):", ""]
    for size, batch in sorted({(p["model_size"], p["batch_size"]) for p in points}):
        by_rate = sorted((p for p in points if p["scheme"] == "data_parallel"
                         and p["model_size"] == size and p["batch_size"] == batch),
                         key=lambda p: p["link_rate_bps"])
        slow, fast = by_rate[0], by_rate[-1]
        wire = slow["wire_bytes_sent_per_worker_step"] * 8
        predicted = fast["step_s_p50"] + wire / slow["link_rate_bps"] - wire / fast["link_rate_bps"]
        measured = slow["samples_per_s"] / fast["samples_per_s"]
        lines.append(f"- {size}, batch {batch}: measured step {slow['step_s_p50'] * 1e3:,.1f} ms "
                     f"at {slow['link_rate']} vs {fast['step_s_p50'] * 1e3:,.1f} ms at "
                     f"{fast['link_rate']} (throughput x{measured:.2f}); predicted "
                     f"{predicted * 1e3:,.1f} ms (x{fast['step_s_p50'] / predicted:.2f})")
    return lines


def _plan_accuracy(figures: dict) -> list[str]:
    if "skipped" in figures:
        return [f"Not measured: {figures['skipped']}"]
    s, targets = figures["summary"], figures["targets"]
    worst = s["worst_point"]
    lines = [
        f"The cost model (`pipeline.plan`) predicting every point of the network grid above, "
        f"four workers sharing this machine's cores. Its inputs: compute profiles "
        f"{figures['inputs']}; per-message latency between two workers "
        + ", ".join(f"{r} {v * 1e6:,.0f} us" for r, v in figures["latency_s"].items())
        + "; bulk rate between two workers one way / both ways at once "
        + ", ".join(f"{r} {a * 8 / 1e6:,.0f} / {b * 8 / 1e6:,.0f} Mbit/s"
                    for r, (a, b) in figures["bulk_bytes_s"].items())
        + ("; each worker's compute per step from its scheme profile (the scheme's strategy "
           "run on local processes, measured in the grid's run), plus what those processes' "
           "measured step held beyond the model's simulation of them on their loopback "
           "(`unmodelled_s`, measured), the shared cores scheduled with a time "
           f"slice of {figures['time_slice_s'] * 1e3:.1f} ms (measured after the grid)"
           if figures.get("compute") == "scheme" else
           "; co-run slowdown with 1, 2 cores busy "
           + ", ".join(f"{r} {s}: " + "/".join(f"{x:.2f}" for x in v)
                       for r, by_size in figures["corun_slowdown"].items()
                       for s, v in by_size.items()))
        + f". Measured: the busiest worker's median step (p10-p90), the median over the grid's "
          f"{figures.get('grid_repeats', 1)} repeat(s); predicted: with the profile of its own "
          "rate (min-max over the others).", "",
        f"- step time: median absolute error **{s['median_abs_step_error']:.1%}** (target "
        f"{targets['median_abs_error']:.0%}), worst **{s['worst_abs_step_error']:.1%}** (target "
        f"{targets['worst_abs_error']:.0%}: {worst['link_rate']}, {worst['model_size']}, batch "
        f"{worst['batch_size']}, {worst['scheme']})",
        f"- the measurement's own spread over the repeats ((max - min) / median of a point's "
        f"repeats): median {s.get('median_repeat_spread', 0):.1%}, max "
        f"{s.get('max_repeat_spread', 0):.1%}; the error against the repeat furthest from the "
        f"prediction: median {s.get('median_abs_step_error_worst_repeat', 0):.1%}, worst "
        f"{s.get('worst_abs_step_error_worst_repeat', 0):.1%}",
        f"- fastest scheme predicted right, or within {targets['winner_slack']:.0%} of the "
        f"fastest: **{s['winner_ok']} of {s['cases']}** points",
        f"- payload per worker-step exactly as counted: **{s['payload_exact']}**; wire bytes "
        f"measured ÷ modelled (framing): {s['wire_measured_to_predicted_min']:.3f} to "
        f"{s['wire_measured_to_predicted_max']:.3f}",
        f"- all targets met: **{s['targets_met']}**", "",
        "| link | model | batch | scheme | measured step ms (p10-p90) | predicted ms (min-max) "
        "| error (per repeat) | repeats' spread | payload B/worker-step "
        "| wire B/worker-step measured / modelled |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for p in figures["points"]:
        lines.append(
            f"| {p['link_rate']} | {p['model_size']} | {p['batch_size']} | {p['scheme']} | "
            f"{p['measured_step_s'] * 1e3:,.1f} ({p['measured_step_s_p10'] * 1e3:,.1f}-"
            f"{p['measured_step_s_p90'] * 1e3:,.1f}) | {p['predicted_step_s'] * 1e3:,.1f} "
            f"({p['predicted_step_s_min'] * 1e3:,.1f}-{p['predicted_step_s_max'] * 1e3:,.1f}) | "
            f"{p['step_error']:+.0%} ("
            + ", ".join(f"{e:+.0%}" for e in p.get("step_error_by_repeat", [p["step_error"]]))
            + f") | {p.get('measured_repeat_spread', 0):.0%} | "
            f"{p['predicted_payload_bytes_per_worker_step']:,.0f} | "
            f"{p['measured_wire_bytes_per_worker_step']:,.0f} / "
            f"{p['predicted_wire_bytes_per_worker_step']:,.0f} |")
    lines += ["", "Fastest scheme, measured vs predicted:", ""]
    for c in figures["cases"]:
        verdict = ("right" if c["predicted_fastest"] == c["measured_fastest"] else
                   f"predicted {c['predicted_fastest']}, measured "
                   f"{c['predicted_choice_slower_by']:+.1%} slower")
        lines.append(f"- {c['link_rate']}, {c['model_size']}, batch {c['batch_size']}: "
                     f"**{c['measured_fastest']}** ({verdict})")
    return lines


def _streaming(figures: dict) -> list[str]:
    lines = ["| training samples | stream: peak anon RSS (MiB) | in memory: peak anon RSS (MiB) |",
             "| --- | --- | --- |"]
    for row in figures["sizes"]:
        lines.append(f"| {row['samples']} | {row['stream']['peak_anon_mib']:.0f} | "
                     f"{row['memory']['peak_anon_mib']:.0f} |")
    rate = figures["throughput_samples_per_s"]
    lines += ["", f"Split grown {figures['growth']:.1f}x: streaming's peak varies by "
              f"{figures['stream_peak_anon_spread']:.1%}, in-memory's grows by "
              f"{figures['memory_peak_anon_growth']:.1%}. Throughput at the default size: "
              f"stream {rate['stream']:.0f}, in memory {rate['memory']:.0f} samples/s "
              f"({figures['stream_vs_memory_throughput']:.2f}x); load average "
              f"{figures['load_average'][0]:.1f}."]
    return lines


def _generic(figures: dict) -> list[str]:
    return [f"- `{k}`: {v}" for k, v in figures.items() if isinstance(v, int | float | str)]


BENCHMARKS: dict[str, tuple[str, Callable[[dict], list[str]]]] = {
    "prepare_throughput": ("Ingestion: prepare stage vs raw rasterio read of the same windows",
                           _prepare),
    "fusion_gain": ("Multimodality: fused vs single-modality models", _generic),
    "training_schemes": ("Training: throughput and traffic per scheme vs single process",
                         _training),
    "inference_throughput": ("Inference: each deployment vs single process; Spark start-up",
                             _inference),
    "network_schemes": ("Schemes on an emulated cluster network: link rate x model size x batch",
                        _network),
    "plan_accuracy": ("The cost model against the network grid: predicted vs measured",
                      _plan_accuracy),
    "streaming_memory": ("Training memory: streaming from the prepared store vs in memory",
                         _streaming),
}


def pipeline_stage_times(folder: Path) -> list[str]:
    """The report's section on ``make run``: each stage's wall time, as its last run recorded it
    (``make bench`` does not rerun the pipeline: run ``make run`` first for current figures)."""
    records = sorted((json.loads(p.read_text()) for p in folder.glob("*.json")),
                     key=lambda r: r["finished_at"])
    lines = ["## End to end: `make run` by stage", ""]
    if not records:
        return lines + ["No stage times yet: run `make run` (each stage records its wall time "
                        f"in `{folder}/`), then `make bench`.", ""]
    total = sum(r["seconds"] for r in records)
    lines += [f"The stages' last runs, finished {records[0]['finished_at']} to "
              f"{records[-1]['finished_at']} (each stage command's wall time, Python start-up "
              "included; `dvc repro`'s own checks between stages are not). *Work* is the "
              "stage's own computation; *outside work* the rest, its largest part named "
              "(`logs/stage_times/<stage>.json` has every phase):", "",
              "| stage | seconds | work s | outside work s | largest fixed cost | share |",
              "| --- | --- | --- | --- | --- | --- |"]
    for r in records:
        fixed = {k: v for k, v in r.get("phases", {}).items() if k != WORK}
        largest = max(fixed, key=fixed.__getitem__) if fixed else None
        lines.append(f"| {r['stage']} | {r['seconds']:.1f} | {r.get('work_s', float('nan')):.1f}"
                     f" | {r.get('outside_work_s', float('nan')):.1f} | "
                     + (f"{largest} {fixed[largest]:.1f} s" if largest else "-")
                     + f" | {r['seconds'] / total:.0%} |")
    work = sum(r.get("work_s", 0.0) for r in records)
    return lines + [f"| **all stages** | **{total:.1f}** | **{work:.1f}** | "
                    f"**{total - work:.1f}** | | |", ""]


def main(argv: list[str] | None = None) -> None:
    """Run the benchmarks and write the report."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="*", default=list(BENCHMARKS), choices=list(BENCHMARKS))
    args = parser.parse_args(argv)
    timings = RESULTS / "durations.json"  # each benchmark's last wall time, kept between runs
    durations = json.loads(timings.read_text()) if timings.exists() else {}
    for name in args.only:
        print(f"[bench] running {name}", flush=True)
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", f"benchmarks.{name}"], check=True)
        durations[name] = time.perf_counter() - started
        write_with(timings, lambda p: p.write_text(json.dumps(durations, indent=2) + "\n"))
    lines = ["# Benchmark report", "", f"Machine: {machine()}", "",
             "Command: `make bench` (`python -m benchmarks.report`). Each figure is measured "
             "side by side in one run on this machine.", ""]
    for name, (title, summarise) in BENCHMARKS.items():
        if not (RESULTS / f"{name}.json").exists():
            continue
        lines += [f"## {title}", "", f"`benchmarks/results/{name}.json`"
                  + (f", {durations[name]:.0f} s" if name in durations else ""), ""]
        lines += summarise(load(name))
        if (RESULTS / f"{name}.png").exists():
            lines += ["", f"![{name}]({name}.png)"]
        lines.append("")
    lines += pipeline_stage_times(Path(LAYOUT.stage_times))
    write_with(RESULTS / "report.md", lambda p: p.write_text("\n".join(lines) + "\n"))
    print(f"wrote {RESULTS / 'report.md'} (benchmarks' last runs: "
          f"{sum(durations.values()):.0f} s)")


if __name__ == "__main__":
    main()
