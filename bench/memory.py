"""Memory per tracked host and time per flow as the number of hosts grows.

For each host count (default 1 k, 10 k, 100 k) a fresh subprocess builds synthetic
traffic with numpy — ``--flows-per-host`` flows per internal host (default 30) spread over
``--windows`` engine windows (default 4), to a heavy-tailed pool of external addresses,
a few internal servers (SMB/RPC/LDAP) and the DNS resolvers, plus a few DNS queries per
host — and feeds it, window by window, to an Engine with all detectors (default
configuration). Reported per host count:

* RSS delta / hosts: resident memory after processing minus before creating the engine
  (the input batches already exist), divided by the hosts;
* pickle size / hosts: ``len(pickle.dumps(engine))`` (the checkpoint) and per detector;
* CPU time per flow (``time.process_time``) of ``engine.process`` + ``flush``;
* with ``--per-detector``: each detector alone (an engine with only that detector, in
  its own subprocess) — the bytes per host its state keeps allocated (``tracemalloc``:
  live Python and numpy allocations made while processing, which the RSS delta of one
  detector cannot show reliably: freed input temporaries are reused without growing RSS).

Goals: <= 2 KB of state per host; time per flow flat within 1.5x from 1 k to 100 k hosts.

    .venv/bin/python bench/memory.py
    .venv/bin/python bench/memory.py --smoke
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

T0 = 1_699_862_400.0  # Monday 2023-11-13 08:00 UTC


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def host_ips(n: int) -> np.ndarray:
    i = np.arange(n)
    ips = np.empty(n, dtype=object)
    ips[:] = [f"10.{1 + a // 65536}.{(a // 256) % 256}.{a % 256}" for a in (i + 256).tolist()]
    return ips


def synthetic(
    hosts: int, per_host: int, windows: int, window: float, seed: int
) -> list[tuple[Any, Any]]:
    """Per-window (FlowBatch, DnsBatch) of synthetic traffic, direction annotated."""
    from pipelines.records import DnsBatch, FlowBatch, HomeNetworks, annotate_direction

    rng = np.random.default_rng(seed)
    src_ip = host_ips(hosts)
    n = hosts * per_host
    src = np.repeat(np.arange(hosts), per_host)
    ts = T0 + rng.uniform(0, windows * window, n)
    ext_pool = np.empty(5000, dtype=object)
    ext_pool[:] = [f"{203 - k % 3}.{(k // 256) % 256}.{k % 256}.{1 + k % 250}" for k in range(5000)]
    servers = np.array(
        ["10.200.0.10", "10.200.0.11", "10.200.0.12", "10.200.1.10", "10.200.1.11"], dtype=object
    )
    kind = rng.choice(4, n, p=[0.65, 0.15, 0.15, 0.05])  # external, server, dns, lateral-ish
    dst = np.empty(n, dtype=object)
    ext = kind == 0
    dst[ext] = ext_pool[np.minimum(rng.pareto(0.8, int(ext.sum())).astype(np.int64), 4999)]
    srv = (kind == 1) | (kind == 3)
    dst[srv] = servers[rng.integers(0, 3, int(srv.sum()))]
    dns = kind == 2
    dst[dns] = servers[3 + rng.integers(0, 2, int(dns.sum()))]
    port = np.where(ext, rng.choice([443, 80, 443, 443], n), 0)
    port = np.where(kind == 1, rng.choice([445, 135, 389, 88], n), port)
    port = np.where(kind == 3, rng.choice([445, 5985, 3389], n), port)
    port = np.where(dns, 53, port)
    proto = np.where(dns, 17, 6).astype(np.uint8)
    b_out = rng.lognormal(7.0, 1.5, n).astype(np.int64) + 60
    b_in = (rng.lognormal(9.0, 2.0, n) * ext).astype(np.int64) + 60
    order = np.argsort(ts, kind="stable")
    cols = {
        "ts_start": ts, "ts_end": ts + rng.exponential(5.0, n), "src": src_ip[src], "dst": dst,
        "src_port": rng.integers(1024, 65535, n).astype(np.int32), "dst_port": port.astype(np.int32),
        "proto": proto, "bytes_out": b_out, "pkts_out": b_out // 500 + 1, "bytes_in": b_in,
        "pkts_in": b_in // 1000 + 1, "conn_state": np.full(n, "SF", dtype=object),
        "bidirectional": np.ones(n, dtype=bool), "offset": np.arange(n),
    }  # fmt: skip
    flows = FlowBatch.from_columns({k: np.asarray(v)[order] for k, v in cols.items()})
    nq = hosts * 5
    qsrc = rng.integers(0, hosts, nq)
    qts = np.sort(T0 + rng.uniform(0, windows * window, nq))
    names = np.array([f"site{k}.example.com" for k in range(2000)], dtype=object)
    dnsb = DnsBatch.from_columns({
        "ts": qts, "src": src_ip[qsrc], "dst": servers[3 + (qsrc % 2)], "src_port": np.full(nq, 5353),
        "dst_port": np.full(nq, 53), "query": names[np.minimum(rng.pareto(0.8, nq).astype(np.int64), 1999)],
        "qtype": np.ones(nq, dtype=np.int32), "rcode": np.zeros(nq, dtype=np.int32),
        "answers_n": np.ones(nq, dtype=np.int32), "answers": ext_pool[rng.integers(0, 5000, nq)],
        "resp_bytes": np.full(nq, 120),
    })  # fmt: skip
    home = HomeNetworks.default()
    flows, dnsb = annotate_direction(flows, home), annotate_direction(dnsb, home)
    out = []
    for w in range(windows):
        lo, hi = T0 + w * window, T0 + (w + 1) * window
        fi = np.flatnonzero((flows.ts_start >= lo) & (flows.ts_start < hi))
        di = np.flatnonzero((dnsb.ts >= lo) & (dnsb.ts < hi))
        out.append((flows.take(fi), dnsb.take(di)))
    return out


def one(hosts: int, per_host: int, windows: int, seed: int, only: str = "") -> dict[str, Any]:
    """Measure one host count in this process (call in a fresh interpreter).

    ``only``: keep just that detector in the engine (its own RSS delta)."""
    from stream.config import load_config

    settings = load_config(None).settings
    batches = synthetic(hosts, per_host, windows, settings.engine.window, seed)
    flows = sum(len(f) for f, _ in batches)
    gc.collect()
    if only:
        import tracemalloc

        tracemalloc.start(1)
    before = rss_bytes()
    eng = settings.build_engine()
    if only:
        eng.detectors = [d for d in eng.detectors if d.name == only]
    c = time.process_time()
    alerts = 0
    for f, d in batches:
        alerts += len(eng.process(f, d))
    alerts += len(eng.flush())
    cpu = time.process_time() - c
    gc.collect()
    after = rss_bytes()
    traced = 0
    if only:
        traced = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
    per_det = {
        d.name: len(pickle.dumps(d, protocol=pickle.HIGHEST_PROTOCOL)) for d in eng.detectors
    }
    return {
        "hosts": hosts,
        "flows": flows,
        "rss_delta": after - before,
        "pickle": len(pickle.dumps(eng, protocol=pickle.HIGHEST_PROTOCOL)),
        "pickle_by_detector": per_det,
        "cpu_s": cpu,
        "alerts": alerts,
        "entities": eng.entities(),
        "traced": traced,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hosts", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    p.add_argument("--flows-per-host", type=int, default=30)
    p.add_argument("--windows", type=int, default=4)
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--smoke", action="store_true", help="small host counts (< 1 minute)")
    p.add_argument(
        "--per-detector",
        action="store_true",
        help="also measure each detector alone (allocated state per host; a subprocess each)",
    )
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)  # worker mode
    p.add_argument("--only", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        json.dump(
            one(args.one, args.flows_per_host, args.windows, args.seed, args.only), sys.stdout
        )
        return 0
    if args.smoke:
        args.hosts, args.flows_per_host = [300, 3_000], 10
    out = sys.stdout.write
    out(f"synthetic traffic: {args.flows_per_host} flows/host over {args.windows} windows, "
        f"5 DNS queries/host; Engine with all detectors (default configuration)\n")  # fmt: skip
    out(f"  {'hosts':>8}{'flows':>11}{'RSS Δ/host':>12}{'pickle/host':>13}{'µs/flow (CPU)':>15}{'alerts':>8}"
        "  pickle bytes/host by detector\n")  # fmt: skip
    rows = []
    for h in args.hosts:
        cmd = [sys.executable, __file__, "--one", str(h), "--flows-per-host", str(args.flows_per_host),
               "--windows", str(args.windows), "--seed", str(args.seed)]  # fmt: skip
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        if res.returncode:
            out(f"  {h:>8}  FAILED: {res.stderr[-800:]}\n")
            continue
        r = json.loads(res.stdout)
        rows.append(r)
        det = "  ".join(f"{k} {v / h:,.0f}" for k, v in r["pickle_by_detector"].items())
        out(f"  {h:>8,}{r['flows']:>11,}{r['rss_delta'] / h:>10,.0f} B{r['pickle'] / h:>11,.0f} B"
            f"{1e6 * r['cpu_s'] / r['flows']:>15.1f}{r['alerts']:>8}  {det}\n")  # fmt: skip
        if args.per_detector:
            alone = []
            for name in r["pickle_by_detector"]:
                sub = subprocess.run(
                    [*cmd, "--only", name], capture_output=True, text=True, cwd=REPO
                )
                if sub.returncode:
                    alone.append(f"{name} FAILED")
                    continue
                a = json.loads(sub.stdout)
                alone.append(f"{name} {a['traced'] / h:,.0f}")
            out(f"  {'':>8}  alone, state bytes/host (tracemalloc): {'  '.join(alone)}\n")
    if len(rows) >= 2:
        t = [r["cpu_s"] / r["flows"] for r in rows]
        big = rows[-1]  # fixed-size tables dominate small host counts: judge the largest
        worst = max(big["rss_delta"], big["pickle"]) / big["hosts"]
        out(f"  time per flow, largest/smallest host count: {t[-1] / t[0]:.2f}x (goal <= 1.5x: "
            f"{'met' if t[-1] / t[0] <= 1.5 else 'NOT met'}); state per host at {big['hosts']:,} hosts "
            f"(max of RSS delta and pickle) {worst:,.0f} B "
            f"(goal <= 2048 B: {'met' if worst <= 2048 else 'NOT met'})\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
