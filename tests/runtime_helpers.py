"""Helpers for the Kafka runtime tests: feed a simulated network, read alerts back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.records import FlowBatch, HomeNetworks, annotate_direction
from stream.decoders.canonical import encode_rows

REPO = Path(__file__).resolve().parents[1]

#: exfil only: deterministic and fast; the runtime mechanics do not depend on which detectors run
EXFIL_ONLY_CONFIG = """
detectors:
  beacon: {enabled: false}
  dns_tunnel: {enabled: false}
  lateral: {enabled: false}
  host_behaviour: {enabled: false}
engine:
  lateness: 0
"""


@lru_cache(maxsize=4)
def simulated_flows(
    hosts: int = 20, days: int = 2, seed: int = 3
) -> tuple[FlowBatch, dict[str, Any]]:
    """Flows of a small simulated network with one fast exfiltration (and its truth)."""
    from pipelines.simulate import SimConfig, Simulation

    sim = Simulation(SimConfig(hosts=hosts, days=days, seed=seed, scenarios=("fast_exfil",)))
    flows = FlowBatch.concat([f for f, _d in sim.batches(chunk_seconds=6 * 3600)])
    return flows, sim.truth()


def host_key(flows: FlowBatch) -> np.ndarray:
    b = annotate_direction(flows, HomeNetworks.default())
    return np.where(b.src_inside | ~b.dst_inside, b.src, b.dst)


def produce_canonical(
    bootstrap: str, topic: str, flows: FlowBatch, start: int = 0, stop: int | None = None
) -> int:
    """Produce flows[start:stop] as canonical JSON keyed by internal host; returns count."""
    from kafka import KafkaProducer

    part = flows.take(slice(start, stop))
    keys = host_key(part).tolist()
    values = encode_rows(dict(r, kind="flow") for r in part.rows())
    p = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=512 * 1024, acks="all")
    for k, v in zip(keys, values, strict=True):
        p.send(topic, value=v, key=str(k).encode())
    p.flush()
    p.close()
    return len(values)


def read_topic(bootstrap: str, topic: str, timeout_s: float = 10.0) -> list[Any]:
    """Every record of ``topic`` (all partitions) from the beginning to its current end."""
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        parts = c.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in parts]
        if not tps:
            return []
        c.assign(tps)
        c.seek_to_beginning(*tps)
        end = c.end_offsets(tps)
        out: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while any(c.position(tp) < end[tp] for tp in tps) and time.monotonic() < deadline:
            for recs in c.poll(timeout_ms=500).values():
                out.extend(recs)
        return out
    finally:
        c.close()


def alerts_by_revision(records: Iterable[Any]) -> dict[tuple[str, int], bytes]:
    """(alert uid, revision) -> content; asserts that one id never has two contents."""
    seen: dict[tuple[str, int], bytes] = {}
    for r in records:
        doc = json.loads(r.value)
        uid = doc["finding_info"]["uid"]
        rev = int(doc["unmapped"]["slowburn"]["incident"]["revision"])
        key = (uid, rev)
        assert seen.get(key, r.value) == r.value, f"alert {key} appeared with different content"
        seen[key] = r.value
    return seen


def committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    from kafka import KafkaAdminClient

    a = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        offs = a.list_group_offsets(group).get(group, {})
    finally:
        a.close()
    return {tp.partition: om.offset for tp, om in offs.items() if tp.topic == topic}


def start_run(
    bootstrap: str, topic: str, group: str, workdir: Path, *extra: str, log_name: str = "run"
) -> subprocess.Popen[bytes]:
    """``slowburn run`` as a child process (so tests can SIGKILL/SIGSTOP it)."""
    cfg = workdir / "config.yaml"
    if not cfg.exists():
        cfg.write_text(EXFIL_ONLY_CONFIG)
    cmd = [
        sys.executable,
        "-m",
        "stream",
        "run",
        "--config",
        str(cfg),
        "--bootstrap-servers",
        bootstrap,
        "--input",
        f"{topic}:canonical",
        "--group",
        group,
        "--alerts-topic",
        f"{topic}.alerts",
        "--deadletter-topic",
        f"{topic}.dead",
        "--state-topic",
        f"{topic}.state",
        *extra,
    ]
    log = open(workdir / f"{log_name}.log", "ab")  # noqa: SIM115 - lives as long as the child
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir)
