"""Generate a labelled synthetic enterprise as sensor records (file or Kafka) plus its truth.json.

Records are written as the JSON lines a real sensor would emit, so they go through the
same decoders as production traffic:

* ``--format zeek-json`` (default): Zeek conn and dns records interleaved in time order,
  tagged like zeek-kafka ``tag_json=T`` (``{"conn": {...}}`` / ``{"dns": {...}}``).
* ``--format goflow2-json``: goflow2 v2 JSON; each bidirectional connection becomes two
  unidirectional records (forward, reverse). goflow2 carries no DNS content, so the DNS
  transactions go as tagged Zeek dns records to ``--dns-out`` (default
  ``<out>.dns.jsonl``) or ``--dns-topic``; their udp/53 flows are in the flow records.

With ``--topic`` the records are produced to Kafka, keyed by the internal host of each
record (so per-host state lands on one partition), in batches; ``--rate-limit`` paces
the output in flows per second (for the compose simulator service). truth.json goes to
``--truth`` (default ``<out>.truth.json`` next to ``--out``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

HELP = "generate labelled synthetic enterprise traffic (goflow2/Zeek JSON) and its truth.json"

log = logging.getLogger("slowburn.simulate")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--hosts", type=int, default=200, help="internal hosts (default 200)")
    p.add_argument("--days", type=float, default=3.0, help="simulated days (default 3)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--start",
        metavar="ISO",
        help="start time, e.g. 2023-11-13T00:00:00Z (default: that Monday)",
    )
    p.add_argument(
        "--tz-offset",
        type=float,
        default=0.0,
        help="local time offset from UTC in hours (office hours)",
    )
    p.add_argument(
        "--scenario",
        action="append",
        default=[],
        metavar="NAME",
        help="attack scenario (repeatable)",
    )
    p.add_argument("--format", choices=("zeek-json", "goflow2-json"), default="zeek-json")
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("--out", metavar="FILE", help="JSON lines output file ('-' for stdout)")
    out.add_argument("--topic", metavar="T", help="Kafka topic to produce to")
    p.add_argument("--bootstrap-servers", default="127.0.0.1:9092", metavar="H:P")
    p.add_argument(
        "--dns-out",
        metavar="FILE",
        help="goflow2-json: where DNS records go (default <out>.dns.jsonl)",
    )
    p.add_argument(
        "--dns-topic", metavar="T", help="goflow2-json with --topic: topic for DNS records"
    )
    p.add_argument("--truth", metavar="FILE", help="truth.json path (default <out>.truth.json)")
    p.add_argument(
        "--chunk-seconds", type=float, default=3600.0, help="generation chunk (default 3600)"
    )
    p.add_argument(
        "--rate-limit",
        type=float,
        default=0.0,
        metavar="FLOWS_PER_S",
        help="pace output (0: as fast as possible)",
    )


def _parse_start(text: str | None) -> float | None:
    from stream.exceptions import StreamError

    if not text:
        return None
    try:
        d = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise StreamError(f"--start: not an ISO-8601 time: {text!r}") from exc
    if d.tzinfo is None:
        d = d.replace(tzinfo=dt.UTC)
    return d.timestamp()


class _Output:
    """Writes encoded records to a file or a Kafka topic (keyed), counting them."""

    def __init__(self, args: argparse.Namespace, path: str | None, topic: str | None) -> None:
        self.topic = topic
        self.fh: IO[bytes] | None = None
        self.producer: Any = None
        self.count = 0
        if topic:
            from kafka import KafkaProducer
            from kafka.errors import KafkaError

            from stream.exceptions import KafkaSetupError

            try:
                self.producer = KafkaProducer(
                    bootstrap_servers=args.bootstrap_servers.split(","),
                    client_id="slowburn-simulate",
                    acks=1,
                    linger_ms=50,
                    batch_size=512 * 1024,
                    max_request_size=4 * 1024 * 1024,
                )
            except (KafkaError, ValueError) as exc:
                raise KafkaSetupError(
                    f"cannot create producer for {args.bootstrap_servers}: {exc}"
                ) from exc
        elif path == "-":
            self.fh = sys.stdout.buffer
        elif path:
            self.fh = open(path, "wb")  # noqa: SIM115 - closed in close()

    def write(self, records: list[bytes], keys: list[str] | None) -> None:
        if self.fh is not None and records:
            self.fh.write(b"\n".join(records) + b"\n")
        elif self.producer is not None and self.topic:
            send, topic = self.producer.send, self.topic
            if keys is None:
                for rec in records:
                    send(topic, rec)
            else:
                for rec, key in zip(records, keys, strict=True):
                    send(topic, rec, key=key.encode())
            self.producer.flush()  # one chunk at a time: bounded memory, errors surface here
        self.count += len(records)

    def close(self) -> None:
        if self.producer is not None:
            self.producer.flush()
            self.producer.close(timeout=30)
        if self.fh is not None and self.fh is not sys.stdout.buffer:
            self.fh.close()
        elif self.fh is not None:
            self.fh.flush()


def _slices(chunks: Iterator[tuple[Any, Any]], size: int) -> Iterator[tuple[Any, Any]]:
    """Cut (flows, dns) chunks into pieces of ``size`` flows, DNS rows split at the same times."""
    import numpy as np

    for flows, dns in chunks:
        n = len(flows)
        if n <= size:
            yield flows, dns
            continue
        cuts = list(range(size, n, size))
        edges = flows.ts_start[cuts]
        lo_f = lo_d = 0
        for cut, edge in zip([*cuts, n], [*edges.tolist(), np.inf], strict=True):
            hi_d = int(np.searchsorted(dns.ts, edge)) if np.isfinite(edge) else len(dns)
            yield flows.take(np.arange(lo_f, cut)), dns.take(np.arange(lo_d, hi_d))
            lo_f, lo_d = cut, hi_d


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from pipelines.exceptions import PipelinesError
    from pipelines.simulate import DEFAULT_START, SimConfig, Simulation
    from stream.exceptions import StreamError
    from stream.writers import encode_goflow2_json, encode_zeek_conn_json, encode_zeek_dns_json

    start = _parse_start(args.start)
    try:
        sim = Simulation(
            SimConfig(
                hosts=args.hosts,
                days=args.days,
                seed=args.seed,
                start=DEFAULT_START if start is None else start,
                scenarios=tuple(args.scenario),
                tz_offset_h=args.tz_offset,
            )
        )
    except PipelinesError as exc:
        raise StreamError(str(exc)) from exc
    gf = args.format == "goflow2-json"
    main = _Output(args, args.out, args.topic)
    dns_out: _Output | None = None
    if gf:
        dns_path = args.dns_out or (
            f"{args.out}.dns.jsonl" if args.out and args.out != "-" else None
        )
        if dns_path or args.dns_topic:
            dns_out = _Output(args, dns_path, args.dns_topic if args.topic else None)
        else:
            log.warning("goflow2-json: DNS records are not written (give --dns-out or --dns-topic)")
    began = time.monotonic()
    flows_total = dns_total = 0
    try:
        chunks = sim.batches(chunk_seconds=args.chunk_seconds)
        if args.rate_limit > 0:  # small time-ordered slices (~0.25 s of output) for smooth pacing
            chunks = _slices(chunks, max(1, int(args.rate_limit / 4)))
        for flows, dns in chunks:
            host = np.where(flows.src_inside, flows.src, flows.dst)
            dhost = dns.src
            if gf:
                recs = encode_goflow2_json(flows)
                reps = 1 + (flows.bidirectional & (flows.pkts_in > 0)).astype(np.int64)
                main.write(recs, np.repeat(host, reps).tolist() if main.producer else None)
                if dns_out is not None:
                    dns_out.write(
                        encode_zeek_dns_json(dns, tagged=True),
                        dhost.tolist() if dns_out.producer else None,
                    )
            else:
                recs = encode_zeek_conn_json(flows, tagged=True) + encode_zeek_dns_json(
                    dns, tagged=True
                )
                order = np.argsort(np.concatenate([flows.ts_start, dns.ts]), kind="stable")
                keys = np.concatenate([host, dhost])[order].tolist() if main.producer else None
                main.write([recs[i] for i in order.tolist()], keys)
            flows_total += len(flows)
            dns_total += len(dns)
            if args.rate_limit > 0:
                ahead = flows_total / args.rate_limit - (time.monotonic() - began)
                if ahead > 0:
                    time.sleep(ahead)
    finally:
        main.close()
        if dns_out is not None:
            dns_out.close()
    elapsed = time.monotonic() - began
    truth = sim.truth()
    truth["format"] = args.format
    truth["span"]["packets_or_records"] = main.count + (dns_out.count if dns_out else 0)
    truth_path = args.truth or (f"{args.out}.truth.json" if args.out and args.out != "-" else None)
    if truth_path:
        Path(truth_path).write_text(json.dumps(truth, indent=2) + "\n")
    summary = (
        f"simulated {args.hosts} hosts x {args.days:g} days: {flows_total} flows, {dns_total} DNS rows -> "
        f"{main.count} {args.format} records in {elapsed:.1f} s ({flows_total / max(elapsed, 1e-9):,.0f} flows/s); "
        f"{len(truth['incidents'])} incidents"
        + (f", truth {truth_path}" if truth_path else "")
        + "\n"
    )
    (sys.stderr if args.out == "-" else sys.stdout).write(summary)
    return 0
