"""Re-key un-keyed sensor topics by internal host into ``slowburn.flows`` (stateless).

goflow2 partitions randomly and zeek-kafka sends no key, so one host's records land on
every partition. This stage decodes each message, and writes every flow and DNS record
as a canonical JSON message keyed by its internal host (the source if it is inside the
home networks, else the destination) to the output topic. The stateful ``slowburn run``
stage then reads ``slowburn.flows:canonical`` and sees each host in exactly one
partition, whatever the number of instances. Records keep their original
``origin``/``offset``, so alerts still point at the sensor's message. Offsets are
committed after the re-keyed copies are acknowledged (at-least-once).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time

HELP = "re-key sensor topics by internal host into slowburn.flows (stateless)"

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML or TOML configuration file")
    p.add_argument("--bootstrap-servers", metavar="HOST:PORT")
    p.add_argument("--input", action="append", required=True, metavar="TOPIC[:FORMAT]")
    p.add_argument(
        "--output", default="slowburn.flows", help="output topic (default slowburn.flows)"
    )
    p.add_argument(
        "--partitions", type=int, default=4, help="partitions of the output topic if created"
    )
    p.add_argument("--group", default="slowburn-repartition")
    p.add_argument("--deadletter-topic", default="slowburn.deadletter")
    p.add_argument("--backend", choices=("kafka-python", "confluent"), default="kafka-python")
    p.add_argument("--max-seconds", type=float)
    p.add_argument("--idle-exit", type=float, metavar="SECONDS")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from pipelines.records import annotate_direction
    from stream.config import load_config
    from stream.decoders import get_decoder
    from stream.decoders.base import Decoder, Message
    from stream.decoders.canonical import encode_rows
    from stream.kafka import make_admin, make_consumer, make_producer, settings_from

    config = load_config(args.config)
    kafka = {
        k: v
        for k, v in config.section("kafka").items()
        if k not in ("group", "instance_id", "backend")
    }
    if args.bootstrap_servers:
        kafka["bootstrap_servers"] = args.bootstrap_servers
    client = settings_from(kafka)
    home = config.settings.home
    formats = {}
    for text in args.input:
        topic, _, fmt = text.partition(":")
        formats[topic] = fmt or "auto"
    admin = make_admin(args.backend, client)
    for topic in formats:
        admin.ensure_topic(topic, args.partitions)
    admin.ensure_topic(args.output, args.partitions)
    admin.ensure_topic(args.deadletter_topic, args.partitions)
    admin.close()
    producer = make_producer(args.backend, client)
    consumer = make_consumer(args.backend, client, args.group)
    consumer.subscribe(list(formats))
    decoders: dict[tuple[str, int], Decoder] = {}
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    started = last = time.monotonic()
    total = 0
    try:
        while not stop.is_set():
            records = consumer.poll(0.5, 10_000)
            for ev in consumer.rebalances.drain():  # stateless: only drop decoder buffers
                if ev.change != "assigned":
                    for tp in ev.partitions:
                        decoders.pop(tp, None)
            now = time.monotonic()
            if args.max_seconds and now - started > args.max_seconds:
                break
            if not records:
                if args.idle_exit and now - last > args.idle_exit:
                    break
                continue
            last = now
            offsets: dict[tuple[str, int], tuple[int, str]] = {}
            by_tp: dict[tuple[str, int], list[Message]] = {}
            for r in records:
                by_tp.setdefault((r.topic, r.partition), []).append(
                    Message(r.value, f"{r.topic}/{r.partition}", r.offset, r.key)
                )
                offsets[(r.topic, r.partition)] = (r.offset + 1, "")
            for tp, msgs in by_tp.items():
                dec = decoders.get(tp)
                if dec is None:
                    dec = decoders[tp] = get_decoder(formats.get(tp[0], "auto"))
                res = dec.decode(msgs)
                for d in res.dead:
                    producer.send(args.deadletter_topic, d.value, headers=d.headers())
                for batch, kind in ((res.flows, "flow"), (res.dns, "dns")):
                    if not len(batch):
                        continue
                    batch = annotate_direction(batch, home)
                    keys = np.where(batch.src_inside | ~batch.dst_inside, batch.src, batch.dst)
                    for key, value in zip(
                        keys.tolist(),
                        encode_rows(dict(row, kind=kind) for row in batch.rows()),
                        strict=True,
                    ):
                        producer.send(args.output, value, key=str(key).encode())
                    total += len(batch)
            producer.flush()  # the re-keyed copies are acknowledged before the commit
            owned = consumer.assignment()
            try:
                consumer.commit({tp: o for tp, o in offsets.items() if tp in owned})
            except Exception as exc:  # rebalanced meanwhile: the new owner re-sends (dups)
                log.warning("commit failed (records will be re-keyed again): %s", exc)
    finally:
        consumer.close()
        producer.close()
    sys.stderr.write(f"slowburn repartition: {total:,} records re-keyed into {args.output}\n")
    return 0
