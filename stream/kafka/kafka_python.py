"""kafka-python backend of :mod:`stream.kafka.base` (the default).

Uses the cooperative sticky assignor and static membership when an instance id is
given. Rebalance listeners only queue events. ``crc32c`` is installed so record CRC
checks stay on at a fraction of the pure-Python cost (DESIGN §9).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

from kafka import (
    ConsumerRebalanceListener,
    KafkaAdminClient,
    KafkaConsumer,
    KafkaProducer,
    TopicPartition,
)
from kafka.admin import NewTopic
from kafka.consumer.fetcher import ConsumerRecord
from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
from kafka.errors import KafkaError, TopicAlreadyExistsError
from kafka.structs import OffsetAndMetadata

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
    messages_of,
)

__all__ = ["KPAdmin", "KPConsumer", "KPProducer"]

log = logging.getLogger(__name__)

_VALUE, _OFFSET, _KEY, _HEADERS, _TIMESTAMP = map(
    ConsumerRecord._fields.index, ("value", "offset", "key", "headers", "timestamp")
)


class _Redact(logging.Filter):
    """Replaces known secrets in kafka-python's log records (its admin client logs its config)."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            text = record.getMessage()
            if any(s in text for s in self.secrets):
                for s in self.secrets:
                    text = text.replace(s, "***")
                record.msg, record.args = text, ()
        return True


_REDACT = _Redact()
for _name in ("kafka.admin.client", "kafka.consumer.group", "kafka.producer.kafka", "kafka.conn"):
    logging.getLogger(_name).addFilter(_REDACT)


def _common(s: ClientSettings) -> dict[str, Any]:
    _REDACT.secrets.update(x for x in (s.sasl_password, s.ssl_password) if x)
    cfg: dict[str, Any] = {
        "bootstrap_servers": s.bootstrap_servers.split(","),
        "client_id": s.client_id,
        "security_protocol": s.security_protocol,
    }
    if s.sasl_mechanism:
        cfg["sasl_mechanism"] = s.sasl_mechanism
        cfg["sasl_plain_username"] = s.sasl_username
        cfg["sasl_plain_password"] = s.sasl_password
    if s.ssl_cafile:
        cfg["ssl_cafile"] = s.ssl_cafile
    if s.ssl_certfile:
        cfg["ssl_certfile"] = s.ssl_certfile
    if s.ssl_keyfile:
        cfg["ssl_keyfile"] = s.ssl_keyfile
    if s.ssl_password:
        cfg["ssl_password"] = s.ssl_password
    return cfg


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, queue: RebalanceQueue) -> None:
        self.queue = queue

    def on_partitions_revoked(self, revoked: Any) -> None:
        self.queue.put("revoked", ((tp.topic, tp.partition) for tp in revoked))

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.queue.put("assigned", ((tp.topic, tp.partition) for tp in assigned))

    def on_partitions_lost(self, lost: Any) -> None:
        self.queue.put("lost", ((tp.topic, tp.partition) for tp in lost))


class KPConsumer(ConsumerClient):
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
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            partition_assignment_strategy=[CooperativeStickyAssignor],
            session_timeout_ms=int(session_timeout_s * 1000),
            heartbeat_interval_ms=int(min(3000, session_timeout_s * 1000 / 3)),
            max_poll_interval_ms=int(max_poll_interval_s * 1000),
            fetch_max_bytes=64 * 1024 * 1024,
            max_partition_fetch_bytes=8 * 1024 * 1024,
        )
        if instance_id:
            cfg["group_instance_id"] = instance_id
        cfg.update(settings.extra.get("consumer", {}))
        cfg.update(extra)
        try:
            self._c = KafkaConsumer(**cfg)
        except KafkaError as exc:
            raise KafkaSetupError(
                f"cannot create consumer for {settings.bootstrap_servers}: {exc}"
            ) from exc

    def subscribe(self, topics: Sequence[str]) -> None:
        self._c.subscribe(topics=list(topics), listener=_Listener(self.rebalances))

    def poll(self, timeout_s: float, max_records: int) -> list[InRecord]:
        got = self._c.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        out: list[InRecord] = []
        for tp, recs in got.items():
            for r in recs:
                out.append(
                    InRecord(
                        tp.topic,
                        tp.partition,
                        r.offset,
                        r.key,
                        r.value if r.value is not None else b"",
                        list(r.headers or []),
                        r.timestamp,
                    )
                )
        return out

    def poll_batches(self, timeout_s: float, max_records: int) -> dict[TP, Sequence[Message]]:
        got = self._c.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        out: dict[TP, Sequence[Message]] = {}
        for tp, recs in got.items():
            if not recs:
                continue
            cols = list(zip(*recs, strict=True))  # ConsumerRecord namedtuples, transposed in C
            out[(tp.topic, tp.partition)] = messages_of(
                f"{tp.topic}/{tp.partition}",
                cols[_VALUE],
                cols[_OFFSET],
                cols[_KEY],
                cols[_HEADERS],
                cols[_TIMESTAMP],
            )
        return out

    def lag(self, tps: Iterable[TP]) -> dict[TP, int]:
        out = {}
        for t, p in tps:
            tp = TopicPartition(t, p)
            high = self._c.highwater(tp)
            if high is not None:
                out[(t, p)] = max(0, int(high) - int(self._c.position(tp)))
        return out

    def assignment(self) -> set[TP]:
        return {(tp.topic, tp.partition) for tp in self._c.assignment()}

    def committed(self, tp: TP) -> tuple[int | None, str]:
        got = self._c.committed(TopicPartition(*tp), metadata=True)
        if got is None or got.offset is None or got.offset < 0:
            return None, ""
        return int(got.offset), str(got.metadata or "")

    def commit(self, offsets: dict[TP, tuple[int, str]]) -> None:
        if not offsets:
            return
        self._c.commit(
            {TopicPartition(*tp): OffsetAndMetadata(o, m, -1) for tp, (o, m) in offsets.items()}
        )

    def seek(self, tp: TP, offset: int) -> None:
        self._c.seek(TopicPartition(*tp), offset)

    def pause(self, tps: Iterable[TP]) -> None:
        parts = [TopicPartition(*tp) for tp in tps]
        if parts:
            self._c.pause(*parts)

    def resume(self, tps: Iterable[TP]) -> None:
        parts = [TopicPartition(*tp) for tp in tps]
        if parts:
            self._c.resume(*parts)

    def end_offsets(self, tps: Iterable[TP]) -> dict[TP, int]:
        parts = [TopicPartition(*tp) for tp in tps]
        if not parts:
            return {}
        return {(tp.topic, tp.partition): int(o) for tp, o in self._c.end_offsets(parts).items()}

    def position(self, tp: TP) -> int:
        return int(self._c.position(TopicPartition(*tp)))

    def close(self) -> None:
        self._c.close(autocommit=False)


class KPProducer(ProducerClient):
    def __init__(self, settings: ClientSettings, **extra: Any) -> None:
        cfg = _common(settings)
        cfg.update(
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            batch_size=256 * 1024,
            max_request_size=4 * 1024 * 1024,
            retries=2**31 - 1,
            delivery_timeout_ms=120_000,
        )
        cfg.update(settings.extra.get("producer", {}))
        cfg.update(extra)
        try:
            self._p = KafkaProducer(**cfg)
        except KafkaError as exc:
            raise KafkaSetupError(
                f"cannot create producer for {settings.bootstrap_servers}: {exc}"
            ) from exc
        self._pending = 0
        self._errors: list[str] = []
        self._lock = threading.Lock()

    def _done(self, _md: Any) -> None:
        with self._lock:
            self._pending -= 1

    def _failed(self, exc: Any) -> None:
        with self._lock:
            self._pending -= 1
            self._errors.append(str(exc))

    def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        partition: int | None = None,
    ) -> None:
        with self._lock:
            self._pending += 1
        fut = self._p.send(topic, value=value, key=key, headers=headers or [], partition=partition)
        fut.add_callback(self._done)
        fut.add_errback(self._failed)

    def flush(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        self._p.flush(timeout=timeout_s)
        while self.in_flight() and time.monotonic() < deadline:
            time.sleep(0.005)
        with self._lock:
            errors, self._errors = self._errors, []
        if errors:
            raise StreamError(f"{len(errors)} send(s) failed: {errors[0]}")
        if self.in_flight():
            raise StreamError(
                f"{self.in_flight()} send(s) not acknowledged after {timeout_s:.0f} s"
            )

    def in_flight(self) -> int:
        with self._lock:
            return self._pending

    def close(self) -> None:
        self._p.close()


class KPAdmin(AdminClient):
    def __init__(self, settings: ClientSettings) -> None:
        self.settings = settings
        try:
            self._a = KafkaAdminClient(**_common(settings))
        except KafkaError as exc:
            raise KafkaSetupError(
                f"cannot reach Kafka at {settings.bootstrap_servers}: {exc}"
            ) from exc

    def partitions(self, name: str) -> int:
        try:
            md = self._a.describe_topics([name])
        except KafkaError:
            return 0
        for t in md:
            if t.get("name", t.get("topic")) == name and not t.get("error_code"):
                return len(t.get("partitions") or [])
        return 0

    def ensure_topic(self, name: str, partitions: int, config: dict[str, str] | None = None) -> int:
        have = self.partitions(name)
        if have:
            return have
        with contextlib.suppress(TopicAlreadyExistsError):
            self._a.create_topics([NewTopic(name, partitions, 1, topic_configs=config or {})])
        for _ in range(100):
            have = self.partitions(name)
            if have:
                return have
            time.sleep(0.1)
        raise KafkaSetupError(f"topic {name} was not created")

    def read_partition(self, topic: str, partition: int, timeout_s: float = 30.0) -> list[InRecord]:
        c = KafkaConsumer(**_common(self.settings), enable_auto_commit=False, group_id=None)
        try:
            tp = TopicPartition(topic, partition)
            c.assign([tp])
            c.seek_to_beginning(tp)
            end = c.end_offsets([tp])[tp]
            out: list[InRecord] = []
            deadline = time.monotonic() + timeout_s
            while c.position(tp) < end:
                if time.monotonic() > deadline:
                    raise StreamError(
                        f"reading {topic}/{partition} timed out at {c.position(tp)}/{end}"
                    )
                for r in c.poll(timeout_ms=500).get(tp, []):
                    out.append(
                        InRecord(
                            topic,
                            partition,
                            r.offset,
                            r.key,
                            r.value or b"",
                            list(r.headers or []),
                            r.timestamp,
                        )
                    )
            return out
        finally:
            c.close()

    def close(self) -> None:
        self._a.close()
