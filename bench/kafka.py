"""Benchmark: ``slowburn run`` throughput on Kafka against bare consumption, per client.

Produces N goflow2-JSON messages (``encode_goflow2_json`` on a simulated network,
repeated with shifted time until N, keyed by internal host) into a 4-partition topic,
then for each client backend measures

* bare consumption of the topic with the same client library (poll loop, no decoding),
* the runtime (decode → engine per partition → alerts → checkpoints) until all N are processed,

and prints flows/s and the ratio, plus the top entries of a cProfile of the runtime.
Without ``--bootstrap-servers`` it starts a local broker (deploy/kafka/local-kafka).

    .venv/bin/python bench/kafka.py --smoke            # ~50k messages
    .venv/bin/python bench/kafka.py --n 1000000 --detectors all
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import io
import logging
import pstats
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# this file is named kafka.py: keep its directory off the path so ``import kafka`` is the client
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]
sys.path.insert(0, str(REPO))

EXFIL_ONLY = {
    "detectors": {
        n: {"enabled": False} for n in ("beacon", "dns_tunnel", "lateral", "host_behaviour")
    },
}


def messages(n: int) -> tuple[list[bytes], list[bytes]]:
    """(values, keys): n goflow2 JSON messages keyed by internal host."""
    import numpy as np

    from pipelines.records import HomeNetworks, annotate_direction
    from pipelines.simulate import SimConfig, Simulation
    from stream.writers import encode_goflow2_json

    sim = Simulation(SimConfig(hosts=50, days=2, seed=7))
    from pipelines.records import FlowBatch

    flows = FlowBatch.concat([f for f, _d in sim.batches(chunk_seconds=6 * 3600)])
    span = float(flows.ts_start.max() - flows.ts_start.min()) + 3600.0
    values: list[bytes] = []
    keys: list[bytes] = []
    shift = 0
    while len(values) < n:
        part = flows
        if shift:
            part = dataclasses.replace(
                flows, ts_start=flows.ts_start + shift * span, ts_end=flows.ts_end + shift * span
            )
        b = annotate_direction(part, HomeNetworks.default())
        host = np.where(b.src_inside | ~b.dst_inside, b.src, b.dst).tolist()
        enc = encode_goflow2_json(part)
        # two messages (forward, reverse) per flow with a reply: key both by the flow's host
        reply = (part.bidirectional & (part.pkts_in > 0)).tolist()
        it = iter(enc)
        for h, r in zip(host, reply, strict=True):
            k = h.encode()
            values.append(next(it))
            keys.append(k)
            if r:
                values.append(next(it))
                keys.append(k)
        shift += 1
    return values[:n], keys[:n]


def produce(bootstrap: str, topic: str, values: list[bytes], keys: list[bytes]) -> float:
    from confluent_kafka import Producer

    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 50,
            "partitioner": "murmur2_random",
            "queue.buffering.max.messages": 2_000_000,
            "batch.size": 1_000_000,
        }
    )
    t0 = time.perf_counter()
    for v, k in zip(values, keys, strict=True):
        while True:
            try:
                p.produce(topic, v, k)
                break
            except BufferError:
                p.poll(0.1)
    p.flush(300)
    return time.perf_counter() - t0


def bare(backend: str, bootstrap: str, topic: str, n: int) -> tuple[float, float]:
    """(wall s, process CPU s) to consume n messages with the bare client (first record → last).

    Polls as many records at a time as the runtime does (``RuntimeConfig.max_poll_records``)."""
    from stream.runtime import RuntimeConfig

    got, t0, c0, batch = 0, None, 0.0, RuntimeConfig.max_poll_records
    if backend == "kafka-python":
        from kafka import KafkaConsumer

        c = KafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=f"bare-{uuid.uuid4().hex[:6]}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            fetch_max_bytes=64 << 20,
            max_partition_fetch_bytes=8 << 20,
        )
        while got < n:
            for recs in c.poll(timeout_ms=500, max_records=batch).values():
                if t0 is None:
                    t0, c0 = time.perf_counter(), time.process_time()
                got += len(recs)
        c.close()
    else:
        from confluent_kafka import Consumer

        c = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"bare-{uuid.uuid4().hex[:6]}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        c.subscribe([topic])
        while got < n:
            msgs = c.consume(batch, 0.5)
            if msgs:
                if t0 is None:
                    t0, c0 = time.perf_counter(), time.process_time()
                got += sum(1 for m in msgs if m.error() is None)
        c.close()
    assert t0 is not None
    return time.perf_counter() - t0, time.process_time() - c0


def runtime(
    backend: str, bootstrap: str, topic: str, n: int, detectors: str, profile: bool
) -> tuple[float, float, Any, str]:
    """(wall s, process CPU s) for the runtime to process n messages (first record → last),
    the runtime, and the profile's top entries (by own time, then slowburn's by cumulative)."""
    from pipelines.config import Settings
    from stream.kafka.base import ClientSettings
    from stream.runtime import Runtime, RuntimeConfig

    settings = Settings.from_mapping(EXFIL_ONLY if detectors == "exfil" else {})
    cfg = RuntimeConfig(
        inputs=[(topic, "goflow2-json")],
        alerts_topic=f"{topic}.alerts",
        deadletter_topic=f"{topic}.dead",
        state_topic=f"{topic}.state",
        group=f"run-{backend}-{uuid.uuid4().hex[:6]}",
        backend=backend,
        state_dir=tempfile.mkdtemp(prefix="slowburn-bench-"),
        checkpoint_interval_s=10.0,
        max_seconds=1800.0,
    )
    rt = Runtime(cfg, settings, ClientSettings(bootstrap_servers=bootstrap))
    marks: dict[str, float] = {}

    def watch() -> None:
        while rt.records < n and not rt._stop.is_set():
            if rt.records and "first" not in marks:
                marks["first"], marks["first_cpu"] = time.perf_counter(), time.process_time()
            time.sleep(0.01)
        marks["last"], marks["last_cpu"] = time.perf_counter(), time.process_time()
        rt.stop()

    threading.Thread(target=watch, daemon=True).start()
    prof = cProfile.Profile() if profile else None
    if prof:
        prof.enable()
    rt.run()
    if prof:
        prof.disable()
    text = ""
    if prof:
        buf = io.StringIO()
        stats = pstats.Stats(prof, stream=buf)
        stats.sort_stats("tottime").print_stats(18)
        stats.sort_stats("cumulative").print_stats(r"/stream/", 14)
        text = buf.getvalue()
    wall = marks["last"] - marks.get("first", marks["last"])
    cpu = marks["last_cpu"] - marks.get("first_cpu", marks["last_cpu"])
    return wall, cpu, rt, text


def in_memory(values: list[bytes], detectors: str) -> tuple[float, float]:
    """(decode-only, decode + engine) CPU s without Kafka: the detector ceiling.

    With the runtime's garbage-collector setting (RuntimeConfig.gc_young_threshold)."""
    import gc

    from pipelines.config import Settings
    from stream.decoders import get_decoder
    from stream.decoders.base import Message
    from stream.runtime import RuntimeConfig

    settings = Settings.from_mapping(EXFIL_ONLY if detectors == "exfil" else {})
    msgs = [Message(v, "bench/0", i) for i, v in enumerate(values)]
    dec = get_decoder("goflow2-json")
    thresholds = gc.get_threshold()
    gc.set_threshold(RuntimeConfig.gc_young_threshold or thresholds[0], *thresholds[1:])
    t0 = time.process_time()
    for i in range(0, len(msgs), 10_000):
        dec.decode(msgs[i : i + 10_000])
    t_dec = time.process_time() - t0
    from pipelines.records import annotate_direction

    dec, engine = get_decoder("goflow2-json"), settings.build_engine()
    t0 = time.process_time()
    for i in range(0, len(msgs), 10_000):
        res = dec.decode(msgs[i : i + 10_000])
        engine.process(annotate_direction(res.flows, settings.home))
    t_eng = time.process_time() - t0
    gc.set_threshold(*thresholds)
    return t_dec, t_eng


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--smoke", action="store_true", help="~50k messages")
    ap.add_argument("--bootstrap-servers")
    ap.add_argument("--backends", default="kafka-python,confluent")
    ap.add_argument("--detectors", choices=("all", "exfil"), default="all")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument(
        "--profile", default="last", help="backends to profile (comma list; default the last)"
    )
    args = ap.parse_args(argv)
    n = 50_000 if args.smoke else args.n
    logging.basicConfig(level=logging.WARNING)
    broker = None
    bootstrap = args.bootstrap_servers
    if not bootstrap:
        from tests.kafka_broker import KafkaBroker

        broker = KafkaBroker(Path(tempfile.mkdtemp(prefix="slowburn-bench-kafka-")), scram=False)
        broker.start()
        bootstrap = broker.bootstrap
    try:
        t = time.perf_counter()
        values, keys = messages(n)
        sys.stdout.write(f"generated {n:,} goflow2 messages in {time.perf_counter() - t:.1f} s\n")
        topic = f"bench-{uuid.uuid4().hex[:6]}"
        from stream.kafka import make_admin
        from stream.kafka.base import ClientSettings

        admin = make_admin("kafka-python", ClientSettings(bootstrap_servers=bootstrap))
        admin.ensure_topic(topic, 4)
        admin.close()
        sys.stdout.write(f"produced in {produce(bootstrap, topic, values, keys):.1f} s\n")
        t_dec, t_eng = in_memory(values, args.detectors)
        sys.stdout.write(
            f"in memory, no Kafka, one engine: decode {n / t_dec:,.0f} msg/CPU-s, "
            f"decode + engine ({args.detectors}) {n / t_eng:,.0f} msg/CPU-s\n"
        )
        del values, keys
        backends = args.backends.split(",")
        for backend in backends:
            tb, cb = bare(backend, bootstrap, topic, n)
            tr, cr, rt, _ = runtime(backend, bootstrap, topic, n, args.detectors, profile=False)
            flows = sum(ps.engine.stats["flows"] for ps in rt.parts.values())
            sys.stdout.write(
                f"{backend:13s} bare {n / tb:>9,.0f} msg/s | runtime {n / tr:>9,.0f} msg/s "
                f"({flows / tr:>9,.0f} flows/s, {rt.sent_alerts} alerts) | "
                f"runtime/bare time ratio {tr / tb:.2f}\n"
                f"{'':13s} CPU s of this process: bare {cb:.1f} ({n / cb:,.0f} msg/CPU-s) | "
                f"runtime {cr:.1f} ({flows / cr:,.0f} flows/CPU-s) | CPU ratio {cr / cb:.2f}\n"
            )
            sys.stdout.flush()
        profiled = backends[-1:] if args.profile == "last" else args.profile.split(",")
        for backend in [] if args.no_profile else profiled:
            *_x, prof = runtime(backend, bootstrap, topic, n, args.detectors, profile=True)
            sys.stdout.write(f"cProfile of the runtime ({backend}), top by own time:\n{prof}\n")
    finally:
        if broker is not None:
            broker.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
