"""``slowburn run``: the Kafka consumer-group runtime around the engine.

Loop: poll → (drain rebalance events: restore new partitions, drop lost ones) → decode
per partition → ``engine.process`` → send alerts and dead letters → periodically
checkpoint (see :mod:`stream.checkpoint`). One engine per input partition, so a host's
state lives where its records arrive; inputs must be keyed by internal host (sensors
that do not key their messages go through ``slowburn repartition`` first).

Delivery is at-least-once: offsets are committed only after the alerts of everything
before them were acknowledged; after a crash or a rebalance the new owner restores the
last checkpoint and replays from the committed offset, producing the same alert ids.
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
import time
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipelines.config import Settings
from pipelines.incidents import Incident
from pipelines.records import DnsBatch, FlowBatch, annotate_direction
from pipelines.serialize import render, to_json_bytes
from stream.checkpoint import Checkpointer, PartitionState
from stream.decoders import get_decoder
from stream.decoders.base import DeadLetter, DecodeResult, Message, MessageBlock
from stream.kafka import make_admin, make_consumer, make_producer
from stream.kafka.base import TP, ClientSettings, ConsumerClient, ProducerClient
from stream.metrics import Metrics

__all__ = ["Runtime", "RuntimeConfig"]

log = logging.getLogger(__name__)


@dataclass
class RuntimeConfig:
    """Settings of the streaming runtime (the ``kafka``/``state`` config sections + flags)."""

    inputs: list[tuple[str, str]] = field(default_factory=lambda: [("flow-messages", "auto")])
    alerts_topic: str = "slowburn.alerts"
    deadletter_topic: str = "slowburn.deadletter"
    state_topic: str = "slowburn.state"
    group: str = "slowburn"
    instance_id: str | None = None
    backend: str = "kafka-python"
    alert_format: str = "ocsf"
    #: alerts name the sender's last committed snapshot in a ``snapshot_id`` record header
    #: only, not in the body: a redelivery by another member (which may name another
    #: checkpoint of the same state) then has a byte-identical body
    snapshot_in_body: bool = False
    state_dir: str | None = "state"
    checkpoint_interval_s: float = 30.0
    checkpoint_records: int = 500_000
    poll_timeout_s: float = 0.5
    max_poll_records: int = 10_000
    max_in_flight: int = 20_000
    session_timeout_s: float = 30.0
    max_poll_interval_s: float = 300.0
    topic_partitions: int = 4  # for topics the runtime creates (alerts, dead letters, state)
    max_seconds: float | None = None
    idle_exit_s: float | None = None
    #: allocations between young-generation garbage collections while running (Python's
    #: default 700 makes the cyclic collector walk the engine state every few thousand
    #: records: ~25% of the runtime's CPU); None keeps the interpreter's setting
    gc_young_threshold: int | None = 100_000


def _from_offset(msgs: Sequence[Message], offset: int) -> Sequence[Message]:
    """The messages at ``offset`` and after (a block stays a block).

    >>> _from_offset(MessageBlock([b"a", b"b", b"c"], "t/0", range(5, 8)), 6).offsets
    range(6, 8)
    >>> [m.offset for m in _from_offset([Message(b"a", "t/0", 5), Message(b"b", "t/0", 6)], 6)]
    [6]
    """
    if isinstance(msgs, MessageBlock):
        return msgs[bisect_left(msgs.offsets, offset) :]
    return [m for m in msgs if m.offset >= offset]


class Runtime:
    """One consumer-group member. ``run()`` returns when stopped (SIGTERM, ``stop()``, limits)."""

    def __init__(
        self,
        cfg: RuntimeConfig,
        settings: Settings,
        client: ClientSettings,
        metrics: Metrics | None = None,
    ) -> None:
        self.cfg = cfg
        self.settings = settings
        self.client = client
        self.metrics = metrics or Metrics()
        self.formats = dict(cfg.inputs)
        self.parts: dict[TP, PartitionState] = {}
        self._stop = threading.Event()
        self.paused = False
        self.model_version = settings.build_engine().model_version
        self.sent_alerts = 0
        self.records = 0
        self._consumer: ConsumerClient | None = None
        self._producer: ProducerClient | None = None
        self._ckpt: Checkpointer | None = None
        self.on_alert: Callable[[Incident], None] | None = None
        #: builds the producer for alerts, dead letters and states (tests inject slow sinks)
        self.producer_factory: Callable[[], ProducerClient] | None = None
        self.pauses = 0  # back-pressure pauses of the input
        self.commit_failures = 0

    # -- lifecycle ----------------------------------------------------------------------
    def stop(self, *_args: Any) -> None:
        self._stop.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    def _setup(self) -> None:
        admin = make_admin(self.cfg.backend, self.client)
        self.admin = admin
        n_in = max(admin.ensure_topic(t, self.cfg.topic_partitions) for t, _ in self.cfg.inputs)
        admin.ensure_topic(self.cfg.alerts_topic, self.cfg.topic_partitions)
        admin.ensure_topic(self.cfg.deadletter_topic, self.cfg.topic_partitions)
        n_state = admin.ensure_topic(
            self.cfg.state_topic,
            n_in,
            {"cleanup.policy": "compact", "max.message.bytes": str(2 * 1024 * 1024)},
        )
        if n_state < n_in:
            log.warning(
                "state topic %s has %d partitions < input's %d", self.cfg.state_topic, n_state, n_in
            )
        self._producer = (
            self.producer_factory()
            if self.producer_factory is not None
            else make_producer(self.cfg.backend, self.client)
        )
        self._ckpt = Checkpointer(
            self._producer, admin, self.cfg.state_topic, self.cfg.group, self.cfg.state_dir, n_state
        )
        self._consumer = make_consumer(
            self.cfg.backend,
            self.client,
            self.cfg.group,
            instance_id=self.cfg.instance_id,
            session_timeout_s=self.cfg.session_timeout_s,
            max_poll_interval_s=self.cfg.max_poll_interval_s,
        )
        self._consumer.subscribe([t for t, _ in self.cfg.inputs])
        log.info(
            "consuming %s as group %s (%s)", self.cfg.inputs, self.cfg.group, self.client.redacted()
        )

    def run(self) -> None:
        thresholds = gc.get_threshold()
        if self.cfg.gc_young_threshold is not None:
            gc.set_threshold(self.cfg.gc_young_threshold, *thresholds[1:])
        try:
            self._run()
        finally:
            gc.set_threshold(*thresholds)

    def _run(self) -> None:
        self._setup()
        assert self._consumer is not None and self._producer is not None
        started = last_ckpt = last_data = prev = time.monotonic()
        stall = max(5.0, 10 * self.cfg.poll_timeout_s)
        try:
            while not self._stop.is_set():
                records = self._consumer.poll_batches(
                    self.cfg.poll_timeout_s, self.cfg.max_poll_records
                )
                self._handle_rebalances()
                now = time.monotonic()
                if now - prev > stall:
                    last_data = now  # the process was frozen (SIGSTOP, VM pause): not idle
                prev = now
                if records:
                    last_data = now
                    self._process(records)
                self._backpressure()
                due = now - last_ckpt >= self.cfg.checkpoint_interval_s or any(
                    p.records_since >= self.cfg.checkpoint_records for p in self.parts.values()
                )
                if due:
                    self.checkpoint()
                    last_ckpt = time.monotonic()
                if self.cfg.max_seconds is not None and now - started >= self.cfg.max_seconds:
                    break
                if self.cfg.idle_exit_s is not None and now - last_data >= self.cfg.idle_exit_s:
                    break
            self._handle_rebalances()
            self.checkpoint()
        finally:
            self._consumer.close()
            self._producer.close()
            self.admin.close()

    # -- rebalances ---------------------------------------------------------------------
    def _handle_rebalances(self) -> None:
        assert self._consumer is not None
        for ev in self._consumer.rebalances.drain():
            self.metrics.rebalances.labels(ev.change).inc()
            if ev.change in ("revoked", "lost"):
                for tp in ev.partitions:
                    # no commit here: the next owner resumes from the last checkpoint
                    self.parts.pop(tp, None)
            else:
                for tp in ev.partitions:
                    self._restore(tp)
                if self.paused:
                    self._consumer.pause(ev.partitions)

    def _fresh(self, tp: TP) -> PartitionState:
        fmt = self.formats.get(tp[0], "auto")
        return PartitionState(tp, self.settings.build_engine(), get_decoder(fmt))

    def _restore(self, tp: TP) -> None:
        assert self._consumer is not None and self._ckpt is not None
        offset, snapshot_id = self._consumer.committed(tp)
        ps = self._fresh(tp)
        if offset is not None:
            got = self._ckpt.load(tp, snapshot_id, self.model_version) if snapshot_id else None
            if got is not None:
                header, engine, decoder = got
                ps.engine, ps.decoder = engine, decoder
                ps.generation = int(header.get("generation", 0)) + 1
                ps.retire = self._ckpt.keys_of(tp, header)
            elif snapshot_id:
                log.error(
                    "%s/%d: snapshot %s not found; starting that partition fresh", *tp, snapshot_id
                )
            ps.next_offset = ps.committed_offset = offset
            ps.expect_offset = offset
            self._consumer.seek(tp, offset)
        self.parts[tp] = ps
        log.info("assigned %s/%d at offset %s", tp[0], tp[1], offset)

    # -- processing ---------------------------------------------------------------------
    def _process(self, batches: dict[TP, Sequence[Message]]) -> None:
        assert self._producer is not None
        t0 = time.perf_counter()
        newest = -np.inf
        for tp, msgs in batches.items():
            ps = self.parts.get(tp)
            if ps is None:
                continue  # revoked meanwhile: its new owner replays these
            if ps.next_offset is not None:
                if msgs[-1].offset < ps.next_offset:
                    continue  # replayed by a seek: already processed
                if msgs[0].offset < ps.next_offset:
                    msgs = _from_offset(msgs, ps.next_offset)
            if ps.expect_offset is not None:
                # first records after a restore must start at the committed offset: records
                # fetched before the assignment changed could start later and skip a gap
                if msgs[0].offset > ps.expect_offset and ps.reseeks < 3:
                    ps.reseeks += 1
                    assert self._consumer is not None
                    self._consumer.seek(tp, ps.expect_offset)
                    continue
                ps.expect_offset = None
            fmt = self.formats.get(tp[0], "auto")
            self.metrics.consumed_n(fmt, len(msgs))
            result = self._decode(ps, msgs)
            self._dead_letters(fmt, result.dead)
            home = self.settings.home
            flows, dns = (
                annotate_direction(result.flows, home),
                annotate_direction(result.dns, home),
            )
            self.metrics.decoded_n(fmt, "flow", len(flows))
            self.metrics.decoded_n(fmt, "dns", len(dns))
            late, found = ps.engine.stats["late_records"], dict(ps.engine.findings_by_detector)
            alerts = ps.engine.process(flows, dns)
            self.metrics.late.inc(ps.engine.stats["late_records"] - late)
            for det, n in ps.engine.findings_by_detector.items():
                self.metrics.finding_n(det, n - found.get(det, 0))
            self._send_alerts(alerts)
            ps.next_offset = msgs[-1].offset + 1
            ps.dirty = True
            ps.records_since += len(msgs)
            self.records += len(msgs)
            if len(flows):
                newest = max(newest, float(np.nanmax(flows.ts_start)))
            if len(dns):
                newest = max(newest, float(dns.ts.max()))
        self.metrics.latency.observe(time.perf_counter() - t0)
        if np.isfinite(newest):
            self.metrics.event_lag.observe(max(0.0, time.time() - newest))

    def _decode(self, ps: PartitionState, msgs: Sequence[Message]) -> DecodeResult:
        """Decode a batch; a decoder that raises costs only the offending messages."""
        try:
            return ps.decoder.decode(msgs)
        except Exception as exc:  # a decoder bug must not stop the partition
            log.warning("%s/%d: decoder raised %s; decoding one by one", *ps.tp, type(exc).__name__)
        out = DecodeResult()
        for m in msgs:
            try:
                one = ps.decoder.decode([m])
            except Exception as exc:
                name = getattr(ps.decoder, "name", type(ps.decoder).__name__)
                out.dead.append(DeadLetter.of(m, "bad_value", f"decoder error: {exc!r}", name))
                continue
            out.flows = FlowBatch.concat([out.flows, one.flows])
            out.dns = DnsBatch.concat([out.dns, one.dns])
            out.dead.extend(one.dead)
        return out

    def _dead_letters(self, fmt: str, dead: list[DeadLetter]) -> None:
        assert self._producer is not None
        for d in dead:
            self._producer.send(self.cfg.deadletter_topic, d.value, key=None, headers=d.headers())
            self.metrics.dead_letter(fmt, d.reason)

    def _send_alerts(self, alerts: list[Incident]) -> None:
        assert self._producer is not None
        for a in alerts:
            doc = render(a, self.cfg.alert_format, snapshot=self.cfg.snapshot_in_body)
            self._producer.send(
                self.cfg.alerts_topic,
                to_json_bytes(doc),
                key=a.entity.encode(),
                headers=[
                    ("alert_uid", a.uid.encode()),
                    ("revision", str(a.revision).encode()),
                    ("detector", a.detector.encode()),
                    ("snapshot_id", a.snapshot_id.encode()),
                ],
            )
            self.metrics.alert(a.detector, a.severity_id)
            if a.kind == "baseline_drift":
                self.metrics.drift.inc()
            self.sent_alerts += 1
            if self.on_alert:
                self.on_alert(a)

    def _backpressure(self) -> None:
        assert self._consumer is not None and self._producer is not None
        pending = self._producer.in_flight()
        if not self.paused and pending > self.cfg.max_in_flight:
            self._consumer.pause(self._consumer.assignment())
            self.paused = True
            self.pauses += 1
            self._pause_metrics(1)
            log.info("alert sink slow (%d unacknowledged): pausing input", pending)
        elif self.paused and pending <= self.cfg.max_in_flight // 2:
            self._consumer.resume(self._consumer.assignment())
            self.paused = False
            self._pause_metrics(0)
            log.info("alert sink caught up: resuming input")

    def _pause_metrics(self, paused: int) -> None:
        # ``input_paused`` / ``backpressure_pauses`` are proposed for stream/metrics.py
        gauge, counter = (
            getattr(self.metrics, "paused", None),
            getattr(self.metrics, "pauses", None),
        )
        if gauge is not None:
            gauge.set(paused)
        if counter is not None and paused:
            counter.inc()

    # -- checkpoints --------------------------------------------------------------------
    def checkpoint(self) -> None:
        """Acknowledge outputs, write states, then commit offsets (in that order)."""
        assert self._consumer is not None and self._producer is not None and self._ckpt is not None
        dirty = [p for p in self.parts.values() if p.dirty and p.next_offset is not None]
        if not dirty:
            return
        t0 = time.perf_counter()
        # alerts name the snapshot their state descends from: only a committed one counts, so a
        # member whose commit is refused (fenced after a pause) keeps naming the last durable
        # snapshot, exactly as the new owner that restores it does (same alert, same content)
        durable = {ps.tp: ps.engine.snapshot_id for ps in dirty}
        commits: dict[TP, tuple[int, str]] = {}
        try:
            self._producer.flush()  # every alert/dead letter before these offsets is acknowledged
            total = 0
            for ps in dirty:
                sid, nbytes = self._ckpt.save(ps)
                total += nbytes
                assert ps.next_offset is not None
                commits[ps.tp] = (ps.next_offset, sid)
            self._producer.flush()  # states acknowledged before the commit names them
            owned = self._consumer.assignment()
            commits = {tp: v for tp, v in commits.items() if tp in owned and tp in self.parts}
            self._consumer.commit(commits)
        except Exception as exc:
            for ps in dirty:
                ps.engine.snapshot_id = durable[ps.tp]
            self.metrics.checkpoints.labels("error").inc()
            if type(exc).__name__ == "CommitFailedError":
                self.commit_failures += 1
            log.warning("checkpoint failed (will retry): %s", exc)
            return
        for ps in dirty:
            if ps.tp not in commits:
                ps.engine.snapshot_id = durable[ps.tp]
            else:
                ps.committed_offset = commits[ps.tp][0]
                ps.dirty = False
                ps.records_since = 0
                if ps.retire:
                    self._ckpt.retire(ps)
        self.metrics.checkpoints.labels("ok").inc()
        self.metrics.checkpoint_seconds.observe(time.perf_counter() - t0)
        self.metrics.checkpoint_ts.set(time.time())
        self.metrics.state_bytes.set(total)
        ents: dict[str, int] = defaultdict(int)
        for ps in self.parts.values():
            for k, v in ps.engine.entities().items():
                ents[k] += v
        self.metrics.set_entities(ents)
        try:  # from the client's cached high watermarks: no request per partition
            for tp, lag in self._consumer.lag(list(self.parts)).items():
                self.metrics.set_consumer_lag(tp[0], tp[1], lag)
        except Exception as exc:  # lag is best-effort
            log.debug("consumer lag unavailable: %s", exc)
