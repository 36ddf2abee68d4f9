"""End-to-end replay benchmark: all detectors on, beside bare decoding and bare msgspec.

Generates ``--flows`` simulated flows (pipelines.simulate, written with stream.writers as
tagged Zeek JSON: conn + dns lines interleaved in time, as ``slowburn simulate`` does)
into a temporary file, then times, on the same file:

* ``msgspec``  — bare ``msgspec.json.Decoder(<zeek tagged Struct>).decode`` of every line;
* ``decode``   — the decoder alone: ``stream.sources.iter_file`` consumed, no engine;
* ``replay``   — ``stream.replay.run_replay`` with the default configuration (all
  detectors), exactly what ``slowburn replay`` does minus alert output.

Rates are given per wall second and per CPU second of this process (``time.process_time``;
"per core" — the machine is shared, so CPU time is the stable figure). Then, on a subset
(``--subset`` flows, decoded once into memory), the engine runs with no detector and with
one detector at a time (time share per detector), and a cProfile of the all-detector
engine names the hottest functions and files.

    .venv/bin/python bench/replay.py                  # 5 M flows
    .venv/bin/python bench/replay.py --smoke          # < 1 minute
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FLOWS_PER_HOST_DAY = 3200.0  # what the simulator produces (measured: 100 hosts x 1 day ~ 322 k)


def generate(path: Path, flows: int, hosts: int, seed: int) -> tuple[int, int, float]:
    """Write >= ``flows`` simulated flows (and their DNS) to ``path``; (flows, dns, seconds)."""
    from pipelines.simulate import SimConfig, Simulation
    from stream.writers import encode_zeek_conn_json, encode_zeek_dns_json

    days = max(1.0, flows / (FLOWS_PER_HOST_DAY * hosts) * 1.15)
    sim = Simulation(SimConfig(hosts=hosts, days=days, seed=seed))
    n_f = n_d = 0
    began = time.perf_counter()
    with path.open("wb") as fh:
        for f, d in sim.batches(chunk_seconds=3600.0):
            if n_f + len(f) > flows:  # cut the last hour at the requested count
                keep = flows - n_f
                edge = f.ts_start[keep] if keep < len(f) else np.inf
                f = f.take(np.arange(keep))
                d = d.take(np.flatnonzero(d.ts < edge))
            recs = encode_zeek_conn_json(f, tagged=True) + encode_zeek_dns_json(d, tagged=True)
            order = np.argsort(np.concatenate([f.ts_start, d.ts]), kind="stable")
            fh.write(b"\n".join(recs[i] for i in order.tolist()) + b"\n")
            n_f += len(f)
            n_d += len(d)
            if n_f >= flows:
                break
    return n_f, n_d, time.perf_counter() - began


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """(result, wall s, CPU s of this process)."""
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def bare_msgspec(path: Path) -> int:
    import msgspec

    from stream.decoders import zeek

    dec = msgspec.json.Decoder(zeek._TaggedDotted).decode
    n = 0
    with path.open("rb") as fh:
        for line in fh:
            dec(line)
            n += 1
    return n


def bare_decode(path: Path) -> tuple[int, int]:
    from stream.sources import iter_file

    nf = nd = 0
    for r, _n in iter_file(path):
        nf += len(r.flows)
        nd += len(r.dns)
    return nf, nd


def full_replay(path: Path) -> Callable[[], Any]:
    """The replay as a callable; configuration and engine are built (and River, scipy
    imported: ~1-2 s once per process) outside the timed part."""
    from stream.config import load_config
    from stream.replay import InputSpec, run_replay

    settings = load_config(None).settings
    engine = settings.build_engine()
    return lambda: run_replay(engine, [InputSpec(str(path))], settings.home)


def decoded_subset(path: Path, flows: int) -> list[tuple[Any, Any]]:
    """The first ``flows`` flows of ``path`` decoded and direction-annotated, in memory."""
    from pipelines.records import HomeNetworks, annotate_direction
    from stream.sources import iter_file

    home = HomeNetworks.default()
    out, n = [], 0
    for r, _m in iter_file(path):
        out.append((annotate_direction(r.flows, home), annotate_direction(r.dns, home)))
        n += len(r.flows)
        if n >= flows:
            break
    return out


def run_engine(batches: list[tuple[Any, Any]], detectors: list[str] | None) -> Any:
    """Engine over in-memory batches with the named detectors (None: default config, all)."""
    from pipelines.detectors import make_detector
    from pipelines.engine import Engine
    from stream.config import load_config

    settings = load_config(None).settings
    if detectors is None:
        eng = settings.build_engine()
    else:
        params = settings.detectors
        eng = Engine(
            settings.engine, detectors=[make_detector(d, **params.get(d, {})) for d in detectors]
        )
    for f, d in batches:
        eng.process(f, d)
    eng.flush()
    return eng


def profile_engine(batches: list[tuple[Any, Any]], top: int) -> list[str]:
    """cProfile of the all-detector engine: hottest functions (tottime) and files."""
    prof = cProfile.Profile()
    prof.enable()
    run_engine(batches, None)
    prof.disable()
    st = pstats.Stats(prof)
    total = sum(v[2] for v in st.stats.values())  # type: ignore[attr-defined]
    rows = sorted(st.stats.items(), key=lambda kv: -kv[1][2])  # type: ignore[attr-defined]
    by_file: dict[str, float] = defaultdict(float)
    for (file, _line, _fn), v in rows:
        by_file[_short(file)] += v[2]
    lines = [f"  profile: {total:.1f} s of function time (tottime) in the all-detector engine"]
    lines.append("  hottest functions (tottime, cumtime, calls):")
    for (file, line, fn), (_cc, nc, tt, ct, _callers) in rows[:top]:
        lines.append(
            f"    {100 * tt / total:5.1f}%  {tt:7.2f} s  cum {ct:7.2f} s  {nc:>9}  {_short(file)}:{line} {fn}"
        )
    lines.append("  slowburn functions by cumulative time (cumtime, calls):")
    ours = [kv for kv in rows if _short(kv[0][0]).startswith(("pipelines", "stream"))]
    for (file, line, fn), (_cc, nc, _tt, ct, _callers) in sorted(ours, key=lambda kv: -kv[1][3])[
        :top
    ]:
        lines.append(
            f"    {100 * ct / total:5.1f}%  cum {ct:7.2f} s  {nc:>9}  {_short(file)}:{line} {fn}"
        )
    lines.append(
        "  by file (tottime; '~' = C functions such as numpy ufuncs, attributed to no file):"
    )
    for file, tt in sorted(by_file.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"    {100 * tt / total:5.1f}%  {tt:7.2f} s  {file}")
    return lines


def _short(file: str) -> str:
    file = str(file)
    for base in (str(REPO) + os.sep, sys.prefix + os.sep, sys.base_prefix + os.sep):
        if file.startswith(base):
            return file[len(base) :]
    return file


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--flows", type=int, default=5_000_000)
    p.add_argument("--hosts", type=int, default=200, help="simulated hosts (default 200)")
    p.add_argument("--subset", type=int, default=300_000, help="flows for per-detector runs")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--top", type=int, default=20, help="profile rows")
    p.add_argument("--smoke", action="store_true", help="tiny run for CI (< 1 minute)")
    p.add_argument("--no-profile", action="store_true")
    p.add_argument("--keep", metavar="FILE", help="keep/reuse the generated file here")
    args = p.parse_args(argv)
    if args.smoke:
        args.flows, args.hosts, args.subset, args.top = 10_000, 20, 5_000, 8
    out = sys.stdout.write
    from pipelines.detectors import available

    with tempfile.TemporaryDirectory(prefix="slowburn-bench-") as tmp:
        path = Path(args.keep) if args.keep else Path(tmp) / "flows.zeek.jsonl"
        if path.exists() and args.keep:
            nf = nd = -1
            out(f"reusing {path} ({path.stat().st_size / 1e6:,.0f} MB)\n")
        else:
            nf, nd, secs = generate(path, args.flows, args.hosts, args.seed)
            out(f"generated {nf:,} flows + {nd:,} DNS rows ({args.hosts} hosts) as tagged Zeek JSON, "
                f"{path.stat().st_size / 1e6:,.0f} MB, in {secs:.0f} s\n")  # fmt: skip
        lines, w_m, c_m = timed(lambda: bare_msgspec(path))
        (nf2, nd2), w_d, c_d = timed(lambda: bare_decode(path))
        nf, nd = nf2, nd2
        summary, w_r, c_r = timed(full_replay(path))
        out(
            f"\nend-to-end replay, {nf:,} flows + {nd:,} DNS ({lines:,} lines), detectors: {', '.join(available())}\n"
        )
        out(
            f"  {'stage':<34}{'wall s':>9}{'CPU s':>9}{'flows/s wall':>15}{'flows/CPU-s':>14}{'lines/CPU-s':>14}\n"
        )
        for name, w, c in (("bare msgspec (typed Struct)", w_m, c_m), ("decoder alone (iter_file)", w_d, c_d),
                           ("replay, all detectors", w_r, c_r)):  # fmt: skip
            out(f"  {name:<34}{w:9.1f}{c:9.1f}{nf / w:15,.0f}{nf / c:14,.0f}{lines / c:14,.0f}\n")
        out(f"  ratios (CPU): replay/decoder {c_d / c_r:.3f}  replay/msgspec {c_m / c_r:.3f}  "
            f"decoder/msgspec {c_m / c_d:.3f}   goal: replay >= 200,000 flows per CPU-s -> "
            f"{'met' if nf / c_r >= 200_000 else 'NOT met'} ({nf / c_r:,.0f})\n")  # fmt: skip
        out(
            f"  alerts {len({a.uid for a in summary.alerts})}, engine stats {summary.engine.stats if summary.engine else {}}\n"
        )
        batches = decoded_subset(path, args.subset)
    sub_f = sum(len(f) for f, _ in batches)
    sub_d = sum(len(d) for _, d in batches)
    out(
        f"\nper detector on a subset: {sub_f:,} flows + {sub_d:,} DNS decoded in memory (engine only)\n"
    )
    _e, _w, c0 = timed(lambda: run_engine(batches, []))
    _e, _w, c_all = timed(lambda: run_engine(batches, None))
    out(f"  {'engine':<26}{'CPU s':>8}{'flows/CPU-s':>14}{'share of all':>14}\n")
    out(
        f"  {'no detector (overhead)':<26}{c0:8.2f}{sub_f / max(c0, 1e-9):14,.0f}{100 * c0 / c_all:13.1f}%\n"
    )
    for det in available():
        _e, _w, c = timed(lambda det=det: run_engine(batches, [det]))  # type: ignore[misc]
        own = max(c - c0, 0.0)
        out(f"  {'+ ' + det:<26}{c:8.2f}{sub_f / max(c, 1e-9):14,.0f}{100 * own / c_all:13.1f}%"
            f"   (detector alone {sub_f / max(own, 1e-9):,.0f} flows/CPU-s)\n")  # fmt: skip
    out(f"  {'all detectors':<26}{c_all:8.2f}{sub_f / c_all:14,.0f}{100.0:13.1f}%\n")
    if not args.no_profile:
        out("\n" + "\n".join(profile_engine(batches, args.top)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
