"""Receive NetFlow v5/v9/IPFIX over UDP; write canonical flow JSON lines or publish to Kafka.

Examples::

    slowburn collect --listen 127.0.0.1:2055 --out flows.jsonl
    slowburn collect --listen 0.0.0.0:2055 --topic netflow-raw --bootstrap-servers kafka:9092 --format raw

``--format jsonl`` (default) decodes here; ``--format raw`` forwards datagrams (key = exporter,
header ``peer``) for ``slowburn run --format netflow``. Dead letters go next to ``--out``
(``<out>.deadletter.jsonl``) or to the topic ``slowburn.deadletter``. SIGTERM/SIGINT stop
cleanly: held data sets are flushed (as dead letters) and the sink is flushed.
"""

from __future__ import annotations

import argparse
import logging
import signal
from typing import Any

from stream.exceptions import StreamError

HELP = "UDP NetFlow/IPFIX collector → flow JSON lines (file or Kafka) or raw datagrams to Kafka"

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--listen", default="127.0.0.1:2055", help="HOST:PORT to receive on (default %(default)s)"
    )
    dest = p.add_mutually_exclusive_group(required=True)
    dest.add_argument("--out", help="append flow JSON lines to this file")
    dest.add_argument("--topic", help="Kafka topic to publish to (needs --bootstrap-servers)")
    p.add_argument("--bootstrap-servers", help="Kafka bootstrap servers H:P[,H:P]")
    p.add_argument("--dead-letter-topic", default="slowburn.deadletter")
    p.add_argument(
        "--format",
        choices=("jsonl", "raw"),
        default="jsonl",
        help="decode here, or forward raw datagrams",
    )
    p.add_argument("--max-seconds", type=float, default=None, help="stop after this many seconds")
    p.add_argument(
        "--idle-exit",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop after this many seconds without a datagram",
    )
    p.add_argument(
        "--pending-timeout",
        type=float,
        default=60.0,
        help="export-time seconds a data set may wait for its template",
    )


def parse_listen(text: str) -> tuple[str, int]:
    """``"127.0.0.1:2055"`` / ``"[::1]:2055"`` → (host, port).

    >>> parse_listen("[::1]:9995"), parse_listen("0.0.0.0:2055")
    (('::1', 9995), ('0.0.0.0', 2055))
    """
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise StreamError(f"--listen wants HOST:PORT, got {text!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def run(args: Any) -> int:
    from stream.collector import Collector, FileSink, KafkaSink, Sink
    from stream.decoders.netflow import NetflowDecoder

    sink: Sink
    if args.topic:
        if not args.bootstrap_servers:
            raise StreamError("--topic needs --bootstrap-servers")
        sink = KafkaSink(args.topic, args.bootstrap_servers, dead_topic=args.dead_letter_topic)
    else:
        sink = FileSink(args.out)
    collector = Collector(
        parse_listen(args.listen),
        sink,
        mode=args.format,
        decoder=NetflowDecoder(pending_timeout=args.pending_timeout),
        max_seconds=args.max_seconds,
        idle_exit=args.idle_exit,
    )
    try:
        port = collector.bind()
    except OSError as exc:
        sink.close()
        raise StreamError(f"cannot listen on {args.listen}: {exc}") from exc
    log.info("collecting NetFlow/IPFIX on %s port %d", args.listen, port)

    def _stop(signum: int, _frame: Any) -> None:
        log.info("signal %d: stopping", signum)
        collector.stop()

    old = {s: signal.signal(s, _stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        collector.serve()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        collector.close()
    log.info(
        "received %d datagrams, %d flows, %d dead letters",
        collector.received,
        collector.flows,
        collector.dead,
    )
    return 0
