"""Fault tests of ``slowburn run`` against the real broker; every assertion is on data.

The same small simulated network as tests/test_runtime_kafka.py (20 hosts, 2 days, one
exfiltration, exfil detector only) goes through the runtime while the broker is stopped
and killed, a consumer is SIGKILLed or frozen past its session timeout, or the alert
sink acknowledges slowly. Each test compares the alert topic with the clean reference
run (same ids, same content, nothing missing), checks the committed offsets equal the
end offsets (no input skipped) and, where state moved, that the restored engines
continued (their flow counters equal the partition's record count: nothing reset).
No fixed sleeps decide an outcome: tests poll for conditions with deadlines.
"""

from __future__ import annotations

import queue
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from stream.kafka.base import ProducerClient
from stream.kafka.kafka_python import KPProducer
from tests.runtime_helpers import (
    EXFIL_ONLY_CONFIG,
    alerts_by_revision,
    committed,
    committed_states,
    end_offsets,
    group_members,
    make_runtime,
    produce_canonical,
    read_topic,
    reference_run,
    simulated_flows,
    start_run,
    summary,
    wait_for,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


@pytest.fixture(scope="module")
def reference(kafka, tmp_path_factory):  # type: ignore[no-untyped-def]
    return reference_run(kafka, tmp_path_factory.mktemp("ref"))


def _total(bootstrap: str, group: str, topic: str) -> int:
    return sum(committed(bootstrap, group, topic).values())


def _stop(p: subprocess.Popen[bytes], log: Path, timeout_s: float = 120.0) -> None:
    """SIGTERM a runtime and require a clean exit (finish batch, checkpoint, leave)."""
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout_s) == 0, log.read_text()[-3000:]


def _check_complete(kafka: Any, reference: dict[str, Any], topic: str, group: str) -> None:
    alerts = alerts_by_revision(read_topic(kafka.bootstrap, f"{topic}.alerts"))
    assert summary(reference["alerts"]) <= summary(alerts), "no expected alert lost"
    assert committed(kafka.bootstrap, group, topic) == end_offsets(kafka.bootstrap, topic), (
        "every input record processed and committed"
    )
    ends = end_offsets(kafka.bootstrap, topic)
    for part, engine in committed_states(kafka.bootstrap, group, topic).items():
        ref = reference["engines"][part]
        assert engine.stats["flows"] == ends[part] == ref.stats["flows"], (
            f"partition {part}: restored state continued (no reset, nothing counted twice)"
        )
        assert engine.entities() == ref.entities()


def _config(workdir: Path, session_timeout_s: float = 6.0) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(
        EXFIL_ONLY_CONFIG + f"kafka:\n  session_timeout_s: {session_timeout_s}\n"
    )


def _run(kafka: Any, topic: str, group: str, workdir: Path, name: str) -> subprocess.Popen[bytes]:
    # each process has its own --state-dir: a moved partition must come back from the topic
    return start_run(
        kafka.bootstrap,
        topic,
        group,
        workdir,
        "--checkpoint-interval",
        "1",
        "--idle-exit",
        "600",
        "--state-dir",
        str(workdir / f"state-{name}"),
        log_name=name,
    )


def test_sigkill_of_one_of_two_consumers_loses_nothing(kafka, reference, tmp_path) -> None:  # type: ignore[no-untyped-def]
    flows, _ = simulated_flows()
    topic, group = "t-faults-kill", "gk"
    kafka.create_topic(topic, partitions=4)
    _config(tmp_path)
    produce_canonical(kafka.bootstrap, topic, flows, 0, len(flows) // 2)
    a = _run(kafka, topic, group, tmp_path, "a")
    b = _run(kafka, topic, group, tmp_path, "b")
    try:
        wait_for(lambda: group_members(kafka.bootstrap, group) == 2, 90, "both members joined")
        wait_for(
            lambda: len(committed(kafka.bootstrap, group, topic)) == 4, 120, "all 4 checkpointed"
        )
        a.send_signal(signal.SIGKILL)
        a.wait(30)
        produce_canonical(kafka.bootstrap, topic, flows, len(flows) // 2)
        wait_for(
            lambda: _total(kafka.bootstrap, group, topic) == reference["n"],
            180,
            "the survivor to process everything",
        )
        _stop(b, tmp_path / "b.log")
    finally:
        for p in (a, b):
            if p.poll() is None:
                p.kill()
    _check_complete(kafka, reference, topic, group)


def test_broker_stopped_and_killed_mid_stream(kafka, reference, tmp_path) -> None:  # type: ignore[no-untyped-def]
    flows, _ = simulated_flows()
    topic, group = "t-faults-broker", "gb"
    kafka.create_topic(topic, partitions=4)
    _config(tmp_path)
    third = len(flows) // 3
    produce_canonical(kafka.bootstrap, topic, flows, 0, third)
    p = _run(kafka, topic, group, tmp_path, "run")
    try:
        wait_for(lambda: _total(kafka.bootstrap, group, topic) > 0, 120, "first checkpoint")
        kafka.stop()  # SIGTERM: clean broker shutdown while the runtime is mid-stream
        time.sleep(2.0)  # an outage, not a race: the runtime must ride it out
        kafka.start()
        produce_canonical(kafka.bootstrap, topic, flows, third, 2 * third)
        wait_for(
            lambda: _total(kafka.bootstrap, group, topic) > third, 180, "progress after restart"
        )
        kafka.restart(kill=True)  # SIGKILL: unclean, the log is recovered on start
        produce_canonical(kafka.bootstrap, topic, flows, 2 * third)
        wait_for(
            lambda: _total(kafka.bootstrap, group, topic) == reference["n"],
            240,
            "everything processed after the SIGKILL",
        )
        assert p.poll() is None, "the runtime survived both outages"
        _stop(p, tmp_path / "run.log")
    finally:
        if p.poll() is None:
            p.kill()
    _check_complete(kafka, reference, topic, group)


def test_consumer_frozen_past_session_timeout_commits_nothing_stale(
    kafka, reference, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    flows, _ = simulated_flows()
    topic, group = "t-faults-freeze", "gf"
    kafka.create_topic(topic, partitions=4)
    _config(tmp_path, session_timeout_s=6.0)
    half = len(flows) // 2
    produce_canonical(kafka.bootstrap, topic, flows, 0, half)
    a = _run(kafka, topic, group, tmp_path, "a")
    b = _run(kafka, topic, group, tmp_path, "b")
    seen: dict[int, int] = {}
    regressions: list[tuple[int, int, int]] = []
    stop = threading.Event()

    def watch() -> None:  # committed offsets must never move backwards
        while not stop.is_set():
            for part, off in committed(kafka.bootstrap, group, topic).items():
                if off < seen.get(part, -1):
                    regressions.append((part, seen[part], off))
                seen[part] = max(off, seen.get(part, -1))
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    try:
        wait_for(lambda: group_members(kafka.bootstrap, group) == 2, 90, "both members joined")
        wait_for(
            lambda: len(committed(kafka.bootstrap, group, topic)) == 4, 120, "all 4 checkpointed"
        )
        watcher.start()
        a.send_signal(signal.SIGSTOP)
        wait_for(
            lambda: group_members(kafka.bootstrap, group) == 1, 60, "the frozen member expelled"
        )
        produce_canonical(kafka.bootstrap, topic, flows, half)
        wait_for(
            lambda: _total(kafka.bootstrap, group, topic) == reference["n"],
            180,
            "the other member to process everything",
        )
        a.send_signal(signal.SIGCONT)  # wakes with stale state and stale offsets in memory
        wait_for(lambda: group_members(kafka.bootstrap, group) == 2, 60, "the frozen one rejoined")
        # an observation window (not a race): a few checkpoint intervals after the rejoin,
        # in which a stale commit by the woken member would show up in the watcher
        time.sleep(3.0)
        assert committed(kafka.bootstrap, group, topic) == end_offsets(kafka.bootstrap, topic)
        _stop(a, tmp_path / "a.log")
        _stop(b, tmp_path / "b.log")
    finally:
        stop.set()
        for p in (a, b):
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.kill()
    watcher.join(5)
    assert not regressions, f"stale offsets committed: {regressions}"
    _check_complete(kafka, reference, topic, group)


class SlowSink(ProducerClient):
    """A producer whose alert acknowledgements come slowly: a bounded queue drained at ``rate``/s.

    ``in_flight`` counts queued plus unacknowledged sends, so the runtime sees a slow sink
    exactly as it would see a slow broker, and ``flush`` waits for the queue to drain.
    """

    def __init__(self, inner: KPProducer, rate: float, capacity: int = 10_000) -> None:
        self.inner, self.delay = inner, 1.0 / rate
        self.q: queue.Queue[tuple[Any, ...] | None] = queue.Queue(capacity)
        self.queued = 0
        self.lock = threading.Lock()
        self.worker = threading.Thread(target=self._drain, daemon=True)
        self.worker.start()

    def _drain(self) -> None:
        while (item := self.q.get()) is not None:
            time.sleep(self.delay)
            self.inner.send(*item)
            with self.lock:
                self.queued -= 1

    def send(self, topic, value, key=None, headers=None, partition=None) -> None:  # type: ignore[no-untyped-def]
        if not topic.endswith(".alerts"):  # only the alert sink is slow
            self.inner.send(topic, value, key, headers, partition)
            return
        with self.lock:
            self.queued += 1
        self.q.put((topic, value, key, headers, partition))

    def flush(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.in_flight() and time.monotonic() < deadline:
            with self.lock:
                if not self.queued:
                    break
            time.sleep(0.01)
        self.inner.flush(max(0.1, deadline - time.monotonic()))

    def in_flight(self) -> int:
        with self.lock:
            return self.queued + self.inner.in_flight()

    def close(self) -> None:
        self.q.put(None)
        self.worker.join(30)
        self.inner.close()


def test_slow_alert_sink_pauses_input_without_commit_failures(kafka, reference, tmp_path) -> None:  # type: ignore[no-untyped-def]
    flows, _ = simulated_flows()
    topic, group = "t-faults-slow", "gs"
    kafka.create_topic(topic, partitions=4)
    produce_canonical(kafka.bootstrap, topic, flows)
    # a short max.poll.interval: a runtime that stopped polling while it waited for the
    # sink would be expelled and its next commit would raise CommitFailedError
    rt = make_runtime(
        kafka.bootstrap,
        topic,
        group,
        tmp_path,
        max_in_flight=0,  # pause whenever an alert is unacknowledged
        max_poll_records=500,
        max_poll_interval_s=15.0,
        session_timeout_s=6.0,
        idle_exit_s=4.0,
    )
    sinks: list[SlowSink] = []

    def factory() -> ProducerClient:
        from stream.kafka.base import ClientSettings

        sinks.append(SlowSink(KPProducer(ClientSettings(bootstrap_servers=kafka.bootstrap)), 5.0))
        return sinks[-1]

    rt.producer_factory = factory
    rt.run()
    assert rt.pauses >= 1 and not rt.paused, "input paused and resumed"
    assert rt.commit_failures == 0
    assert (
        rt.metrics.registry.get_sample_value("slowburn_checkpoints_total", {"result": "error"})
        is None
    )
    alerts = alerts_by_revision(read_topic(kafka.bootstrap, f"{topic}.alerts"))
    assert summary(alerts) == summary(reference["alerts"])
    assert committed(kafka.bootstrap, group, topic) == end_offsets(kafka.bootstrap, topic)


POISON = [b"not json at all", b"\xff\xfe\x00garbage", b"[1,2,3]", b'{"a":' + b"[" * 5000]
GOOD = {
    "goflow2-json": "goflow2.json",
    "zeek-json": "zeek_conn.json",
    "suricata": "suricata_eve.json",
    "pmacct": "pmacct.json",
    "canonical": None,
    "goflow2-pb": None,
    "netflow": None,
    "auto": "goflow2.json",
}


def test_poison_in_every_input_format_is_dead_lettered(kafka, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from kafka import KafkaProducer

    samples = Path(__file__).parent / "samples"
    p = KafkaProducer(bootstrap_servers=kafka.bootstrap)
    poison_offsets: dict[str, set[int]] = {}
    inputs = []
    for fmt, sample in GOOD.items():
        topic = f"t-faults-poison-{fmt}"
        kafka.create_topic(topic, partitions=1)
        inputs.append((topic, fmt))
        good = [ln for ln in (samples / sample).read_bytes().splitlines() if ln] if sample else []
        offset, poison_offsets[topic] = 0, set()
        for i, bad in enumerate(POISON):
            p.send(topic, bad, partition=0)
            poison_offsets[topic].add(offset)
            offset += 1
            for line in good[i :: len(POISON)]:
                p.send(topic, line, partition=0)
                offset += 1
    p.flush()
    p.close()
    rt = make_runtime(kafka.bootstrap, inputs[0][0], "gpoison", tmp_path, idle_exit_s=3.0)
    rt.cfg.inputs = inputs
    rt.formats = dict(inputs)
    rt.cfg.deadletter_topic = "t-faults-poison.dead"
    rt.run()
    dead = read_topic(kafka.bootstrap, "t-faults-poison.dead")
    by_topic: dict[str, set[int]] = {}
    for r in dead:
        h = dict(r.headers)
        by_topic.setdefault(h["source_topic"].decode(), set()).add(int(h["offset"]))
    for topic, offsets in poison_offsets.items():
        assert offsets <= by_topic.get(topic, set()), f"{topic}: every poison message dead-lettered"
        assert committed(kafka.bootstrap, "gpoison", topic) == end_offsets(
            kafka.bootstrap, topic
        ), f"{topic}: the partition kept moving"
    for fmt, sample in GOOD.items():
        if sample and fmt != "pmacct":  # pmacct emits flows on its purge_close markers
            assert rt.metrics.registry.get_sample_value(
                "slowburn_records_decoded_total", {"source": fmt, "kind": "flow"}
            ), f"{fmt}: good records around the poison were decoded"
