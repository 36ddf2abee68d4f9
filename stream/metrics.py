"""Every Prometheus metric slowburn exports, declared in one place (namespace ``slowburn``).

Base units, ``_total`` counters, bounded labels only (source format, reason, detector,
severity, topic/partition — never an IP address). Counters are incremented once per
batch, with pre-bound label children, not once per record (DESIGN §9).

>>> from prometheus_client import CollectorRegistry
>>> reg = CollectorRegistry()
>>> m = Metrics(reg)
>>> m.dead_letter("zeek-json", "not_json", 3)
>>> reg.get_sample_value("slowburn_records_dead_lettered_total", {"source": "zeek-json", "reason": "not_json"})
3.0
"""

from __future__ import annotations

import threading
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    start_http_server,
)

from pipelines import __version__

__all__ = ["Metrics", "serve"]

_LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
_LAG_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 86400)


class Metrics:
    """The metric set of one slowburn process, bound to ``registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r, ns = self.registry, "slowburn"
        self.consumed = Counter(
            "records_consumed", "Messages read from inputs", ["source"], namespace=ns, registry=r
        )
        self.decoded = Counter(
            "records_decoded",
            "Canonical records decoded",
            ["source", "kind"],
            namespace=ns,
            registry=r,
        )
        self.dead = Counter(
            "records_dead_lettered",
            "Messages sent to the dead-letter sink",
            ["source", "reason"],
            namespace=ns,
            registry=r,
        )
        self.latency = Histogram(
            "processing_latency_seconds",
            "Wall time to decode and process one polled batch",
            namespace=ns,
            registry=r,
            buckets=_LATENCY_BUCKETS,
        )
        self.event_lag = Histogram(
            "event_time_lag_seconds",
            "Wall clock minus the newest record time of a batch",
            namespace=ns,
            registry=r,
            buckets=_LAG_BUCKETS,
        )
        self.consumer_lag = Gauge(
            "consumer_lag_messages",
            "Log end offset minus position",
            ["topic", "partition"],
            namespace=ns,
            registry=r,
        )
        self.findings = Counter(
            "findings",
            "Detector findings before incident grouping",
            ["detector"],
            namespace=ns,
            registry=r,
        )
        self.alerts = Counter(
            "alerts",
            "Alerts (incident creations and updates) sent",
            ["detector", "severity"],
            namespace=ns,
            registry=r,
        )
        self.entities = Gauge(
            "entities_tracked", "Entities with state", ["detector"], namespace=ns, registry=r
        )
        self.state_bytes = Gauge(
            "state_bytes", "Size of the last state snapshot", namespace=ns, registry=r
        )
        self.checkpoint_seconds = Histogram(
            "checkpoint_duration_seconds", "Time to write one checkpoint", namespace=ns, registry=r
        )
        self.checkpoint_ts = Gauge(
            "checkpoint_last_success_timestamp_seconds",
            "Unix time of the last checkpoint",
            namespace=ns,
            registry=r,
        )
        self.checkpoints = Counter(
            "checkpoints", "Checkpoints written", ["result"], namespace=ns, registry=r
        )
        self.drift = Counter(
            "model_drift_events", "baseline_drift findings raised", namespace=ns, registry=r
        )
        self.late = Counter(
            "late_records", "Records later than the lateness allowance", namespace=ns, registry=r
        )
        self.paused = Gauge(
            "input_paused", "1 while inputs are paused for back-pressure", namespace=ns, registry=r
        )
        self.pauses = Counter(
            "backpressure_pauses",
            "Input pauses because outputs were unacknowledged",
            namespace=ns,
            registry=r,
        )
        self.rebalances = Counter(
            "rebalances", "Partition assignment changes", ["change"], namespace=ns, registry=r
        )
        self.build = Info("build", "slowburn build information", namespace=ns, registry=r)
        self.build.info({"version": __version__})
        self._children: dict[tuple[Any, ...], Any] = {}
        self._lock = threading.Lock()

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            with self._lock:
                child = self._children.setdefault(key, metric.labels(*labels))
        return child

    # -- batch-level helpers -------------------------------------------------------------
    def consumed_n(self, source: str, n: int) -> None:
        if n:
            self._child(self.consumed, source).inc(n)

    def decoded_n(self, source: str, kind: str, n: int) -> None:
        if n:
            self._child(self.decoded, source, kind).inc(n)

    def dead_letter(self, source: str, reason: str, n: int = 1) -> None:
        if n:
            self._child(self.dead, source, reason).inc(n)

    def finding_n(self, detector: str, n: int) -> None:
        if n:
            self._child(self.findings, detector).inc(n)

    def alert(self, detector: str, severity_id: int) -> None:
        self._child(self.alerts, detector, _SEVERITY.get(severity_id, "unknown")).inc()

    def set_entities(self, counts: dict[str, int]) -> None:
        for det, n in counts.items():
            self._child(self.entities, det).set(n)

    def set_consumer_lag(self, topic: str, partition: int, lag: int) -> None:
        self._child(self.consumer_lag, topic, str(partition)).set(lag)


_SEVERITY = {
    0: "unknown",
    1: "informational",
    2: "low",
    3: "medium",
    4: "high",
    5: "critical",
    6: "fatal",
}


def serve(metrics: Metrics, port: int, addr: str = "0.0.0.0") -> Any:
    """Expose ``/metrics`` over HTTP; returns the server (``.shutdown()`` to stop)."""
    server, _thread = start_http_server(port, addr=addr, registry=metrics.registry)
    return server
