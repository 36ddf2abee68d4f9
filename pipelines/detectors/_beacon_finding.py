"""Explanation of a beacon: the :class:`Finding` with sub-scores, period and ATT&CK mapping.

ATT&CK: T1071.001 for web ports, T1071 otherwise; T1573 for TLS ports; T1571 for a port
that is not standard for any common service; T1041 when the channel also uploads at
least ``upload_bytes`` and more than it downloads. Failure storms (>= 90 % failed
connections) get severity 2 and the title "Periodic failed connections".
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipelines.detectors.base import Evidence, Finding

__all__ = ["STANDARD_PORTS", "TLS_PORTS", "WEB_PORTS", "beacon_finding"]

WEB_PORTS = frozenset({80, 443, 8000, 8080, 8443, 8888})
TLS_PORTS = frozenset({443, 8443, 993, 995, 465, 636, 853, 5061, 5986})
STANDARD_PORTS = frozenset(
    {
        20,
        21,
        22,
        23,
        25,
        53,
        80,
        110,
        123,
        143,
        389,
        443,
        465,
        587,
        636,
        853,
        993,
        995,
        3389,
        5060,
        5061,
        8080,
        8443,
    }
)


def beacon_finding(
    det: Any, p: dict[str, Any], final: float, others: int, discount: float
) -> Finding:
    """The finding for periodic series ``p`` of detector ``det`` (final score, prevalence)."""
    reg = p["reg"]
    port, period, n = p["port"], reg["period"], reg["checkins"]
    failed_frac = p["failed"] / max(1, p["n"])
    storm = failed_frac >= 0.9
    web = port in WEB_PORTS
    attacks = ["T1071.001" if web else "T1071"]
    if port in TLS_PORTS:
        attacks.append("T1573")
    if port not in STANDARD_PORTS:
        attacks.append("T1571")
    upload = p["bytes_out"] >= det.upload_bytes and p["bytes_out"] > p["bytes_in"]
    if upload:
        attacks.append("T1041")
    is_domain = bool(p["is_domain"])
    dom = p["target"] if is_domain else det.names.get(p["target"], ("", ""))[1]
    dsts = p["domain_ips"] if is_domain else (p["target"],)
    where = f"{p['target']}:{port}" + (f" ({p['name']})" if p["name"] and not is_domain else "")
    if is_domain:
        where += f" via {len(dsts)} addresses"
    span = reg["span"]
    span_txt = (
        f"{span / 3600:.1f} h"
        if span >= 7200
        else f"{span / 60:.1f} min"
        if span >= 120
        else f"{span:.0f} s"
    )
    what = "failed connection attempts" if storm else "check-ins"
    prev = "no other internal host" if others == 0 else f"{others} other internal host(s)"
    sentence = (
        f"{p['src']} made {n} {what} to {where} over {span_txt}, every {period:.1f} s "
        f"(jitter {reg['jitter'] * 100:.0f}%, beacon score {final:.2f}: interval {reg['ts_score']:.2f}, "
        f"size {reg['ds_score']:.2f}, histogram {reg['hist_score']:.2f}, coverage {reg['dur_score']:.2f}); "
        f"{prev} contacts it on this schedule."
    )
    z_cv = (1.0 - reg["ts_cv"]) * np.sqrt(max(1, n - 1))
    evidence = [
        Evidence(
            "period",
            period,
            0.0,
            0.0,
            "s",
            "median inter-arrival (folded over missed check-ins)",
        ),
        Evidence(
            "interval_cv", reg["ts_cv"], 1.0, float(z_cv), "ratio", "random (Poisson) arrivals"
        ),
        Evidence(
            "interval_score",
            reg["ts_score"],
            0.5,
            0.0,
            "score",
            "Bowley skew, MAD/median, CV of gaps",
        ),
        Evidence(
            "size_score", reg["ds_score"], 0.5, 0.0, "score", "Bowley skew, MAD/median of bytes"
        ),
        Evidence(
            "histogram_score",
            reg["hist_score"],
            0.5,
            0.0,
            "score",
            "span histogram CV / two-mode fit",
        ),
        Evidence(
            "coverage_score",
            reg["dur_score"],
            0.5,
            0.0,
            "score",
            "span without outages, active hours",
        ),
        Evidence(
            "same_schedule_hosts",
            float(others),
            float(det.prevalence_free),
            0.0,
            "hosts",
            "prevalence discount starts above this many other hosts",
        ),
    ]
    severity = 2 if storm else (4 if (final >= 0.9 and n >= 48) or upload else 3)
    confidence = round(100 * final * (0.5 + 0.5 * min(1.0, n / 48)))
    facts = {
        "period_s": round(period, 3),
        "jitter": round(reg["jitter"], 3),
        "checkins": n,
        "connections": p["n"],
        "failed_fraction": round(failed_frac, 3),
        "bytes_out": p["bytes_out"],
        "bytes_in": p["bytes_in"],
        "span_s": round(span, 1),
        "score": round(final, 3),
        "raw_score": round(reg["score"], 3),
        "prevalence_discount": round(discount, 3),
        "same_schedule_hosts": others,
        "missed_fraction": round(reg["missed"], 3),
        "outages": reg["outages"],
        "folded": reg["folded"],
        "sub_scores": {
            k: round(float(reg[k]), 3)
            for k in (
                "ts_score",
                "ts_skew",
                "ts_madm",
                "ts_cv",
                "ds_score",
                "ds_skew",
                "ds_madm",
                "hist_score",
                "hist_cv",
                "hist_bimodal",
                "dur_score",
                "coverage",
                "consistency",
                "halves",
            )
        },
        "size_median": round(reg["size_median"], 1),
        "name": p["name"],
        "series": "domain" if is_domain else "address",
    }
    title = ("Periodic failed connections" if storm else "Beaconing") + f" to {where}"
    return Finding(
        detector=det.name,
        kind=det.kind,
        entity=p["src"],
        episode=f"{p['target']}:{port}",
        start=p["first"],
        end=p["last"],
        score=float(min(1.0, final)),
        severity_id=severity,
        confidence=min(100, confidence),
        attacks=tuple(attacks),
        title=title,
        sentence=sentence,
        evidence=evidence,
        facts=facts,
        src=p["src"],
        dst=tuple(dsts),
        dst_ports=(port,),
        domain=dom,
        direction="outbound",
        count=p["n"],
        positions=p["positions"],
        analytic="Statistical",
    )
