"""Beacon detector: the real periodic-curl capture, jitter / missed check-ins / long sleeps,
prevalence discount, failure storms, allow-lists, rotating addresses, bounded state, and
silence on simulated benign background (periodic telemetry, EDR, updates, sync polls)."""

from __future__ import annotations

import itertools
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipelines.detectors.base import Finding, Window
from pipelines.detectors.beacon import BeaconDetector
from pipelines.engine import Engine, EngineConfig
from pipelines.records import DnsBatch, FlowBatch, HomeNetworks, annotate_direction

W = 300.0
T0 = 1_700_006_400.0
HOME = HomeNetworks.default()


def flows(rows: list[dict[str, Any]], home: HomeNetworks = HOME) -> FlowBatch:
    for r in rows:
        r.setdefault("ts_end", r["ts_start"] + 0.5)
        r.setdefault("proto", 6)
        r.setdefault("conn_state", "SF")
    return annotate_direction(FlowBatch.from_rows(rows).sorted_by_time(), home)


def series(
    src: str, dst: str, port: int, times: np.ndarray, out: int = 600, inb: int = 1400, **extra: Any
) -> list[dict[str, Any]]:
    return [{"ts_start": float(t), "src": src, "dst": dst, "dst_port": port, "bytes_out": out,
             "bytes_in": inb, **extra} for t in times]  # fmt: skip


def drive(det: BeaconDetector, fb: FlowBatch, dns: DnsBatch | None = None) -> list[Finding]:
    """Feed records window by window (as the engine does) and collect every finding."""
    dns = dns if dns is not None else DnsBatch.empty()
    t_all = np.concatenate([fb.ts_start, dns.ts])
    w0, w1 = int(t_all.min() // W), int(t_all.max() // W)
    fw, dw = np.floor(fb.ts_start / W), np.floor(dns.ts / W)
    out: list[Finding] = []
    for i in range(w0, w1 + 1):
        win = Window.of(i, W)
        det.ingest(fb.take(fw == i), dns.take(dw == i), win)
        out += det.process_window(win)
    return out


def warm_background(hosts: list[str], t0: float) -> list[dict[str, Any]]:
    """One early connection per host so the hosts are past the detector's warm-up."""
    return [{"ts_start": t0 - 3600.0, "src": h, "dst": "93.184.216.34", "dst_port": 443,
             "bytes_out": 500, "bytes_in": 900} for h in hosts]  # fmt: skip


def decode(path: Path, home: HomeNetworks) -> tuple[FlowBatch, DnsBatch]:
    from stream.decoders.pcap import PcapDecoder

    res = list(PcapDecoder().decode_file(str(path)))
    fb = FlowBatch.concat([r.flows for r in res]).sorted_by_time()
    db = DnsBatch.concat([r.dns for r in res]).sorted_by_time()
    return annotate_direction(fb, home), annotate_direction(db, home)


# ---------------------------------------------------------------------------- real capture
def test_beacon_https_capture_through_engine(datasets: Path) -> None:
    """22 curl TLS sessions every 2-3.6 s (median 3.0 s) over 67 s: alerted with the period."""
    fb, db = decode(
        datasets / "beacon-https" / "test-cc-capture-2.pcap", HomeNetworks(["147.32.80.0/24"])
    )
    # the capture is 67 s long and the host was never seen before: an operator replaying it
    # alone turns the host warm-up off
    det = BeaconDetector(warmup_seconds=0)
    eng = Engine(EngineConfig(window=W, lateness=120.0), detectors=[det])
    incidents = eng.process(fb, db) + eng.flush()
    beacons = [i for i in incidents if i.detector == "beacon"]
    assert [(i.entity, i.dst, i.dst_ports) for i in beacons] == [
        ("147.32.80.37", ("141.193.213.20",), (443,))
    ]
    inc = beacons[0]
    assert inc.kind == "beaconing" and "T1071.001" in inc.attacks and "T1573" in inc.attacks
    assert 2.7 <= inc.facts["period_s"] <= 3.3  # truth: median 3.0 s
    assert inc.facts["checkins"] == 22
    assert "every 3.0 s" in inc.sentence
    subs = inc.facts["sub_scores"]
    assert {"ts_score", "ds_score", "hist_score", "dur_score", "ts_cv"} <= set(subs)
    assert subs["dur_score"] == 1.0  # a short dense series is not vetoed by coverage
    assert inc.positions and all(o.endswith(".pcap") for o, _ in inc.positions)


def test_beacon_https_capture_respects_warm_up_by_default(datasets: Path) -> None:
    home = HomeNetworks(["147.32.80.0/24"])
    fb, db = decode(datasets / "beacon-https" / "test-cc-capture-2.pcap", home)
    assert drive(BeaconDetector(), fb, db) == []
    # the same capture from a host the sensor has known for an hour is alerted at once
    warm = flows(warm_background(["147.32.80.37"], float(fb.ts_start.min())), home)
    found = drive(BeaconDetector(), FlowBatch.concat([warm, fb]).sorted_by_time(), db)
    assert [f.episode for f in found] == ["141.193.213.20:443"]


# ---------------------------------------------------------------------------- synthetic timing
@pytest.mark.parametrize("period", [2.0, 60.0, 3600.0])
@pytest.mark.parametrize("jitter", [0.1, 0.3, 0.5])
def test_jittered_beacons_with_missed_checkins(period: float, jitter: float) -> None:
    rng = np.random.default_rng(int(period * 10 + jitter * 100))
    n = 80
    gaps = period * (1 - rng.uniform(0, jitter, n))  # Cobalt-Strike style: sleep minus up to jitter
    t = T0 + np.cumsum(gaps)
    t = t[rng.random(n) >= 0.12]  # ~12 % missed check-ins
    rows = warm_background(["10.0.0.5"], T0) + series("10.0.0.5", "198.51.100.7", 4443, t)
    found = drive(BeaconDetector(), flows(rows))
    assert found, f"period {period} jitter {jitter} not detected"
    f = found[-1]
    assert f.entity == "10.0.0.5" and f.episode == "198.51.100.7:4443" and f.kind == "beaconing"
    mean_sleep = period * (1 - jitter / 2)
    assert 0.75 * mean_sleep <= f.facts["period_s"] <= 1.25 * period
    assert f.attacks == ("T1071", "T1571")  # not a web port, not a standard port


def test_hourly_beacon_over_days_is_found_and_reported_once_an_hour_at_most() -> None:
    rng = np.random.default_rng(5)
    t = T0 + np.cumsum(3600 * (1 + rng.uniform(-0.2, 0.2, 72)))
    rows = warm_background(["10.0.0.8"], T0) + series("10.0.0.8", "203.0.113.80", 443, t)
    found = drive(BeaconDetector(), flows(rows))
    assert found and all(f.episode == "203.0.113.80:443" for f in found)
    assert abs(found[-1].facts["period_s"] - 3600) < 400
    ends = [f.end for f in found]
    assert len(found) <= 72 and all(b - a >= 3000 for a, b in itertools.pairwise(ends))


def test_random_traffic_is_not_a_beacon() -> None:
    rng = np.random.default_rng(9)
    rows = warm_background([f"10.0.1.{i}" for i in range(60)], T0)
    for i in range(60):  # Poisson and bursty human-driven sessions with varying sizes
        mean = float(rng.choice([20.0, 120.0, 900.0]))
        t = T0 + np.cumsum(rng.exponential(mean, 60))
        if i % 2:
            t = np.sort(np.concatenate([s + np.cumsum(rng.exponential(4, 10)) for s in t[::10]]))
        sizes = rng.lognormal(8, 1.2, len(t)).astype(int)
        rows += [{"ts_start": float(x), "src": f"10.0.1.{i}", "dst": f"203.0.113.{i}", "dst_port": 443,
                  "bytes_out": int(s), "bytes_in": int(s) * 3} for x, s in zip(t, sizes, strict=True)]  # fmt: skip
    assert drive(BeaconDetector(), flows(rows)) == []


def test_failure_storm_is_reported_only_as_low_severity_periodic_failures() -> None:
    t = T0 + np.arange(0, 1800, 1.0)
    rows = warm_background(["10.0.0.9"], T0) + series(
        "10.0.0.9", "198.51.100.99", 4444, t, out=60, inb=0, conn_state="S0", bidirectional=True
    )
    found = drive(BeaconDetector(), flows(rows))
    assert found and all(f.severity_id == 2 for f in found)
    assert (
        found[0].title.startswith("Periodic failed connections")
        and found[0].facts["failed_fraction"] == 1.0
    )
    assert abs(found[0].facts["period_s"] - 1.0) < 0.1
    # failures at random times are nothing at all
    rng = np.random.default_rng(2)
    tr = T0 + np.cumsum(rng.exponential(1.0, 1800))
    rows = warm_background(["10.0.0.9"], T0) + series(
        "10.0.0.9", "198.51.100.99", 4444, tr, out=60, inb=0, conn_state="REJ"
    )
    assert drive(BeaconDetector(), flows(rows)) == []


# ---------------------------------------------------------------------------- network context
def test_prevalence_discount_and_allow_lists() -> None:
    rng = np.random.default_rng(3)
    hosts = [f"10.0.2.{i}" for i in range(40)]
    rows = warm_background(hosts, T0)
    for i, h in enumerate(hosts):  # every host polls the same telemetry service every 5 min
        t = T0 + i * 7.0 + np.cumsum(300 + rng.normal(0, 2, 40))
        rows += series(h, "13.69.109.130", 443, t)
    t = T0 + np.cumsum(
        300 + rng.normal(0, 20, 40)
    )  # one host beacons to a destination nobody else uses
    rows += series(hosts[3], "198.51.100.7", 443, t)
    found = drive(BeaconDetector(), flows(rows))
    assert {(f.entity, f.episode) for f in found} == {(hosts[3], "198.51.100.7:443")}
    assert (
        found[0].facts["same_schedule_hosts"] == 0 and found[0].facts["prevalence_discount"] == 1.0
    )
    fb = flows(rows)
    for det in (
        BeaconDetector(allow_destinations=("198.51.100.0/24",)),
        BeaconDetector(allow_hosts=(hosts[3],)),
    ):
        assert drive(det, fb) == []


def test_rotating_addresses_are_tracked_per_registered_domain_and_allow_listed_by_domain() -> None:
    rng = np.random.default_rng(4)
    ips = ["203.0.113.10", "203.0.113.11", "198.51.100.20", "198.51.100.21"]
    t = T0 + np.cumsum(120 + rng.normal(0, 10, 60))
    pick = rng.integers(0, 4, len(t))
    rows = warm_background(["10.0.0.7"], T0)
    rows += [{"ts_start": float(x), "src": "10.0.0.7", "dst": ips[k], "dst_port": 443, "bytes_out": 700,
              "bytes_in": 1800} for x, k in zip(t, pick.tolist(), strict=True)]  # fmt: skip
    dns = DnsBatch.from_rows(
        [
            {
                "ts": T0 + 1.0 + i,
                "src": "10.0.0.7",
                "dst": "10.0.0.53",
                "query": f"cdn{i}.evil-c2.example.net",
                "qtype": 1,
                "rcode": 0,
                "answers_n": 1,
                "answers": ip,
            }
            for i, ip in enumerate(ips)
        ]
    )
    dns = annotate_direction(dns, HOME)
    found = drive(BeaconDetector(), flows(rows), dns)
    dom = [f for f in found if f.episode == "example.net:443"]
    assert dom and set(dom[-1].dst) == set(ips) and dom[-1].domain == "example.net"
    assert abs(dom[-1].facts["period_s"] - 120) < 15
    assert drive(BeaconDetector(allow_domains=("example.net",)), flows(rows), dns) == []


def test_upload_over_the_channel_adds_t1041() -> None:
    t = T0 + np.cumsum(np.full(40, 60.0) + np.random.default_rng(1).normal(0, 3, 40))
    rows = warm_background(["10.0.0.6"], T0) + series(
        "10.0.0.6", "198.51.100.50", 443, t, out=400_000, inb=2_000
    )
    found = drive(BeaconDetector(), flows(rows))
    assert found and "T1041" in found[-1].attacks and found[-1].severity_id == 4


# ---------------------------------------------------------------------------- state
def test_state_is_bounded_and_pickles() -> None:
    det = BeaconDetector(max_pairs=500, ring_size=64)
    rng = np.random.default_rng(0)
    for w in range(20):
        n = 1000
        fb = flows([{"ts_start": T0 + w * W + float(x), "src": f"10.1.{k % 50}.{k % 200}",
                     "dst": f"198.18.{w}.{k % 250}", "dst_port": 443, "bytes_out": 300, "bytes_in": 300}
                    for k, x in enumerate(rng.uniform(0, W, n))])  # fmt: skip
        win = Window.of(int(T0 // W) + w, W)
        det.ingest(fb, DnsBatch.empty(), win)
        det.process_window(win)
        assert det.entities() <= 500
    assert det.pairs.row_bytes() == 64 * 12 + 4 * 6 + 8 * 6 + 1
    # one-off pairs sit in the smallest ring tier: far below a full ring per row
    assert det.pairs.nbytes() <= 500 * (4 * 12 + 4 * 6 + 8 * 6 + 1) * 2
    clone = pickle.loads(pickle.dumps(det))
    assert clone.entities() == det.entities() and clone.params() == det.params()


def test_tiered_rings_keep_the_last_ring_connections_in_order() -> None:
    """A series that grows through the tiers holds exactly what one fixed ring would."""
    from pipelines.detectors._pairs import PairTable

    rng = np.random.default_rng(11)
    t = PairTable(ring=32, max_pairs=8, tiers=(2, 8))
    assert t.caps == (2, 8, 32)
    times, sizes = [], []
    clock = 0.0
    for size in [1, 1, 3, 2, 5, 30, 7, 1, 40]:
        ts = clock + np.sort(rng.uniform(0, 10, size))
        clock += 10
        sz = rng.integers(1, 1000, size).astype(np.float64)
        rows = t.rows([("h", "d", 1)] * size + [("o", str(clock), 2)], now=clock)
        t.append(rows, np.r_[ts, clock], np.r_[sz, 1.0], np.zeros(size + 1), np.zeros(size + 1),
                 np.zeros(size + 1, bool))  # fmt: skip
        times += ts.tolist()
        sizes += sz.tolist()
        got_t, got_s = t.series(int(rows[0]))
        assert got_t.tolist() == times[-32:] and got_s.tolist() == sizes[-32:]
        assert int(t.n[rows[0]]) == len(times)
    assert int(t.tier[rows[0]]) == 2 and int(t.tier[rows[-1]]) == 0
    assert t.evicted > 0  # the one-off keys churned through 8 rows, their slots were reused
    assert len(t.tts[0]) <= 16


# ---------------------------------------------------------------------------- simulated network
@pytest.fixture(scope="module")
def simulated() -> tuple[list[tuple[FlowBatch, DnsBatch]], dict[str, Any]]:
    from pipelines.simulate.simulation import SimConfig, Simulation

    sim = Simulation(SimConfig(hosts=20, days=1.0, seed=3, scenarios=("beacon",)))
    return list(sim.batches(chunk_seconds=3600)), sim.truth()


def test_simulated_network_only_the_beacon_is_alerted(
    simulated: tuple[list[tuple[FlowBatch, DnsBatch]], dict[str, Any]],
) -> None:
    batches, truth = simulated
    eng = Engine(EngineConfig(window=W, lateness=120.0), detectors=[BeaconDetector()])
    incidents = [i for f, d in batches for i in eng.process(f, d)] + eng.flush()
    want = [x for x in truth["incidents"] if x["kind"] == "beaconing"]
    assert len(want) == 1
    got = {(i.entity, i.dst) for i in incidents}
    assert got == {(want[0]["src"], (want[0]["dst"],))}, (
        got
    )  # and nothing from the benign background
    assert all(50 <= i.facts["period_s"] <= 70 for i in incidents)  # scenario: every 60 s


def test_slow_beacon_survives_table_churn() -> None:
    """A 20-min beacon keeps its series while one-off pairs overflow the table every window.

    Sizing rule: ``max_pairs`` must exceed the new pairs seen during one beacon period
    (here 4 windows × 350 = 1 400 < 2 000); established series are then protected.
    """
    rng = np.random.default_rng(8)
    t = T0 + np.cumsum(1200 * (1 + rng.uniform(-0.2, 0.2, 48)))
    rows = warm_background(["10.0.0.4"], T0) + series("10.0.0.4", "203.0.113.44", 443, t)
    for w in range(int((t[-1] - T0) // W) + 1):  # 350 new destinations per window
        rows += [{"ts_start": T0 + w * W + float(x), "src": f"10.3.0.{k % 200}", "dst": f"198.18.{w % 250}.{k}",
                  "dst_port": 443, "bytes_out": 300, "bytes_in": 900}
                 for k, x in enumerate(rng.uniform(0, W, 350))]  # fmt: skip
    det = BeaconDetector(max_pairs=2000)
    found = drive(det, flows(rows))
    assert det.pairs.evicted > 10_000 and det.entities() <= 2000
    assert {f.episode for f in found} == {"203.0.113.44:443"}
    assert abs(found[-1].facts["period_s"] - 1200) < 150


def test_series_table_grows_with_the_hosts_and_stays_bounded_per_host() -> None:
    rows = [{"ts_start": T0 + i * 0.1, "src": f"10.4.{i // 250}.{i % 250}", "dst": f"198.18.0.{k}",
             "dst_port": 443, "bytes_out": 300, "bytes_in": 900} for i in range(300) for k in range(3)]  # fmt: skip
    fb = flows(rows)
    for per_host, most in ((0.0, 100), (2.0, 600)):
        det = BeaconDetector(max_pairs=100, pairs_per_host=per_host)
        drive(det, fb)
        assert det.entities() == most  # 900 distinct pairs offered: max(100, 2 x 300 hosts) kept
        assert det.pairs.evicted + det.pairs.dropped == 900 - most
