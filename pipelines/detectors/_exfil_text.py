"""Explanations of the exfil detector: findings with evidence, facts and one sentence;
number formatting, ATT&CK choice, positions.

>>> fmt_bytes(48_100_000), fmt_bytes(2.0e9), fmt_bytes(27_500), fmt_bytes(12)
('48.1 MB', '2.0 GB', '27.5 KB', '12 B')
>>> fmt_hours(9.0), fmt_hours(0.33), fmt_hours(72.4), fmt_hours(200)
('9 h', '20 min', '72 h', '8.3 days')
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from pipelines.detectors.base import Evidence, Finding

if TYPE_CHECKING:
    from pipelines.detectors._exfil_pairs import PairTable
    from pipelines.detectors.exfil import ExfilDetector, _Features, _Scored

__all__ = [
    "attacks_for",
    "fmt_bytes",
    "fmt_hours",
    "host_finding",
    "merge",
    "pair_finding",
    "positions_of",
]


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
        pos = pairs.position(int(r))
        if pos is not None:
            got.append(pos)
        for p in got:
            if p not in out:
                out.append(p)
    if len(out) > limit:
        out = out[: limit // 2] + out[-(limit - limit // 2) :]
    return tuple(out)


def pair_facts(det: ExfilDetector, r: int, now: float) -> dict[str, Any]:
    P = det.pairs
    dst = P.dst_of(np.array([r]))[0]
    first_dst, nh = det.dsts.stats([dst])
    first = float(np.fmin(first_dst[0], P.first_ts[r]))
    med, q1, q3 = det.pairs.chunk_quantiles(np.array([r]), (0.5, 0.25, 0.75))[0].tolist()
    hours = int(P.hours[r])
    rr = np.array([r])
    mean = P.get("hsum", rr)[0] / max(hours - 1, 1)
    var = max(P.get("hsq", rr)[0] / max(hours - 1, 1) - mean**2, 0.0)
    span_h = max((float(P.last_ts[r]) - float(P.first_ts[r])) / 3600.0, 1 / 12)
    return {
        "bytes_out": float(P.out[r]),
        "bytes_in": float(P.inb[r]),
        "connections": int(P.conns[r]),
        "destination": dst,
        "dst_port": int(P.port[r]),
        "destination_first_seen": first,
        "destination_age_hours": round((now - first) / 3600.0, 2),
        "internal_hosts_contacting": int(nh[0]),
        "chunk_bytes_median": round(med),
        "chunk_bytes_iqr": round(q3 - q1),
        "hours_active": hours,
        "span_hours": round(span_h, 2),
        "upload_download_ratio": round(float(P.out[r]) / max(float(P.inb[r]), 1.0), 1),
        "hourly_upload_cv": round(math.sqrt(var) / mean, 2) if mean > 0 else None,
        "cusum_bytes": float(P.get("cusum", rr)[0]),
        "domain": str(det.domains.get(dst, "")).rstrip(".").lower(),
    }


def baseline_for(
    det: ExfilDetector, h: int, value: float, span_h: float
) -> tuple[float, float, int]:
    """(typical bytes for the same span, z of ``value`` vs that horizon, horizon hours)."""
    rows = np.array([h])
    for i, hh in enumerate(det.horizons_hours):
        b = det.hz.base[i]
        if hh >= span_h or i == len(det.horizons_hours) - 1:
            if not b.warm(rows)[0]:
                continue
            typ = float(b.typical(rows)[0, 0]) * min(span_h / hh, 1.0)
            return typ, float(b.z(rows, np.array([[value * hh / max(span_h, hh)]]))[0, 0]), hh
    return 0.0, 0.0, 0


def pair_finding(det: ExfilDetector, f: _Features, r: int, s: float) -> Finding:
    P = det.pairs
    h = int(P.host[r])
    host = det.hz.names[h]
    facts = pair_facts(det, r, f.window.end)
    facts["cusum_bytes"] = s
    dst, port, out = facts["destination"], facts["dst_port"], facts["bytes_out"]
    typ, z, hh = baseline_for(det, h, out, facts["span_hours"])
    ev = [
        Evidence("cusum_upload_new_destination", s, det.cusum_h, round(s / det.cusum_h, 2),
                 "bytes", f"CUSUM threshold (drift {fmt_bytes(det.cusum_k)}/h)"),
        Evidence("upload_to_destination", out, typ, round(z, 2), "bytes",
                 f"host {hh} h median upload" if hh else "host baseline not warm"),
        Evidence("upload_download_ratio", facts["upload_download_ratio"], 1.0, 0.0, "ratio",
                 "symmetric traffic"),
    ]  # fmt: skip
    others = facts["internal_hosts_contacting"] - 1
    mult = f" — {out / typ:.0f}× its {hh} h baseline" if typ > 0 else ""
    sentence = (
        f"{host} uploaded {fmt_bytes(out)} to {dst}:{port} over {fmt_hours(facts['span_hours'])} "
        f"in {facts['connections']} connections (median chunk {fmt_bytes(facts['chunk_bytes_median'])}, "
        f"{facts['upload_download_ratio']:g}× more up than down){mult}; destination first seen "
        f"{fmt_hours(facts['destination_age_hours'])} ago and contacted by "
        f"{'no other host' if others <= 0 else f'{others} other host' + ('s' if others > 1 else '')}."
    )
    sev = 5 if out >= 1e9 and facts["span_hours"] <= 1.0 else (4 if out >= 1e8 else 3)
    score = 1.0 - 0.5 ** (s / det.cusum_h)
    conf = 50 + 10 * (others <= 0) + 10 * (facts["upload_download_ratio"] >= 10)
    conf += 10 * (facts["chunk_bytes_median"] <= det.small_chunk_bytes) + 10 * (out >= 5e7)
    return Finding(
        detector=det.name, kind="exfiltration", entity=host, episode=dst,
        start=float(P.first_ts[r]), end=f.window.end, score=round(min(score, 1.0), 4),
        severity_id=sev, confidence=min(conf, 95),
        attacks=attacks_for(det, facts, dst),
        title=f"Slow upload to new destination {dst}", sentence=sentence, evidence=ev,
        facts=facts, src=host, dst=(dst,), dst_ports=(port,) if port >= 0 else (),
        domain=facts["domain"], direction="outbound", count=facts["connections"],
        positions=positions_of(P, [r]), analytic="Statistical",
    )  # fmt: skip


def host_finding(det: ExfilDetector, f: _Features, h: int, val: float, sc: _Scored) -> Finding:
    P = det.pairs
    host = det.hz.names[h]
    slots = P.slots_of(h)
    if val < 0:  # rare-destination CUSUM spread over several destinations
        return spread_finding(det, f, h, -val, slots)
    rows = np.array([h])
    s = det.hz.score(rows, f.hour, f.frac, np.zeros(1))
    ev: list[Evidence] = []
    best, best_i = 0.0, 0
    for i, hh in enumerate(det.horizons_hours):
        if s.warm[0, i] and s.z[0, i] >= det.z_threshold and s.peer_z[0, i] >= det.peer_z_threshold:
            o = float(s.obs[0, i])
            ev.append(
                Evidence(
                    f"upload_{hh}h",
                    o,
                    float(s.typical[0, i]),
                    round(float(s.z[0, i]), 2),
                    "bytes",
                    f"host {hh} h median ({int(s.samples[0, i])} samples)",
                )
            )
            ev.append(Evidence(f"upload_{hh}h_vs_peers", o, float(s.peer_typical[0, i]),
                               round(float(s.peer_z[0, i]), 2), "bytes",
                               f"peer median of {int(det.hz.peer_n[i])} hosts"))  # fmt: skip
            ratio_i = float(s.z[0, i]) / det.z_threshold
            if ratio_i > best:
                best, best_i = ratio_i, i
    hh = det.horizons_hours[best_i]
    obs, typ, peer = (
        float(s.obs[0, best_i]),
        float(s.typical[0, best_i]),
        float(s.peer_typical[0, best_i]),
    )
    ew = P.ew_out[slots] * 0.5 ** ((f.window.end - P.ew_t[slots]) / 3600.0)
    top = int(slots[np.argmax(ew)]) if len(slots) and ew.max() > 0 else -1
    facts: dict[str, Any] = {"bytes_out_horizon": obs, "horizon_hours": hh}
    tail = ""
    episode = ""
    dsts: tuple[str, ...] = ()
    ports: tuple[int, ...] = ()
    pos_rows: list[int] = []
    if top >= 0:
        pf = pair_facts(det, top, f.window.end)
        if float(ew.max()) >= 0.5 * float(ew.sum()):
            episode, dsts, pos_rows = pf["destination"], (pf["destination"],), [top]
            ports = (pf["dst_port"],) if pf["dst_port"] >= 0 else ()
            others = pf["internal_hosts_contacting"] - 1
            tail = (
                f" ({fmt_bytes(pf['bytes_out'])} of it to {pf['destination']}:{pf['dst_port']} in "
                f"{pf['connections']} connections); destination first seen "
                f"{fmt_hours(pf['destination_age_hours'])} ago and contacted by "
                f"{'no other host' if others <= 0 else f'{others} other hosts'}"
            )
            facts.update(pf)
    sentence = (
        f"{host} uploaded {fmt_bytes(obs)} to external destinations in the last {fmt_hours(hh)} — "
        f"{obs / max(typ, 1.0):.0f}× its {hh} h baseline of {fmt_bytes(typ)} and "
        f"{obs / max(peer, 1.0):.0f}× the peer median{tail}."
    )
    sev = 5 if (float(s.obs[0, 0]) >= 5e8 or obs >= 2e9) else (4 if obs >= 2e8 else 3)
    score = 1.0 - 0.5 ** max(best, 1.0)
    conf = min(60 + 10 * len(ev) // 2 + 10 * bool(episode), 95)
    return Finding(
        detector=det.name, kind="exfiltration", entity=host, episode=episode,
        start=f.window.end - hh * 3600.0, end=f.window.end, score=round(score, 4),
        severity_id=sev, confidence=conf,
        attacks=attacks_for(det, facts, episode) if episode else ("T1048",),
        title=f"Large upload from {host} ({fmt_bytes(obs)} in {fmt_hours(hh)})",
        sentence=sentence, evidence=ev, facts=facts, src=host, dst=dsts, dst_ports=ports,
        domain=str(facts.get("domain", "")), direction="outbound",
        count=int(facts.get("connections", 0)), positions=positions_of(P, pos_rows),
    )  # fmt: skip


def spread_finding(
    det: ExfilDetector, f: _Features, h: int, s: float, slots: np.ndarray
) -> Finding:
    P = det.pairs
    host = det.hz.names[h]
    act = slots[(P.rare_new[slots] > 0) | np.isin(slots, f.pairs)]
    total = float(P.out[act].sum())
    top = act[np.argsort(-P.out[act])][:5]
    start = float(np.nanmin(P.first_ts[act])) if len(act) else f.window.start
    span = (f.window.end - start) / 3600.0
    tops = P.dst_of(top)
    conns = int(P.conns[act].sum())
    facts: dict[str, Any] = {
        "bytes_out": total, "destinations": len(act), "cusum_bytes": s,
        "connections": conns, "span_hours": round(span, 2), "top_destinations": tops,
    }  # fmt: skip
    ev = [Evidence("cusum_upload_rare_destinations", s, det.host_cusum_h,
                   round(s / det.host_cusum_h, 2), "bytes", "host CUSUM threshold")]  # fmt: skip
    sentence = (
        f"{host} uploaded {fmt_bytes(total)} to {len(act)} new, rarely contacted destinations over "
        f"{fmt_hours(span)} in {facts['connections']} connections (CUSUM {fmt_bytes(s)} over the "
        f"{fmt_bytes(det.host_cusum_h)} threshold)."
    )
    return Finding(
        detector=det.name, kind="exfiltration", entity=host, episode="", start=start,
        end=f.window.end, score=round(1.0 - 0.5 ** (s / det.host_cusum_h), 4),
        severity_id=4 if total >= 1e8 else 3, confidence=60, attacks=("T1048", "T1030"),
        title=f"Upload spread over {len(act)} new destinations", sentence=sentence, evidence=ev,
        facts=facts, src=host, dst=tuple(tops), direction="outbound", count=conns, positions=positions_of(P, top.tolist()),
    )  # fmt: skip


def merge(a: Finding, b: Finding) -> Finding:
    """One finding per (host, episode) and window: keep the stronger, add the other's evidence."""
    first, second = (a, b) if a.severity_id >= b.severity_id else (b, a)
    first.evidence = first.evidence + [
        e for e in second.evidence if e.name not in {x.name for x in first.evidence}
    ]
    first.facts = {**second.facts, **first.facts}
    first.score = max(a.score, b.score)
    first.confidence = max(a.confidence, b.confidence)
    first.start = min(a.start, b.start)
    first.attacks = tuple(dict.fromkeys(first.attacks + second.attacks))
    return first
