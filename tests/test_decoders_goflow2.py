"""goflow2 JSON and protobuf decoders on hand-written samples of the documented formats."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from stream.decoders import get_decoder
from stream.decoders.base import Message
from stream.decoders.goflow2_json import Goflow2JsonDecoder
from stream.decoders.goflow2_pb import Goflow2ProtobufDecoder, encode_flow
from stream.sources import iter_messages

SAMPLES = Path(__file__).parent / "samples"


def _sample() -> list[Message]:
    return [m for batch in iter_messages(SAMPLES / "goflow2.json") for m in batch]


def test_goflow2_json_exact_fields() -> None:
    r = Goflow2JsonDecoder().decode(_sample())
    assert not r.dead and r.ignored == 0
    f = r.flows
    assert f.src.tolist() == ["10.1.2.3", "2001:db8::10", "10.1.2.3", "10.1.2.4"]
    assert f.dst.tolist() == ["203.0.113.9", "fd00::5", "10.9.9.9", "198.51.100.7"]
    assert f.proto.tolist() == [6, 17, 1, 17]
    assert f.src_port.tolist() == [50123, 53, 0, 1234]
    assert f.dst_port.tolist() == [443, 40000, 0, 123]
    # sampling_rate 0 means unsampled; 512 and 10 scale bytes and packets
    assert f.sampling_rate.tolist() == [1, 512, 1, 10]
    assert f.bytes_out.tolist() == [2568, 1500 * 512, 84, 4000]
    assert f.pkts_out.tolist() == [9, 512, 1, 40]
    assert f.bytes_in.tolist() == [0, 0, 0, 0] and not f.bidirectional.any()
    assert f.ts_start.tolist() == pytest.approx(
        [1707834880.85612, 1707834890.0, 1707834895.0, 1707834899.0]
    )
    # flow times missing (0) -> time received; v1 keys are seconds
    assert f.ts_end.tolist() == pytest.approx(
        [1707834883.35612, 1707834890.0, 1707834895.0, 1707834900.0]
    )
    assert f.tcp_flags.tolist() == [27, 0, 0, 0]
    assert f.sensor.tolist() == ["192.0.2.1", "192.0.2.2", "192.0.2.1", "192.0.2.1"]
    assert f.origin.tolist() == [str(SAMPLES / "goflow2.json")] * 4
    assert f.offset.tolist() == [1, 2, 3, 4]
    assert not f.src_inside.any()  # decoders leave direction to annotate_direction
    f.validate()


def test_goflow2_json_registry_and_pickle() -> None:
    dec = get_decoder("goflow2-json")
    again = pickle.loads(pickle.dumps(dec))
    a, b = dec.decode(_sample()), again.decode(_sample())
    assert a.flows.bytes_out.tolist() == b.flows.bytes_out.tolist()


def _pb(**over: object) -> bytes:
    fields: dict[str, object] = {
        "type": 4,
        "time_received_ns": 1707834881_000_000_000,
        "sequence_num": 9,
        "sampling_rate": 100,
        "sampler_address": bytes([192, 0, 2, 1]),
        "time_flow_start_ns": 1707834880_856_120_000,
        "time_flow_end_ns": 1707834883_356_120_000,
        "bytes": 2568,
        "packets": 9,
        "src_addr": bytes([10, 1, 2, 3]),
        "dst_addr": bytes([203, 0, 113, 9]),
        "etype": 0x800,
        "proto": 6,
        "src_port": 50123,
        "dst_port": 443,
        "in_if": 3,
        "out_if": 7,
        "tcp_flags": 27,
    }
    fields.update(over)
    return encode_flow(fields)


def test_goflow2_pb_exact_fields_and_multi_message() -> None:
    v6 = bytes.fromhex("20010db8000000000000000000000010")
    mapped = bytes.fromhex("00000000000000000000ffffc6336407")
    one = _pb()
    two = _pb(
        src_addr=v6, dst_addr=mapped, proto=17, sampling_rate=0, bytes=60, packets=1, tcp_flags=0
    )
    r = Goflow2ProtobufDecoder().decode([Message(one, "fm/0", 10), Message(one + two, "fm/0", 11)])
    assert not r.dead
    f = r.flows
    assert len(f) == 3
    assert f.offset.tolist() == [10, 11, 11]
    assert f.src.tolist() == ["10.1.2.3", "10.1.2.3", "2001:db8::10"]
    assert f.dst.tolist() == ["203.0.113.9", "203.0.113.9", "198.51.100.7"]
    assert f.bytes_out.tolist() == [256800, 256800, 60]
    assert f.pkts_out.tolist() == [900, 900, 1]
    assert f.sampling_rate.tolist() == [100, 100, 1]
    assert f.proto.tolist() == [6, 6, 17] and f.tcp_flags.tolist() == [27, 27, 0]
    assert f.ts_start[0] == pytest.approx(1707834880.85612) and f.ts_end[0] == pytest.approx(
        1707834883.35612
    )
    assert f.sensor.tolist()[0] == "192.0.2.1"


def test_goflow2_pb_v1_second_fields() -> None:
    msg = encode_flow({"time_received": 1707834900, "ip_flags_or_v1_start": 1707834899, "time_flow_end": 1707834900,
                       "bytes": 10, "packets": 1, "src_addr": bytes(4), "dst_addr": bytes([1, 1, 1, 1])})  # fmt: skip
    f = Goflow2ProtobufDecoder().decode([Message(msg)]).flows
    assert f.ts_start.tolist() == [1707834899.0] and f.ts_end.tolist() == [1707834900.0]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (_pb()[:-4], "truncated"),
        (b"\x05\x08", "truncated"),
        (b"", "truncated"),
        (encode_flow({"bytes": 5}), "schema"),
        (_pb(src_addr=b"\x01\x02\x03"), "bad_value"),
        (_pb(bytes=1 << 60), "bad_value"),
        (_pb(dst_port=70000), "bad_value"),
        (b"\x03\x0b\x00\x00", "schema"),  # wire type 3 (groups) is not used by FlowMessage
    ],
)
def test_goflow2_pb_dead_letters(value: bytes, reason: str) -> None:
    r = Goflow2ProtobufDecoder().decode([Message(value, "fm/0", 5)])
    assert [d.reason for d in r.dead] == [reason]
    assert r.dead[0].offset == 5 and r.dead[0].decoder == "goflow2-pb"
    assert len(r.flows) == 0


def test_goflow2_pb_keeps_records_before_a_cut() -> None:
    r = Goflow2ProtobufDecoder().decode([Message(_pb() + _pb()[:-2])])
    assert len(r.flows) == 1 and [d.reason for d in r.dead] == ["truncated"]
    assert np.all(r.flows.bytes_out == 256800)


def test_goflow2_pb_address_with_wrong_wire_type() -> None:
    bad = encode_flow({"src_addr": bytes(4)}) + b""
    body = bytes(
        [6 << 3 | 0, 0x05, 7 << 3 | 2, 4, 1, 2, 3, 4]
    )  # src_addr as a varint (found by fuzzing)
    r = Goflow2ProtobufDecoder().decode([Message(bytes([len(body)]) + body), Message(bad)])
    assert [d.reason for d in r.dead] == ["schema", "schema"]


def test_goflow2_json_non_ip_flows_ignored() -> None:
    arp = b'{"type":"SFLOW_5","time_received_ns":1,"bytes":60,"packets":1,"src_addr":"","dst_addr":"","etype":"ARP"}'
    old = b'{"TimeReceived":1,"Bytes":60,"Packets":1,"SrcAddr":"","DstAddr":"","Etype":2054}'
    r = Goflow2JsonDecoder().decode([Message(arp), Message(old), *_sample()[:1]])
    assert r.ignored == 2 and not r.dead and len(r.flows) == 1
