"""The Kafka client layer (stream.kafka): both backends against the real broker, SCRAM, secrets.

Every behaviour the runtime relies on is exercised through the small interface only:
idempotent produce + flush, group subscribe with queued rebalance events, manual commit
with metadata, committed(), seek, pause/resume, end offsets/position, reading a whole
partition, and the same key → partition mapping whichever client produced it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from stream.decoders.base import Message
from stream.exceptions import KafkaSetupError
from stream.kafka import make_admin, make_consumer, make_producer, settings_from
from stream.kafka.base import ClientSettings, ConsumerClient, InRecord

BACKENDS = ["kafka-python", "confluent"]


def _poll_until(c: ConsumerClient, n: int, timeout_s: float = 60.0) -> list[InRecord]:
    out: list[InRecord] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < n and time.monotonic() < deadline:
        out.extend(c.poll(0.5, 1000))
    return out


def _roundtrip(backend: str, client: ClientSettings, topic: str, group: str) -> dict[str, Any]:
    admin = make_admin(backend, client)
    try:
        assert admin.ensure_topic(topic, 3) == 3
        assert admin.ensure_topic(topic, 5) == 3, "an existing topic keeps its partitions"
        assert admin.partitions(topic + "-missing") == 0
        prod = make_producer(backend, client)
        for i in range(60):
            prod.send(topic, f"v{i}".encode(), key=f"k{i % 7}".encode(), headers=[("h", b"x")])
        prod.flush()
        assert prod.in_flight() == 0
        prod.close()
        cons = make_consumer(backend, client, group, session_timeout_s=10.0)
        try:
            cons.subscribe([topic])
            got = _poll_until(cons, 60)
            assert sorted(r.value for r in got) == sorted(f"v{i}".encode() for i in range(60))
            assert all(("h", b"x") in r.headers and r.timestamp_ms > 0 for r in got)
            events = cons.rebalances.drain()
            assigned = set().union(*(e.partitions for e in events if e.change == "assigned"))
            assert assigned == {(topic, p) for p in range(3)} == cons.assignment()
            ends = cons.end_offsets(assigned)
            assert sum(ends.values()) == 60
            assert all(cons.position(tp) == ends[tp] for tp in assigned)
            cons.commit({tp: (ends[tp], f"snap-{tp[1]}") for tp in assigned})
            assert cons.committed((topic, 1)) == (ends[(topic, 1)], "snap-1")
            # seek back and read partition 0 again; pause stops delivery, resume restarts it
            cons.seek((topic, 0), 0)
            cons.pause([(topic, 0)])
            assert _poll_until(cons, 1, timeout_s=2.0) == []
            cons.resume([(topic, 0)])
            again: list[Message] = []
            deadline = time.monotonic() + 60
            while len(again) < ends[(topic, 0)] and time.monotonic() < deadline:
                for tp, msgs in cons.poll_batches(0.5, 1000).items():
                    assert tp == (topic, 0) and {m.origin for m in msgs} == {f"{topic}/0"}
                    again.extend(msgs)
            assert [m.offset for m in again] == list(range(ends[(topic, 0)]))
            assert all(m.value.startswith(b"v") and m.timestamp for m in again)
            assert cons.lag(assigned) == dict.fromkeys(assigned, 0)
        finally:
            cons.close()
        by_key = {r.key: r.partition for r in got}
        whole = admin.read_partition(topic, 2)
        assert [r.offset for r in whole] == list(range(ends[(topic, 2)]))
        return by_key
    finally:
        admin.close()


@pytest.mark.kafka
@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_roundtrip(kafka, topic_name, backend) -> None:  # type: ignore[no-untyped-def]
    _roundtrip(
        backend, ClientSettings(bootstrap_servers=kafka.bootstrap), topic_name, "g-" + topic_name
    )


@pytest.mark.kafka
@pytest.mark.parametrize("backend", BACKENDS)
def test_poll_batches_messages_carry_every_field(kafka, topic_name, backend) -> None:  # type: ignore[no-untyped-def]
    """The column-wise Message building: value (tombstone -> b""), key, peer header,
    transport time, per-partition order, across several partitions and polls."""
    client = ClientSettings(bootstrap_servers=kafka.bootstrap)
    admin = make_admin(backend, client)
    try:
        admin.ensure_topic(topic_name, 3)
    finally:
        admin.close()
    prod = make_producer(backend, client)
    sent: dict[int, list[tuple[bytes, bytes | None, str]]] = {0: [], 1: [], 2: []}
    t0 = time.time()
    for i in range(900):
        part, key = i % 3, (f"k{i}".encode() if i % 4 else None)
        value = b"" if i % 50 == 7 else f"v{i}".encode()
        peer = f"192.0.2.{i % 9}" if i % 5 == 0 else ""
        headers = [("x", b"1"), ("peer", peer.encode())] if peer else []
        prod.send(topic_name, value or None, key=key, headers=headers, partition=part)
        sent[part].append((value, key, peer))
    prod.flush()
    prod.close()
    cons = make_consumer(backend, client, "g-" + topic_name, session_timeout_s=10.0)
    got: dict[int, list[Message]] = {0: [], 1: [], 2: []}
    try:
        cons.subscribe([topic_name])
        deadline = time.monotonic() + 60
        while sum(map(len, got.values())) < 900 and time.monotonic() < deadline:
            for (topic, part), msgs in cons.poll_batches(0.5, 128).items():
                assert topic == topic_name
                got[part].extend(msgs)
    finally:
        cons.close()
    for part, want in sent.items():
        msgs = got[part]
        assert [(m.value, m.key, m.peer) for m in msgs] == want
        assert [m.offset for m in msgs] == list(range(len(want)))
        assert {m.origin for m in msgs} == {f"{topic_name}/{part}"}
        assert all(m.timestamp is not None and abs(m.timestamp - t0) < 120 for m in msgs)


@pytest.mark.kafka
def test_both_backends_put_a_key_on_the_same_partition(kafka, topic_name) -> None:  # type: ignore[no-untyped-def]
    client = ClientSettings(bootstrap_servers=kafka.bootstrap)
    a = _roundtrip("kafka-python", client, topic_name + "-a", "ga-" + topic_name)
    b = _roundtrip("confluent", client, topic_name + "-b", "gb-" + topic_name)
    assert a == b, "hosts stay on one partition whichever client wrote them"


@pytest.mark.kafka
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_scram_listener(kafka, topic_name, backend, mechanism, caplog, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("TEST_SCRAM_SECRET", kafka.scram_password)
    client = settings_from(
        {
            "bootstrap_servers": kafka.scram_bootstrap,
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": mechanism,
            "sasl_username": kafka.scram_user,
            "sasl_password_env": "TEST_SCRAM_SECRET",
        }
    )
    assert kafka.scram_password not in repr(client) and kafka.scram_password not in str(
        client.redacted()
    )
    _roundtrip(backend, client, topic_name, "g-" + topic_name)
    assert kafka.scram_password not in caplog.text, "the secret is never logged"


@pytest.mark.kafka
@pytest.mark.parametrize("backend", BACKENDS)
def test_scram_wrong_password_is_refused(kafka, topic_name, backend) -> None:  # type: ignore[no-untyped-def]
    client = ClientSettings(
        bootstrap_servers=kafka.scram_bootstrap,
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-256",
        sasl_username=kafka.scram_user,
        sasl_password="wrong",
        extra={"producer": {"max_block_ms": 5000} if backend == "kafka-python" else {}},
    )
    with pytest.raises(Exception) as info:
        prod = make_producer(backend, client)
        prod.send(topic_name, b"x")
        prod.flush(timeout_s=3)
    assert "wrong" not in str(info.value)


def test_secrets_from_env_and_file(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    s = settings_from({"sasl_mechanism": "PLAIN", "sasl_password_file": str(secret)})
    assert s.sasl_password == "from-file" and "from-file" not in repr(s)
    monkeypatch.setenv("SLOWBURN_KAFKA_SASL_PASSWORD", "from-env")
    assert settings_from({"sasl_mechanism": "PLAIN"}).sasl_password == "from-env"
    with pytest.raises(KafkaSetupError, match="NOPE is not set"):
        settings_from({"sasl_password_env": "NOPE"})
    with pytest.raises(KafkaSetupError, match="cannot read"):
        settings_from({"sasl_password_file": str(tmp_path / "missing")})
    with pytest.raises(KafkaSetupError, match="unknown client setting"):
        settings_from({"sasl_pasword": "typo"})
    with pytest.raises(KafkaSetupError, match="not one of"):
        settings_from({"sasl_mechanism": "GSSAPI"})


def test_ssl_options_reach_both_clients() -> None:
    from stream.kafka import confluent, kafka_python

    s = ClientSettings(
        security_protocol="SASL_SSL",
        sasl_mechanism="PLAIN",
        sasl_username="u",
        sasl_password="p",
        ssl_cafile="/ca.pem",
        ssl_certfile="/c.pem",
        ssl_keyfile="/k.pem",
        ssl_password="kp",
    )
    kp = kafka_python._common(s)
    assert (kp["ssl_cafile"], kp["ssl_certfile"], kp["ssl_keyfile"], kp["ssl_password"]) == (
        "/ca.pem",
        "/c.pem",
        "/k.pem",
        "kp",
    )
    assert kp["sasl_plain_password"] == "p" and kp["security_protocol"] == "SASL_SSL"
    ck = confluent._common(s)
    assert ck["ssl.ca.location"] == "/ca.pem" and ck["ssl.key.password"] == "kp"
    assert ck["security.protocol"] == "sasl_ssl" and ck["sasl.password"] == "p"
