"""Lateral movement and discovery scenarios (LOTL: RPC/SMB/WinRM/RDP, ADMIN$ transfer, LDAP recon).

>>> from pipelines.simulate.network import Network
>>> net = Network(hosts=40, seed=5)
>>> ctx = ScenarioContext(net, "lateral_chain", seed=5, start=1_699_833_600.0, end=1_699_833_600.0 + 3 * 86400, tz=0.0, used=set())
>>> lateral_chain(ctx)
>>> [(i.id, i.dst_ports[-1]) for i in ctx.incidents]
[('lateral_chain-1', 445), ('lateral_chain-2', 3389)]
"""

from __future__ import annotations

import numpy as np

from pipelines.simulate.benign import lognormal
from pipelines.simulate.context import ScenarioContext, mb
from pipelines.simulate.core import DCE_RPC, HTTP, LDAP, RDP, SMB, TCP, Parts

__all__ = ["admin_share_transfer", "lateral_chain", "ldap_recon"]


def lateral_chain(ctx: ScenarioContext) -> None:
    """A (workstation) → B (server): RPC 135 + dynamic port and SMB 445; then B → C: WinRM and RDP."""
    rng, net = ctx.rng, ctx.net
    a = ctx.pick(net.ws)
    b = ctx.pick(net.appservers)
    c = ctx.pick(np.concatenate([net.srv[net.srv != b]]))
    start, _ = ctx.place(ctx.local(1, 19.5) + float(rng.uniform(0, 1200)), 3600.0)
    p1 = Parts(net, rng)
    dyn = int(rng.integers(49700, 50200))
    p1.flow(np.array([start]), 0.02, a, b, 135, TCP, 220, 180, DCE_RPC)
    p1.flow(np.array([start + 0.2]), 1.5, a, b, dyn, TCP, 2400, 1800, DCE_RPC)
    t = start + 3.0 + np.sort(rng.uniform(0, 240, 4))
    p1.flow(
        t,
        rng.uniform(1, 20, 4),
        a,
        b,
        445,
        TCP,
        rng.integers(20_000, 900_000, 4),
        rng.integers(5000, 40_000, 4),
        SMB,
    )
    ctx.incident(
        "lateral_movement",
        ["T1021.002", "T1047"],
        a,
        net.addrs[b],
        [135, dyn, 445],
        p1,
        f"hop 1 of a chain {net.addrs[a]} -> {net.addrs[b]} -> {net.addrs[c]}: WMI/DCOM-style RPC (endpoint mapper 135, "
        f"then dynamic port {dyn}) and SMB 445 sessions from a workstation that never used admin protocols to this server",
        chain=f"{ctx.name}-chain",
        hop=1,
    )
    t2 = start + float(rng.uniform(900, 2400))
    p2 = Parts(net, rng)
    m = int(rng.integers(6, 12))
    tw = t2 + np.sort(rng.uniform(0, 300, m))
    p2.flow(
        tw,
        rng.uniform(0.5, 10, m),
        b,
        c,
        5985,
        TCP,
        lognormal(rng, 8000, 0.8, m),
        lognormal(rng, 12000, 1.0, m),
        HTTP,
    )
    p2.flow(
        np.array([tw[-1] + 60.0]),
        float(rng.uniform(600, 1500)),
        b,
        c,
        3389,
        TCP,
        1_500_000,
        12_000_000,
        RDP,
    )
    ctx.incident(
        "lateral_movement",
        ["T1021.006", "T1021.001"],
        b,
        net.addrs[c],
        [5985, 3389],
        p2,
        f"hop 2 of the chain: {net.addrs[b]} (reached from {net.addrs[a]} {((t2 - start) / 60):.0f} min earlier) opened "
        f"{m} WinRM 5985 connections and then an RDP 3389 session to {net.addrs[c]}; server-to-server admin edges never seen before",
        chain=f"{ctx.name}-chain",
        hop=2,
    )


def admin_share_transfer(ctx: ScenarioContext) -> None:
    """Tool transfer to ADMIN$ over SMB 445 between two workstations (never done before)."""
    rng, net = ctx.rng, ctx.net
    a = ctx.pick(net.ws)
    b = ctx.desktop()
    start, _ = ctx.place(ctx.local(1, 11.0) + float(rng.uniform(0, 3600)), 300.0)
    size = int(rng.integers(2_000_000, 8_000_000))
    p = Parts(net, rng)
    p.flow(np.array([start]), 0.3, a, b, 445, TCP, 1800, 1600, SMB)
    p.flow(np.array([start + 2.0]), 4.0 + size / 5e6, a, b, 445, TCP, size, 30_000, SMB)
    p.flow(np.array([start + 12.0, start + 14.0]), 0.5, a, b, 445, TCP, 2500, 2200, SMB)
    ctx.incident(
        "lateral_movement",
        ["T1021.002", "T1570"],
        a,
        net.addrs[b],
        [445],
        p,
        f"{net.addrs[a]} wrote {mb(size)} to \\\\{net.hosts[b].name}\\ADMIN$ over SMB 445 (session setup, one large "
        "write, then service-control traffic); workstation-to-workstation SMB never occurs in the baseline",
    )


def ldap_recon(ctx: ScenarioContext) -> None:
    """A workstation enumerating the directory: bursts of many LDAP/GC queries with large responses."""
    rng, net = ctx.rng, ctx.net
    a = ctx.pick(net.ws)
    dc = int(net.resolver[a])
    start, _ = ctx.place(ctx.local(1, 15.0) + float(rng.uniform(0, 3600)), 2700.0)
    p = Parts(net, rng)
    total = 0
    for k in range(3):
        n = int(rng.integers(150, 400))
        t = start + k * 900.0 + np.sort(rng.uniform(0, 180, n))
        port = np.where(rng.random(n) < 0.8, 389, 3268)
        p.flow(
            t,
            rng.uniform(0.05, 2, n),
            a,
            dc,
            port,
            TCP,
            rng.integers(300, 2000, n),
            lognormal(rng, 60_000, 1.2, n, 5e6),
            LDAP,
        )
        total += n
    ctx.incident(
        "discovery",
        ["T1087.002", "T1018"],
        a,
        net.addrs[dc],
        [389, 3268],
        p,
        f"{net.addrs[a]} made {total} LDAP/Global Catalog connections to {net.addrs[dc]} in 3 bursts of ~3 minutes "
        "15 minutes apart, with large search responses (users, groups, computers enumeration) — far above its usual few per hour",
    )
