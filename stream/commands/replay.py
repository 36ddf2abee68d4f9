"""Replay capture and log files through the detection engine and write alerts.

Inputs of any supported format (pcap/pcapng, goflow2/Zeek/Suricata/pmacct JSON lines,
Zeek TSV) are merged in event-time order. Alerts are JSON lines (OCSF 1.8 Detection
Finding by default, ECS 9 with --alert-format ecs); a summary table goes to stderr.
"""

from __future__ import annotations

import argparse
import sys

HELP = "replay files through the engine; alerts as JSON lines"


def add_input_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments shared by replay and eval: inputs and attack injection."""
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="input files, merged in time order")
    p.add_argument(
        "--format", default="auto", help="pin the input format (default: detect per file/message)"
    )
    p.add_argument("--config", help="YAML or TOML configuration file")
    p.add_argument(
        "--home",
        action="append",
        metavar="CIDR",
        help="home network (repeatable; overrides config)",
    )
    p.add_argument(
        "--shift",
        action="append",
        default=[],
        metavar="INPUT=+SECONDS|@ISO_TIME",
        help="move one input in time (attack injection)",
    )
    p.add_argument(
        "--remap",
        action="append",
        default=[],
        metavar="INPUT:OLD_IP=NEW_IP",
        help="rename an address of one input",
    )


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_input_arguments(p)
    p.add_argument(
        "--alerts-out", default="-", metavar="FILE", help="alerts file (default: stdout)"
    )
    p.add_argument(
        "--alert-format", choices=("ocsf", "ecs"), help="alert rendering (default: config or ocsf)"
    )
    p.add_argument("--state-dir", help="save detector state here and resume from it")
    p.add_argument(
        "--dead-letters", metavar="FILE", help="write undecodable messages here (JSON lines)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")


def build_inputs(args: argparse.Namespace) -> list:  # type: ignore[type-arg]
    from stream.exceptions import StreamError
    from stream.replay import InputSpec, parse_remap, parse_shift

    specs = {path: InputSpec(path, args.format) for path in args.inputs}
    for text in args.shift:
        name, secs, at = parse_shift(text)
        if name not in specs:
            raise StreamError(f"--shift names {name!r}, which is not an input")
        specs[name].shift, specs[name].shift_to = secs, at
    for text in args.remap:
        name, old, new = parse_remap(text)
        if name not in specs:
            raise StreamError(f"--remap names {name!r}, which is not an input")
        specs[name].remap[old] = new
    return list(specs.values())


def load(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """(config, home networks, engine) from --config / --home."""
    from pipelines.records import HomeNetworks
    from stream.config import load_config

    config = load_config(args.config)
    home = HomeNetworks(args.home) if args.home else config.settings.home
    return config, home, config.settings.build_engine()


def run(args: argparse.Namespace) -> int:
    from stream.replay import run_replay
    from stream.sinks import JsonLinesAlertSink

    config, home, engine = load(args)
    inputs = build_inputs(args)
    dead_sink = None
    on_dead = None
    if args.dead_letters:
        from stream.deadletter import DeadLetterFileSink

        dead_sink = DeadLetterFileSink(args.dead_letters)
        on_dead = dead_sink.write
    progress = sys.stderr.isatty() and not args.no_progress
    with JsonLinesAlertSink(args.alerts_out, config.alert_format(args.alert_format)) as sink:
        summary = run_replay(engine, inputs, home, sink, args.state_dir, on_dead, progress)
    if dead_sink is not None:
        dead_sink.close()
    sys.stderr.write(summary.table() + "\n")
    return 0
