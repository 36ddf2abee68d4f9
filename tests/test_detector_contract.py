"""Contract suite run over every registered detector whose module imports.

Each detector, built with its default parameters, is fed one small deterministic stream
(32 internal hosts, 36 h of 5-minute windows: web browsing, DNS, internal directory
traffic; from hour 26 an exfiltration, a beacon, a DNS tunnel and SMB/RPC/WinRM fan-out;
the same attacks by a brand-new host at hour 30 and, for a fresh detector, in the very
first windows). It must:

* not change itself in ``score`` (pickle before == after) — score before learn;
* not mutate its input batches;
* pickle mid-stream and then produce exactly the same findings as the original;
* produce identical findings for identical input;
* return its ``__init__`` arguments from ``params()`` and be rebuilt by ``make_detector``;
* stay silent on a fresh entity during its first windows (warm-up);
* keep state bounded (bytes per entity) with 20 000 distinct hosts and destinations;
* close empty windows cheaply;
* emit well-formed findings.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import inspect
import pickle
import re
import time
from typing import Any

import numpy as np
import pytest

from pipelines.detectors import Detector, Finding, Window, available, make_detector
from pipelines.detectors import detector_class as _cls
from pipelines.records import DnsBatch, FlowBatch, HomeNetworks, annotate_direction

W = 300.0
T0 = 1_700_006_400.0  # a UTC midnight
N_WIN = 36 * 12
ATTACK_W = 26 * 12
FRESH_W = 30 * 12
WARM_WINDOWS = 6
HOSTS = [f"10.9.0.{i}" for i in range(1, 33)]
FRESH = "10.9.7.7"
EARLY = HOSTS[9]
DC = "10.9.0.250"
EXT = [f"93.184.{i // 10}.{i % 10 + 1}" for i in range(40)]
DOMAINS = [f"site{i}.example.com" for i in range(40)]
KINDS = {
    "exfiltration", "beaconing", "dns_tunnel", "lateral_movement", "discovery",
    "brute_force", "baseline_drift", "host_anomaly",
}  # fmt: skip
ATTACK = re.compile(r"^T\d{4}(\.\d{3})?$")
HOME = HomeNetworks.default()


def _attacks(
    rows: list[dict[str, Any]], dns: list[dict[str, Any]], host: str, t: float, rng: Any
) -> None:
    """One window of every attack by ``host`` starting at ``t``."""
    for k in range(4):  # exfiltration: 300 MB per window to a new address
        rows.append({"ts_start": t + 10 + k * 60, "src": host, "dst": "203.0.113.50", "dst_port": 443,
                     "proto": 6, "bytes_out": 75_000_000, "bytes_in": 200_000})  # fmt: skip
    for k in range(5):  # beacon every 60 s
        rows.append({"ts_start": t + 5 + 60 * k + float(rng.uniform(-1, 1)), "src": host,
                     "dst": "198.51.100.7", "dst_port": 443, "proto": 6, "bytes_out": 420,
                     "bytes_in": 1300})  # fmt: skip
    for k in range(40):  # DNS tunnel: long encoded labels, TXT
        label = base64.b32encode(rng.bytes(30)).decode().rstrip("=").lower()
        dns.append({"ts": t + 7 * k, "src": host, "dst": DC, "query": f"{label[:40]}.{label[40:]}.tun.example.org",
                    "qtype": 16, "rcode": 0, "answers_n": 1, "resp_bytes": 220})  # fmt: skip
    for k, port in enumerate((445, 135, 5985) * 6):  # admin-protocol fan-out
        rows.append({"ts_start": t + 100 + k, "src": host, "dst": f"10.9.0.{(k % 18) + 12}", "dst_port": port,
                     "proto": 6, "bytes_out": 4000, "bytes_in": 6000})  # fmt: skip


def window(w: int) -> tuple[FlowBatch, DnsBatch]:
    """The records of window ``w`` (deterministic)."""
    rng = np.random.default_rng([7, w])
    t = T0 + w * W
    office = 8 <= (w // 12) % 24 < 18
    rows: list[dict[str, Any]] = []
    dns: list[dict[str, Any]] = []
    for i, h in enumerate(HOSTS):
        for _ in range(int(rng.poisson(4.0 if office else 0.5))):
            j = int(rng.zipf(1.5)) % len(EXT)
            ts = t + float(rng.uniform(0, W))
            dns.append({"ts": ts - 0.05, "src": h, "dst": DC, "query": DOMAINS[j], "qtype": 1, "rcode": 0,
                        "answers_n": 1, "answers": EXT[j], "resp_bytes": 90})  # fmt: skip
            rows.append({"ts_start": ts, "src": h, "dst": EXT[j], "dst_port": 443, "proto": 6,
                         "bytes_out": int(rng.integers(500, 3000)),
                         "bytes_in": int(rng.integers(2000, 90_000))})  # fmt: skip
        if w % 6 == i % 6:  # directory traffic to the DC
            rows.append({"ts_start": t + float(rng.uniform(0, W)), "src": h, "dst": DC, "dst_port": 389,
                         "proto": 6, "bytes_out": 900, "bytes_in": 2500})  # fmt: skip
    if w < WARM_WINDOWS:
        _attacks(rows, dns, EARLY, t, rng)
    if ATTACK_W <= w < ATTACK_W + 12:
        _attacks(rows, dns, HOSTS[5], t, rng)
    if FRESH_W <= w < FRESH_W + WARM_WINDOWS:
        _attacks(rows, dns, FRESH, t, rng)
    for n, r in enumerate(rows):
        r.setdefault("ts_end", r["ts_start"] + 1.0)
        r.update(
            src_port=40000 + n % 20000,
            bidirectional=True,
            origin="contract",
            offset=w * 10_000 + n,
            conn_state="SF",
            tcp_flags=0x1B,
            pkts_out=max(r["bytes_out"] // 1000, 1),
            pkts_in=max(r["bytes_in"] // 1000, 1),
        )
    for n, r in enumerate(dns):
        r.update(dst_port=53, proto=17, origin="contract-dns", offset=w * 10_000 + n)
    flows = annotate_direction(FlowBatch.from_rows(rows).sorted_by_time(), HOME)
    return flows, annotate_direction(DnsBatch.from_rows(dns).sorted_by_time(), HOME)


@pytest.fixture(scope="module")
def stream() -> list[tuple[FlowBatch, DnsBatch]]:
    return [window(w) for w in range(N_WIN)]


def _digest(batch: Any) -> str:
    h = hashlib.sha256()
    for name in batch.FIELDS:
        arr = getattr(batch, name)
        h.update(repr(arr.tolist()).encode() if arr.dtype == object else arr.tobytes())
    return h.hexdigest()


def _run(det: Detector, stream: list[tuple[FlowBatch, DnsBatch]], lo: int = 0, hi: int = N_WIN,
         check_score: bool = False) -> list[list[Finding]]:  # fmt: skip
    out = []
    for w in range(lo, hi):
        flows, dns = stream[w]
        win = Window.of(w + int(T0 // W), W)
        det.ingest(flows, dns, win)
        if check_score and (
            w % 24 == 0 or ATTACK_W <= w < ATTACK_W + 12 or FRESH_W <= w < FRESH_W + 6
        ):
            features = det.close(win)
            before = pickle.dumps(det)
            found = det.score(features)
            assert pickle.dumps(det) == before, f"score() changed the detector in window {w}"
            det.learn(features, found)
        else:
            found = det.process_window(win)
        out.append(found)
    return out


def _flat(found: list[list[Finding]]) -> list[dict[str, Any]]:
    return [dataclasses.asdict(f) for fs in found for f in fs]


@pytest.fixture(scope="module", params=available())
def run(
    request: pytest.FixtureRequest, stream: list[tuple[FlowBatch, DnsBatch]]
) -> tuple[str, list[list[Finding]]]:
    """One checked pass per detector: score purity is asserted along the way."""
    name = request.param
    return name, _run(make_detector(name), stream, check_score=True)


def test_score_does_not_mutate_and_learns_after(run: tuple[str, list[list[Finding]]]) -> None:
    _name, found = run
    assert len(found) == N_WIN  # every window went through close/score/learn with pure score


@pytest.mark.parametrize("name", available())
def test_inputs_are_not_mutated(name: str, stream: list[tuple[FlowBatch, DnsBatch]]) -> None:
    det = make_detector(name)
    picks = [0, 1, ATTACK_W, ATTACK_W + 1, FRESH_W]
    digests = {w: (_digest(stream[w][0]), _digest(stream[w][1])) for w in picks}
    _run(det, stream, 0, FRESH_W + 1)
    for w in picks:
        assert (_digest(stream[w][0]), _digest(stream[w][1])) == digests[w], f"window {w} mutated"


def test_deterministic(
    run: tuple[str, list[list[Finding]]], stream: list[tuple[FlowBatch, DnsBatch]]
) -> None:
    name, found = run
    again = _run(make_detector(name), stream)
    assert _flat(again) == _flat(found)


def test_pickle_round_trip_mid_stream(
    run: tuple[str, list[list[Finding]]], stream: list[tuple[FlowBatch, DnsBatch]]
) -> None:
    name, found = run
    det = make_detector(name)
    half = ATTACK_W - 6
    _run(det, stream, 0, half)
    clone = pickle.loads(pickle.dumps(det))
    assert type(clone) is type(det) and clone.params() == det.params()
    rest = _run(clone, stream, half, N_WIN)
    assert _flat(rest) == _flat(found[half:])


@pytest.mark.parametrize("name", available())
def test_params_are_init_args(name: str) -> None:
    cls = _cls(name)
    det = cls()
    sig = inspect.signature(cls.__init__)
    defaults = {
        p.name: p.default
        for p in sig.parameters.values()
        if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    }
    params = det.params()
    assert set(params) == set(defaults)
    for k, v in defaults.items():
        assert params[k] == v or (isinstance(v, list | tuple) and tuple(params[k]) == tuple(v)), k
    again = make_detector(name, **params)
    assert type(again) is cls and again.params() == params
    assert isinstance(det.name, str) and det.name == name


def test_warm_up_respected(run: tuple[str, list[list[Finding]]]) -> None:
    name, found = run
    early = [f for fs in found[:WARM_WINDOWS] for f in fs]
    assert not early, f"{name}: findings before warm-up: {[f.title for f in early]}"
    fresh = [f for fs in found[FRESH_W : FRESH_W + WARM_WINDOWS] for f in fs if f.entity == FRESH]
    assert not fresh, f"{name}: findings on a brand-new host: {[f.title for f in fresh]}"


def _distinct_batch(k0: int, n: int, w: int) -> tuple[FlowBatch, DnsBatch]:
    i = np.arange(k0, k0 + n)
    src = np.array(
        [f"10.{64 + j // 65000}.{(j // 250) % 260}.{j % 250 + 1}" for j in i.tolist()], dtype=object
    )
    dst = np.array(
        [f"45.{j // 65000}.{(j // 250) % 250}.{j % 250 + 1}" for j in i.tolist()], dtype=object
    )
    t = T0 + w * W + np.linspace(0, W - 1, n)
    flows = FlowBatch.from_columns(
        {
            "ts_start": t,
            "ts_end": t + 1,
            "src": src,
            "dst": dst,
            "dst_port": np.full(n, 443),
            "proto": np.full(n, 6),
            "bytes_out": np.full(n, 1500),
            "bytes_in": np.full(n, 9000),
            "bidirectional": np.ones(n, bool),
            "conn_state": np.full(n, "SF", dtype=object),
            "tcp_flags": np.full(n, 0x1B),
            "pkts_out": np.full(n, 3),
            "pkts_in": np.full(n, 8),
        }
    )
    q = np.array([f"h{j}.d{j}.example.net" for j in i.tolist()], dtype=object)
    dns = DnsBatch.from_columns({"ts": t, "src": src, "dst": np.full(n, DC, dtype=object), "query": q,
                                 "qtype": np.ones(n, np.int32), "rcode": np.zeros(n, np.int32)})  # fmt: skip
    return annotate_direction(flows, HOME), annotate_direction(dns, HOME)


@pytest.mark.parametrize("name", available())
def test_state_is_bounded_per_entity(name: str) -> None:
    det = make_detector(name)
    empty = len(pickle.dumps(det))
    total, per = 20_000, 2_000
    sizes = []
    for w in range(total // per):
        flows, dns = _distinct_batch(w * per, per, w)
        win = Window.of(w + int(T0 // W), W)
        det.ingest(flows, dns, win)
        det.process_window(win)
        sizes.append(len(pickle.dumps(det)))
    per_entity = (sizes[-1] - empty) / total
    assert per_entity < 4096, f"{name}: {per_entity:.0f} bytes per host"
    assert det.entities() <= 3 * total  # counts entities, bounded by what was seen


@pytest.mark.parametrize("name", available())
def test_empty_windows_are_cheap(name: str, stream: list[tuple[FlowBatch, DnsBatch]]) -> None:
    det = make_detector(name)
    _run(det, stream, 0, 24)
    base = 24 + int(T0 // W)
    t = time.perf_counter()
    for w in range(base, base + 1000):
        det.process_window(Window.of(w, W))
    assert time.perf_counter() - t < 5.0


def test_findings_are_well_formed(run: tuple[str, list[list[Finding]]]) -> None:
    name, found = run
    flat = [f for fs in found for f in fs]
    # detectors with a warm-up longer than the stream (lateral: 3 days) may have none here
    for f in flat:
        assert f.detector == name and f.kind in KINDS
        assert isinstance(f.entity, str) and f.entity
        assert 1 <= f.severity_id <= 5 and 0 <= f.confidence <= 100 and 0.0 <= f.score <= 1.0
        assert f.sentence.strip() and re.search(r"\d", f.sentence) and f.title.strip()
        assert all(ATTACK.match(a) for a in f.attacks), f.attacks
        assert f.start <= f.end and np.isfinite(f.start) and np.isfinite(f.end)
        assert len(f.positions) <= 8 and all(
            isinstance(o, str) and isinstance(x, int) for o, x in f.positions
        )
        assert f.analytic in {"Statistical", "Learning", "Rule", "Behavioral"}
        assert f.direction in {"outbound", "lateral", "inbound", "internal"}
        for e in f.evidence:
            assert e.name and np.isfinite(e.observed) and np.isfinite(e.z)


@pytest.mark.skipif("exfil" not in available(), reason="exfil module absent")
def test_contract_stream_carries_attacks(stream: list[tuple[FlowBatch, DnsBatch]]) -> None:
    """The stream is not vacuous: its exfiltration is found once the host is warm."""
    found = _run(make_detector("exfil"), stream, 0, ATTACK_W + 12)
    hits = [f for fs in found[ATTACK_W:] for f in fs if f.entity == HOSTS[5]]
    assert hits and hits[0].kind == "exfiltration" and hits[0].severity_id >= 4
