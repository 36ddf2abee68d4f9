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
    """(alert uid, revision) -> body; asserts that one id never has two bodies.

    Whole bodies, byte for byte: the snapshot an alert names (delivery metadata: the
    sender's last committed checkpoint, which differs when another member or a fenced
    one redelivers) travels in the ``snapshot_id`` record header, not in the body.
    """
    seen: dict[tuple[str, int], bytes] = {}
    for r in records:
        doc = json.loads(r.value)
        uid = doc["finding_info"]["uid"]
        rev = int(doc["unmapped"]["slowburn"]["incident"]["revision"])
        key = (uid, rev)
        if key in seen:
            if seen[key] != r.value:
                diff = _differences(json.loads(seen[key]), doc)
                raise AssertionError(f"alert {key} appeared with different bodies: {diff}")
        else:
            seen[key] = r.value
    return seen


def _differences(a: Any, b: Any, path: str = "") -> list[str]:
    """Paths where two JSON documents differ (for assertion messages)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [
            d
            for k in sorted(set(a) | set(b))
            for d in _differences(a.get(k), b.get(k), f"{path}.{k}")
        ]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [
            d
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for d in _differences(x, y, f"{path}[{i}]")
        ]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"[:200]]


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


def wait_for(cond: Any, timeout_s: float, what: str, every_s: float = 0.3) -> Any:
    """Poll ``cond()`` until it returns something truthy; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(every_s)


def committed_meta(bootstrap: str, group: str, topic: str) -> dict[int, tuple[int, str]]:
    """partition -> (committed offset, metadata = snapshot id)."""
    from kafka import KafkaAdminClient

    a = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        offs = a.list_group_offsets(group).get(group, {})
    finally:
        a.close()
    return {
        tp.partition: (om.offset, om.metadata or "") for tp, om in offs.items() if tp.topic == topic
    }


def group_members(bootstrap: str, group: str) -> int:
    """Members of ``group`` right now (as the coordinator sees it)."""
    from kafka import KafkaAdminClient

    a = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        desc = a.describe_groups([group])  # kafka-python 3: {group: {key: value}}
    finally:
        a.close()
    return len(desc.get(group, {}).get("members") or [])


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        tps = [TopicPartition(topic, p) for p in c.partitions_for_topic(topic) or set()]
        return {tp.partition: int(o) for tp, o in c.end_offsets(tps).items()}
    finally:
        c.close()


def committed_states(bootstrap: str, group: str, topic: str) -> dict[int, Any]:
    """partition -> the engine of the snapshot its committed offset names (from the topic)."""
    from pipelines.config import Settings
    from stream.checkpoint import Checkpointer
    from stream.kafka.base import ClientSettings
    from stream.kafka.kafka_python import KPAdmin

    admin = KPAdmin(ClientSettings(bootstrap_servers=bootstrap))
    try:
        version = Settings.from_mapping(EXFIL_ONLY).build_engine().model_version
        ck = Checkpointer(None, admin, f"{topic}.state", group, None, admin.partitions(topic))  # type: ignore[arg-type]
        out = {}
        for part, (_off, sid) in committed_meta(bootstrap, group, topic).items():
            got = ck.load((topic, part), sid, version)
            assert got is not None, f"snapshot {sid} of partition {part} is in the state topic"
            out[part] = got[1]
        return out
    finally:
        admin.close()


EXFIL_ONLY: dict[str, Any] = {
    "detectors": {
        n: {"enabled": False} for n in ("beacon", "dns_tunnel", "lateral", "host_behaviour")
    },
    "engine": {"lateness": 0},
}


def summary(alerts: dict[tuple[str, int], bytes]) -> set[tuple[str, int, str, int]]:
    """What must not depend on faults, checkpoint timing or the input topic: id, revision,
    sentence, risk (the bodies of two runs on different topics differ in the audit trail's
    origins).
    """
    out = set()
    for (uid, rev), value in alerts.items():
        doc = json.loads(value)
        out.add((uid, rev, doc["message"], doc["risk_score"]))
    return out


def make_runtime(bootstrap: str, topic: str, group: str, state_dir: Path, **kw: Any) -> Any:
    from pipelines.config import Settings
    from stream.kafka.base import ClientSettings
    from stream.runtime import Runtime, RuntimeConfig

    opts: dict[str, Any] = {
        "checkpoint_interval_s": 1.0,
        "idle_exit_s": 4.0,
        "max_seconds": 240.0,
        **kw,
    }
    cfg = RuntimeConfig(
        inputs=[(topic, "canonical")],
        alerts_topic=f"{topic}.alerts",
        deadletter_topic=f"{topic}.dead",
        state_topic=f"{topic}.state",
        group=group,
        state_dir=str(state_dir),
        **opts,
    )
    return Runtime(
        cfg, Settings.from_mapping(EXFIL_ONLY), ClientSettings(bootstrap_servers=bootstrap)
    )


_REFERENCE: dict[str, dict[str, Any]] = {}


def reference_run(kafka: Any, workdir: Path) -> dict[str, Any]:
    """One clean run per broker (cached across test modules): the alerts to reproduce."""
    key = str(kafka.data_dir)
    if key not in _REFERENCE:
        flows, truth = simulated_flows()
        topic = "t-runtime-reference"
        kafka.create_topic(topic, partitions=4)
        n = produce_canonical(kafka.bootstrap, topic, flows)
        rt = make_runtime(kafka.bootstrap, topic, "ref", workdir)
        rt.run()
        alerts = alerts_by_revision(read_topic(kafka.bootstrap, f"{topic}.alerts"))
        parts = {tp[1]: ps.engine for tp, ps in rt.parts.items()}
        _REFERENCE[key] = {
            "topic": topic,
            "n": n,
            "alerts": alerts,
            "truth": truth,
            "runtime": rt,
            "engines": parts,
        }
    return _REFERENCE[key]
