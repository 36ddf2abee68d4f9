"""Suricata EVE decoder: flow/netflow rows, DNS request/answer pairing over EVE v1/v2/v3."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from stream.decoders.base import Message
from stream.decoders.suricata import SuricataDecoder
from stream.sources import iter_messages

SAMPLES = Path(__file__).parent / "samples"


def _msgs() -> list[Message]:
    return [m for batch in iter_messages(SAMPLES / "suricata_eve.json") for m in batch]


def test_flow_and_netflow_rows() -> None:
    r = SuricataDecoder().decode(_msgs())
    assert not r.dead
    f = r.flows
    assert f.src.tolist() == ["10.1.2.3", "203.0.113.9"] and f.dst.tolist() == [
        "203.0.113.9",
        "10.1.2.3",
    ]
    assert f.bidirectional.tolist() == [True, False]
    assert f.bytes_out.tolist() == [1001, 4744] and f.bytes_in.tolist() == [4744, 0]
    assert f.pkts_out.tolist() == [9, 8] and f.pkts_in.tolist() == [8, 0]
    assert f.ts_start.tolist() == pytest.approx([1707834880.85612, 1707834880.9])
    assert f.ts_end.tolist() == pytest.approx([1707834883.35612, 1707834883.3])
    assert f.service.tolist() == ["tls", "tls"] and f.conn_state.tolist() == ["closed", ""]
    assert f.tcp_flags.tolist() == [0x1B, 0] and f.proto.tolist() == [6, 6]
    assert f.sensor.tolist() == ["sensor-b", ""] and f.offset.tolist() == [1, 2]


def test_dns_pairing_one_row_per_query() -> None:
    dec = SuricataDecoder(pending_timeout=30.0)
    r = dec.decode(_msgs())
    d = r.dns.sorted_by_time()  # the EVE v1 row is held back to merge its answer records
    # unanswered query is still pending within the timeout ...
    assert d.query.tolist() == [
        "www.example.com",
        "aGVsbG8.t.evil.example",
        "a.example.org",
        "v3.example.net",
    ]
    assert d.qtype.tolist() == [1, 16, 1, 28] and d.rcode.tolist() == [0, 3, 0, 0]
    assert d.answers.tolist() == [
        "www.example.com.cdn.net,93.184.216.34",
        "",
        "192.0.2.10,192.0.2.11",
        "2001:db8::7",
    ]
    assert d.answers_n.tolist() == [2, 0, 2, 1]
    # request time, client -> server orientation even when the answer event is server -> client
    assert d.ts.tolist() == pytest.approx([1707834890.0, 1707834891.0, 1707834892.0, 1707834893.0])
    assert d.src.tolist() == ["10.1.2.3"] * 4 and d.dst_port.tolist() == [53] * 4
    assert d.offset.tolist() == [5, 8, 10, 11]
    # alert + stats ignored; 3 paired requests and 1 extra v1 answer record merged
    assert r.ignored == 2 + 3 + 1
    # ... and comes out at flush with no rcode
    tail = pickle.loads(pickle.dumps(dec)).flush().dns
    assert tail.query.tolist() == ["unanswered.example"] and tail.rcode.tolist() == [-1]
    assert tail.qtype.tolist() == [10] and tail.offset.tolist() == [13]


def test_pending_requests_expire_with_record_time() -> None:
    r = SuricataDecoder(pending_timeout=5.0).decode(_msgs())
    assert (
        "unanswered.example" not in r.dns.query.tolist()
    )  # newest record time is the request itself
    late = b'{"timestamp":"2024-02-13T14:36:00.000000+0000","event_type":"stats"}'
    dec = SuricataDecoder(pending_timeout=5.0)
    dec.decode(_msgs())
    # an event without a parseable time does not move the clock; a DNS event does
    dec.decode([Message(late)])
    later = (b'{"timestamp":"2024-02-13T14:36:00.000000+0000","flow_id":9,"event_type":"dns","src_ip":"10.1.2.3",'
             b'"src_port":1,"dest_ip":"10.0.0.53","dest_port":53,"proto":"UDP","dns":{"type":"query","id":1,'
             b'"rrname":"x.example","rrtype":"A"}}')  # fmt: skip
    out = dec.decode([Message(later)])
    assert out.dns.query.tolist() == ["unanswered.example"]


def test_bounded_pending_table() -> None:
    dec = SuricataDecoder(pending_timeout=1e9, max_pending=2)
    msgs = [
        Message(
            b'{"timestamp":"2024-02-13T14:34:50+0000","flow_id":%d,"event_type":"dns","src_ip":"10.1.2.3",'
            b'"src_port":1,"dest_ip":"10.0.0.53","dest_port":53,"dns":{"type":"query","id":%d,"rrname":"q%d.example",'
            b'"rrtype":"A"}}' % (i, i, i),
            "eve",
            i,
        )
        for i in range(5)
    ]
    r = dec.decode(msgs)
    assert (
        r.dns.query.tolist() == ["q0.example", "q1.example", "q2.example"] and len(dec.pending) == 2
    )


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b'{"event_type": "flow", "src_ip": "10.0.0.1"', "not_json"),
        (b'{"timestamp": "x"}', "schema"),
        (b'{"event_type": "flow", "src_ip": "10.0.0.1", "dest_ip": "10.0.0.2"}', "schema"),
        (
            b'{"event_type":"flow","src_ip":"10.0.0.1","dest_ip":"10.0.0.2","flow":{"bytes_toserver":-4}}',
            "negative",
        ),
        (
            b'{"event_type":"flow","src_ip":"10.0.0.1","dest_ip":"10.0.0.2","flow":{"bytes_toserver":NaN}}',
            "nan",
        ),
        (
            b'{"event_type":"flow","src_ip":"10.0.0.1","dest_ip":"10.0.0.2","flow":{"start":"yesterday"}}',
            "nan",
        ),
        (
            b'{"event_type":"flow","src_ip":"10.0.0.1","dest_ip":"10.0.0.2","src_port":70000,"flow":{}}',
            "bad_value",
        ),
        (
            b'{"event_type":"flow","src_ip":"bogus","dest_ip":"10.0.0.2","flow":{"start":"2024-02-13T14:34:40+0000"}}',
            "bad_value",
        ),
        (b'{"event_type":"alert", "pad": "' + b"x" * (1 << 20) + b'"}', "oversized"),
    ],
)
def test_dead_letters(value: bytes, reason: str) -> None:
    r = SuricataDecoder().decode([Message(value, "eve/0", 3)])
    assert [d.reason for d in r.dead] == [reason]
    assert len(r.flows) == 0 and r.dead[0].offset == 3


def test_v1_answer_records_merge_across_batches() -> None:
    dec = SuricataDecoder(pending_timeout=5.0)
    msgs = _msgs()
    first = dec.decode(msgs[4:6])  # the v1 query and its first answer record
    second = dec.decode(msgs[6:7])  # the second answer record, in the next batch
    rest = dec.flush()
    rows = [*first.dns.rows(), *second.dns.rows(), *rest.dns.rows()]
    assert [(r["query"], r["answers"]) for r in rows] == [
        ("www.example.com", "www.example.com.cdn.net,93.184.216.34")
    ]
    assert first.ignored + second.ignored == 2
