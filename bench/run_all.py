"""Run every benchmark and print the figures (``make bench``).

    .venv/bin/python bench/run_all.py            # decode, decode_packets, replay (5 M flows), memory, kafka
    .venv/bin/python bench/run_all.py --smoke    # each with --smoke (CI, about a minute each)

Runs bench/decode.py, bench/decode_packets.py, bench/replay.py and bench/memory.py, then bench/kafka.py when it
exists and a broker comes up with ``deploy/kafka/local-kafka start`` (a throw-away data
directory; the broker is stopped afterwards, and with ``--owner-pid`` also if this script
dies). The machine (cores, CPU model, RAM, Python/numpy versions) and the git commit are
printed first, so the output can be pasted into bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOCAL_KAFKA = REPO / "deploy" / "kafka" / "local-kafka"


def machine() -> str:
    import numpy

    cpu, mem = "unknown CPU", "unknown RAM"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 2**20:.1f} GiB RAM"
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"nproc {os.cpu_count()}, {cpu}, {mem}, Python {platform.python_version()}, "
        f"numpy {numpy.__version__}, load average {load:.1f} at start"
    )


def commit() -> str:
    out = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    )
    return out.stdout.strip() or "unknown"


def run(script: str, extra: list[str], env: dict[str, str] | None = None) -> int:
    cmd = [sys.executable, str(REPO / "bench" / script), *extra]
    sys.stdout.write(f"\n=== {' '.join(cmd[1:])}\n")
    sys.stdout.flush()
    began = time.monotonic()
    rc = subprocess.run(cmd, cwd=REPO, env={**os.environ, **(env or {})}).returncode
    sys.stdout.write(f"=== {script}: exit {rc}, {time.monotonic() - began:.0f} s\n")
    sys.stdout.flush()
    return rc


def kafka(extra: list[str]) -> int:
    script = REPO / "bench" / "kafka.py"
    if not script.exists():
        sys.stdout.write("\n=== bench/kafka.py not present: skipped\n")
        return 0
    with tempfile.TemporaryDirectory(prefix="slowburn-bench-kafka-") as data:
        started = subprocess.run(
            [str(LOCAL_KAFKA), "start", "--dir", data, "--owner-pid", str(os.getpid())],
            capture_output=True,
            text=True,
        )
        bootstrap = started.stdout.strip().splitlines()[0] if started.stdout.strip() else ""
        if started.returncode or not bootstrap:
            sys.stdout.write(f"\n=== no Kafka broker (local-kafka start: {started.stderr.strip()[-300:]}): "
                             "bench/kafka.py skipped\n")  # fmt: skip
            return 0
        try:
            helptext = subprocess.run(
                [sys.executable, str(script), "--help"], capture_output=True, text=True, cwd=REPO
            ).stdout
            args = [*extra]
            if "--bootstrap-servers" in helptext:
                args += ["--bootstrap-servers", bootstrap]
            elif "--bootstrap" in helptext:
                args += ["--bootstrap", bootstrap]
            return run("kafka.py", args, {"SLOWBURN_KAFKA_BOOTSTRAP": bootstrap})
        finally:
            subprocess.run([str(LOCAL_KAFKA), "stop", "--dir", data], capture_output=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="pass --smoke to every benchmark")
    p.add_argument(
        "--only", action="append", choices=("decode", "decode_packets", "replay", "memory", "kafka")
    )
    args = p.parse_args(argv)
    extra = ["--smoke"] if args.smoke else []
    sys.stdout.write(
        f"slowburn benchmarks, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC}, commit {commit()}\n"
    )
    sys.stdout.write(f"machine: {machine()}\n")
    wanted = args.only or ["decode", "decode_packets", "replay", "memory", "kafka"]
    failed = 0
    for name in wanted:
        if name == "kafka":
            failed += kafka(extra) != 0
        elif (REPO / "bench" / f"{name}.py").exists():
            failed += run(f"{name}.py", extra) != 0
        else:
            sys.stdout.write(f"\n=== bench/{name}.py not present: skipped\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
