"""Zeek conn/dns decoders: JSON variants give identical batches; TSV replay matches JSON."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from pipelines.records import FLOW_FIELDS
from stream.decoders.base import Message
from stream.decoders.zeek import ZeekJsonDecoder, ZeekTsvDecoder
from stream.sources import iter_messages

SAMPLES = Path(__file__).parent / "samples"


def _msgs(name: str) -> list[Message]:
    return [m for batch in iter_messages(SAMPLES / name) for m in batch]


def _same(a: object, b: object, skip: tuple[str, ...] = ("origin", "sensor")) -> None:
    for name in FLOW_FIELDS:
        if name in skip:
            continue
        x, y = getattr(a, name), getattr(b, name)
        assert x.tolist() == y.tolist(), name


def test_conn_json_exact_fields() -> None:
    r = ZeekJsonDecoder().decode(_msgs("zeek_conn.json"))
    assert not r.dead and r.ignored == 0 and len(r.dns) == 0
    f = r.flows
    assert f.src.tolist() == ["10.1.2.3", "10.1.2.3", "fd00::1"]
    assert f.dst.tolist() == ["203.0.113.9", "198.51.100.7", "ff02::fb"]
    assert f.src_port.tolist() == [50123, 50124, 5353] and f.dst_port.tolist() == [443, 80, 5353]
    assert f.proto.tolist() == [6, 6, 17]
    # IP-layer bytes from orig_ip_bytes/resp_ip_bytes, payload kept separately (-1 when unset)
    assert f.bytes_out.tolist() == [1001, 60, 88] and f.bytes_in.tolist() == [4744, 0, 0]
    assert f.payload_out.tolist() == [517, -1, 40] and f.payload_in.tolist() == [4312, -1, 0]
    assert f.pkts_out.tolist() == [9, 1, 1] and f.pkts_in.tolist() == [8, 0, 0]
    assert f.ts_start.tolist() == [1707834880.85612, 1707834881.0, 1707834882.25]
    assert f.ts_end.tolist() == pytest.approx([1707834883.35612, 1707834881.0, 1707834882.250123])
    assert f.service.tolist() == ["ssl", "", "dns"] and f.conn_state.tolist() == ["SF", "S0", "S0"]
    assert f.bidirectional.all() and f.offset.tolist() == [1, 2, 3]
    f.validate()


@pytest.mark.parametrize(
    "variant", ["zeek_conn_underscore.json", "zeek_conn_tagged.json", "zeek_conn_stream.json"]
)
def test_conn_json_variants_identical(variant: str) -> None:
    base = ZeekJsonDecoder().decode(_msgs("zeek_conn.json")).flows
    other = ZeekJsonDecoder().decode(_msgs(variant))
    assert not other.dead
    _same(base, other.flows)


def test_stream_wrapper_sets_sensor() -> None:
    f = ZeekJsonDecoder().decode(_msgs("zeek_conn_stream.json")).flows
    assert f.sensor.tolist() == ["sensor-a"] * 3


def test_dns_json_exact_fields_and_other_logs_ignored() -> None:
    r = ZeekJsonDecoder().decode(_msgs("zeek_dns.json"))
    assert not r.dead and r.ignored == 1 and len(r.flows) == 0  # the http.log line
    d = r.dns
    assert d.query.tolist() == ["www.example.com", "aGVsbG8.t.evil.example", "slow.example"]
    assert d.qtype.tolist() == [1, 16, 28] and d.rcode.tolist() == [0, 3, -1]
    assert d.answers_n.tolist() == [2, 0, 0]
    assert d.answers.tolist() == ["www.example.com.cdn.net,93.184.216.34", "", ""]
    # ISO-8601 ts (JSON::TS_ISO8601) and epoch floats give the same clock
    assert d.ts.tolist() == pytest.approx([1707834885.1, 1707834886.2, 1707834887.0])
    assert d.src.tolist() == ["10.1.2.3"] * 3 and d.dst_port.tolist() == [53] * 3
    assert d.proto.tolist() == [17] * 3 and d.resp_bytes.tolist() == [0, 0, 0]
    d.validate()


def test_tagged_dns_and_tagged_other() -> None:
    msgs = [
        Message(b'{"dns": ' + m.value + b"}", "z/0", m.offset) for m in _msgs("zeek_dns.json")[:3]
    ]
    msgs.append(
        Message(
            b'{"ssl": {"ts": 1707834889.0, "id.orig_h": "10.1.2.3", "id.resp_h": "1.1.1.1"}}',
            "z/0",
            9,
        )
    )
    r = ZeekJsonDecoder().decode(msgs)
    assert len(r.dns) == 3 and r.ignored == 1 and not r.dead
    assert r.dns.qtype.tolist() == [1, 16, 28]


def test_tsv_matches_json() -> None:
    tsv = ZeekTsvDecoder().decode(_msgs("conn.log"))
    assert not tsv.dead and tsv.ignored == 9  # header/footer lines
    js = ZeekJsonDecoder().decode(_msgs("zeek_conn.json"))
    _same(js.flows, tsv.flows, skip=("origin", "sensor", "offset"))
    assert tsv.flows.offset.tolist() == [9, 10, 11]
    dns_tsv = ZeekTsvDecoder().decode(_msgs("dns.log")).dns
    dns_js = ZeekJsonDecoder().decode(_msgs("zeek_dns.json")).dns
    for name in (
        "ts",
        "src",
        "dst",
        "src_port",
        "dst_port",
        "query",
        "qtype",
        "rcode",
        "answers_n",
        "answers",
    ):
        assert getattr(dns_tsv, name).tolist() == pytest.approx(getattr(dns_js, name).tolist()), (
            name
        )


def test_tsv_state_is_per_origin_and_pickles() -> None:
    dec = ZeekTsvDecoder()
    lines = _msgs("conn.log")
    dec.decode(lines[:8])  # headers only
    dec = pickle.loads(pickle.dumps(dec))
    r = dec.decode([*lines[8:9], Message(lines[8].value, "other.log", 1)])
    assert len(r.flows) == 1 and [d.reason for d in r.dead] == ["schema"]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"1707834880.8\tC\t10.1.2.3\t1\t10.0.0.1", "schema"),  # wrong column count
        (b"\xff\xfe\t" * 21, "bad_value"),  # not UTF-8
        (
            b"1707834880.8\tC\t10.1.2.3\t1\t10.0.0.1\t2\ttcp\t-\t-\t-5\t-\tS0\tT\tF\t0\tS\t1\t60\t0\t0\t(empty)",
            "negative",
        ),
        (
            b"1707834880.8\tC\t10.1.2.3\t99999\t10.0.0.1\t2\ttcp\t-\t-\t-\t-\tS0\tT\tF\t0\tS\t1\t60\t0\t0\t(empty)",
            "bad_value",
        ),
        (
            b"nan\tC\t10.1.2.3\t1\t10.0.0.1\t2\ttcp\t-\t-\t-\t-\tS0\tT\tF\t0\tS\t1\t60\t0\t0\t(empty)",
            "nan",
        ),
        (
            b"1707834880.8\tC\tnot-an-ip\t1\t10.0.0.1\t2\ttcp\t-\t-\t-\t-\tS0\tT\tF\t0\tS\t1\t60\t0\t0\t(empty)",
            "bad_value",
        ),
    ],
)
def test_tsv_dead_letters(line: bytes, reason: str) -> None:
    dec = ZeekTsvDecoder()
    dec.decode(_msgs("conn.log")[:8])
    r = dec.decode([Message(line, str(SAMPLES / "conn.log"), 50)])
    assert [d.reason for d in r.dead] == [reason] and len(r.flows) == 0
    assert r.dead[0].offset == 50


def test_json_numeric_columns_have_canonical_dtypes() -> None:
    f = ZeekJsonDecoder().decode(_msgs("zeek_conn.json")).flows
    assert (
        f.bytes_out.dtype == np.int64
        and f.proto.dtype == np.uint8
        and f.ts_start.dtype == np.float64
    )
