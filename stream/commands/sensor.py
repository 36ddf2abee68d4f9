"""Turn a capture file or a live interface into packet summaries for slowburn.

Examples::

    slowburn sensor --pcap capture.pcap --out summaries.jsonl
    slowburn sensor --iface eth0 --bpf "not port 9092" --topic packets --bootstrap-servers kafka:9092

Files get one ``{"kind": "pkt", ...}`` object per line; Kafka gets JSON arrays of packets keyed
by the internal host. Decode them with ``--format summary`` (flows via the flow table).
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from typing import Any

from stream.exceptions import SourceError, StreamError

HELP = "capture file / live interface → packet summaries (JSON) to Kafka or a file"

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--pcap", help="read this pcap/pcapng file (raw fast path)")
    src.add_argument("--iface", help="sniff this interface with scapy (needs capture privileges)")
    dest = p.add_mutually_exclusive_group(required=True)
    dest.add_argument("--out", help="append summaries (JSON lines) to this file")
    dest.add_argument("--topic", help="Kafka topic (needs --bootstrap-servers)")
    p.add_argument("--bootstrap-servers", help="Kafka bootstrap servers H:P[,H:P]")
    p.add_argument("--bpf", default=None, help="BPF capture filter for --iface")
    p.add_argument(
        "--home",
        action="append",
        default=None,
        metavar="CIDR",
        help="home network (repeatable; default RFC 1918 + fc00::/7) used to key by internal host",
    )
    p.add_argument(
        "--batch", type=int, default=500, help="packets per Kafka message (default %(default)s)"
    )
    p.add_argument(
        "--max-seconds", type=float, default=None, help="stop live capture after this many seconds"
    )
    p.add_argument("--count", type=int, default=0, help="stop live capture after this many packets")


def run(args: Any) -> int:
    from pipelines.records import HomeNetworks
    from stream.decoders.pcap import CaptureFormatError
    from stream.sensor import KafkaSummarySink, Sensor, SummaryFileSink

    sink: Any
    if args.topic:
        if not args.bootstrap_servers:
            raise StreamError("--topic needs --bootstrap-servers")
        sink = KafkaSummarySink(args.topic, args.bootstrap_servers)
    else:
        sink = SummaryFileSink(args.out)
    home = HomeNetworks(args.home) if args.home else HomeNetworks.default()
    sensor = Sensor(sink, home=home, batch=args.batch)
    stop = threading.Event()
    old = {s: signal.signal(s, lambda *_a: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        if args.pcap:
            try:
                n = sensor.from_capture(args.pcap, stop)
            except FileNotFoundError as exc:
                raise SourceError(f"cannot read {args.pcap}: {exc}") from exc
            except CaptureFormatError as exc:
                raise SourceError(f"{args.pcap}: {exc}") from exc
        else:
            try:
                n = sensor.live(
                    args.iface, args.bpf, max_seconds=args.max_seconds, count=args.count, stop=stop
                )
            except (OSError, PermissionError) as exc:
                raise SourceError(f"cannot capture on {args.iface}: {exc}") from exc
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        sink.close()
    log.info("published %d packet summaries (%s)", n, sensor.stats or "no capture problems")
    return 0
