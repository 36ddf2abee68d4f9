"""File sources, the dead-letter file sink and ``slowburn decode``."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from stream.cli import main
from stream.deadletter import DeadLetterCounter, DeadLetterFileSink, dead_letter_record
from stream.decoders.base import DeadLetter
from stream.exceptions import SourceError
from stream.sources import format_for_path, iter_file, iter_messages

SAMPLES = Path(__file__).parent / "samples"


def test_format_for_path(tmp_path: Path, datasets: Path) -> None:
    assert format_for_path(SAMPLES / "conn.log") == "zeek-tsv"
    assert format_for_path(SAMPLES / "goflow2.json") == "auto"
    assert format_for_path(datasets / "beacon-https" / "test-cc-capture-2.pcap") == "pcap"
    gz = tmp_path / "conn.log.gz"
    gz.write_bytes(gzip.compress((SAMPLES / "conn.log").read_bytes()))
    assert format_for_path(gz) == "zeek-tsv"
    with pytest.raises(SourceError):
        format_for_path(tmp_path / "missing.json")


def test_iter_file_json_gz_offsets(tmp_path: Path) -> None:
    text = (SAMPLES / "goflow2.json").read_bytes()
    gz = tmp_path / "flows.json.gz"
    gz.write_bytes(gzip.compress(b"\n" + text + b"{broken\n"))
    results = list(iter_file(gz, chunk=2))
    flows = [f for r, _ in results for f in r.flows.rows()]
    assert [f["offset"] for f in flows] == [2, 3, 4, 5]
    assert {f["origin"] for f in flows} == {str(gz)}
    assert [(d.reason, d.offset) for r, _ in results for d in r.dead] == [("not_json", 6)]
    assert sum(n for _, n in results) == 5  # the blank first line is not a message


def test_iter_file_tsv_is_stateful_across_chunks() -> None:
    results = list(iter_file(SAMPLES / "conn.log", chunk=3))
    assert sum(len(r.flows) for r, _ in results) == 3 and not any(r.dead for r, _ in results)


def test_iter_file_pcap(datasets: Path) -> None:
    pcap = datasets / "beacon-https" / "test-cc-capture-2.pcap"
    results = list(iter_file(pcap))
    flows = [r.flows for r, _ in results]
    total_pkts = sum(int(f.pkts_out.sum() + f.pkts_in.sum()) for f in flows)
    assert sum(n for _, n in results) == 1084  # packets consumed, as the dataset README says
    assert 0 < total_pkts <= 1084
    beacon = [
        row
        for f in flows
        for row in f.rows()
        if row["dst"] == "141.193.213.20" and row["dst_port"] == 443
    ]
    assert len(beacon) >= 20


def test_iter_messages_chunks() -> None:
    batches = list(iter_messages(SAMPLES / "suricata_eve.json", chunk=5))
    assert [len(b) for b in batches] == [5, 5, 3]
    assert batches[2][0].offset == 11


def test_dead_letter_record_truncates_and_encodes() -> None:
    big = DeadLetter(b"x" * 5000, "oversized", "big", "auto", "t/3", 9)
    rec = dead_letter_record(big, max_value=4096)
    assert rec["value"] == "x" * 4096 and rec["value_len"] == 5000 and rec["value_truncated"]
    assert rec["error"] == "oversized: big" and rec["source"] == "t/3" and rec["offset"] == 9
    cut = dead_letter_record(DeadLetter("é".encode() * 3, "schema", "", "d"), max_value=3)
    assert cut["value"] == "é" and cut["value_truncated"]
    binary = dead_letter_record(DeadLetter(b"\xff\xfe", "not_json", "", "d"))
    assert binary["value_b64"] == "//4=" and "value" not in binary


def test_file_sink_counts(tmp_path: Path) -> None:
    counter = DeadLetterCounter()
    path = tmp_path / "dead.jsonl"
    with DeadLetterFileSink(path, on_dead=counter) as sink:
        sink.write(
            [DeadLetter(b"a", "schema", "", "pmacct"), DeadLetter(b"b", "schema", "", "pmacct")]
        )
        sink.write([DeadLetter(b"c", "nan", "", "zeek-json")])
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [x["value"] for x in lines] == ["a", "b", "c"]
    assert counter.counts == {("pmacct", "schema"): 2, ("zeek-json", "nan"): 1}
    assert counter.by_reason() == {"schema": 2, "nan": 1} and counter.total == 3


def test_decode_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_bytes(
        b'{"event_type":"flow","src_ip":"10.0.0.1","dest_ip":"10.0.0.2","flow":{"bytes_toserver":-1}}\n{zzz\nzzz\n'
    )
    src = tmp_path / "eve.json"
    shutil.copy(SAMPLES / "suricata_eve.json", src)
    dead = tmp_path / "dead.jsonl"
    rc = main(["decode", str(src), str(SAMPLES / "conn.log"), str(bad), "--dead-letters", str(dead),
               "--home", "10.0.0.0/8"])  # fmt: skip
    assert rc == 0
    out, err = capsys.readouterr()
    rows = [json.loads(x) for x in out.splitlines()]
    flows = [r for r in rows if r["kind"] == "flow"]
    dns = [r for r in rows if r["kind"] == "dns"]
    assert len(flows) == 2 + 3 and len(dns) == 5
    assert flows[0]["src"] == "10.1.2.3" and flows[0]["src_inside"] and not flows[0]["dst_inside"]
    assert flows[0]["bytes_in"] == 4744 and set(flows[0]) >= {
        "ts_start",
        "payload_out",
        "origin",
        "offset",
    }
    assert {r["query"] for r in dns} >= {"unanswered.example"}
    assert "3 dead letters (negative 1, not_json 1, unknown_format 1)" in err
    assert sorted(json.loads(x)["reason"] for x in dead.read_text().splitlines()) == [
        "negative",
        "not_json",
        "unknown_format",
    ]


def test_decode_command_pinned_format(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", "--format", "zeek-json", str(SAMPLES / "goflow2.json")]) == 0
    out, err = capsys.readouterr()
    assert out == "" and "4 dead letters (schema 4)" in err


def test_decode_output_round_trips(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", str(SAMPLES / "zeek_conn.json"), str(SAMPLES / "zeek_dns.json")]) == 0
    first = capsys.readouterr().out
    out = tmp_path / "canonical.jsonl"
    out.write_text(first)
    assert main(["decode", str(out)]) == 0
    again, err = capsys.readouterr()
    assert again == first and "0 dead letters" in err


def _reference_lines(path: Path) -> list[tuple[bytes, int]]:
    """The line semantics of iter_messages, spelled out line by line."""
    out = []
    with path.open("rb") as f:
        for lineno, line in enumerate(f, 1):
            value = line.rstrip(b"\r\n")
            if value.strip():
                out.append((value, lineno))
    return out


def test_iter_messages_blocks_equal_line_by_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import stream.sources as sources

    monkeypatch.setattr(sources, "_BLOCK", 7)  # lines straddle many read blocks
    p = tmp_path / "x.jsonl"
    p.write_bytes(b'{"a":1}\r\n\n  \n{"b":2}\n\t{"c":3}\r\r\n\n{"d":4}\n' * 5 + b'{"e":5}')
    for chunk in (1, 3, 100):
        got = [(m.value, m.offset) for b in iter_messages(p, chunk=chunk) for m in b]
        assert got == _reference_lines(p)
        sizes = [len(b) for b in iter_messages(p, chunk=chunk)]
        assert all(s == chunk for s in sizes[:-1])


def test_tagged_zeek_batch_path_equals_general_path() -> None:
    from stream.decoders.base import MessageBlock
    from stream.decoders.zeek import ZeekJsonDecoder

    conn = b'{"conn":{"ts":%d.5,"id.orig_h":"10.0.0.1","id.orig_p":1,"id.resp_h":"10.0.0.%d","id.resp_p":80,"proto":"tcp","conn_state":"S0","orig_pkts":2}}'
    dns = b'{"dns":{"ts":%d.5,"id.orig_h":"10.0.0.1","id.orig_p":5,"id.resp_h":"10.0.0.%d","id.resp_p":53,"proto":"udp","query":"a.b","qtype":1,"answers":["1.2.3.4"]}}'
    values = [(conn if i % 3 else dns) % (i, i % 200 + 1) for i in range(100)]
    values[37] = b'{"conn":{"ts":1,"id.orig_h":"10.0.0.1"'  # truncated
    values[61] = b'{"dns":{"ts":2,"id.orig_h":"bogus","id.resp_h":"10.0.0.9","query":"q"}}'
    block = MessageBlock(values, "f", range(1, 101))
    for chunk in (8, 512):
        fast = ZeekJsonDecoder(chunk=chunk).decode(block)
        slow = ZeekJsonDecoder(chunk=chunk).decode_chunks(list(block))
        assert list(fast.flows.rows()) == list(slow.flows.rows())
        assert list(fast.dns.rows()) == list(slow.dns.rows())
        assert [(d.reason, d.offset) for d in fast.dead] == [
            (d.reason, d.offset) for d in slow.dead
        ]
        assert [d.offset for d in fast.dead] == [38, 62] and len(fast.flows) == 64
