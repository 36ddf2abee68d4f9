"""AutoDecoder: per-message sniffing, lazy stateful per-format decoders, unknown formats."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from stream.decoders import get_decoder
from stream.decoders.auto import AutoDecoder, sniff_format
from stream.decoders.base import Message
from stream.decoders.goflow2_pb import encode_flow
from stream.sources import iter_messages

SAMPLES = Path(__file__).parent / "samples"
JSON_SAMPLES = {
    "goflow2.json": "goflow2-json",
    "zeek_conn.json": "zeek-json",
    "zeek_conn_underscore.json": "zeek-json",
    "zeek_conn_tagged.json": "zeek-json",
    "zeek_conn_stream.json": "zeek-json",
    "suricata_eve.json": "suricata",
    "pmacct.json": "pmacct",
}


def _msgs(name: str) -> list[Message]:
    return [m for b in iter_messages(SAMPLES / name) for m in b]


@pytest.mark.parametrize(("name", "fmt"), sorted(JSON_SAMPLES.items()))
def test_sniff_every_sample_line(name: str, fmt: str) -> None:
    assert {sniff_format(m.value) for m in _msgs(name)} == {fmt}


def test_sniff_zeek_dns_and_binary() -> None:
    assert {sniff_format(m.value) for m in _msgs("zeek_dns.json")[:3]} == {"zeek-json"}
    assert (
        sniff_format(encode_flow({"bytes": 1, "src_addr": b"\1\2\3\4", "dst_addr": b"\1\2\3\5"}))
        == "goflow2-pb"
    )
    assert sniff_format(b"\x00\x05\x00\x01" + bytes(20)) == "netflow"
    assert sniff_format(b"\x00\x0a\x00\x10" + bytes(12)) == "netflow"
    assert sniff_format(b'{"kind":"pkt","ts":1.0}') == "summary"
    assert (
        sniff_format(b"hello") is None
        and sniff_format(b"") is None
        and sniff_format(b'{"a": 1}') is None
    )


@pytest.mark.parametrize("name", sorted(JSON_SAMPLES))
def test_auto_equals_pinned(name: str) -> None:
    msgs = _msgs(name)
    pinned = get_decoder(JSON_SAMPLES[name])
    a, b = AutoDecoder().decode(msgs), pinned.decode(msgs)
    assert a.flows.bytes_out.tolist() == b.flows.bytes_out.tolist()
    assert a.flows.ts_start.tolist() == b.flows.ts_start.tolist()
    assert a.dns.query.tolist() == b.dns.query.tolist()
    assert a.ignored == b.ignored and len(a.dead) == len(b.dead) == 0


def test_mixed_stream_and_state() -> None:
    msgs: list[Message] = []
    for name in ("goflow2.json", "suricata_eve.json", "zeek_dns.json", "pmacct.json"):
        msgs += _msgs(name)
    msgs += _msgs("conn.log")  # Zeek TSV lines: headers make the origin a TSV origin
    msgs.append(Message(b"\x01\x02\x03garbage", "x", 1))
    auto = AutoDecoder()
    r = auto.decode(msgs)
    r.extend(auto.flush())
    assert len(r.flows) == 4 + 2 + 4 + 3
    assert len(r.dns) == 5 + 3
    assert [d.reason for d in r.dead] == ["unknown_format"]
    assert sorted(auto.decoders) == ["goflow2-json", "pmacct", "suricata", "zeek-json", "zeek-tsv"]
    # state pickles, including Zeek TSV headers per origin
    again = pickle.loads(pickle.dumps(auto))
    more = again.decode(_msgs("conn.log")[8:9])
    assert len(more.flows) == 1 and not more.dead


def test_formats_restriction_and_missing_module(monkeypatch: pytest.MonkeyPatch) -> None:
    r = AutoDecoder(formats=["zeek-json"]).decode(_msgs("goflow2.json"))
    assert {d.reason for d in r.dead} == {"unknown_format"} and len(r.dead) == 4
    import stream.decoders as registry

    monkeypatch.setitem(registry.FORMATS, "netflow", "stream.decoders.no_such_module:Nope")
    r = AutoDecoder().decode([Message(b"\x00\x09\x00\x01" + bytes(16), "udp:1", 1)])
    assert [(d.reason, d.decoder) for d in r.dead] == [("unknown_format", "auto")]


def test_oversized() -> None:
    r = AutoDecoder().decode([Message(b"{" + b" " * (1 << 20) + b"}", "t/0", 1)])
    assert [d.reason for d in r.dead] == ["oversized"]


def test_dispatch_to_other_helpers_formats() -> None:
    summary = (b'{"kind":"pkt","ts":1.0,"src":"10.0.0.5","dst":"10.0.0.53","sport":5000,"dport":53,"proto":17,'
               b'"len":60,"flags":0,"plen":32}')  # fmt: skip
    canonical = b'{"kind": "flow", "ts_start": 10.0, "ts_end": 11.0, "src": "10.0.0.1", "dst": "8.8.8.8", "bytes_out": 80}'
    auto = AutoDecoder()
    r = auto.decode(
        [
            Message(summary, "s", 1),
            Message(b"[" + summary + b"]", "s", 2),
            Message(canonical, "c", 3),
        ]
    )
    r.extend(auto.flush())
    assert not r.dead and sorted(auto.decoders) == ["canonical", "summary"]
    assert sorted(r.flows.bytes_out.tolist()) == [
        80,
        120,
    ]  # two 60-byte packets of one flow, one canonical row


@pytest.mark.parametrize("name", sorted(JSON_SAMPLES))
def test_chunked_decoding_equals_one_chunk(name: str) -> None:
    msgs = [*_msgs(name), Message(b"{bad", "x", 99)]
    small, big = (
        get_decoder(JSON_SAMPLES[name], chunk=2),
        get_decoder(JSON_SAMPLES[name], chunk=10_000),
    )
    a, b = small.decode(msgs), big.decode(msgs)
    a.extend(small.flush())
    b.extend(big.flush())
    assert list(a.flows.rows()) == list(b.flows.rows()) and list(a.dns.rows()) == list(b.dns.rows())
    assert [(d.reason, d.offset) for d in a.dead] == [(d.reason, d.offset) for d in b.dead]
    assert a.ignored == b.ignored


def test_fast_format_check_agrees_with_full_sniff_on_mixed_batches() -> None:
    """The previous-format shortcut never claims a message sniff_format gives elsewhere."""
    from stream.decoders.auto import AutoDecoder, sniff_format

    zeek = b'{"ts":1.5,"id.orig_h":"10.0.0.1","id.resp_h":"10.0.0.2","conn_state":"S0"}'
    values = [
        zeek,
        zeek,
        b'{"ts":1.5,"id.orig_h":"10.0.0.1","id.resp_h":"10.0.0.2","event_type":"flow"}',
        zeek,
        b'{"ts":1.5,"kind":"flow","id.orig_h":"10.0.0.1","id.resp_h":"10.0.0.2"}',
        b'{"src_addr":"10.0.0.1","time_flow_start_ns":1,"id.orig_h":"10.0.0.1"}',
        zeek,
        b'{"ip_src":"10.0.0.1","ip_dst":"10.0.0.2","id.orig_h":"x"}',
    ]
    auto = AutoDecoder()
    last = None
    from stream.decoders.auto import _clean_formats

    clean = _clean_formats(values)
    for i, v in enumerate(values):
        got = auto._format(Message(v, "t/0", i), last, clean)
        assert got == sniff_format(v)
        last = got
