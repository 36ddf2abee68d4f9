"""LateralDetector on a seeded synthetic enterprise background (plus the shared helpers
``background`` and ``run_windows`` used by the other lateral/host tests)."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from typing import Any

import numpy as np

from pipelines.detectors.base import Detector, Finding, Window
from pipelines.detectors.lateral import LateralDetector, admin_service
from pipelines.inject import merge
from pipelines.records import DnsBatch, FlowBatch, HomeNetworks, annotate_direction
from pipelines.roles import HostRoles

DAY = 86400.0
T0 = 1_700_006_400.0  # 2023-11-15 00:00 UTC
DCS = ("10.2.1.10", "10.2.1.11")
FS = "10.2.0.10"
SERVERS = ("10.2.0.11", "10.2.0.12", "10.2.0.13")
PATCH = "10.2.0.14"
JUMP = "10.2.2.10"
ADMIN_WS = "10.1.0.200"


def workstations(n: int = 12) -> list[str]:
    return [f"10.1.0.{10 + i}" for i in range(n)]


def background(
    days: int = 4,
    n_ws: int = 12,
    seed: int = 7,
    t0: float = T0,
    out_scale: dict[str, list[float]] | None = None,
) -> tuple[FlowBatch, DnsBatch]:
    """Cached :func:`make_background` (batches are never mutated by detectors)."""
    key = (days, n_ws, seed, t0, repr(sorted((out_scale or {}).items())))
    if key not in _CACHE:
        _CACHE[key] = make_background(days, n_ws, seed, t0, out_scale)
    return _CACHE[key]


_CACHE: dict[tuple[object, ...], tuple[FlowBatch, DnsBatch]] = {}


def make_background(
    days: int = 4,
    n_ws: int = 12,
    seed: int = 7,
    t0: float = T0,
    out_scale: dict[str, list[float]] | None = None,
) -> tuple[FlowBatch, DnsBatch]:
    """A seeded office network: workstations talk to the DCs (Kerberos/LDAP/SMB/DNS), a file
    server and the internet in office hours; a jump host RDPs/WinRMs into servers, an IT
    workstation RDPs into the jump host, the DCs replicate (RPC 135 + dynamic, LDAP, SMB),
    and a patch server pushes over SMB + RPC to every workstation at night.
    ``out_scale[host][day]`` multiplies that host's internet upload on that day."""
    rng = np.random.default_rng(seed)
    ws = workstations(n_ws)
    cols: dict[str, list] = {
        k: [] for k in ("ts_start", "src", "dst", "dst_port", "proto", "bytes_out", "bytes_in")
    }
    dns: dict[str, list] = {k: [] for k in ("ts", "src", "dst", "query")}

    def flow(t: float, s: str, d: str, port: int, bo: Any, bi: Any, proto: int = 6) -> None:
        cols["ts_start"].append(t)
        cols["src"].append(s)
        cols["dst"].append(d)
        cols["dst_port"].append(port)
        cols["proto"].append(proto)
        cols["bytes_out"].append(int(bo))
        cols["bytes_in"].append(int(bi))

    jump_targets = [(SERVERS[0], 3389), (SERVERS[1], 5985), (SERVERS[2], 22), (DCS[0], 3389)]
    for day in range(days):
        for k in range(288):
            t = t0 + day * DAY + k * 300.0
            hour = k / 12.0
            office = 8.0 <= hour < 18.0
            for i, h in enumerate(ws):
                dc = DCS[i % 2]
                if office and rng.random() < 0.8:
                    u = t + rng.uniform(0, 290)
                    flow(u, h, dc, 88, rng.integers(1500, 2500), rng.integers(1500, 4000), 6)
                    if rng.random() < 0.5:
                        flow(u + 1, h, dc, 389, rng.integers(500, 2000), rng.integers(2000, 9000))
                    if rng.random() < 0.3:
                        flow(u + 2, h, dc, 445, rng.integers(1000, 5000), rng.integers(2000, 9000))
                    if rng.random() < 0.5:
                        flow(
                            u + 3,
                            h,
                            FS,
                            445,
                            rng.integers(2000, 200_000),
                            rng.integers(5000, 900_000),
                        )
                    scale = (out_scale or {}).get(h, [1.0] * days)[day]
                    for _ in range(int(rng.integers(2, 6))):
                        ext = f"52.96.{int(rng.integers(0, 4))}.{int(rng.integers(1, 200))}"
                        flow(
                            u + rng.uniform(0, 9),
                            h,
                            ext,
                            443,
                            rng.lognormal(8.5, 0.6) * scale,
                            rng.lognormal(11, 0.8),
                        )
                    dns["ts"].append(u)
                    dns["src"].append(h)
                    dns["dst"].append(dc)
                    dns["query"].append(f"www{int(rng.integers(0, 30))}.example.com")
                elif rng.random() < 0.02:  # a faint night-time heartbeat of desktops
                    flow(t + rng.uniform(0, 290), h, "52.96.0.1", 443, 900, 4000)
            if office and rng.random() < 0.3:
                srv, port = jump_targets[int(rng.integers(0, len(jump_targets)))]
                flow(
                    t + rng.uniform(0, 290),
                    JUMP,
                    srv,
                    port,
                    rng.integers(50_000, 500_000),
                    rng.integers(100_000, 2_000_000),
                )
                flow(
                    t + rng.uniform(0, 290),
                    ADMIN_WS,
                    JUMP,
                    3389,
                    rng.integers(50_000, 500_000),
                    rng.integers(100_000, 2_000_000),
                )
            if k % 12 == 0:  # hourly AD replication
                u = t + rng.uniform(0, 200)
                flow(u, DCS[0], DCS[1], 135, 700, 600)
                flow(u + 0.5, DCS[0], DCS[1], 49668, 20_000, 90_000)
                flow(u + 1, DCS[1], DCS[0], 389, 3000, 15_000)
                flow(u + 2, DCS[1], DCS[0], 445, 4000, 9000)
            if 24 <= k < 30:  # 02:00-02:30 patch push
                for h in ws[(k - 24) :: 6]:
                    u = t + rng.uniform(0, 250)
                    flow(u, PATCH, h, 135, 700, 600)
                    flow(u + 0.4, PATCH, h, 49670, 4000, 8000)
                    flow(u + 1, PATCH, h, 445, 2_000_000, 30_000)
            for s in (*SERVERS, FS, PATCH, *DCS):  # servers talk to the internet a little
                if rng.random() < 0.3:
                    flow(
                        t + rng.uniform(0, 290),
                        s,
                        "13.107.4.50",
                        443,
                        rng.lognormal(9, 0.5),
                        rng.lognormal(10, 0.5),
                    )
    n = len(cols["ts_start"])
    fb = FlowBatch.from_columns(
        {
            **cols,
            "ts_end": [t + 1.0 for t in cols["ts_start"]],
            "pkts_out": [max(1, b // 800) for b in cols["bytes_out"]],
            "pkts_in": [max(1, b // 800) for b in cols["bytes_in"]],
            "conn_state": ["SF"] * n,
            "origin": ["background"] * n,
            "offset": list(range(n)),
        }
    )
    db = DnsBatch.from_columns(
        {**dns, "dst_port": [53] * len(dns["ts"]), "qtype": [1] * len(dns["ts"])}
    )
    home = HomeNetworks.default()
    return annotate_direction(fb, home).sorted_by_time(), annotate_direction(
        db, home
    ).sorted_by_time()


def windows(
    flows: FlowBatch, dns: DnsBatch, length: float = 300.0
) -> Iterator[tuple[Window, FlowBatch, DnsBatch]]:
    """Split batches into consecutive event-time windows (empty ones included)."""
    fi = np.floor(flows.ts_start / length).astype(np.int64)
    di = np.floor(dns.ts / length).astype(np.int64)
    lo = int(min(fi.min(initial=2**62), di.min(initial=2**62)))
    hi = int(max(fi.max(initial=-1), di.max(initial=-1)))
    fo, do = np.argsort(fi, kind="stable"), np.argsort(di, kind="stable")
    fs, ds = fi[fo], di[do]
    for i in range(lo, hi + 1):
        f = flows.take(fo[np.searchsorted(fs, i) : np.searchsorted(fs, i, "right")])
        d = dns.take(do[np.searchsorted(ds, i) : np.searchsorted(ds, i, "right")])
        yield Window.of(i, length), f, d


def run_windows(
    dets: list[Detector], flows: FlowBatch, dns: DnsBatch, length: float = 300.0
) -> list[Finding]:
    """A minimal engine: ingest each window's records, then process_window (score before learn)."""
    out: list[Finding] = []
    for w, f, d in windows(flows, dns, length):
        for det in dets:
            if len(f) or len(d):
                det.ingest(f, d, w)
            out.extend(det.process_window(w))
    return out


def _attack(rows: list[tuple[float, str, str, int, int, int]], state: str = "SF") -> FlowBatch:
    b = FlowBatch.from_columns(
        {
            "ts_start": [r[0] for r in rows],
            "ts_end": [r[0] + 2.0 for r in rows],
            "src": [r[1] for r in rows],
            "dst": [r[2] for r in rows],
            "dst_port": [r[3] for r in rows],
            "proto": [6] * len(rows),
            "bytes_out": [r[4] for r in rows],
            "bytes_in": [r[5] for r in rows],
            "pkts_out": [5] * len(rows),
            "pkts_in": [5 if r[5] else 0 for r in rows],
            "conn_state": [state if r[5] else "S0" for r in rows],
            "origin": ["attack"] * len(rows),
            "offset": list(range(len(rows))),
        }
    )
    return annotate_direction(b, HomeNetworks.default())


def test_admin_service_table() -> None:
    got = admin_service(np.array([445, 135, 5986, 3389, 22, 3268, 88, 443, 70000]))
    assert got.tolist() == [0, 1, 3, 4, 5, 6, 7, -1, -1]


def test_background_alone_is_quiet_and_roles_are_learnt() -> None:
    flows, dns = background(days=4)
    det = LateralDetector(warmup_days=1.0)
    found = run_windows([det], flows, dns)
    assert found == [], [f.sentence for f in found[:5]]
    roles: HostRoles = det.host_roles
    assert roles.role(DCS[0]) == "dc" and roles.role(FS) == "server"
    assert roles.role(JUMP) == "jump_host"
    assert roles.administers(PATCH) and roles.administers(JUMP)
    assert roles.role(workstations()[0]) == "workstation" and not roles.administers(
        workstations()[0]
    )
    assert det.entities() > 15


def _run_with(attack: FlowBatch, days: int = 4, **params: object) -> list[Finding]:
    flows, dns = background(days=days)
    det = LateralDetector(warmup_days=1.0, **params)  # type: ignore[arg-type]
    return run_windows([det], merge(flows, attack), dns)


def test_winrm_to_a_workstation_is_lateral_movement() -> None:
    a, b = workstations()[3], workstations()[4]
    t = T0 + 3 * DAY + 15 * 3600
    found = _run_with(_attack([(t, a, b, 5985, 7000, 17000), (t + 3, a, b, 5985, 6500, 12000)]))
    assert len(found) == 1
    f = found[0]
    assert (f.kind, f.entity, f.dst, f.attacks) == ("lateral_movement", a, (b,), ("T1021.006",))
    assert f.dst_ports == (5985,) and f.count == 2 and f.positions
    assert "first use of WinRM" in f.sentence and 0.5 <= f.score <= 1.0


def test_rpc_then_dynamic_port_is_wmi_and_with_smb_is_service_control() -> None:
    a, b, c = workstations()[1], workstations()[2], workstations()[5]
    t = T0 + 3 * DAY + 10 * 3600
    wmi = _attack([(t, a, b, 135, 700, 600), (t + 1.5, a, b, 49701, 3000, 5000)])
    svc = _attack([(t + 600, a, c, 135, 700, 600), (t + 601, a, c, 445, 5000, 8000)])
    found = _run_with(merge(wmi, svc))
    by_dst = {f.dst: f for f in found}
    assert set(by_dst) == {(b,), (c,)}
    assert {"T1047", "T1021.003"} <= set(by_dst[(b,)].attacks)
    assert {"T1021.002", "T1569.002"} <= set(by_dst[(c,)].attacks)


def test_jump_host_and_patch_server_known_edges_stay_quiet_but_new_server_edge_from_ws_alerts() -> (
    None
):
    t = T0 + 3 * DAY + 11 * 3600
    ws = workstations()[0]
    known = _attack(
        [(t, JUMP, SERVERS[0], 3389, 90_000, 400_000), (t + 5, PATCH, ws, 445, 2_000_000, 9000)]
    )
    rdp = _attack([(t + 900, ws, SERVERS[1], 3389, 90_000, 400_000)])
    found = _run_with(merge(known, rdp))
    assert [(f.entity, f.dst, f.attacks) for f in found] == [(ws, (SERVERS[1],), ("T1021.001",))]


def test_fanout_and_scan() -> None:
    a = workstations()[6]
    t = T0 + 3 * DAY + 14 * 3600
    scan = _attack([(t + i, a, f"10.1.0.{100 + i}", 445, 60, 0) for i in range(20)])
    found = _run_with(scan)
    assert (
        len(found) == 1
        and found[0].kind == "discovery"
        and {"T1046", "T1018"} <= set(found[0].attacks)
    )
    assert found[0].facts["destinations"] == 20 and found[0].episode == "fanout"


def test_chain_a_to_b_to_c_is_one_path() -> None:
    a, b = workstations()[7], workstations()[8]
    t = T0 + 3 * DAY + 9 * 3600
    hops = _attack([(t, a, b, 5985, 7000, 17000), (t + 1200, b, SERVERS[2], 3389, 9000, 40_000)])
    found = _run_with(hops)
    chain = [f for f in found if f.episode == "chain"]
    assert len(chain) == 1
    assert chain[0].entity == a and chain[0].facts["path"] == [a, b, SERVERS[2]]
    assert chain[0].severity_id >= 4


def test_chain_within_one_window() -> None:
    a, b = workstations()[7], workstations()[8]
    t = T0 + 3 * DAY + 9 * 3600
    hops = _attack([(t, a, b, 5985, 7000, 17000), (t + 60, b, SERVERS[2], 3389, 9000, 40_000)])
    chain = [f for f in _run_with(hops) if f.episode == "chain"]
    assert len(chain) == 1 and chain[0].facts["path"] == [a, b, SERVERS[2]]


def test_ldap_burst_is_discovery() -> None:
    a = workstations()[9]
    t = T0 + 3 * DAY + 18 * 3600 + 600
    found = _run_with(
        _attack([(t, a, DCS[1], 389, 6500, 9000), (t + 0.05, a, DCS[1], 389, 4300, 322_000)])
    )
    assert len(found) == 1 and found[0].kind == "discovery" and found[0].attacks == ("T1087.002",)


def test_ssh_guessing_is_brute_force() -> None:
    a = workstations()[10]
    t = T0 + 3 * DAY + 13 * 3600
    found = _run_with(_attack([(t + 10 * i, a, SERVERS[2], 22, 2000, 2500) for i in range(11)]))
    kinds = {f.kind for f in found}
    assert "brute_force" in kinds
    bf = next(f for f in found if f.kind == "brute_force")
    assert bf.dst == (SERVERS[2],) and "T1110" in bf.attacks


def test_warmup_pickle_and_pure_score() -> None:
    flows, dns = background(days=2, n_ws=6)
    t = T0 + 0.5 * DAY
    a, b = workstations(6)[0], workstations(6)[1]
    early = _attack([(t, a, b, 5985, 7000, 17000)])
    det = LateralDetector(warmup_days=1.0)
    assert run_windows([det], merge(flows, early), dns) == []  # not warm yet: learnt, not alerted
    late = _attack([(T0 + 2 * DAY + 3600 * 10, a, workstations(6)[2], 3389, 7000, 17000)])
    w = Window.of(int(late.ts_start[0] // 300), 300.0)
    det.ingest(late, DnsBatch.empty(), w)
    feats = det.close(w)
    before = pickle.dumps(det)
    first = det.score(feats)
    assert pickle.dumps(det) == before and first
    clone = pickle.loads(before)
    assert [f.sentence for f in clone.score(feats)] == [f.sentence for f in first]
    many = _attack([(T0 + 2 * DAY + 3600 * 11 + i, f"10.5.{i // 200}.{i % 200}", "8.8.8.8", 443, 100, 100)
                    for i in range(1000)])  # fmt: skip
    w = Window.of(int(many.ts_start[0] // 300), 300.0)
    base = det.nbytes()
    det.ingest(many, DnsBatch.empty(), w)
    det.process_window(w)
    assert det.entities() >= 1000
    assert (det.nbytes() - base) / 1000 < 2500  # bytes of state per host


def test_pinned_admin_role_is_not_alerted_for_new_edges() -> None:
    ws = workstations()[0]
    t = T0 + 3 * DAY + 11 * 3600
    rdp = _attack([(t, ws, SERVERS[1], 3389, 90_000, 400_000)])
    assert _run_with(rdp, roles={ws: "admin_workstation"}) == []
    assert len(_run_with(rdp)) == 1


def test_idle_hosts_are_evicted() -> None:
    flows, dns = background(days=2, n_ws=6)
    det = LateralDetector(warmup_days=1.0, idle_days=1.0)
    run_windows([det], flows, dns)
    assert det.entities() > 6
    last = int(flows.ts_start.max() // 300)
    for i in range(last + 1, last + 1 + 3 * 288):
        det.process_window(Window.of(i, 300.0))
    assert det.entities() == 0 and len(det.host_roles) == 0 and len(det.fanout) == 0
