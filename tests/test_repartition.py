"""``slowburn repartition``: un-keyed sensor messages re-keyed by internal host.

goflow2 messages are produced round-robin without keys to a 3-partition topic (as
goflow2 does); after the stage every host's records are in exactly one partition of the
output, keyed by that host, every flow is there once, and the input offsets are committed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict

import pytest

from pipelines.records import HomeNetworks
from stream.decoders import get_decoder
from stream.decoders.base import Message
from stream.writers import encode_goflow2_json
from tests.runtime_helpers import REPO, committed, end_offsets, read_topic, simulated_flows

pytestmark = [pytest.mark.kafka]


def test_repartition_rekeys_by_internal_host(kafka, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from kafka import KafkaProducer

    flows, _ = simulated_flows()
    values = encode_goflow2_json(flows.take(slice(0, 5000)))
    topic = "t-repartition-in"
    kafka.create_topic(topic, partitions=3)
    p = KafkaProducer(bootstrap_servers=kafka.bootstrap, linger_ms=20)
    for i, v in enumerate(values):
        p.send(topic, v, partition=i % 3)
    p.flush()
    p.close()
    out = f"{topic}.flows"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "stream",
            "repartition",
            "--bootstrap-servers",
            kafka.bootstrap,
            "--input",
            f"{topic}:goflow2-json",
            "--output",
            out,
            "--partitions",
            "4",
            "--group",
            "grp",
            "--deadletter-topic",
            f"{topic}.dead",
            "--idle-exit",
            "3",
            "--max-seconds",
            "120",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = read_topic(kafka.bootstrap, out)
    parts_of: dict[bytes, set[int]] = defaultdict(set)
    home = HomeNetworks.default()
    for r in records:
        parts_of[r.key].add(r.partition)
        doc = json.loads(r.value)
        host = r.key.decode()
        assert host in (doc["src"], doc["dst"]) and home.is_inside(host), "keyed by internal host"
    assert parts_of and all(len(p) == 1 for p in parts_of.values()), "one partition per host"
    assert len({p for ps in parts_of.values() for p in ps}) > 1, "hosts spread over partitions"
    # every decoded flow exactly once (decoding the same messages directly)
    dec = get_decoder("goflow2-json")
    direct = dec.decode([Message(v, f"{topic}/0", i) for i, v in enumerate(values)])
    assert not direct.dead
    assert len(records) == len(direct.flows) + len(dec.flush().flows)
    assert committed(kafka.bootstrap, "grp", topic) == end_offsets(kafka.bootstrap, topic)
    assert read_topic(kafka.bootstrap, f"{topic}.dead") == []
