"""Explanation helpers of the exfil detector: number formatting, ATT&CK choice, positions.

>>> fmt_bytes(48_100_000), fmt_bytes(2.0e9), fmt_bytes(27_500), fmt_bytes(12)
('48.1 MB', '2.0 GB', '27.5 KB', '12 B')
>>> fmt_hours(9.0), fmt_hours(0.33), fmt_hours(72.4), fmt_hours(200)
('9 h', '20 min', '72 h', '8.3 days')
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipelines.detectors._exfil_pairs import PairTable
    from pipelines.detectors.exfil import ExfilDetector

__all__ = ["attacks_for", "fmt_bytes", "fmt_hours", "positions_of"]


def fmt_bytes(n: float) -> str:
    """Decimal units, one decimal (MB = 10**6 bytes, as network tools count)."""
    n = float(n)
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


def fmt_hours(h: float) -> str:
    """Hours as minutes (< 1 h), whole hours (< 100 h) or days."""
    h = float(h)
    if h < 1.0:
        return f"{max(h * 60.0, 1.0):.0f} min"
    if h < 100.0:
        return f"{h:.0f} h"
    return f"{h / 24.0:.1f} days"


def attacks_for(det: ExfilDetector, facts: dict[str, Any], dst: str) -> tuple[str, ...]:
    """ATT&CK techniques supported by the evidence of one (host, destination).

    T1567.002 for a cloud-storage destination (configured domains or CIDRs), else T1041
    for uploads over a web port (an existing web/C2-like channel), else T1048; plus
    T1030 when the data moves in many small chunks and T1029 when the hourly volume is
    regular over many hours (a scheduled transfer).
    """
    port = int(facts.get("dst_port", -1))
    if det._is_cloud(dst, str(facts.get("domain", ""))):
        out = ["T1567.002"]
    elif port in det.web_ports:
        out = ["T1041"]
    else:
        out = ["T1048"]
    conns = int(facts.get("connections", 0))
    if conns >= 50 and float(facts.get("chunk_bytes_median", 1e18)) <= det.small_chunk_bytes:
        out.append("T1030")
    cv = facts.get("hourly_upload_cv")
    hours = int(facts.get("hours_active", 0))
    span = float(facts.get("span_hours", 0.0))
    if cv is not None and hours >= 6 and cv < 0.5 and hours >= 0.6 * span:
        out.append("T1029")
    return tuple(out)


def positions_of(
    pairs: PairTable, rows: Sequence[int], limit: int = 8
) -> tuple[tuple[str, int], ...]:
    """A bounded sample of (origin, offset) of the records behind ``rows`` (audit trail)."""
    out: list[tuple[str, int]] = []
    for r in rows:
        got = list(pairs.sample.get(int(r), []))
        origin = pairs.w_origin[int(r)]
        if origin is not None:
            got.append((str(origin), int(pairs.w_offset[int(r)])))
        for p in got:
            if p not in out:
                out.append(p)
    if len(out) > limit:
        out = out[: limit // 2] + out[-(limit - limit // 2) :]
    return tuple(out)
