"""Replaying files through the engine: inputs merged in time order, alerts out, state kept.

This is the file shell around :class:`pipelines.engine.Engine`; ``slowburn replay``,
``slowburn eval`` and ``slowburn demo`` all run through :func:`run_replay` /
:func:`run_batches`.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from pipelines.engine import Engine
from pipelines.governance import restore_snapshot, take_snapshot
from pipelines.incidents import Incident
from pipelines.records import DnsBatch, FlowBatch, HomeNetworks, annotate_direction
from stream.decoders.base import DeadLetter, DecodeResult
from stream.exceptions import StreamError
from stream.merge import merge_chunks

__all__ = [
    "InputSpec",
    "ReplaySummary",
    "open_input",
    "parse_remap",
    "parse_shift",
    "run_batches",
    "run_replay",
]

log = logging.getLogger(__name__)

STATE_FILE = "engine.state"


class AlertSink(Protocol):
    def send(self, alerts: list[Incident]) -> None: ...


@dataclass
class InputSpec:
    """One input file, with optional attack-injection transforms.

    ``shift`` moves every record by that many seconds; ``shift_to`` (epoch seconds)
    moves the input so that its first record lands there; ``remap`` renames addresses.
    """

    path: str
    fmt: str = "auto"
    shift: float = 0.0
    shift_to: float | None = None
    remap: dict[str, str] = field(default_factory=dict)
    #: the shift actually applied (known once the first record was seen)
    applied_shift: float = 0.0


def parse_shift(text: str) -> tuple[str, float, float | None]:
    """Parse ``INPUT=+SECONDS`` / ``INPUT=-SECONDS`` / ``INPUT=@ISO_TIME``.

    >>> parse_shift("a.pcap=+3600")
    ('a.pcap', 3600.0, None)
    >>> parse_shift("a.pcap=@2024-01-02T03:04:05Z")
    ('a.pcap', 0.0, 1704164645.0)
    """
    name, sep, value = text.rpartition("=")
    if not sep or not name:
        raise StreamError(f"--shift {text!r}: expected INPUT=+SECONDS or INPUT=@ISO_TIME")
    if value.startswith("@"):
        try:
            at = datetime.fromisoformat(value[1:].replace("Z", "+00:00"))
        except ValueError:
            raise StreamError(f"--shift {text!r}: {value[1:]!r} is not an ISO-8601 time") from None
        if at.tzinfo is None:
            raise StreamError(f"--shift {text!r}: give a time zone (e.g. Z)")
        return name, 0.0, at.timestamp()
    try:
        return name, float(value), None
    except ValueError:
        raise StreamError(f"--shift {text!r}: {value!r} is not a number of seconds") from None


def parse_remap(text: str) -> tuple[str, str, str]:
    """Parse ``INPUT:OLD_IP=NEW_IP`` (IPv6 addresses work: the last ``:`` before ``=`` splits).

    >>> parse_remap("ws.pcap:172.18.39.5=10.1.0.7")
    ('ws.pcap', '172.18.39.5', '10.1.0.7')
    """
    left, sep, new = text.partition("=")
    if not sep:
        raise StreamError(f"--remap {text!r}: expected INPUT:OLD_IP=NEW_IP")
    # the input name may itself contain ':'; the old IP is what follows the first ':' that
    # makes the rest a valid address
    import ipaddress

    for i, ch in enumerate(left):
        if ch != ":":
            continue
        name, old = left[:i], left[i + 1 :]
        try:
            ipaddress.ip_address(old)
            ipaddress.ip_address(new)
        except ValueError:
            continue
        return name, old, new
    raise StreamError(f"--remap {text!r}: expected INPUT:OLD_IP=NEW_IP with valid addresses")


def _transform(chunks: Iterable[DecodeResult], spec: InputSpec) -> Iterator[DecodeResult]:
    from pipelines.inject import remap, shift

    offset: float | None = spec.shift if spec.shift_to is None else None
    for r in chunks:
        if offset is None and (len(r.flows) or len(r.dns)):
            first = min(
                float(r.flows.ts_start.min()) if len(r.flows) else math.inf,
                float(r.dns.ts.min()) if len(r.dns) else math.inf,
            )
            assert spec.shift_to is not None
            offset = spec.shift_to - first
        spec.applied_shift = offset or 0.0
        flows, dns = r.flows, r.dns
        if offset:
            flows, dns = shift(flows, offset), shift(dns, offset)
        if spec.remap:
            flows, dns = remap(flows, spec.remap), remap(dns, spec.remap)
        yield DecodeResult(flows=flows, dns=dns, dead=r.dead, ignored=r.ignored)


def open_input(spec: InputSpec) -> Iterator[DecodeResult]:
    """Decoded, transformed chunks of one input file."""
    from stream.sources import iter_file

    if not Path(spec.path).exists():
        raise StreamError(f"input {spec.path}: no such file")
    chunks: Iterable[DecodeResult] = (r for r, _n in iter_file(spec.path, spec.fmt))
    if spec.shift or spec.shift_to is not None or spec.remap:
        chunks = _transform(chunks, spec)
    return iter(chunks)


@dataclass
class ReplaySummary:
    flows: int = 0
    dns: int = 0
    dead: Counter[str] = field(default_factory=Counter)
    ignored: int = 0
    alerts: list[Incident] = field(default_factory=list)
    seconds: float = 0.0
    engine: Engine | None = None

    def table(self) -> str:
        """A plain-text summary for the terminal."""
        eng = self.engine
        lines = [
            f"records   {self.flows + self.dns:>12,}  (flows {self.flows:,}, dns {self.dns:,}, ignored {self.ignored:,})",
            f"dead      {sum(self.dead.values()):>12,}  "
            + (", ".join(f"{k} {v:,}" for k, v in sorted(self.dead.items())) or ""),
            f"time      {self.seconds:>12.1f}  s  ({(self.flows + self.dns) / max(self.seconds, 1e-9):,.0f} records/s)",
        ]
        if eng is not None:
            lines.append(
                f"windows   {eng.stats['windows_closed']:>12,}  (late records {eng.stats['late_records']:,})"
            )
            lines.append(f"{'detector':<16}{'entities':>10}{'findings':>10}{'alerts':>8}")
            ents = eng.entities()
            for d in eng.detectors:
                lines.append(
                    f"{d.name:<16}{ents.get(d.name, 0):>10,}{eng.findings_by_detector.get(d.name, 0):>10,}"
                    f"{eng.alerts_by_detector.get(d.name, 0):>8,}"
                )
            lines.append(
                f"{'total':<16}{'':>10}{eng.stats['findings']:>10,}{eng.stats['alerts']:>8,}"
            )
        return "\n".join(lines)


class _Progress:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.last = 0.0

    def update(self, records: int, event_time: float, alerts: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.last < 0.5:
            return
        self.last = now
        when = (
            datetime.utcfromtimestamp(event_time).strftime("%Y-%m-%d %H:%M")
            if math.isfinite(event_time)
            else "-"
        )
        sys.stderr.write(f"\r  {records:>12,} records  event time {when}  alerts {alerts:,}   ")
        sys.stderr.flush()

    def done(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def load_state(engine: Engine, state_dir: str | Path | None) -> Engine:
    """Resume from ``state_dir`` if it holds a snapshot of the same model."""
    if not state_dir:
        return engine
    path = Path(state_dir) / STATE_FILE
    if not path.exists():
        return engine
    try:
        restored = restore_snapshot(path.read_bytes(), expected_model_version=engine.model_version)
    except Exception as exc:
        raise StreamError(f"state {path}: {exc}") from exc
    log.info("resumed from %s (snapshot %s)", path, restored.snapshot_id)
    return restored


def save_state(engine: Engine, state_dir: str | Path | None) -> None:
    if not state_dir:
        return
    d = Path(state_dir)
    d.mkdir(parents=True, exist_ok=True)
    info, blob = take_snapshot(engine)
    tmp = d / (STATE_FILE + ".tmp")
    tmp.write_bytes(blob)
    tmp.replace(d / STATE_FILE)
    log.info("saved state %s (%d bytes) to %s", info.snapshot_id, info.nbytes, d)


def run_batches(
    engine: Engine,
    chunks: Iterable[DecodeResult],
    home: HomeNetworks,
    sink: AlertSink | None = None,
    on_dead: Callable[[list[DeadLetter]], object] | None = None,
    progress: bool = False,
    annotate: bool = True,
) -> ReplaySummary:
    """Feed decoded chunks to ``engine``; alerts go to ``sink`` as they are raised."""
    summary = ReplaySummary(engine=engine)
    bar = _Progress(progress)
    started = time.monotonic()
    for r in chunks:
        flows: FlowBatch = r.flows
        dns: DnsBatch = r.dns
        if annotate:
            flows, dns = annotate_direction(flows, home), annotate_direction(dns, home)
        alerts = engine.process(flows, dns)
        summary.flows += len(flows)
        summary.dns += len(dns)
        summary.ignored += r.ignored
        if r.dead:
            summary.dead.update(d.reason for d in r.dead)
            if on_dead:
                on_dead(r.dead)
        if alerts:
            summary.alerts.extend(alerts)
            if sink:
                sink.send(alerts)
        bar.update(summary.flows + summary.dns, engine.max_ts, len(summary.alerts))
    tail = engine.flush()
    if tail:
        summary.alerts.extend(tail)
        if sink:
            sink.send(tail)
    bar.done()
    summary.seconds = time.monotonic() - started
    return summary


def run_replay(
    engine: Engine,
    inputs: list[InputSpec],
    home: HomeNetworks,
    sink: AlertSink | None = None,
    state_dir: str | Path | None = None,
    on_dead: Callable[[list[DeadLetter]], object] | None = None,
    progress: bool = False,
) -> ReplaySummary:
    """Replay ``inputs`` (merged in time order) through ``engine`` (resumed from ``state_dir``)."""
    engine = load_state(engine, state_dir)
    streams = [open_input(spec) for spec in inputs]
    summary = run_batches(engine, merge_chunks(streams), home, sink, on_dead, progress)
    save_state(summary.engine or engine, state_dir)
    return summary


def describe(engine: Engine) -> dict[str, Any]:
    return {"model_version": engine.model_version, "snapshot_id": engine.snapshot_id}
