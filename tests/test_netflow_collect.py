"""`slowburn collect` as a process: JSON lines out, dead letters beside them, clean SIGTERM."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.test_netflow import fset, ipfix, tmpl, v5


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(out: Path, *extra: str) -> tuple[subprocess.Popen[str], int]:
    port = free_udp_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stream.cli",
            "collect",
            "--listen",
            f"127.0.0.1:{port}",
            "--out",
            str(out),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.0)  # interpreter start + bind
    return proc, port


def send(port: int, *datagrams: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for d in datagrams:
            s.sendto(d, ("127.0.0.1", port))


def test_collect_sigterm_flushes_flows_and_dead_letters(tmp_path: Path) -> None:
    out = tmp_path / "flows.jsonl"
    proc, port = start(out, "--max-seconds", "30")
    good = v5([("10.0.0.1", "203.0.113.5", 50000, 443, 6, 4, 400, 0, 0, 0x1B)])
    held = ipfix([fset(777, b"\0" * 8)])  # no template: dead-lettered at shutdown
    send(port, good, b"\x00\x09garbage", held)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _stdout, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 0, stderr
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert (
        row["kind"] == "flow"
        and row["src"] == "10.0.0.1"
        and row["bytes_out"] == 400
        and row["sensor"] == "127.0.0.1"
    )
    dead = [
        json.loads(line)
        for line in (tmp_path / "flows.jsonl.deadletter.jsonl").read_text().splitlines()
    ]
    assert sorted(d["reason"] for d in dead) == ["truncated", "unknown_template"]
    assert any("777" in d["detail"] for d in dead)


def test_collect_idle_exit_and_ipfix(tmp_path: Path) -> None:
    out = tmp_path / "flows.jsonl"
    proc, port = start(out, "--idle-exit", "1.5")
    fields = [(8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (1, 4), (2, 4)]
    rec = (
        socket.inet_aton("10.0.0.7")
        + socket.inet_aton("10.0.0.8")
        + bytes.fromhex("c350 01bd 06")
        + (900).to_bytes(4, "big")
        + (3).to_bytes(4, "big")
    )
    send(port, ipfix([fset(2, tmpl(300, fields)), fset(300, rec)]))
    proc.communicate(timeout=20)
    assert proc.returncode == 0
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert (row["src"], row["dst_port"], row["proto"], row["bytes_out"], row["pkts_out"]) == (
        "10.0.0.7",
        445,
        6,
        900,
        3,
    )
