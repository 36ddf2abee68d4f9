"""FlowTable: originator, timeouts, TCP close, conn_state, bounds, chunk invariance, pickling."""

from __future__ import annotations

import pickle
import random

import numpy as np

from pipelines.flowtable import DnsPairer, FlowTable
from pipelines.records import FlowBatch

S, SA, A, FA, R, PA = 0x02, 0x12, 0x10, 0x11, 0x04, 0x18
C, SRV = ("10.0.0.1", 40000), ("192.0.2.10", 443)


def pkts(
    spec: list[tuple[float, bool, int, int]], proto: int = 6, c: tuple = C, s: tuple = SRV
) -> dict:
    """spec: (ts, from_client, flags, ip_len)."""
    cols: dict[str, list] = {
        k: []
        for k in (
            "ts",
            "src",
            "dst",
            "sport",
            "dport",
            "proto",
            "ip_len",
            "tcp_flags",
            "payload_len",
        )
    }
    for ts, fwd, fl, size in spec:
        a, b = (c, s) if fwd else (s, c)
        for k, v in zip(
            cols, (ts, a[0], b[0], a[1], b[1], proto, size, fl, max(size - 40, 0)), strict=True
        ):
            cols[k].append(v)
    return cols


def run(cols: dict, **kw: object) -> FlowBatch:
    ft = FlowTable(**kw)  # type: ignore[arg-type]
    return FlowBatch.concat([ft.add(cols), ft.flush()])


HANDSHAKE = [
    (0.0, True, S, 60),
    (0.01, False, SA, 60),
    (0.02, True, A, 40),
    (0.5, True, PA, 540),
    (0.6, False, PA, 1040),
    (1.0, True, FA, 40),
    (1.01, False, FA, 40),
    (1.02, True, A, 40),
]


def test_full_connection_sf() -> None:
    (f,) = list(run(pkts(HANDSHAKE)).rows())
    assert (f["src"], f["src_port"], f["dst"], f["dst_port"]) == (
        "10.0.0.1",
        40000,
        "192.0.2.10",
        443,
    )
    assert (f["pkts_out"], f["bytes_out"], f["pkts_in"], f["bytes_in"]) == (5, 720, 3, 1140)
    assert (f["payload_out"], f["payload_in"]) == (
        520,
        1020,
    )  # the helper gives SYNs 20 bytes of options
    assert f["conn_state"] == "SF" and f["service"] == "ssl" and f["tcp_flags"] == 0x1B
    assert f["ts_start"] == 0.0 and f["ts_end"] == 1.02 and f["bidirectional"]


def test_conn_states() -> None:
    states = {
        "S0": [(0.0, True, S, 60), (1.0, True, S, 60)],
        "REJ": [(0.0, True, S, 60), (0.01, False, R | A, 40)],
        "RSTO": [*HANDSHAKE[:4], (0.7, True, R, 40)],
        "RSTR": [*HANDSHAKE[:4], (0.7, False, R | A, 40)],
        "S1": HANDSHAKE[:5],
        "OTH": [(0.0, True, A, 40), (0.1, False, A, 40)],
    }
    for state, spec in states.items():
        got = run(pkts(spec)).conn_state.tolist()
        assert got == [state], (state, got)
    udp = run(pkts([(0.0, True, 0, 80)], proto=17, s=("192.0.2.53", 53)))
    assert udp.conn_state.tolist() == ["S0"] and udp.service.tolist() == ["dns"]


def test_synack_first_makes_its_destination_the_originator() -> None:
    (f,) = list(run(pkts([(0.0, False, SA, 60), (0.01, True, A, 40)])).rows())
    assert f["src"] == "10.0.0.1" and f["dst_port"] == 443


def test_midstream_reply_from_low_port_is_flipped() -> None:
    (f,) = list(run(pkts([(0.0, False, PA, 100), (0.01, True, A, 40)])).rows())
    assert f["src"] == "10.0.0.1" and f["bytes_in"] == 100


def test_udp_idle_timeout_splits() -> None:
    spec = [(0.0, True, 0, 80), (30.0, True, 0, 80), (200.0, True, 0, 80)]
    flows = run(pkts(spec, proto=17), idle_timeout=60.0)
    assert flows.pkts_out.tolist() == [2, 1]


def test_tcp_reuse_after_close_is_a_new_flow() -> None:
    again = [(t + 2.0, fwd, fl, n) for t, fwd, fl, n in HANDSHAKE]
    flows = run(pkts(HANDSHAKE + again))
    assert len(flows) == 2 and flows.conn_state.tolist() == ["SF", "SF"]
    # a new SYN right after the close (inside the linger) also starts a new flow
    again = [(t + 1.1, fwd, fl, n) for t, fwd, fl, n in HANDSHAKE]
    assert len(run(pkts(HANDSHAKE + again))) == 2
    # late ACKs within the linger stay in the closed flow
    assert len(run(pkts([*HANDSHAKE, (3.0, False, A, 40)]))) == 1


def test_active_timeout_cuts_long_flows() -> None:
    spec = [(float(t), True, 0, 100) for t in range(0, 100, 10)]
    flows = run(pkts(spec, proto=17), active_timeout=35.0)
    assert flows.pkts_out.tolist() == [4, 4, 2]
    assert int(flows.bytes_out.sum()) == 1000


def test_expiry_is_driven_by_packet_time_across_batches() -> None:
    ft = FlowTable(idle_timeout=60.0)
    assert len(ft.add(pkts([(0.0, True, 0, 80)], proto=17))) == 0
    assert len(ft) == 1
    other = pkts([(100.0, True, 0, 80)], proto=17, c=("10.0.0.9", 1234))
    out = ft.add(other)
    assert out.src.tolist() == ["10.0.0.1"] and len(ft) == 1


def test_max_flows_evicts_oldest() -> None:
    ft = FlowTable(max_flows=2)
    cols = pkts([(float(i), True, 0, 80) for i in range(3)], proto=17)
    cols["sport"] = [1, 2, 3]
    out = ft.add(cols)
    assert out.src_port.tolist() == [1] and ft.evicted == 1 and len(ft) == 2


def test_chunk_invariance_and_pickle() -> None:
    rng = random.Random(7)
    spec = []
    for conn in range(40):
        base = rng.uniform(0, 400)
        for t, fwd, fl, n in HANDSHAKE:
            spec.append((base + t * rng.uniform(1, 30), fwd, fl, n, conn))
    spec.sort()
    cols = pkts([s[:4] for s in spec])
    cols["sport"] = [40000 + s[4] % 7 if s[1] else 443 for s in spec]
    cols["dport"] = [443 if s[1] else 40000 + s[4] % 7 for s in spec]
    whole = run(cols)
    ft = FlowTable()
    parts = []
    i = 0
    while i < len(spec):
        j = i + rng.randint(1, 25)
        parts.append(ft.add({k: v[i:j] for k, v in cols.items()}))
        ft = pickle.loads(pickle.dumps(ft))
        i = j
    parts.append(ft.flush())
    chunked = FlowBatch.concat(parts)

    def key(b: FlowBatch) -> list:
        return sorted(
            zip(
                b.ts_start.tolist(),
                b.src_port.tolist(),
                b.pkts_out.tolist(),
                b.bytes_in.tolist(),
                b.conn_state.tolist(),
                strict=True,
            )
        )

    assert key(whole) == key(chunked)
    assert int(whole.pkts_out.sum() + whole.pkts_in.sum()) == len(spec)


def test_empty_add_and_flush() -> None:
    ft = FlowTable()
    assert len(ft.add({k: [] for k in pkts([])})) == 0 and len(ft.flush()) == 0


def test_dns_pairer_unanswered_and_late_response() -> None:
    p = DnsPairer(timeout=5.0)
    p.add(
        1.0, "10.0.0.1", "10.0.0.53", 5000, 53, 17, 1, False, 0, "a.example", 1, 0, (), 40, "f", 0
    )
    p.add(
        2.0,
        "10.0.0.53",
        "10.0.0.1",
        53,
        5001,
        17,
        9,
        True,
        0,
        "b.example",
        28,
        1,
        ("2001:db8::1",),
        90,
        "f",
        1,
    )
    b = p.take()
    assert (
        b.query.tolist() == ["b.example"]
        and b.src.tolist() == ["10.0.0.1"]
        and b.answers.tolist() == ["2001:db8::1"]
    )
    p.add(
        10.0, "10.0.0.2", "10.0.0.53", 5000, 53, 17, 2, False, 0, "c.example", 1, 0, (), 40, "f", 2
    )
    b = p.take()
    assert b.query.tolist() == ["a.example"] and b.rcode.tolist() == [-1]
    assert p.take(final=True).query.tolist() == ["c.example"]
    assert np.all(p.take().rcode == -1)
