"""NetflowDecoder on byte-exact hand-built v5 / v9 / IPFIX datagrams and hostile input."""

from __future__ import annotations

import pickle
import socket
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.decoders import get_decoder
from stream.decoders.base import Message
from stream.decoders.netflow import NetflowDecoder

EXPORT = 1_700_000_000
UPTIME = 3_600_000


def ip4(s: str) -> int:
    return int.from_bytes(socket.inet_aton(s), "big")


def v5(records: list[tuple], sampling: int = 0, uptime: int = UPTIME, secs: int = EXPORT) -> bytes:
    hdr = struct.pack("!HHIIIIBBH", 5, len(records), uptime, secs, 500_000_000, 7, 0, 0, sampling)
    body = b"".join(
        struct.pack(
            "!IIIHHIIIIHHBBBBHHBBH",
            ip4(s),
            ip4(d),
            0,
            1,
            2,
            pk,
            by,
            first,
            last,
            sp,
            dp,
            0,
            fl,
            pr,
            0,
            0,
            0,
            24,
            24,
            0,
        )
        for s, d, sp, dp, pr, pk, by, first, last, fl in records
    )
    return hdr + body


def fset(set_id: int, body: bytes) -> bytes:
    pad = (-len(body)) % 4
    return struct.pack("!HH", set_id, 4 + len(body) + pad) + body + b"\0" * pad


def v9(sets: list[bytes], source_id: int = 1, secs: int = EXPORT, uptime: int = UPTIME) -> bytes:
    return struct.pack("!HHIIII", 9, len(sets), uptime, secs, 1, source_id) + b"".join(sets)


def ipfix(sets: list[bytes], domain: int = 1, secs: int = EXPORT) -> bytes:
    body = b"".join(sets)
    return struct.pack("!HHIII", 10, 16 + len(body), secs, 1, domain) + body


def tmpl(tid: int, fields: list[tuple[int, int]] | list[tuple[int, int, int]]) -> bytes:
    out = struct.pack("!HH", tid, len(fields))
    for f in fields:
        if len(f) == 3:
            out += struct.pack("!HHI", f[1] | 0x8000, f[2], f[0])  # (enterprise, id, length)
        else:
            out += struct.pack("!HH", *f)
    return out


V9_FIELDS = [(8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (6, 1), (1, 4), (2, 4), (22, 4), (21, 4)]


def v9_rec(
    src: str, dst: str, sp: int, dp: int, pr: int, fl: int, by: int, pk: int, first: int, last: int
) -> bytes:
    return struct.pack("!IIHHBBIIII", ip4(src), ip4(dst), sp, dp, pr, fl, by, pk, first, last)


def msg(value: bytes, peer: str = "192.0.2.1", offset: int = 0) -> Message:
    return Message(value, "udp:test", offset, peer=peer)


def test_registry_builds_netflow() -> None:
    assert isinstance(get_decoder("netflow"), NetflowDecoder)


def test_v5_exact_values_and_header_sampling() -> None:
    d = NetflowDecoder()
    data = v5(
        [
            (
                "10.1.1.1",
                "203.0.113.9",
                51000,
                443,
                6,
                10,
                5200,
                UPTIME - 9000,
                UPTIME - 1000,
                0x1B,
            ),
            ("10.1.1.2", "198.51.100.7", 5353, 53, 17, 1, 70, UPTIME - 500, UPTIME - 500, 0),
        ],
        sampling=(1 << 14) | 100,
    )
    r = d.decode([msg(data, offset=42)])
    assert not r.dead
    rows = list(r.flows.rows())
    assert len(rows) == 2
    a = rows[0]
    assert (a["src"], a["dst"], a["src_port"], a["dst_port"], a["proto"], a["tcp_flags"]) == (
        "10.1.1.1",
        "203.0.113.9",
        51000,
        443,
        6,
        0x1B,
    )
    assert a["bytes_out"] == 520_000 and a["pkts_out"] == 1000 and a["sampling_rate"] == 100
    assert a["ts_start"] == pytest.approx(EXPORT + 0.5 - 9.0)
    assert a["ts_end"] == pytest.approx(EXPORT + 0.5 - 1.0)
    assert a["sensor"] == "192.0.2.1" and a["offset"] == 42 and a["origin"] == "udp:test"
    assert not a["bidirectional"] and a["bytes_in"] == 0


def test_v5_count_larger_than_datagram_is_truncated() -> None:
    data = v5([("10.0.0.1", "10.0.0.2", 1, 2, 17, 1, 60, 0, 0, 0)] * 3)
    r = NetflowDecoder().decode([msg(data[:-10])])
    assert [x.reason for x in r.dead] == ["truncated"] and len(r.flows) == 0


def test_v9_template_and_data_exact() -> None:
    d = NetflowDecoder()
    data = v9(
        [
            fset(0, tmpl(300, V9_FIELDS)),
            fset(
                300,
                v9_rec(
                    "10.0.0.5", "8.8.4.4", 40000, 53, 17, 0, 130, 2, UPTIME - 2500, UPTIME - 2000
                ),
            ),
        ]
    )
    r = d.decode([msg(data)])
    assert not r.dead
    (row,) = list(r.flows.rows())
    assert (row["src"], row["dst"], row["dst_port"], row["bytes_out"], row["pkts_out"]) == (
        "10.0.0.5",
        "8.8.4.4",
        53,
        130,
        2,
    )
    assert row["ts_start"] == pytest.approx(EXPORT - 2.5) and row["ts_end"] == pytest.approx(
        EXPORT - 2.0
    )


def test_v9_uptime_wraparound() -> None:
    d = NetflowDecoder()
    first = (1 << 32) - 1000  # first switched before the 32-bit uptime wrapped; uptime is now 500
    data = v9(
        [
            fset(0, tmpl(300, V9_FIELDS)),
            fset(300, v9_rec("10.0.0.5", "8.8.4.4", 1, 53, 17, 0, 1, 1, first, 400)),
        ],
        uptime=500,
    )
    (row,) = list(d.decode([msg(data)]).flows.rows())
    assert row["ts_start"] == pytest.approx(EXPORT - 1.5) and row["ts_end"] == pytest.approx(
        EXPORT - 0.1
    )


def test_templates_are_per_exporter_and_source_id() -> None:
    d = NetflowDecoder()
    t_a = fset(0, tmpl(256, V9_FIELDS))
    swapped = [V9_FIELDS[1], V9_FIELDS[0], *V9_FIELDS[2:]]  # same id, dst before src
    t_b = fset(0, tmpl(256, swapped))
    rec = v9_rec("10.0.0.1", "10.0.0.2", 1000, 80, 6, 2, 60, 1, UPTIME, UPTIME)
    r = d.decode(
        [
            msg(v9([t_a]), peer="192.0.2.1"),
            msg(v9([t_b]), peer="192.0.2.2"),
            msg(v9([t_b], source_id=2), peer="192.0.2.1"),
            msg(v9([fset(256, rec)]), peer="192.0.2.1"),
            msg(v9([fset(256, rec)]), peer="192.0.2.2"),
            msg(v9([fset(256, rec)], source_id=2), peer="192.0.2.1"),
        ]
    )
    got = [(f["sensor"], f["src"]) for f in r.flows.rows()]
    assert got == [("192.0.2.1", "10.0.0.1"), ("192.0.2.2", "10.0.0.2"), ("192.0.2.1", "10.0.0.2")]


def test_data_before_template_is_held_then_decoded() -> None:
    d = NetflowDecoder()
    rec = v9_rec("10.0.0.1", "10.0.0.2", 1000, 80, 6, 2, 60, 1, UPTIME, UPTIME)
    r1 = d.decode([msg(v9([fset(400, rec)]))])
    assert len(r1.flows) == 0 and not r1.dead
    r2 = d.decode([msg(v9([fset(0, tmpl(400, V9_FIELDS))]), offset=1)])
    assert len(r2.flows) == 1 and next(r2.flows.rows())["offset"] == 0  # the held datagram's offset
    assert not d.flush().dead


def test_unknown_template_dead_lettered_at_flush_with_detail() -> None:
    d = NetflowDecoder()
    d.decode([msg(ipfix([fset(999, b"\0" * 12)], domain=77), peer="198.51.100.1")])
    dead = d.flush().dead
    assert [x.reason for x in dead] == ["unknown_template"]
    assert "198.51.100.1" in dead[0].detail and "77" in dead[0].detail and "999" in dead[0].detail


def test_pending_expires_in_export_time_not_wall_clock() -> None:
    d = NetflowDecoder(pending_timeout=30)
    r = d.decode(
        [
            msg(ipfix([fset(999, b"\0" * 12)], secs=EXPORT)),
            msg(ipfix([fset(998, b"\0" * 12)], secs=EXPORT + 10)),
        ]
    )
    assert not r.dead
    r = d.decode([msg(ipfix([], secs=EXPORT + 31))])
    assert [x.reason for x in r.dead] == ["template_timeout"]
    assert [x.reason for x in d.flush().dead] == ["unknown_template"]


def test_pending_bound() -> None:
    d = NetflowDecoder(max_pending=2)
    r = d.decode([msg(ipfix([fset(900 + i, b"\0" * 8)])) for i in range(5)])
    assert [x.reason for x in r.dead] == ["unknown_template"] * 3 and len(d.pending) == 2


IPFIX_V6 = [
    (27, 16),
    (28, 16),
    (7, 2),
    (11, 2),
    (4, 1),
    (1, 8),
    (2, 8),
    (152, 8),
    (153, 8),
    (82, 0xFFFF),
    (12345, 1, 9),
]  # + enterprise 12345 element 1 (unknown: skipped)


def test_ipfix_ipv6_ms_times_variable_length_and_enterprise() -> None:
    d = NetflowDecoder()
    src, dst = (
        socket.inet_pton(socket.AF_INET6, "2001:db8::1"),
        socket.inet_pton(socket.AF_INET6, "2001:DB8::2"),
    )
    rec = (
        src
        + dst
        + struct.pack("!HHBQQQQ", 50000, 443, 6, 9000, 12, EXPORT * 1000 - 2500, EXPORT * 1000 - 5)
    )
    rec_a = rec + b"\x04eth0" + b"E" * 9
    rec_b = rec + b"\xff\x00\x03abc" + b"E" * 9  # 3-byte long-form length
    r = d.decode([msg(ipfix([fset(2, tmpl(256, IPFIX_V6)), fset(256, rec_a + rec_b)]))])
    assert not r.dead
    rows = list(r.flows.rows())
    assert len(rows) == 2
    assert rows[0]["src"] == "2001:db8::1" and rows[0]["dst"] == "2001:db8::2"
    assert rows[0]["bytes_out"] == 9000 and rows[1]["pkts_out"] == 12
    assert rows[0]["ts_start"] == pytest.approx(EXPORT - 2.5) and rows[0][
        "ts_end"
    ] == pytest.approx(EXPORT - 0.005)


def test_ipfix_seconds_and_biflow_reverse_elements() -> None:
    fields = [
        (8, 4),
        (12, 4),
        (7, 2),
        (11, 2),
        (4, 1),
        (1, 4),
        (2, 4),
        (6, 1),
        (150, 4),
        (151, 4),
        (29305, 1, 4),
        (29305, 2, 4),
        (29305, 6, 1),
    ]
    rec = struct.pack(
        "!IIHHBIIBIIIIB",
        ip4("10.0.0.1"),
        ip4("10.0.0.2"),
        5000,
        445,
        6,
        800,
        8,
        0x02,
        EXPORT - 60,
        EXPORT - 1,
        12000,
        10,
        0x10,
    )
    r = NetflowDecoder().decode([msg(ipfix([fset(2, tmpl(258, fields)), fset(258, rec)]))])
    (row,) = list(r.flows.rows())
    assert row["bidirectional"] and (
        row["bytes_out"],
        row["pkts_out"],
        row["bytes_in"],
        row["pkts_in"],
    ) == (800, 8, 12000, 10)
    assert (
        row["tcp_flags"] == 0x12 and row["ts_start"] == EXPORT - 60 and row["ts_end"] == EXPORT - 1
    )


def test_ipfix_options_sampling_packet_interval_space() -> None:
    d = NetflowDecoder()
    opt = struct.pack("!HHH", 260, 3, 1) + struct.pack("!HHHHHH", 149, 4, 305, 4, 306, 4)
    opt_data = struct.pack("!III", 1, 1, 99)
    fields = [(8, 4), (12, 4), (1, 4), (2, 4)]
    rec = struct.pack("!IIII", ip4("10.0.0.1"), ip4("10.0.0.2"), 100, 1)
    r = d.decode(
        [
            msg(
                ipfix(
                    [fset(3, opt), fset(260, opt_data), fset(2, tmpl(261, fields)), fset(261, rec)]
                )
            )
        ]
    )
    (row,) = list(r.flows.rows())
    assert (row["bytes_out"], row["pkts_out"], row["sampling_rate"]) == (10_000, 100, 100)
    # another exporter is not sampled
    r = d.decode([msg(ipfix([fset(2, tmpl(261, fields)), fset(261, rec)]), peer="192.0.2.99")])
    assert next(r.flows.rows())["sampling_rate"] == 1


def test_v9_options_sampler_id_random_interval() -> None:
    d = NetflowDecoder()
    opt = struct.pack("!HHH", 270, 4, 8) + struct.pack(
        "!HHHHHH", 1, 4, 48, 1, 50, 4
    )  # scope system, sampler id, interval
    fields = [*V9_FIELDS, (48, 1)]
    rec1 = v9_rec("10.0.0.1", "10.0.0.2", 1, 2, 17, 0, 100, 1, UPTIME, UPTIME) + b"\x05"
    rec2 = v9_rec("10.0.0.1", "10.0.0.2", 1, 2, 17, 0, 100, 1, UPTIME, UPTIME) + b"\x06"
    r = d.decode(
        [
            msg(
                v9(
                    [
                        fset(1, opt),
                        fset(270, struct.pack("!IBI", 0, 5, 64) + struct.pack("!IBI", 0, 6, 8)),
                        fset(0, tmpl(271, fields)),
                        fset(271, rec1 + rec2),
                    ]
                )
            )
        ]
    )
    assert [f["sampling_rate"] for f in r.flows.rows()] == [64, 8]
    assert [f["bytes_out"] for f in r.flows.rows()] == [6400, 800]


def test_ipfix_template_withdrawal() -> None:
    d = NetflowDecoder()
    fields = [(8, 4), (12, 4), (1, 4), (2, 4)]
    rec = struct.pack("!IIII", ip4("10.0.0.1"), ip4("10.0.0.2"), 100, 1)
    assert len(d.decode([msg(ipfix([fset(2, tmpl(300, fields)), fset(300, rec)]))]).flows) == 1
    r = d.decode([msg(ipfix([fset(2, struct.pack("!HH", 300, 0)), fset(300, rec)]))])
    assert len(r.flows) == 0
    assert [x.reason for x in d.flush().dead] == ["unknown_template"]
    # withdraw-all (template id 2)
    d.decode([msg(ipfix([fset(2, tmpl(300, fields) + tmpl(301, fields))]))])
    d.decode([msg(ipfix([fset(2, struct.pack("!HH", 2, 0))]))])
    assert not [k for k in d.templates if k[0] == "192.0.2.1"]


def test_zero_length_fields() -> None:
    d = NetflowDecoder()
    fields = [(8, 4), (99, 0), (12, 4), (1, 0), (2, 4)]  # octetDeltaCount of length 0 reads as 0
    rec = struct.pack("!III", ip4("10.0.0.1"), ip4("10.0.0.2"), 3)
    (row,) = list(d.decode([msg(ipfix([fset(2, tmpl(302, fields)), fset(302, rec)]))]).flows.rows())
    assert (row["bytes_out"], row["pkts_out"]) == (0, 3)
    r = d.decode([msg(ipfix([fset(2, tmpl(303, [(1, 0), (2, 0)]))]))])
    assert [x.reason for x in r.dead] == ["bad_value"]


def test_hostile_datagrams_never_raise() -> None:
    d = NetflowDecoder()
    good = v9(
        [
            fset(0, tmpl(300, V9_FIELDS)),
            fset(300, v9_rec("10.0.0.5", "8.8.4.4", 1, 53, 17, 0, 1, 1, 0, 0)),
        ]
    )
    for cut in range(len(good)):
        r = d.decode([msg(good[:cut])])
        assert {x.reason for x in r.dead} <= {"truncated", "bad_value"}
    cases = [
        b"",
        b"\x00",
        b"\x00\x05",
        b"\x00\x07" + b"\0" * 40,
        ipfix([struct.pack("!HH", 2, 2)]),
        ipfix(
            [fset(2, struct.pack("!HH", 100, 1) + struct.pack("!HH", 1, 4))]
        ),  # template id < 256
        struct.pack("!HHIII", 10, 9999, 0, 0, 0),
        v9([fset(0, tmpl(300, [(1, 0xFFFF)]))]),
        v5([("10.0.0.1", "10.0.0.2", 1, 2, 6, 1, 1, 0, 0, 0)])[:30],
    ]
    r = d.decode([msg(c) for c in cases])
    assert len(r.dead) == len(cases)
    assert {x.reason for x in r.dead} <= {"truncated", "bad_value"}


def test_oversized_counter_is_bad_value() -> None:
    fields = [(8, 4), (12, 4), (1, 8), (2, 8)]
    rec = struct.pack("!IIQQ", ip4("10.0.0.1"), ip4("10.0.0.2"), 1 << 60, 1)
    r = NetflowDecoder().decode([msg(ipfix([fset(2, tmpl(300, fields)), fset(300, rec)]))])
    assert [x.reason for x in r.dead] == ["bad_value"] and len(r.flows) == 0


def test_pickles_with_templates() -> None:
    d = NetflowDecoder()
    d.decode([msg(v9([fset(0, tmpl(300, V9_FIELDS))]))])
    d2 = pickle.loads(pickle.dumps(d))
    r = d2.decode([msg(v9([fset(300, v9_rec("10.0.0.5", "8.8.4.4", 1, 53, 17, 0, 9, 1, 0, 0))]))])
    assert next(r.flows.rows())["bytes_out"] == 9


def test_sniff() -> None:
    assert NetflowDecoder.sniff(ipfix([fset(2, tmpl(300, [(8, 4)]))]))
    assert NetflowDecoder.sniff(v5([("10.0.0.1", "10.0.0.2", 1, 2, 6, 1, 1, 0, 0, 0)]))
    assert not NetflowDecoder.sniff(b'{"kind": "flow"}')


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.sampled_from([5, 9, 10]))
def test_fuzz_arbitrary_bytes(blob: bytes, version: int) -> None:
    d = NetflowDecoder()
    d.decode([msg(v9([fset(0, tmpl(300, V9_FIELDS))])), msg(ipfix([fset(2, tmpl(300, IPFIX_V6))]))])
    value = struct.pack("!H", version) + blob
    r = d.decode([msg(value)])
    r.flows.validate()
    for x in r.dead + d.flush().dead:
        assert x.reason in {
            "truncated",
            "bad_value",
            "unknown_template",
            "template_timeout",
            "oversized",
        }
