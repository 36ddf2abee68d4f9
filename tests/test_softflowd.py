"""Real softflowd (NetFlow v5, v9, IPFIX) → our UDP collector → per-5-tuple totals equal tshark's.

softflowd reads a shared capture (``-r``, ``-a`` = pcap time) and exports to a
:class:`stream.collector.Collector` on a free UDP port. softflowd splits conversations
into unidirectional flows and may cut them at its timeouts, so the comparison is on sums
per directional 5-tuple: packets and IP-layer bytes must equal what tshark dissects.
"""

from __future__ import annotations

import collections
import json
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from pipelines.records import FlowBatch
from stream.collector import Collector, FileSink
from tests.test_pcap import flow_totals, tshark_totals

pytestmark = [
    pytest.mark.tools,
    pytest.mark.skipif(
        shutil.which("softflowd") is None or shutil.which("tshark") is None,
        reason="softflowd/tshark not installed (make tools)",
    ),
]

CAPTURES = [
    "beacon-https/test-cc-capture-2.pcap",
    "lateral-smb-svcctl/covenant_sc_query_dcerpc_smb_svcctl_2020-08-05034820.cap",
    "protocols/ssh/sshguess.pcap",
]


def whole_records(pcap: Path, tmp_path: Path) -> Path:
    """The capture without a truncated last record (softflowd 1.1.0 exits without exporting on one)."""
    data = pcap.read_bytes()
    pos = 24
    while pos + 16 <= len(data):
        incl = int.from_bytes(data[pos + 8 : pos + 12], "little")
        if pos + 16 + incl > len(data):
            break
        pos += 16 + incl
    if pos == len(data):
        return pcap
    fixed = tmp_path / pcap.name
    fixed.write_bytes(data[:pos])
    return fixed


def export(tmp_path: Path, pcap: Path, version: str, *extra: str) -> tuple[FlowBatch, Collector]:
    pcap = whole_records(pcap, tmp_path)
    out = tmp_path / f"flows-v{version}.jsonl"
    collector = Collector(("127.0.0.1", 0), FileSink(out), max_seconds=60)
    port = collector.bind()
    thread = threading.Thread(target=collector.serve, daemon=True)
    thread.start()
    cmd = [
        "softflowd",
        "-r",
        str(pcap),
        "-n",
        f"127.0.0.1:{port}",
        "-v",
        version,
        "-d",
        "-a",
        "-p",
        str(tmp_path / "sf.pid"),
        "-c",
        "none",
        *extra,
    ]  # a -c socket path makes 1.1.0 hang
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    time.sleep(0.1)  # serve() drains what is queued in the socket buffer after stop()
    collector.stop()
    thread.join(timeout=10)
    collector.close()
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(r["kind"] == "flow" for r in rows)
    for r in rows:
        del r["kind"]
    return FlowBatch.from_rows(rows), collector


@pytest.mark.parametrize("name", CAPTURES)
@pytest.mark.parametrize("version", ["5", "9", "10"])
def test_softflowd_totals_equal_tshark(
    tmp_path: Path, datasets: Path, name: str, version: str
) -> None:
    pcap = datasets / name
    flows, collector = export(tmp_path, pcap, version)
    assert collector.dead == 0 and len(flows) > 0
    tb, tp = tshark_totals(pcap)
    ob, op = flow_totals(flows)
    assert op == tp
    assert ob == tb
    assert set(flows.sensor.tolist()) == {"127.0.0.1"}
    assert not bool(flows.bidirectional.any())
    # -a: flow times come from the capture, within its span
    first, last = min(flows.ts_start.tolist()), max(flows.ts_end.tolist())
    ours = FlowBatch.concat(
        [
            r.flows
            for r in __import__("stream.decoders.pcap", fromlist=["x"])
            .PcapDecoder()
            .decode_file(pcap)
        ]
    )
    assert (
        abs(first - float(ours.ts_start.min())) < 1.0 and abs(last - float(ours.ts_end.max())) < 1.0
    )


def test_softflowd_ipfix_biflows_and_ipv6(tmp_path: Path, datasets: Path) -> None:
    pcap = datasets / "protocols/ssh/sshguess.pcap"
    flows, _ = export(tmp_path, pcap, "10", "-b")
    assert bool(flows.bidirectional.all()) and len(flows) == 11
    assert flow_totals(flows) == tshark_totals(pcap)
    v6 = datasets / "protocols/rdp/rdpeudp-handshake-success.pcap"
    flows, _ = export(tmp_path, v6, "9", "-6")
    assert set(flows.src.tolist()) == {"::1"}
    assert flow_totals(flows) == tshark_totals(v6)


def test_softflowd_matches_pcap_decoder_flow_for_flow(tmp_path: Path, datasets: Path) -> None:
    """Our biflows split into directions equal softflowd's IPFIX biflows per 5-tuple."""
    pcap = datasets / "protocols/ssh/sshguess.pcap"
    flows, _ = export(tmp_path, pcap, "10", "-b")
    from stream.decoders.pcap import PcapDecoder

    ours = FlowBatch.concat([r.flows for r in PcapDecoder().decode_file(pcap)])
    count: collections.Counter[tuple] = collections.Counter()
    for b in (flows, ours):
        for f in b.rows():
            count[
                (f["src"], f["src_port"], f["dst"], f["dst_port"], f["bytes_out"], f["bytes_in"])
            ] += 1
    assert all(v == 2 for v in count.values())
