"""``python -m pipeline.plan``: which scheme to train, predicted for the configured cluster.

Prints every scheme's predicted step time, samples/s, bytes per worker and memory per worker for
``params.yaml`` (model, batch, scheme settings, cluster), ranked, and the recommended scheme with
the reason. ``--rate`` plans for another link rate; ``--sweep`` plans over several and prints
where the recommendation changes. Every figure is *modelled*: each scheme's strategy run once on
local processes of this machine (its compute per step and worker; cached per model
configuration and machine) played through the scheme's schedule on the network.

    python -m pipeline.plan [--rate 100mbit] [--sweep [RATE ...]] [--batch-size 256] [--json F]
        [--unit-profile]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flows.layout import LAYOUT
from pipeline.config import ALL_SCHEMES, load_params
from pipeline.emulated_network import parse_rate
from pipeline.errors import ParamsError
from pipeline.io import write_json
from pipeline.plan import Plan, plan
from pipeline.plan.recommend import crossovers, recommend


def _rate_text(rate: str | None) -> str:
    if rate is None:
        return "unshaped links (loopback)"
    return f"{parse_rate(rate) / 1e6:,.0f} Mbit/s links"


def _mbit(bps: float) -> str:
    return f"{bps / 1e6:,.0f} Mbit/s" if bps < 1e9 else f"{bps / 1e9:,.2f} Gbit/s"


def table(planned: Plan, rate: str | None) -> str:
    """The ranked predictions at ``rate`` and the recommendation, as text."""
    setting = planned.setting
    choice = recommend(planned.predict(rate), setting.worker_memory_bytes)
    cores = (f"{setting.shared_cores} cores shared by all workers" if setting.shared_cores
             else "cores of their own per worker")
    budget = (f"{setting.worker_memory_bytes / 1e6:,.0f} MB per worker"
              if setting.worker_memory_bytes else "no memory limit set")
    lines = [
        f"Plan for model {planned.params.model.size} ({planned.config_source}), global batch "
        f"{planned.params.train.batch_size}, {planned.patch_size}x{planned.patch_size} patches",
        f"on {_rate_text(rate if rate is not None else setting.link_rate)}, "
        f"{setting.latency_s * 1e6:,.0f} us per message ({setting.latency_source}), {cores}, "
        f"{setting.threads_per_worker} thread(s) per worker, {budget}.",
        "All figures modelled: "
        + ("each scheme's compute as its strategy measured on local processes of this machine; "
           "'unmodelled ms' (in the step) is what those processes' step took beyond the model's "
           "simulation of them, measured." if planned.schemes
           else "a per-unit compute profile measured on this machine."), "",
        f"{'':3}{'scheme':18}{'workers':>8}{'step ms':>10}{'samples/s':>11}{'compute ms':>12}"
        f"{'waiting ms':>12}{'unmodelled ms':>15}{'payload B/w/step':>18}{'wire B/w/step':>15}"
        f"{'params MB/w':>13}{'memory MB/w':>13}  fits",
    ]
    for rank, p in enumerate(choice.ranking, 1):
        lines.append(
            f"{rank:<3}{p.scheme:18}{p.workers:>8}{p.step_s * 1e3:>10,.1f}"
            f"{p.samples_per_s:>11,.0f}{p.compute_s * 1e3:>12,.1f}{p.waiting_s * 1e3:>12,.1f}"
            f"{p.unmodelled_s * 1e3:>15,.1f}"
            f"{p.payload_bytes_sent_per_worker:>18,.0f}{p.wire_bytes_sent_per_worker:>15,.0f}"
            f"{p.max_worker_param_bytes / 1e6:>13,.2f}{p.max_worker_memory_bytes / 1e6:>13,.1f}"
            f"  {'yes' if choice.fits[p.scheme] else 'NO'}")
    lines.append("")
    if choice.chosen is None:
        lines.append(f"No recommendation: {choice.reason}.")
    else:
        lines.append(f"Recommended: {choice.chosen.scheme} ({choice.reason}). Set "
                     f"train.scheme: {choice.chosen.scheme} in params.yaml.")
    return "\n".join(lines)


def sweep(planned: Plan, rates: list[str]) -> str:
    """The recommendation at each of ``rates`` and where it changes, as text."""
    budget = planned.setting.worker_memory_bytes

    def choose(bps: float) -> str:
        network = planned.setting.network(f"{bps / 1e3:.0f}kbit")
        chosen = recommend(planned.predict(network=network), budget).chosen
        return chosen.scheme if chosen else "none fits"

    lines = ["", "Sweep over link rates (modelled):", ""]
    for rate in sorted(rates, key=parse_rate):
        ranking = recommend(planned.predict(rate), budget).ranking
        order = ", ".join(f"{p.scheme} {p.step_s * 1e3:,.1f} ms" for p in ranking)
        lines.append(f"  {_mbit(parse_rate(rate)):>12}: {order}")
    changes = crossovers([float(parse_rate(r)) for r in rates], choose)
    lines.append("")
    if not changes:
        lines.append(f"The recommendation is {choose(float(parse_rate(rates[0])))} at every "
                     "rate swept.")
    for change in changes:
        lines.append(f"Below about {_mbit(change.at_bps)} choose {change.slower_link_choice}; "
                     f"above it, {change.faster_link_choice}.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Print the plan (and the sweep) for ``params.yaml``."""
    from pipeline.runtime import configure_environment

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default=LAYOUT.params)
    parser.add_argument("--prepared", default=LAYOUT.prepared,
                        help="prepared dataset whose modalities and classes the model takes")
    parser.add_argument("--rate", default=None, help="link rate to plan for (e.g. 100mbit)")
    parser.add_argument("--sweep", nargs="*", default=None,
                        help="plan at these link rates (default: plan.sweep) and print where "
                             "the recommendation changes")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="global batch (default: train.batch_size)")
    parser.add_argument("--schemes", nargs="+", default=list(ALL_SCHEMES), choices=ALL_SCHEMES)
    parser.add_argument("--unit-profile", action="store_true",
                        help="predict from the per-unit compute profile only (skips running "
                             "each scheme on local processes; less exact)")
    parser.add_argument("--json", default=None, help="also write the predictions to this file")
    args = parser.parse_args(argv)
    configure_environment()
    try:
        params = load_params(args.params)
        if args.rate is not None:
            parse_rate(args.rate)
        planned = plan(params, Path(args.prepared), args.schemes, batch_size=args.batch_size,
                       scheme_profiles=not args.unit_profile)
    except (ParamsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    print(table(planned, args.rate))
    if args.sweep is not None:
        print(sweep(planned, args.sweep or params.plan.sweep))
    if args.json:
        write_json(args.json, {"setting": planned.setting.__dict__,
                               "predictions": [p.to_dict() for p in planned.predict(args.rate)]})


if __name__ == "__main__":
    main()
