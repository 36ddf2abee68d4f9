"""Decode input files and print the canonical records as JSON lines.

One line per flow (``"kind": "flow"``) or DNS transaction (``"kind": "dns"``) with every
canonical field; direction (``src_inside``/``dst_inside``) comes from ``--home``. Files
may be JSON lines (goflow2, Zeek, Suricata EVE, pmacct, mixed), Zeek TSV logs or
pcap/pcapng captures, optionally gzipped; the format is detected unless ``--format``
pins it. A summary (records, dead letters by reason) goes to stderr.

Example: ``slowburn decode eve.json conn.log --dead-letters dead.jsonl --home 10.0.0.0/8``
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

HELP = "decode input files into canonical flow/DNS records (JSON lines on stdout)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from stream.decoders import FORMATS

    p.add_argument("inputs", nargs="+", metavar="INPUT", help="files to decode")
    p.add_argument(
        "--format",
        default="auto",
        choices=sorted(FORMATS),
        help="input format (default: detect per file and per message)",
    )
    p.add_argument("--dead-letters", metavar="FILE", help="append dead letters here as JSON lines")
    p.add_argument(
        "--home",
        action="append",
        metavar="CIDR",
        help="home network (repeatable; default RFC 1918 + fc00::/7)",
    )
    p.add_argument("--chunk", type=int, default=65536, help="messages per decode batch")


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    for k, v in row.items():
        if isinstance(v, float) and not math.isfinite(v):
            row[k] = None
    return row


def run(args: argparse.Namespace) -> int:
    from pipelines.records import HomeNetworks, annotate_direction
    from stream.deadletter import DeadLetterCounter, DeadLetterFileSink, count_dead
    from stream.decoders import get_decoder
    from stream.sources import iter_file

    home = HomeNetworks(args.home) if args.home else HomeNetworks.default()
    counter = DeadLetterCounter()
    sink = DeadLetterFileSink(args.dead_letters, on_dead=counter) if args.dead_letters else None
    write = sys.stdout.write
    flows = dns = ignored = messages = 0
    try:
        for path in args.inputs:
            decoder = None if args.format == "auto" else get_decoder(args.format)
            for result, n in iter_file(path, args.format, args.chunk, decoder=decoder):
                messages += n
                ignored += result.ignored
                if sink is not None:
                    sink.write(result.dead)
                else:
                    count_dead(result.dead, counter)
                for kind, batch in (("flow", result.flows), ("dns", result.dns)):
                    if not len(batch):
                        continue
                    batch = annotate_direction(batch, home)
                    lines = [json.dumps({"kind": kind, **_clean(row)}) for row in batch.rows()]
                    write("\n".join(lines) + "\n")
                    if kind == "flow":
                        flows += len(batch)
                    else:
                        dns += len(batch)
    finally:
        if sink is not None:
            sink.close()
    reasons = ", ".join(f"{r} {n}" for r, n in sorted(counter.by_reason().items())) or "none"
    sys.stderr.write(
        f"slowburn decode: {messages} messages -> {flows} flows, {dns} dns, {ignored} ignored, "
        f"{counter.total} dead letters ({reasons})\n"
    )
    return 0
