"""Labelled attack scenarios injected into the simulated enterprise.

Each scenario is a function ``(ctx: ScenarioContext) -> None`` registered in
:data:`SCENARIOS`. It picks its hosts deterministically from the seed among hosts of
the right role, places itself in time (:meth:`ScenarioContext.place`: late enough for
baselines, moved earlier or shortened when the simulation is too short — the move is
written to ``truth.notes``), adds raw rows and declares its incidents with
:meth:`ScenarioContext.incident`, whose start/end are the first/last packet of the rows.

Attack destinations come from the documentation ranges (203.0.113.0/24,
198.51.100.0/24, 192.0.2.0/24), which benign traffic never uses, so they are new.

>>> from pipelines.simulate.network import Network
>>> net = Network(hosts=40, seed=5)
>>> ctx = ScenarioContext(net, "beacon", seed=5, start=1_699_833_600.0, end=1_699_833_600.0 + 4 * 86400, tz=0.0, used=set())
>>> SCENARIOS["beacon"](ctx)
>>> inc = ctx.incidents[0]
>>> inc.kind, inc.dst.startswith("198.51.100."), inc.dst_ports
('beaconing', True, [443])
"""

from __future__ import annotations

import base64
from collections.abc import Callable

import numpy as np

from pipelines.simulate.context import Incident, ScenarioContext, chunks, mb
from pipelines.simulate.core import SSL, TCP, Parts
from pipelines.simulate.lateral import admin_share_transfer, lateral_chain, ldap_recon

__all__ = ["SCENARIOS", "Incident", "ScenarioContext"]


def slow_exfil(ctx: ScenarioContext, total: float = 200e6, hours: float = 72.0) -> None:
    """200 MB over 72 h in 5-50 KB HTTPS POST-like chunks to a never-seen address."""
    rng, net = ctx.rng, ctx.net
    src = ctx.desktop()
    dst = ctx.new_external("slow exfiltration drop server")
    start, dur = ctx.place(ctx.local(1, 0.0) + float(rng.uniform(0, 1800)), hours * 3600.0)
    pay = chunks(rng, total, 5000, 50000)
    t = start + np.sort(rng.uniform(0, dur, len(pay)))
    p = Parts(net, rng)
    p.flow(
        t,
        rng.uniform(0.2, 2.0, len(t)),
        src,
        dst,
        443,
        TCP,
        pay,
        rng.integers(300, 1200, len(t)),
        SSL,
    )
    name = ctx.domain()
    hourly = t[np.unique((t - start) // 3600.0, return_index=True)[1]] - 0.05
    p.dns(
        hourly,
        src,
        net.resolver[src],
        np.full(len(hourly), name, dtype=object),
        1,
        0,
        net.addrs[dst],
        1,
        True,
    )
    ctx.incident(
        "exfiltration",
        ["T1048", "T1030"],
        src,
        net.addrs[dst],
        [443],
        p,
        f"{net.addrs[src]} uploaded ~{mb(total)} to {net.addrs[dst]}:443 ({name}) in {len(t)} HTTPS POST-like "
        f"connections of 5-50 KB (bytes_out >> bytes_in) spread over {dur / 3600.0:.0f} h; the destination was "
        "never contacted before the first chunk and by no other host",
        domain=name,
    )


def fast_exfil(ctx: ScenarioContext, total: float = 2e9, minutes: float = 20.0) -> None:
    """2 GB in 20 minutes over a few parallel HTTPS connections to a new external address."""
    rng, net = ctx.rng, ctx.net
    src = ctx.pick(net.ws)
    dst = ctx.new_external("fast exfiltration server")
    start, dur = ctx.place(ctx.local(2, 14.0) + float(rng.uniform(0, 3600)), minutes * 60.0)
    k = 6
    pay = np.full(k, int(total / k / (1 + 60 / 1400)), dtype=np.int64)
    t = start + np.sort(rng.uniform(0, 20.0, k))
    p = Parts(net, rng)
    p.flow(
        t,
        dur - (t - start) - rng.uniform(0, 5, k),
        src,
        dst,
        443,
        TCP,
        pay,
        rng.integers(20000, 60000, k),
        SSL,
    )
    ctx.incident(
        "exfiltration",
        ["T1048", "T1041"],
        src,
        net.addrs[dst],
        [443],
        p,
        f"{net.addrs[src]} uploaded ~{mb(total)} to the never-seen {net.addrs[dst]}:443 in {k} parallel TLS "
        f"connections within {dur / 60.0:.0f} minutes (~{total * 8 / dur / 1e6:.0f} Mbit/s outbound)",
    )


def dns_exfil(ctx: ScenarioContext, per_hour: float = 300.0, hours: float = 48.0) -> None:
    """DNS tunnel: a few hundred TXT/A queries an hour with long base32 labels of one domain."""
    rng, net = ctx.rng, ctx.net
    src = ctx.desktop()
    domain = ctx.domain()
    start, dur = ctx.place(ctx.local(1, 10.0) + float(rng.uniform(0, 3600)), hours * 3600.0)
    n = int(rng.poisson(per_hour * dur / 3600.0))
    t = start + np.sort(rng.uniform(0, dur, n))
    raw = rng.bytes(n * 40)
    labels = []
    for i in range(n):
        enc = base64.b32encode(raw[i * 40 : (i + 1) * 40]).decode().rstrip("=").lower()
        cut = int(rng.integers(36, 56))
        labels.append(f"{enc[:cut]}.{enc[cut:]}.{i & 0xFFFF:04x}.{domain}")
    q = np.array(labels, dtype=object)
    txt = rng.random(n) < 0.7
    ans = np.where(
        txt, [base64.b32encode(rng.bytes(24)).decode().rstrip("=").lower() for _ in range(n)], ""
    )
    a_ip = ctx.new_external(f"authoritative name server of {domain} (DNS tunnel endpoint)")
    ans = np.where(txt, ans, net.addrs[a_ip]).astype(object)
    p = Parts(net, rng)
    p.dns(t, src, net.resolver[src], q, np.where(txt, 16, 1), 0, ans, 1, True)
    resolver = net.addrs[int(net.resolver[src])]
    ctx.incident(
        "dns_tunnel",
        ["T1048.003", "T1071.004"],
        src,
        domain,
        [53],
        p,
        f"{net.addrs[src]} sent {n} queries (~{per_hour:.0f}/h for {dur / 3600.0:.0f} h) for unique base32 sub-domains "
        f"of {domain} (labels 36-56 chars, 70% TXT, 30% A) through its resolver {resolver}, which forwards every one "
        f"upstream; ~{n * 40 / 1e3:.0f} KB encoded in query names",
        resolver=resolver,
    )


def beacon(
    ctx: ScenarioContext, period: float = 60.0, jitter: float = 0.3, hours: float = 72.0
) -> None:
    """Jittered HTTPS C2 beacon (60 s ± 30%, small sizes, ~3% missed check-ins)."""
    rng, net = ctx.rng, ctx.net
    src = ctx.desktop()
    dst = ctx.new_external("C2 server (HTTPS beacon)")
    start, dur = ctx.place(ctx.local(1, 8.0) + float(rng.uniform(0, 3600)), hours * 3600.0)
    gaps = period * rng.uniform(1 - jitter, 1 + jitter, int(dur / period * 1.5) + 10)
    t = start + np.concatenate([[0.0], np.cumsum(gaps)])
    t = t[t < start + dur]
    t = t[rng.random(len(t)) > 0.03]
    n = len(t)
    task = rng.random(n) < 0.01
    pout = np.where(task, rng.integers(2000, 30000, n), rng.normal(450, 60, n).astype(np.int64))
    pin = np.where(task, rng.integers(5000, 50000, n), rng.normal(320, 40, n).astype(np.int64))
    p = Parts(net, rng)
    p.flow(t, rng.uniform(0.1, 0.6, n), src, dst, 443, TCP, pout, pin, SSL)
    name = ctx.domain()
    looks = t[np.unique((t - start) // 300.0, return_index=True)[1]] - 0.03
    p.dns(
        looks,
        src,
        net.resolver[src],
        np.full(len(looks), name, dtype=object),
        1,
        0,
        net.addrs[dst],
        1,
        True,
    )
    ctx.incident(
        "beaconing",
        ["T1071.001", "T1573"],
        src,
        net.addrs[dst],
        [443],
        p,
        f"{net.addrs[src]} checked in with {net.addrs[dst]}:443 ({name}) {n} times over {dur / 3600.0:.0f} h: "
        f"every {period:.0f} s ± {jitter:.0%}, ~450 B out / ~320 B in, ~3% missed check-ins, ~1% larger task exchanges",
        domain=name,
    )


def poisoning_ramp(
    ctx: ScenarioContext,
    days: int = 14,
    growth: float = 0.10,
    base: float = 30e6,
    final: float = 2e9,
) -> None:
    """Daily upload to one address grows 10%/day for 14 days (baseline poisoning), then a big exfil."""
    rng, net = ctx.rng, ctx.net
    src = ctx.desktop()
    dst = ctx.new_external("slowly ramped exfiltration server (baseline poisoning)")
    span_days = int((ctx.end - ctx.start) // 86400)
    ramp = days
    if span_days < days + 2:
        ramp = max(1, span_days - 2)
        ctx.notes.append(
            f"{ctx.name}: ramp shortened from {days} to {ramp} days (simulation has {span_days} days; needs {days + 2})"
        )
    p = Parts(net, rng)
    for d in range(ramp + 1):
        vol = base * (1 + growth) ** min(d, ramp - 1)
        pay = chunks(rng, vol, 20_000, 200_000)
        t = ctx.local(d, 8.0) + np.sort(rng.uniform(0, 12 * 3600.0, len(pay)))
        t = t[t < ctx.end - 3600]
        p.flow(
            t,
            rng.uniform(0.3, 4, len(t)),
            src,
            dst,
            443,
            TCP,
            pay[: len(t)],
            rng.integers(300, 1500, len(t)),
            SSL,
        )
    big, dur = ctx.place(ctx.local(ramp + 1, 13.0), 5400.0)
    k = 4
    t = big + np.sort(rng.uniform(0, 30, k))
    p.flow(t, dur - 60.0, src, dst, 443, TCP, int(final / k / 1.043), 40_000, SSL)
    ctx.incident(
        "exfiltration",
        ["T1048", "T1030"],
        src,
        net.addrs[dst],
        [443],
        p,
        f"baseline poisoning then exfiltration: {net.addrs[src]} uploaded ~{mb(base)}/day to {net.addrs[dst]}:443 from the "
        f"first day, growing {growth:.0%} a day for {ramp} days so an adaptive baseline learns it, then ~{mb(final)} "
        f"in {dur / 60:.0f} minutes",
        ramp_days=ramp,
    )


SCENARIOS: dict[str, Callable[[ScenarioContext], None]] = {
    "slow_exfil": slow_exfil,
    "fast_exfil": fast_exfil,
    "dns_exfil": dns_exfil,
    "beacon": beacon,
    "lateral_chain": lateral_chain,
    "admin_share_transfer": admin_share_transfer,
    "ldap_recon": ldap_recon,
    "poisoning_ramp": poisoning_ramp,
}
