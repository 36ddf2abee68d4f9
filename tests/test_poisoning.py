"""Poisoning resistance (MITRE ATLAS AML.T0020): a slow 10 %/day outbound ramp then exfiltration.

The attacker raises one workstation's outbound volume by 10 % a day for 14 days (3.8× in
the end) and then uploads a large archive. The adaptive baselines follow a slow ramp by
design; the frozen reference does not, so the host's drift relative to its peers is
reported as ``baseline_drift``, and the baseline never silently absorbs the change; the
final upload is alerted by the exfil detector through the engine (with the host-behaviour
score attached to the incident).
"""

from __future__ import annotations

import numpy as np

from pipelines.detectors.base import Finding
from pipelines.detectors.drift import DriftMonitor
from pipelines.detectors.exfil import ExfilDetector
from pipelines.detectors.host_behaviour import HostBehaviourDetector
from pipelines.engine import Engine, EngineConfig
from pipelines.records import DnsBatch, FlowBatch, HomeNetworks, annotate_direction
from tests.test_lateral import run_windows

DAY = 86400.0
T0 = 1_700_006_400.0
HOSTS = [f"10.1.0.{10 + i}" for i in range(16)]
VICTIM = HOSTS[5]
REF_DAYS, RAMP_DAYS = 3, 14


def office(
    days: int, ramp: dict[str, float] | None = None, exfil_day: int | None = None, seed: int = 3
) -> FlowBatch:
    """Hourly office traffic (vectorised): each host makes ~8 HTTPS uploads an office hour.
    ``ramp[host]`` is the daily growth factor of its upload from day ``REF_DAYS`` on."""
    rng = np.random.default_rng(seed)
    ts, src, bo = [], [], []
    for day in range(days):
        for hour in range(8, 18):
            t = T0 + day * DAY + hour * 3600.0
            per = rng.poisson(8, len(HOSTS))
            hosts = np.repeat(np.arange(len(HOSTS)), per)
            vol = rng.lognormal(11.0, 0.7, len(hosts))
            for h, g in (ramp or {}).items():
                k = max(0, min(day, REF_DAYS + RAMP_DAYS) - REF_DAYS + 1) if day >= REF_DAYS else 0
                vol[hosts == HOSTS.index(h)] *= g**k
            ts.append(t + rng.uniform(0, 3500, len(hosts)))
            src.append(hosts)
            bo.append(vol)
    if exfil_day is not None:
        ts.append(np.array([T0 + exfil_day * DAY + 14 * 3600.0 + i * 30.0 for i in range(40)]))
        src.append(np.full(40, HOSTS.index(VICTIM)))
        bo.append(np.full(40, 25e6))  # 1 GB in 20 minutes
    tt = np.concatenate(ts)
    s = np.array(HOSTS, dtype=object)[np.concatenate(src)]
    b = np.concatenate(bo).astype(np.int64)
    n = len(tt)
    fb = FlowBatch.from_columns(
        {
            "ts_start": tt,
            "ts_end": tt + 2.0,
            "src": s,
            "dst": np.array([f"52.96.0.{i % 50}" for i in range(n)], dtype=object),
            "dst_port": np.full(n, 443),
            "proto": np.full(n, 6),
            "bytes_out": b,
            "bytes_in": (b * 3).astype(np.int64),
            "conn_state": np.full(n, "SF", dtype=object),
        }
    )
    return annotate_direction(fb, HomeNetworks.default()).sorted_by_time()


def _drift(found: list[Finding]) -> list[Finding]:
    return [f for f in found if f.kind == "baseline_drift"]


def test_ramp_is_reported_as_baseline_drift_and_not_absorbed() -> None:
    """Through the engine, with the exfil detector: the drift and the final upload are alerted."""
    days = REF_DAYS + RAMP_DAYS + 2
    flows = office(days, ramp={VICTIM: 1.10}, exfil_day=days - 1)
    det = HostBehaviourDetector(warmup_windows=20)
    eng = Engine(EngineConfig(window=300.0, lateness=120.0), detectors=[ExfilDetector(), det])
    alerts = []
    for d in range(days):
        day = (flows.ts_start >= T0 + d * DAY) & (flows.ts_start < T0 + (d + 1) * DAY)
        alerts += eng.process(flows.take(day), DnsBatch.empty())
    alerts += eng.flush()
    assert {a.entity for a in alerts} == {VICTIM}, [a.sentence for a in alerts]
    drift = [a for a in alerts if a.kind == "baseline_drift"]
    assert drift, "the slow ramp was silently absorbed"
    first = min(a.start for a in drift)
    assert (
        first < T0 + (REF_DAYS + RAMP_DAYS) * DAY
    )  # reported during the ramp, before the exfiltration
    f = drift[0]
    assert f.facts["feature"] in ("bytes_out", "bytes_in") and f.facts["atlas"] == "AML.T0020"
    assert f.facts["adaptive"] > 1.5 * f.facts["reference"]
    exfil = [a for a in alerts if a.kind == "exfiltration"]
    assert exfil and exfil[0].start >= T0 + (days - 2) * DAY
    assert (
        exfil[0].host_score is not None and exfil[0].host_score >= det.threshold
    )  # host_behaviour raises it
    # the frozen reference never moved
    ids = det.drift.daily.known([VICTIM])
    assert float(det.drift.daily.reference(ids)[0, 0]) < 1.3 * float(
        np.median(det.drift.daily.reference(det.drift.daily.known(HOSTS))[:, 0])
    )


def test_no_drift_without_ramp_and_network_wide_change_is_not_drift() -> None:
    days = REF_DAYS + RAMP_DAYS
    det = HostBehaviourDetector(warmup_windows=20)
    assert _drift(run_windows([det], office(days), DnsBatch.empty(), length=3600.0)) == []
    everyone = {
        h: 1.10 for h in HOSTS
    }  # the whole network grows (a new backup agent): peers drift too
    det = HostBehaviourDetector(warmup_windows=20)
    assert (
        _drift(run_windows([det], office(days, ramp=everyone), DnsBatch.empty(), length=3600.0))
        == []
    )


def test_exfiltration_day_is_not_learnt_by_the_daily_baseline() -> None:
    m = DriftMonitor(("bytes_out",), reference_days=3)
    for day in range(6):
        m.add(["a", "b", "c", "d", "e"], np.full((5, 1), 1e8))
        m.learn_day(m.close_day(day))
    before = float(m.daily.typical(m.daily.known(["a"]))[0, 0])
    m.add(["a"], np.array([[5e10]]))  # 500× in one day
    m.learn_day(m.close_day(6))
    assert float(m.daily.typical(m.daily.known(["a"]))[0, 0]) == before
