"""The local broker is a real Kafka: keyed partitioning, consumer groups, restarts, SCRAM."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from tests.kafka_broker import KafkaBroker

pytestmark = pytest.mark.kafka


def _produce(
    broker: KafkaBroker, topic: str, records: list[tuple[bytes, bytes]], **config: Any
) -> list[Any]:
    """Send ``(key, value)`` records, wait for every ack, return their RecordMetadata in order."""
    producer = KafkaProducer(acks="all", linger_ms=5, **(config or broker.client_config()))
    try:
        futures = [producer.send(topic, key=k, value=v) for k, v in records]
        producer.flush(timeout=60)
        return [f.get(timeout=30) for f in futures]
    finally:
        producer.close(timeout=10)


def _consume(consumer: KafkaConsumer, expected: int, timeout: float = 60.0) -> list[Any]:
    """Poll until ``expected`` records arrived (or the timeout), then poll once more for extras."""
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(out) < expected and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=500).values():
            out.extend(batch)
    for batch in consumer.poll(timeout_ms=500).values():  # duplicates would show up here
        out.extend(batch)
    return out


def test_keyed_records_arrive_exactly_once_on_a_consistent_partition(
    kafka: KafkaBroker, topic_name: str
) -> None:
    kafka.create_topic(topic_name, partitions=4)
    n = 10_000
    records = [(f"host-{i % 257}".encode(), f"{i}".encode()) for i in range(n)]
    metadata = _produce(kafka, topic_name, records)

    produced_partition = {v: md.partition for (_, v), md in zip(records, metadata, strict=True)}
    key_partitions: dict[bytes, set[int]] = {}
    for (k, _), md in zip(records, metadata, strict=True):
        key_partitions.setdefault(k, set()).add(md.partition)
    assert all(len(p) == 1 for p in key_partitions.values())
    produced_counts = Counter(md.partition for md in metadata)
    assert set(produced_counts) == {0, 1, 2, 3}  # 257 keys spread over all four partitions

    consumer = KafkaConsumer(
        topic_name,
        group_id=f"g-{topic_name}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **kafka.client_config(),
    )
    try:
        got = _consume(consumer, n)
        consumer.commit()
    finally:
        consumer.close()

    values = Counter(r.value for r in got)
    assert len(got) == n
    assert set(values) == set(produced_partition) and max(values.values()) == 1
    assert all(produced_partition[r.value] == r.partition for r in got)
    assert Counter(r.partition for r in got) == produced_counts
    consumed_key_partitions: dict[bytes, set[int]] = {}
    for r in got:
        consumed_key_partitions.setdefault(r.key, set()).add(r.partition)
    assert all(len(p) == 1 for p in consumed_key_partitions.values())

    admin = kafka.admin()
    try:  # the group's committed offsets are the log end of every partition
        committed = admin.list_group_offsets(f"g-{topic_name}")[f"g-{topic_name}"]
    finally:
        admin.close()
    assert {tp.partition: om.offset for tp, om in committed.items()} == dict(produced_counts)


@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "sigkill"])
def test_restarted_broker_keeps_its_data_and_address(
    kafka: KafkaBroker, topic_name: str, kill: bool
) -> None:
    kafka.create_topic(topic_name, partitions=2)
    records = [(f"k{i % 7}".encode(), f"v{i}".encode()) for i in range(200)]
    metadata = _produce(kafka, topic_name, records)
    before = (kafka.bootstrap, kafka.scram_bootstrap, kafka.pid)

    kafka.restart(kill=kill)

    assert (kafka.bootstrap, kafka.scram_bootstrap) == before[:2]
    assert kafka.pid != before[2] and kafka.is_running()
    consumer = KafkaConsumer(auto_offset_reset="earliest", **kafka.client_config())
    try:
        consumer.assign([TopicPartition(topic_name, p) for p in (0, 1)])
        got = _consume(consumer, len(records))
    finally:
        consumer.close()
    assert sorted((r.partition, r.offset, r.key, r.value) for r in got) == sorted(
        (md.partition, md.offset, k, v) for (k, v), md in zip(records, metadata, strict=True)
    )


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_scram_listener_authenticates(kafka: KafkaBroker, topic_name: str, mechanism: str) -> None:
    config = kafka.client_config(scram=True, mechanism=mechanism)
    assert config["bootstrap_servers"] != kafka.bootstrap
    records = [(b"k", f"scram-{i}".encode()) for i in range(20)]
    _produce(kafka, topic_name, records, **config)  # auto-created topic
    consumer = KafkaConsumer(
        topic_name, group_id=f"g-{topic_name}", auto_offset_reset="earliest", **config
    )
    try:
        got = _consume(consumer, len(records))
    finally:
        consumer.close()
    assert [r.value for r in got] == [v for _, v in records]


def test_scram_listener_rejects_a_wrong_password(kafka: KafkaBroker) -> None:
    from kafka import KafkaAdminClient

    log = kafka.data_dir / "logs" / "server.log"
    seen = log.read_text(errors="replace").count("Failed authentication")
    config = kafka.client_config(scram=True, mechanism="SCRAM-SHA-512")
    config["sasl_plain_password"] = "not-the-password"
    with pytest.raises(KafkaError):  # kafka-python reports it as a bootstrap failure
        KafkaAdminClient(request_timeout_ms=3000, bootstrap_timeout_ms=3000, **config).close()
    text = log.read_text(errors="replace")
    assert text.count("Failed authentication") > seen
    assert "invalid credentials with SASL mechanism SCRAM-SHA-512" in text
