"""pmacct JSON decoder on hand-written records of the print/kafka plugin output."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream.decoders.base import Message
from stream.decoders.pmacct import PmacctDecoder
from stream.sources import iter_messages

SAMPLES = Path(__file__).parent / "samples"


def test_exact_fields() -> None:
    msgs = [m for b in iter_messages(SAMPLES / "pmacct.json") for m in b]
    r = PmacctDecoder().decode(msgs)
    assert not r.dead and r.ignored == 2  # purge_init / purge_close markers
    f = r.flows
    assert f.src.tolist() == ["10.1.2.3", "203.0.113.9", "10.1.2.3", "10.1.2.4"]
    assert f.dst_port.tolist() == [443, 50123, 53, 123] and f.proto.tolist() == [6, 6, 17, 17]
    assert f.bytes_out.tolist() == [1001, 4744, 150, 40000] and f.pkts_out.tolist() == [
        9,
        8,
        2,
        400,
    ]
    assert f.sampling_rate.tolist() == [1, 1, 1, 100] and not f.bidirectional.any()
    # timestamp_start/end when aggregated; else the stamp_inserted/updated bin (naive = UTC); epoch strings
    assert f.ts_start.tolist() == pytest.approx(
        [1707834880.85612, 1707834880.9, 1707834840.0, 1707834899.0]
    )
    assert f.ts_end.tolist() == pytest.approx(
        [1707834883.35612, 1707834883.3, 1707834901.0, 1707834900.0]
    )
    assert f.tcp_flags.tolist() == [27, 27, 0, 0]
    assert f.sensor.tolist() == ["default_kafka/4242"] * 3 + ["192.0.2.1"]
    assert f.offset.tolist() == [2, 3, 4, 5]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"ip_src=10.0.0.1", "not_json"),
        (b'{"event_type": "purge", "bytes": 10}', "schema"),
        (b'{"ip_src": "10.0.0.1", "ip_dst": "10.0.0.2", "bytes": -10}', "negative"),
        (b'{"ip_src": "10.0.0.1", "ip_dst": "10.0.0.2", "bytes": Infinity}', "nan"),
        (b'{"ip_src": "10.0.0.1", "ip_dst": "10.0.0.2", "timestamp_start": 1e999}', "nan"),
        (
            b'{"ip_src": "10.0.0.1", "ip_dst": "10.0.0.2", "ip_proto": "warp", "stamp_inserted": 1}',
            "bad_value",
        ),
        (b'{"ip_src": "10.0.0.1", "ip_dst": "10.0.0.2", "stamp_inserted": "noon"}', "nan"),
        (b'{"ip_src": "10.0.0.1", "ip_dst": "10.0.0.2"}', "schema"),
        (b'{"ip_src": "10.0.0.1", "ip_dst": "10.0.0.2", "bytes": 1e3}', "schema"),
    ],
)
def test_dead_letters(value: bytes, reason: str) -> None:
    r = PmacctDecoder().decode([Message(value, "pmacct/0", 8)])
    assert [d.reason for d in r.dead] == [reason]


def test_kafka_timestamp_when_no_time_is_aggregated() -> None:
    msg = Message(
        b'{"ip_src": "10.0.0.1", "ip_dst": "10.0.0.2", "bytes": 5}',
        "pmacct/0",
        1,
        timestamp=1707834900.5,
    )
    f = PmacctDecoder().decode([msg]).flows
    assert f.ts_start.tolist() == [1707834900.5] and f.ts_end.tolist() == [1707834900.5]


def test_stitching_fields_and_zero_end() -> None:
    stitched = (b'{"event_type": "purge", "ip_src": "147.32.80.37", "ip_dst": "147.32.80.9", "port_src": 33266,'
                b' "port_dst": 53, "tcp_flags": "0", "ip_proto": "udp", "timestamp_min": "1707834878.788187",'
                b' "timestamp_max": "1707834878.788265", "packets": 2, "bytes": 146}')  # fmt: skip
    zero_end = (b'{"ip_src": "147.32.80.37", "ip_dst": "147.32.80.9", "timestamp_start": "1707834878.788187",'
                b' "timestamp_end": "0.000000", "packets": 1, "bytes": 68}')  # fmt: skip
    f = PmacctDecoder().decode([Message(stitched), Message(zero_end)]).flows
    assert f.ts_start.tolist() == [1707834878.788187, 1707834878.788187]
    assert f.ts_end.tolist() == [1707834878.788265, 1707834878.788187]
