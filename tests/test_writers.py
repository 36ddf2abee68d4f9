"""JSON writers: goflow2 v2 and Zeek conn/dns field names, direction split, escaping, decoder round trip."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipelines.records import DnsBatch, FlowBatch
from pipelines.simulate import DEFAULT_START, SimConfig, Simulation
from stream.cli import main
from stream.decoders import get_decoder
from stream.decoders.base import Message
from stream.writers import (
    encode_goflow2_json,
    encode_zeek_conn_json,
    encode_zeek_dns_json,
    zeek_uids,
)

GOFLOW2_KEYS = {
    "type", "time_received_ns", "sequence_num", "sampling_rate", "sampler_address",
    "time_flow_start_ns", "time_flow_end_ns", "bytes", "packets", "src_addr", "dst_addr",
    "etype", "proto", "src_port", "dst_port", "tcp_flags", "in_if", "out_if",
}  # fmt: skip
CONN_KEYS = {
    "ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto", "duration",
    "orig_bytes", "resp_bytes", "conn_state", "orig_pkts", "orig_ip_bytes", "resp_pkts",
    "resp_ip_bytes", "history", "missed_bytes", "local_orig", "local_resp",
}  # fmt: skip
DNS_KEYS = {
    "ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto", "trans_id",
    "query", "qclass", "qclass_name", "qtype", "qtype_name", "rcode", "rcode_name", "AA", "TC",
    "RD", "RA", "Z", "answers", "TTLs", "rejected", "rtt",
}  # fmt: skip


def _flows() -> FlowBatch:
    return FlowBatch.from_columns(
        {
            "ts_start": [10.25, 11.0, 12.0],
            "ts_end": [12.5, 11.0, 12.0005],
            "src": ["10.1.0.5", "10.1.0.6", "2001:db8::1"],
            "dst": ["203.0.113.9", "10.2.0.1", "2001:db8::2"],
            "src_port": [50000, 50001, 50002],
            "dst_port": [443, 445, 53],
            "proto": [6, 6, 17],
            "bytes_out": [1200, 60, 800],
            "pkts_out": [6, 1, 1],
            "bytes_in": [9000, 0, 1600],
            "pkts_in": [8, 0, 1],
            "payload_out": [840, 0, 772],
            "payload_in": [8520, 0, 1572],
            "tcp_flags": [27, 2, 0],
            "service": ["ssl", "", "dns"],
            "conn_state": ["SF", "S0", "SF"],
            "sampling_rate": [1, 1, 4],
            "bidirectional": [True, True, True],
            "src_inside": [True, True, True],
            "dst_inside": [False, True, True],
            "offset": [0, 1, 2],
        }
    )


def test_goflow2_fields_and_one_record_per_direction() -> None:
    recs = [json.loads(b) for b in encode_goflow2_json(_flows())]
    assert len(recs) == 5  # forward + reverse for each flow with a reply; the S0 flow has none
    for r in recs:
        assert set(r) >= GOFLOW2_KEYS
        assert r["type"] == "IPFIX" and r["etype"] in ("IPv4", "IPv6")
    fwd, rev = recs[0], recs[1]
    assert (fwd["src_addr"], fwd["dst_addr"], fwd["src_port"], fwd["dst_port"]) == (
        "10.1.0.5",
        "203.0.113.9",
        50000,
        443,
    )
    assert (rev["src_addr"], rev["dst_addr"], rev["src_port"], rev["dst_port"]) == (
        "203.0.113.9",
        "10.1.0.5",
        443,
        50000,
    )
    assert (fwd["bytes"], fwd["packets"], rev["bytes"], rev["packets"]) == (1200, 6, 9000, 8)
    assert fwd["time_flow_start_ns"] == 10_250_000_000 and fwd["time_flow_end_ns"] == 12_500_000_000
    assert fwd["time_received_ns"] > fwd["time_flow_end_ns"] and fwd["proto"] == "TCP"
    assert recs[2]["proto"] == "TCP" and recs[2]["tcp_flags"] == 2
    v6 = recs[3]
    assert v6["etype"] == "IPv6" and v6["proto"] == "UDP"
    assert (
        v6["sampling_rate"] == 4 and v6["bytes"] == 200
    )  # sampled counts: the decoder multiplies back
    assert recs[4]["src_addr"] == "2001:db8::2" and recs[4]["bytes"] == 400
    assert [r["sequence_num"] for r in recs] == [1, 2, 3, 4, 5]


def test_zeek_conn_fields_history_and_tagging() -> None:
    bare = [json.loads(b) for b in encode_zeek_conn_json(_flows())]
    tagged = [json.loads(b) for b in encode_zeek_conn_json(_flows(), tagged=True)]
    assert [t["conn"] for t in tagged] == bare
    sf, s0, udp = bare
    assert set(sf) >= CONN_KEYS and sf["service"] == "ssl"
    assert "service" not in s0  # unset fields are omitted, as Zeek does
    assert (sf["orig_ip_bytes"], sf["orig_bytes"], sf["resp_ip_bytes"], sf["resp_bytes"]) == (
        1200,
        840,
        9000,
        8520,
    )
    assert (
        sf["duration"] == pytest.approx(2.25)
        and sf["history"] == "ShADadFf"
        and sf["local_resp"] is False
    )
    assert s0["conn_state"] == "S0" and s0["history"] == "S" and s0["resp_pkts"] == 0
    assert udp["proto"] == "udp" and udp["history"] == "Dd" and udp["id.orig_h"] == "2001:db8::1"
    assert len({r["uid"] for r in bare}) == 3 and all(
        r["uid"].startswith("C") and len(r["uid"]) == 18 for r in bare
    )


def test_zeek_dns_fields_answers_and_unanswered() -> None:
    dns = DnsBatch.from_columns(
        {
            "ts": [5.0, 6.0, 7.0],
            "src": ["10.1.0.5"] * 3,
            "dst": ["10.2.1.10"] * 3,
            "src_port": [53000, 53001, 53002],
            "dst_port": [53] * 3,
            "query": ["www.example.com", "nx.example", "t.example"],
            "qtype": [1, 1, 16],
            "rcode": [0, 3, -1],
            "answers_n": [2, 0, 0],
            "answers": ["93.184.216.34,93.184.216.35", "", ""],
            "offset": [0, 1, 2],
        }
    )
    recs = [json.loads(b) for b in encode_zeek_dns_json(dns)]
    ok, nx, lost = recs
    assert set(ok) >= DNS_KEYS
    assert ok["answers"] == ["93.184.216.34", "93.184.216.35"] and len(ok["TTLs"]) == 2
    assert (ok["qtype_name"], ok["rcode_name"], ok["proto"]) == ("A", "NOERROR", "udp")
    assert nx["rcode_name"] == "NXDOMAIN" and "answers" not in nx
    assert "rcode" not in lost and lost["qtype_name"] == "TXT" and lost["RA"] is False
    assert json.loads(encode_zeek_dns_json(dns, tagged=True)[0])["dns"] == ok


def test_hostile_strings_stay_valid_json() -> None:
    f = _flows().replace(src=['10.1.0.5"}', "a\\b", "x\ny"], service=['s"v', "", "dns"])
    for enc in (encode_goflow2_json, encode_zeek_conn_json):
        values = [json.loads(b) for b in enc(f)]
        assert values[0].get("src_addr", values[0].get("id.orig_h")) == '10.1.0.5"}'
    assert json.loads(encode_zeek_conn_json(f)[0])["service"] == 's"v'
    d = DnsBatch.from_columns(
        {
            "ts": [1.0],
            "src": ["10.0.0.1"],
            "dst": ["10.0.0.2"],
            "query": ['a"b\\c\x01'],
            "rcode": [0],
            "answers_n": [1],
            "answers": ['x"y'],
            "qtype": [16],
        }
    )
    rec = json.loads(encode_zeek_dns_json(d)[0])
    assert rec["query"] == 'a"b\\c\x01' and rec["answers"] == ['x"y']


def test_uids_are_deterministic_and_distinct() -> None:
    ts = np.arange(1000, dtype=np.float64)
    a = zeek_uids(ts, np.arange(1000))
    assert a == zeek_uids(ts, np.arange(1000)) and len(set(a)) == 1000
    assert all(u.isalnum() for u in a)


def test_empty_batches() -> None:
    assert encode_goflow2_json(FlowBatch.empty()) == []
    assert (
        encode_zeek_conn_json(FlowBatch.empty()) == []
        and encode_zeek_dns_json(DnsBatch.empty()) == []
    )


@pytest.fixture(scope="module")
def hour() -> tuple[FlowBatch, DnsBatch]:
    sim = Simulation(SimConfig(hosts=30, days=1 / 24, seed=9, start=DEFAULT_START + 10 * 3600))
    ((flows, dns),) = list(sim.batches())
    return flows, dns


def test_round_trip_through_the_zeek_decoder(hour: tuple[FlowBatch, DnsBatch]) -> None:
    flows, dns = hour
    recs = encode_zeek_conn_json(flows, tagged=True) + encode_zeek_dns_json(dns, tagged=True)
    got = get_decoder("zeek-json").decode([Message(v, "sim.jsonl", i) for i, v in enumerate(recs)])
    assert not got.dead and len(got.flows) == len(flows) and len(got.dns) == len(dns)
    for name in ("bytes_out", "bytes_in", "pkts_out", "pkts_in", "payload_out", "payload_in"):
        assert getattr(got.flows, name).sum() == getattr(flows, name).sum(), name
    assert list(got.flows.src) == list(flows.src) and list(got.flows.conn_state) == list(
        flows.conn_state
    )
    assert np.allclose(got.flows.ts_end, flows.ts_end, atol=1e-5)
    assert list(got.dns.query) == list(dns.query) and list(got.dns.answers) == list(dns.answers)
    assert np.array_equal(got.dns.rcode, dns.rcode) and np.array_equal(got.dns.qtype, dns.qtype)


def test_round_trip_through_the_goflow2_decoder(hour: tuple[FlowBatch, DnsBatch]) -> None:
    flows, _dns = hour
    recs = encode_goflow2_json(flows)
    got = get_decoder("goflow2-json").decode(
        [Message(v, "flow-messages/0", i) for i, v in enumerate(recs)]
    )
    assert not got.dead and len(got.flows) == len(recs) > len(flows)
    assert got.flows.bytes_out.sum() == flows.bytes_out.sum() + flows.bytes_in.sum()
    assert got.flows.pkts_out.sum() == flows.pkts_out.sum() + flows.pkts_in.sum()
    fwd = (
        got.flows.take(np.flatnonzero(got.flows.src_inside))
        if got.flows.src_inside.any()
        else got.flows
    )
    assert set(fwd.src.tolist()) >= set(flows.src[flows.src_inside].tolist())
    assert np.allclose(
        np.sort(got.flows.ts_start)[: len(flows)].min(), flows.ts_start.min(), atol=1e-6
    )


# -- slowburn simulate ---------------------------------------------------------------------------
def test_simulate_command_writes_zeek_lines_and_truth(tmp_path: Path) -> None:
    out = tmp_path / "sim.jsonl"
    argv = [
        "simulate",
        "--hosts",
        "25",
        "--days",
        "0.125",
        "--seed",
        "3",
        "--start",
        "2023-11-13T09:00:00Z",
    ]
    assert main([*argv, "--scenario", "admin_share_transfer", "--out", str(out)]) == 0
    lines = out.read_bytes().splitlines()
    truth = json.loads((tmp_path / "sim.jsonl.truth.json").read_text())
    assert truth["format"] == "zeek-json" and truth["span"]["packets_or_records"] == len(lines)
    assert (
        truth["span"]["start"] == "2023-11-13T09:00:00.000Z"
        and truth["sources"][0]["config"]["seed"] == 3
    )
    (inc,) = truth["incidents"]
    assert inc["kind"] == "lateral_movement" and "admin_share_transfer: moved" in truth["notes"]
    got = get_decoder("zeek-json").decode([Message(v, str(out), i) for i, v in enumerate(lines)])
    assert not got.dead and len(got.flows) > 1000 and len(got.dns) > 100
    assert all(set(json.loads(v)) <= {"conn", "dns"} for v in lines[:200])
    ts = [json.loads(v).popitem()[1]["ts"] for v in lines]
    assert ts == sorted(ts)  # conn and dns interleaved in time order
    smb = (
        (got.flows.src == inc["src"]) & (got.flows.dst == inc["dst"]) & (got.flows.dst_port == 445)
    )
    assert got.flows.bytes_out[smb].sum() > 2e6


def test_simulate_command_goflow2_writes_dns_beside(tmp_path: Path) -> None:
    out = tmp_path / "gf.jsonl"
    assert (
        main(
            [
                "simulate",
                "--hosts",
                "20",
                "--days",
                "0.05",
                "--format",
                "goflow2-json",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    flows = get_decoder("goflow2-json").decode([Message(v) for v in out.read_bytes().splitlines()])
    dns = get_decoder("zeek-json").decode(
        [Message(v) for v in (tmp_path / "gf.jsonl.dns.jsonl").read_bytes().splitlines()]
    )
    assert not flows.dead and not dns.dead and len(flows.flows) > 0 and len(dns.dns) > 0
    assert json.loads((tmp_path / "gf.jsonl.truth.json").read_text())["format"] == "goflow2-json"


def test_simulate_command_rejects_bad_input(tmp_path: Path) -> None:
    out = str(tmp_path / "x.jsonl")
    assert (
        main(["simulate", "--hosts", "20", "--days", "0.05", "--scenario", "nope", "--out", out])
        == 2
    )
    assert (
        main(["simulate", "--hosts", "20", "--days", "0.05", "--start", "yesterday", "--out", out])
        == 2
    )


def test_simulate_command_produces_to_kafka_keyed_by_host(
    kafka: Any, topic_name: str, tmp_path: Path
) -> None:
    from kafka import KafkaConsumer

    kafka.create_topic(topic_name, partitions=3)
    truth = tmp_path / "t.json"
    argv = [
        "simulate",
        "--hosts",
        "20",
        "--days",
        "0.05",
        "--topic",
        topic_name,
        "--bootstrap-servers",
        kafka.bootstrap,
    ]
    assert main([*argv, "--truth", str(truth)]) == 0
    expected = json.loads(truth.read_text())["span"]["packets_or_records"]
    consumer = KafkaConsumer(
        topic_name,
        bootstrap_servers=kafka.bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=5000,
    )
    try:
        msgs = list(consumer)
    finally:
        consumer.close()
    assert len(msgs) == expected > 500
    partition_of: dict[bytes, set[int]] = {}
    for m in msgs:
        partition_of.setdefault(m.key, set()).add(m.partition)
        rec = json.loads(m.value)
        body = rec.get("conn") or rec["dns"]
        assert m.key.decode() in (body["id.orig_h"], body["id.resp_h"])
        assert m.key.startswith(b"10.")
    assert (
        all(len(p) == 1 for p in partition_of.values())
        and len({p for s in partition_of.values() for p in s}) > 1
    )


def test_simulate_command_rate_limit_paces_output(tmp_path: Path) -> None:
    import time

    out = tmp_path / "rl.jsonl"
    began = time.monotonic()
    assert (
        main(
            [
                "simulate",
                "--hosts",
                "20",
                "--days",
                "0.05",
                "--rate-limit",
                "2000",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    flows = sum(1 for v in out.read_bytes().splitlines() if v.startswith(b'{"conn"'))
    assert time.monotonic() - began >= 0.9 * flows / 2000 > 0.3
