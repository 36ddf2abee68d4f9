"""confluent-kafka (librdkafka) backend of :mod:`stream.kafka.base` — optional, faster.

Same semantics as the kafka-python backend: cooperative-sticky assignment, static
membership, manual commits with metadata, idempotent acks=all producer. The producer
uses the ``murmur2_random`` partitioner so keyed records land where the Java and
kafka-python clients would put them (hosts stay on one partition whichever client
wrote them). Rebalance callbacks run inside ``poll`` and only queue events.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from operator import itemgetter, methodcaller
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient as _Admin
from confluent_kafka.admin import NewTopic

from stream.decoders.base import Message
from stream.exceptions import KafkaSetupError, StreamError
from stream.kafka.base import (
    TP,
    AdminClient,
    ClientSettings,
    ConsumerClient,
    InRecord,
    ProducerClient,
    RebalanceQueue,
    RecordBlock,
    messages_of,
    runs,
)

__all__ = ["CKAdmin", "CKConsumer", "CKProducer"]

_ERROR, _TOPIC, _PARTITION = methodcaller("error"), methodcaller("topic"), methodcaller("partition")
_VALUE, _OFFSET, _KEY = methodcaller("value"), methodcaller("offset"), methodcaller("key")
_HEADERS, _TIMESTAMP, _TS_MS = methodcaller("headers"), methodcaller("timestamp"), itemgetter(1)


def _common(s: ClientSettings) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "bootstrap.servers": s.bootstrap_servers,
        "client.id": s.client_id,
        "security.protocol": s.security_protocol.lower(),
    }
    if s.sasl_mechanism:
        cfg["sasl.mechanism"] = s.sasl_mechanism
        cfg["sasl.username"] = s.sasl_username
        cfg["sasl.password"] = s.sasl_password
    if s.ssl_cafile:
        cfg["ssl.ca.location"] = s.ssl_cafile
    if s.ssl_certfile:
        cfg["ssl.certificate.location"] = s.ssl_certfile
    if s.ssl_keyfile:
        cfg["ssl.key.location"] = s.ssl_keyfile
    if s.ssl_password:
        cfg["ssl.key.password"] = s.ssl_password
    return cfg


class CKConsumer(ConsumerClient):
    def __init__(
        self,
        settings: ClientSettings,
        group: str,
        instance_id: str | None = None,
        session_timeout_s: float = 30.0,
        max_poll_interval_s: float = 300.0,
        **extra: Any,
    ) -> None:
        self.rebalances = RebalanceQueue()
        cfg = _common(settings)
        cfg.update(
            {
                "group.id": group,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "partition.assignment.strategy": "cooperative-sticky",
                "session.timeout.ms": int(session_timeout_s * 1000),
                "max.poll.interval.ms": int(max_poll_interval_s * 1000),
                "enable.partition.eof": False,
            }
        )
        if instance_id:
            cfg["group.instance.id"] = instance_id
        cfg.update(settings.extra.get("consumer", {}))
        cfg.update(extra)
        try:
            self._c = Consumer(cfg)
        except KafkaException as exc:
            raise KafkaSetupError(f"cannot create consumer: {exc}") from exc
        self._assigned: set[TP] = set()
        self._origins: dict[TP, str] = {}

    def _on_assign(self, _c: Any, parts: list[Any]) -> None:
        tps = {(p.topic, p.partition) for p in parts}
        self._assigned |= tps
        self.rebalances.put("assigned", tps)

    def _on_revoke(self, _c: Any, parts: list[Any]) -> None:
        tps = {(p.topic, p.partition) for p in parts}
        self._assigned -= tps
        self.rebalances.put("revoked", tps)

    def _on_lost(self, _c: Any, parts: list[Any]) -> None:
        tps = {(p.topic, p.partition) for p in parts}
        self._assigned -= tps
        self.rebalances.put("lost", tps)

    def subscribe(self, topics: Sequence[str]) -> None:
        self._c.subscribe(
            list(topics),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )

    def poll(self, timeout_s: float, max_records: int) -> list[InRecord]:
        msgs: list[Any] = self._c.consume(num_messages=max_records, timeout=timeout_s)
        out: list[InRecord] = []
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                if err.fatal():
                    raise StreamError(f"consumer error: {err}")
                continue
            _kind, ts = m.timestamp()
            out.append(
                InRecord(
                    m.topic(),
                    m.partition(),
                    m.offset(),
                    m.key(),
                    m.value() or b"",
                    list(m.headers() or []),
                    ts,
                )
            )
        return out

    def poll_batches(self, timeout_s: float, max_records: int) -> dict[TP, Sequence[Message]]:
        msgs: list[Any] = self._c.consume(num_messages=max_records, timeout=timeout_s)
        if not msgs:
            return {}
        errors = list(map(_ERROR, msgs))
        if errors.count(None) != len(errors):
            for err in errors:
                if err is not None and err.fatal():
                    raise StreamError(f"consumer error: {err}")
            msgs = [m for m, err in zip(msgs, errors, strict=True) if err is None]
        out: dict[TP, list[RecordBlock]] = {}
        origins = self._origins
        # column-wise: one C-level pass per accessor over a run of one partition's records
        for key, a, b in runs(list(map(_TOPIC, msgs)), list(map(_PARTITION, msgs))):
            part = msgs if b - a == len(msgs) else msgs[a:b]
            origin = origins.get(key)
            if origin is None:
                origin = origins[key] = f"{key[0]}/{key[1]}"
            got = messages_of(
                origin,
                list(map(_VALUE, part)),
                list(map(_OFFSET, part)),
                list(map(_KEY, part)),
                list(map(_HEADERS, part)),
                list(map(_TS_MS, map(_TIMESTAMP, part))),
            )
            if key in out:
                out[key].append(got)
            else:
                out[key] = [got]
        return {key: RecordBlock.join(blocks) for key, blocks in out.items()}

    def lag(self, tps: Iterable[TP]) -> dict[TP, int]:
        out = {}
        for t, p in tps:
            tp = TopicPartition(t, p)
            _lo, hi = self._c.get_watermark_offsets(tp, cached=True)
            pos = self._c.position([tp])
            if hi >= 0 and pos and pos[0].offset >= 0:
                out[(t, p)] = max(0, int(hi) - int(pos[0].offset))
        return out

    def assignment(self) -> set[TP]:
        return {(p.topic, p.partition) for p in self._c.assignment()}

    def committed(self, tp: TP) -> tuple[int | None, str]:
        got = self._c.committed([TopicPartition(tp[0], tp[1])], timeout=30)
        if not got or got[0].offset < 0:
            return None, ""
        return int(got[0].offset), str(got[0].metadata or "")

    def commit(self, offsets: dict[TP, tuple[int, str]]) -> None:
        if offsets:
            parts = [TopicPartition(t, p, o, m) for (t, p), (o, m) in offsets.items()]
            self._c.commit(offsets=parts, asynchronous=False)

    def seek(self, tp: TP, offset: int) -> None:
        # a seek right after assignment can race librdkafka's fetcher start; retry briefly
        for _ in range(50):
            try:
                self._c.seek(TopicPartition(tp[0], tp[1], offset))
                return
            except KafkaException:
                time.sleep(0.05)
        self._c.seek(TopicPartition(tp[0], tp[1], offset))

    def pause(self, tps: Iterable[TP]) -> None:
        parts = [TopicPartition(t, p) for t, p in tps]
        if parts:
            self._c.pause(parts)

    def resume(self, tps: Iterable[TP]) -> None:
        parts = [TopicPartition(t, p) for t, p in tps]
        if parts:
            self._c.resume(parts)

    def end_offsets(self, tps: Iterable[TP]) -> dict[TP, int]:
        out = {}
        for t, p in tps:
            _lo, hi = self._c.get_watermark_offsets(TopicPartition(t, p), timeout=10)
            out[(t, p)] = int(hi)
        return out

    def position(self, tp: TP) -> int:
        got = self._c.position([TopicPartition(tp[0], tp[1])])
        return int(got[0].offset) if got and got[0].offset >= 0 else 0

    def close(self) -> None:
        self._c.close()


class CKProducer(ProducerClient):
    def __init__(self, settings: ClientSettings, **extra: Any) -> None:
        cfg = _common(settings)
        cfg.update(
            {
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 5,
                "partitioner": "murmur2_random",
                "message.max.bytes": 4 * 1024 * 1024,
                "queue.buffering.max.messages": 1_000_000,
            }
        )
        cfg.update(settings.extra.get("producer", {}))
        cfg.update(extra)
        try:
            self._p = Producer(cfg)
        except KafkaException as exc:
            raise KafkaSetupError(f"cannot create producer: {exc}") from exc
        self._errors: list[str] = []
        self._pending = 0
        self._lock = threading.Lock()

    def _delivered(self, err: Any, _msg: Any) -> None:
        with self._lock:
            self._pending -= 1
            if err is not None:
                self._errors.append(str(err))

    def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        partition: int | None = None,
    ) -> None:
        kw: dict[str, Any] = {
            "value": value,
            "key": key,
            "headers": headers or [],
            "on_delivery": self._delivered,
        }
        if partition is not None:
            kw["partition"] = partition
        with self._lock:
            self._pending += 1
        while True:
            try:
                self._p.produce(topic, **kw)
                break
            except BufferError:
                self._p.poll(0.05)
        self._p.poll(0)

    def flush(self, timeout_s: float = 60.0) -> None:
        left = self._p.flush(timeout_s)
        with self._lock:
            errors, self._errors = self._errors, []
        if errors:
            raise StreamError(f"{len(errors)} send(s) failed: {errors[0]}")
        if left:
            raise StreamError(f"{left} send(s) not acknowledged after {timeout_s:.0f} s")

    def in_flight(self) -> int:
        self._p.poll(0)
        with self._lock:
            return self._pending

    def close(self) -> None:
        self._p.flush(30)


class CKAdmin(AdminClient):
    def __init__(self, settings: ClientSettings) -> None:
        self.settings = settings
        self._a = _Admin(_common(settings))

    def partitions(self, name: str) -> int:
        # metadata for *all* topics: asking for one by name lets the broker auto-create it
        md = self._a.list_topics(timeout=15)
        t = md.topics.get(name)
        if t is None or t.error is not None:
            return 0
        return len(t.partitions)

    def ensure_topic(self, name: str, partitions: int, config: dict[str, str] | None = None) -> int:
        have = self.partitions(name)
        if have:
            return have
        futs = self._a.create_topics([NewTopic(name, partitions, 1, config=config or {})])
        try:
            futs[name].result(30)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise KafkaSetupError(f"cannot create {name}: {exc}") from exc
        for _ in range(100):
            have = self.partitions(name)
            if have:
                return have
            time.sleep(0.1)
        raise KafkaSetupError(f"topic {name} was not created")

    def read_partition(self, topic: str, partition: int, timeout_s: float = 30.0) -> list[InRecord]:
        c = Consumer(
            {
                **_common(self.settings),
                "group.id": "slowburn-state-reader",
                "enable.auto.commit": False,
            }
        )
        try:
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            c.assign([TopicPartition(topic, partition, lo)])
            out: list[InRecord] = []
            deadline = time.monotonic() + timeout_s
            pos = lo
            while pos < hi:
                if time.monotonic() > deadline:
                    raise StreamError(f"reading {topic}/{partition} timed out at {pos}/{hi}")
                got: list[Any] = c.consume(num_messages=1000, timeout=0.5)
                for m in got:
                    if m.error() is not None:
                        continue
                    pos = m.offset() + 1
                    out.append(
                        InRecord(
                            topic,
                            partition,
                            m.offset(),
                            m.key(),
                            m.value() or b"",
                            list(m.headers() or []),
                            m.timestamp()[1],
                        )
                    )
            return out
        finally:
            c.close()

    def close(self) -> None:
        pass
