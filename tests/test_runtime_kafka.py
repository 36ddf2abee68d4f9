"""``slowburn run`` against the real broker: alerts, commits, state, restarts, faults.

Each test feeds the same small simulated network (20 hosts, 2 days, one 2 GB
exfiltration) as canonical JSON keyed by host into a 4-partition topic, runs the
runtime, and checks data: the alert topic, committed offsets, the state topic.
"""

from __future__ import annotations

import json

import pytest

from tests.runtime_helpers import (
    alerts_by_revision,
    committed,
    make_runtime,
    produce_canonical,
    read_topic,
    reference_run,
    simulated_flows,
    summary,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
_runtime = make_runtime
_summary = summary


@pytest.fixture(scope="module")
def network() -> tuple[object, dict[str, object]]:
    return simulated_flows()


@pytest.fixture(scope="module")
def reference(kafka, tmp_path_factory):  # type: ignore[no-untyped-def]
    """One clean run: the alerts every fault test must reproduce."""
    return reference_run(kafka, tmp_path_factory.mktemp("ref"))


def test_clean_run_alerts_commits_and_state(kafka, reference) -> None:  # type: ignore[no-untyped-def]
    topic, n, alerts = reference["topic"], reference["n"], reference["alerts"]
    assert reference["runtime"].records == n
    exfil = reference["truth"]["incidents"][0]
    hosts = {json.loads(v)["unmapped"]["slowburn"]["entity"] for v in alerts.values()}
    assert exfil["src"] in hosts, "the exfiltrating host is alerted"
    offs = committed(kafka.bootstrap, "ref", topic)
    ends = {r.partition for r in read_topic(kafka.bootstrap, topic)}
    assert sum(offs.values()) == n and set(offs) == ends, "every input offset committed"
    state = read_topic(kafka.bootstrap, f"{topic}.state")
    manifests = [r for r in state if r.key.endswith(b"|m")]
    assert {int(r.key.split(b"|")[2]) for r in manifests} == set(offs), (
        "a state snapshot per partition"
    )
    # the snapshot an alert descends from is named in a record header, not in the body
    written = {json.loads(r.value)["snapshot_id"] for r in manifests}
    named = set()
    for r in read_topic(kafka.bootstrap, f"{topic}.alerts"):
        assert "snapshot_id" not in json.loads(r.value)["unmapped"]["slowburn"]
        named.add(dict(r.headers)["snapshot_id"].decode())
    assert named - {""} <= written and named - {""}, "alerts name committed snapshots"


def test_resume_after_restart_continues_state(kafka, network, reference, tmp_path) -> None:  # type: ignore[no-untyped-def]
    flows, _ = network
    topic = "t-runtime-resume"
    kafka.create_topic(topic, partitions=4)
    half = len(flows) // 2
    produce_canonical(kafka.bootstrap, topic, flows, 0, half)
    first = _runtime(kafka.bootstrap, topic, "g", tmp_path, idle_exit_s=3.0)
    first.run()
    before = {tp: ps.engine.entities()["exfil"] for tp, ps in first.parts.items()}
    produce_canonical(kafka.bootstrap, topic, flows, half)
    second = _runtime(kafka.bootstrap, topic, "g", tmp_path, idle_exit_s=3.0)
    second.run()
    for tp, ps in second.parts.items():
        assert ps.engine.snapshot_id, f"{tp} restored from a snapshot"
        assert ps.engine.entities()["exfil"] >= before.get(tp, 0), (
            "per-host state continued, not reset"
        )
    alerts = alerts_by_revision(read_topic(kafka.bootstrap, f"{topic}.alerts"))
    assert _summary(alerts) == _summary(reference["alerts"])


def test_reconsume_from_earlier_offset_reemits_identical_ids(kafka, reference, tmp_path) -> None:  # type: ignore[no-untyped-def]
    topic = reference["topic"]
    again = _runtime(kafka.bootstrap, topic, "ref-again", tmp_path)
    again.cfg.alerts_topic = f"{topic}.alerts-again"
    again.run()
    alerts = alerts_by_revision(read_topic(kafka.bootstrap, f"{topic}.alerts-again"))
    assert {k for k in alerts} == {k for k in reference["alerts"]}


def test_poison_messages_are_dead_lettered_and_the_partition_moves(kafka, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from kafka import KafkaProducer

    topic = "t-runtime-poison"
    kafka.create_topic(topic, partitions=1)
    poison = [
        b"not json at all",
        b'{"kind":"flow","ts_start":"yesterday"}',
        b'{"kind":"flow","ts_start":1e400}',
        b'{"kind":"flow","ts_start":1.0,"bytes_out":-5}',
        b"\xff\xfe\x00garbage",
        b"{" * 10 + b"x" * (2 << 20),
    ]
    good = (
        b'{"kind":"flow","ts_start":1700000000.0,"src":"10.0.0.1","dst":"8.8.8.8","bytes_out":10}'
    )
    p = KafkaProducer(bootstrap_servers=kafka.bootstrap, max_request_size=8 << 20)
    for i, v in enumerate(poison):
        p.send(topic, v, key=b"k")
        p.send(topic, good, key=str(i).encode())
    p.flush()
    p.close()
    rt = _runtime(kafka.bootstrap, topic, "gp", tmp_path, idle_exit_s=3.0)
    rt.run()
    dead = read_topic(kafka.bootstrap, f"{topic}.dead")
    assert len(dead) == len(poison)
    reasons = sorted(dict(r.headers)["reason"].decode() for r in dead)
    # 1e400 overflows a float: msgspec rejects it as a schema error (JSON has no NaN token)
    assert reasons == sorted(["not_json", "schema", "schema", "negative", "not_json", "oversized"])
    for r in dead:
        h = dict(r.headers)
        assert (
            h["source_topic"].decode() == topic and h["partition"] == b"0" and int(h["offset"]) >= 0
        )
    assert committed(kafka.bootstrap, "gp", topic) == {0: 2 * len(poison)}
    assert (
        rt.metrics.registry.get_sample_value(
            "slowburn_records_dead_lettered_total", {"source": "canonical", "reason": "oversized"}
        )
        == 1.0
    )
