"""slowburn sensor → packet summaries → SummaryDecoder: same flows and DNS rows as the pcap path."""

from __future__ import annotations

import json
import math
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from pipelines.records import DnsBatch, FlowBatch
from stream.cli import main
from stream.decoders import get_decoder
from stream.decoders.base import Message
from stream.decoders.pcap import PcapDecoder
from stream.decoders.summaries import SummaryDecoder
from stream.sensor import Sensor
from tests.test_pcap import flow_totals

TUNNEL = "dns-tunnel/e5af6780e45da6f9f6b30fafa53548da/dns.pcap"


def decode_lines(path: Path, per_message: int = 1) -> tuple[FlowBatch, DnsBatch, list]:
    d = get_decoder("summary")
    lines = path.read_text().splitlines()
    msgs = [Message(line.encode(), str(path), i) for i, line in enumerate(lines)]
    results = [d.decode(msgs[i : i + 1000]) for i in range(0, len(msgs), 1000)] + [d.flush()]
    dead = [x for r in results for x in r.dead]
    return (
        FlowBatch.concat([r.flows for r in results]),
        DnsBatch.concat([r.dns for r in results]),
        dead,
    )


def test_cli_sensor_file_roundtrip_equals_pcap_decoder(tmp_path: Path, datasets: Path) -> None:
    pcap = datasets / TUNNEL
    out = tmp_path / "summaries.jsonl"
    assert main(["sensor", "--pcap", str(pcap), "--out", str(out)]) == 0
    first = json.loads(out.read_text().splitlines()[0])
    assert first["kind"] == "pkt" and {
        "ts",
        "src",
        "dst",
        "sport",
        "dport",
        "proto",
        "len",
        "flags",
        "plen",
    } <= set(first)
    flows, dns, dead = decode_lines(out)
    assert not dead
    ref = PcapDecoder()
    results = list(ref.decode_file(pcap))
    ref_flows = FlowBatch.concat([r.flows for r in results])
    ref_dns = DnsBatch.concat([r.dns for r in results])
    assert flow_totals(flows) == flow_totals(ref_flows)
    assert len(flows) == len(ref_flows)
    assert sorted(dns.query.tolist()) == sorted(ref_dns.query.tolist())
    assert sorted(dns.rcode.tolist()) == sorted(ref_dns.rcode.tolist())
    assert any(q.endswith("example.attack") for q in dns.query.tolist())


def test_kafka_batches_are_keyed_by_internal_host(datasets: Path) -> None:
    sent: list[tuple[str, list[dict]]] = []
    sensor = Sensor(lambda key, pkts: sent.append((key, pkts)), batch=50)
    n = sensor.from_capture(datasets / "beacon-https/test-cc-capture-2.pcap")
    assert n == sum(len(p) for _k, p in sent) == 1084
    assert max(len(p) for _k, p in sent) <= 50
    for key, pkts in sent:
        assert all(key in (p["src"], p["dst"]) for p in pkts)
    # batched arrays decode like single objects
    d = SummaryDecoder()
    rs = [
        d.decode([Message(json.dumps(p).encode(), "t/0", i) for i, (_k, p) in enumerate(sent)]),
        d.flush(),
    ]
    flows = FlowBatch.concat([r.flows for r in rs])
    assert int(flows.pkts_out.sum() + flows.pkts_in.sum()) == 1084


def test_hostile_summaries_are_dead_letters() -> None:
    d = SummaryDecoder()
    ok = {
        "kind": "pkt",
        "ts": 1.0,
        "src": "10.0.0.1",
        "dst": "10.0.0.2",
        "sport": 1,
        "dport": 2,
        "proto": 17,
        "len": 60,
        "flags": 0,
        "plen": 32,
    }
    bad = [
        b"not json",
        b'{"kind":"pkt"}',
        json.dumps({**ok, "src": "999.1.1.1"}).encode(),
        json.dumps({**ok, "len": -5}).encode(),
        json.dumps({**ok, "kind": "flow"}).encode(),
        b'{"kind":"pkt","ts":NaN,"src":"10.0.0.1","dst":"10.0.0.2"}',
        json.dumps({**ok, "ts": math.inf}).encode(),
    ]
    r = d.decode(
        [Message(b, "t", i) for i, b in enumerate(bad)]
        + [Message(json.dumps(ok).encode(), "t", 99)]
    )
    assert len(r.dead) == len(bad)
    assert {x.reason for x in r.dead} <= {"not_json", "schema", "bad_value", "nan"}
    assert len(d.flush().flows) == 1
    assert SummaryDecoder.sniff(json.dumps(ok).encode()) and SummaryDecoder.sniff(
        json.dumps([ok]).encode()
    )
    assert not SummaryDecoder.sniff(b'{"kind":"flow"}')


@pytest.mark.skipif(os.geteuid() != 0, reason="live capture needs root")
def test_live_capture_on_loopback(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    got: list[dict] = []
    sensor = Sensor(lambda _k, pkts: got.extend(pkts))
    stop = threading.Event()
    t = threading.Thread(
        target=sensor.live,
        args=("lo", f"udp and port {port}"),
        kwargs={"max_seconds": 10, "stop": stop, "flush_every": 0.2},
    )
    t.start()
    time.sleep(1.5)  # let the sniffer attach
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _ in range(5):
            s.sendto(b"x" * 20, ("127.0.0.1", port))
            time.sleep(0.05)
    deadline = time.monotonic() + 5
    while len(got) < 5 and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    t.join(10)
    mine = [p for p in got if p["dport"] == port]
    assert len(mine) == 5
    assert all(
        p["src"] == "127.0.0.1" and p["proto"] == 17 and p["len"] == 48 and p["plen"] == 20
        for p in mine
    )
