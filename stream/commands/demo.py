"""Replay a built-in simulated enterprise through the engine and print the alerts.

No Kafka and no files needed: the labelled simulator (``pipelines.simulate``) generates
a network of workstations, servers, domain controllers, jump hosts and printers with
benign confounders (nightly cloud backups, software updates, CDN/SaaS browsing,
NTP/telemetry, legitimate admin sessions) and hidden attacks, and the same engine that
runs under ``slowburn run`` looks for them. At the end each labelled incident is shown
as found or missed.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

HELP = "simulate an enterprise with hidden attacks, replay it, print the alerts"

DEFAULT_SCENARIOS = ("slow_exfil", "fast_exfil", "beacon", "dns_exfil", "lateral_chain")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--hosts", type=int, default=100, help="simulated hosts (default 100)")
    p.add_argument(
        "--days",
        type=int,
        default=4,
        help="simulated days (default 4: the slow exfiltration runs 72 h from day 2)",
    )
    p.add_argument("--seed", type=int, default=7)
    p.add_argument(
        "--scenario",
        action="append",
        metavar="NAME",
        help=f"attack scenario (repeatable; default: {', '.join(DEFAULT_SCENARIOS)})",
    )
    p.add_argument("--config", help="YAML or TOML configuration file")
    p.add_argument("--alerts-out", metavar="FILE", help="also write the alerts as JSON lines here")
    p.add_argument("--alert-format", choices=("ocsf", "ecs"), default="ocsf")


def _hms(seconds: float) -> str:
    h, rem = divmod(int(max(seconds, 0)), 3600)
    return f"{h} h {rem // 60:02d} min"


def run(args: argparse.Namespace) -> int:
    from pipelines.simulate import SCENARIOS, SimConfig, Simulation
    from stream.config import load_config
    from stream.decoders.base import DecodeResult
    from stream.exceptions import StreamError
    from stream.replay import run_batches
    from stream.sinks import JsonLinesAlertSink

    if TYPE_CHECKING:
        from pipelines.incidents import Incident

    scenarios = tuple(args.scenario or [s for s in DEFAULT_SCENARIOS if s in SCENARIOS])
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown:
        raise StreamError(f"unknown scenario(s) {unknown}; known: {', '.join(sorted(SCENARIOS))}")
    if args.config:
        config = load_config(args.config)
    else:
        from stream.config import Config

        # the simulated network is only days old: learn admin roles for one day, not the default three
        config = Config({"detectors": {"lateral": {"warmup_days": 1.0}}})
    engine = config.settings.build_engine()
    sim = Simulation(
        SimConfig(hosts=args.hosts, days=args.days, seed=args.seed, scenarios=scenarios)
    )
    out = sys.stdout.write
    out(
        f"slowburn demo: {args.hosts} hosts, {args.days} days, seed {args.seed}, "
        f"hidden attacks: {', '.join(scenarios)}\n"
        f"detectors: {', '.join(d.name for d in engine.detectors)}  (model {engine.model_version})\n\n"
    )
    sink = JsonLinesAlertSink(args.alerts_out, args.alert_format) if args.alerts_out else None
    chunks = (DecodeResult(flows=f, dns=d) for f, d in sim.batches(chunk_seconds=3600))
    summary = run_batches(engine, chunks, config.settings.home, sink, progress=sys.stderr.isatty())
    if sink:
        sink.close()

    latest: dict[str, Incident] = {}
    for a in summary.alerts:  # the last revision of each incident
        latest[a.uid] = a
    sev = {1: "INFO", 2: "LOW", 3: "MEDIUM", 4: "HIGH", 5: "CRITICAL"}
    out(f"{len(latest)} incident(s), {len(summary.alerts)} alert update(s):\n")
    for a in sorted(latest.values(), key=lambda x: x.start):
        out(
            f"  [{sev.get(a.severity_id, a.severity_id):>8}] {a.detector:<14} {a.entity:<15} "
            f"risk {a.risk_score:>3}  {', '.join(a.attacks)}\n"
            f"             {a.sentence}\n"
        )
    truth = sim.truth()
    out("\nlabelled attacks:\n")
    for inc in truth["incidents"]:
        from pipelines.evaluate import match_incident

        hit = match_incident(
            inc, summary.alerts
        )  # every revision: the first one is the detection time
        if hit is None:
            out(f"  MISSED   {inc['id']:<22} {inc['kind']:<17} {inc['src']} -> {inc['dst']}\n")
        else:
            out(
                f"  FOUND    {inc['id']:<22} {inc['kind']:<17} {inc['src']} -> {inc['dst']}  "
                f"after {_hms(hit.time_to_detect)} by {hit.alert.detector}\n"
            )
    out("\n" + summary.table() + "\n")
    return 0
