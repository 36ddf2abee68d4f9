"""Explanation of a DNS tunnel / slow exfiltration: the :class:`Finding` with counts and examples."""

from __future__ import annotations

import math
from typing import Any

from pipelines.detectors.base import Evidence, Finding

__all__ = ["tunnel_finding"]


def tunnel_finding(
    det: Any, p: dict[str, Any], ratios: dict[str, float], top: str, now: float
) -> Finding:
    """The finding for pair features ``p`` of detector ``det``; ``top`` is the trigger that fired.

    ``score = min(1, 0.55 + 0.15·log2(ratio) + 0.3·shape)``; the slow trigger maps to
    T1071.004 + T1048.003 ("slow DNS exfiltration"), the others add T1572 ("DNS tunnel").
    """
    ratio = ratios[top]
    shape = max(p["enc"], p["unusual"]) / max(1, p["uniq"])
    score = min(1.0, 0.55 + 0.15 * math.log2(ratio) + 0.3 * shape)
    slow = top == "slow"
    nx_ratio = p["nx"] / max(1, p["q"])
    noconn_ratio = min(1.0, p["noconn"] / max(1, p["answered"])) if p["answered"] else 0.0
    qtypes = ", ".join(f"{k}:{v}" for k, v in p["qtypes"].items())
    examples = ", ".join(p["examples"][:3])
    what = "slow DNS exfiltration" if slow else "DNS tunnel"
    span = max(0.0, p["last"] - p["first"])
    sentence = (
        f"{p['src']} sent {p['q']} queries for {p['uniq']} unique names under {p['domain']} in {span:.0f} s "
        f"({p['enc']} encoded-looking, {p['unusual']} of unusual record types [{qtypes}], mean sub-domain "
        f"{p['mean_len']:.0f} chars at {p['mean_ent']:.1f} bits/char, {p['enc_bytes']} B encoded in names; "
        f"{p['hour_enc']} encoded names this hour, {p['persist']} busy hours in 48 h), e.g. {examples}."
    )
    evidence = [
        Evidence("unique_subdomains", float(p["uniq"]), 1.0, 0.0, "names", "per window"),
        Evidence(
            "encoded_names",
            float(p["enc"]),
            float(det.burst_encoded),
            0.0,
            "names",
            "burst threshold per window",
        ),
        Evidence(
            "unusual_qtype_names",
            float(p["unusual"]),
            float(det.burst_unusual),
            0.0,
            "names",
            "TXT/NULL/CNAME/MX/KEY/ANY/private per window",
        ),
        Evidence("name_length", p["mean_len"], 10.0, 0.0, "chars", "typical sub-domain"),
        Evidence("name_entropy", p["mean_ent"], 2.5, 0.0, "bits/char", "typical host names"),
        Evidence("encoded_bytes", float(p["enc_bytes"]), 0.0, 0.0, "bytes", "per window"),
        Evidence(
            "hour_encoded_names",
            float(p["hour_enc"]),
            float(det.hour_encoded),
            0.0,
            "names",
            "hourly threshold (HyperLogLog estimate)",
        ),
        Evidence(
            "busy_hours_48h",
            float(p["persist"]),
            float(det.slow_hours),
            0.0,
            "hours",
            f"hours with >= {det.slow_hour_min} encoded names",
        ),
        Evidence("nxdomain_ratio", nx_ratio, 0.05, 0.0, "ratio", "typical"),
        Evidence(
            "no_connection_ratio",
            noconn_ratio,
            0.2,
            0.0,
            "ratio",
            "A/AAAA answers never connected to",
        ),
    ]
    attacks = ("T1071.004", "T1572", "T1048.003") if not slow else ("T1071.004", "T1048.003")
    severity = 4 if score >= 0.85 else 3
    return Finding(
        detector=det.name,
        kind=det.kind,
        entity=p["src"],
        episode=p["domain"],
        start=p["first"],
        end=p["last"],
        score=float(score),
        severity_id=severity,
        confidence=round(100 * score),
        attacks=attacks,
        title=f"{what[0].upper() + what[1:]} via {p['domain']}",
        sentence=sentence,
        evidence=evidence,
        facts={
            "trigger": top,
            "ratios": {k: round(v, 3) for k, v in ratios.items()},
            "queries": p["q"],
            "unique_names": p["uniq"],
            "encoded_names": p["enc"],
            "unusual_names": p["unusual"],
            "encoded_bytes": p["enc_bytes"],
            "hour_encoded_names": p["hour_enc"],
            "hour_encoded_bytes": p["hour_bytes"],
            "busy_hours_48h": p["persist"],
            "nxdomain": p["nx"],
            "answered": p["answered"],
            "no_connection": p["noconn"],
            "qtypes": p["qtypes"],
            "examples": list(p["examples"]),
            "score": round(score, 3),
        },
        src=p["src"],
        dst=(),
        dst_ports=(53,),
        domain=p["domain"],
        direction="outbound",
        count=p["q"],
        positions=p["positions"],
        analytic="Statistical",
    )
