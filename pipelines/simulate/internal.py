"""Benign internal traffic: Active Directory, file and app servers, admins, management, printers.

These are the edges a lateral-movement detector sees every day and must not alert on:
workstation → DC Kerberos/LDAP/SMB(SYSVOL)/RPC at logon and periodically, workstation →
file server SMB, app/SQL traffic, jump hosts → servers over RDP/WinRM/SSH (the same
edges every working day), IT staff → jump hosts RDP, DC ↔ DC replication (RPC 135 +
dynamic port, LDAP, Kerberos), the management server pushing to workstations over
SMB/RPC (daily inventory) and polling printers over SNMP, print jobs to printers.

>>> from pipelines.simulate.network import Network
>>> from pipelines.simulate.roles import Activity
>>> from pipelines.simulate.benign import Slot
>>> net = Network(hosts=30, seed=2)
>>> slot = Slot(net, Activity(net, 0.0, 2), 1_699_833_600.0 + 10 * 3600, seed=2)
>>> for gen in INTERNAL.values(): gen(slot)
>>> flows, _ = slot.parts.build()
>>> {88, 389, 445, 135} <= set(flows.dst_port.tolist())
True
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pipelines.simulate.benign import Slot, lognormal
from pipelines.simulate.core import (
    DCE_RPC,
    HTTP,
    IPP,
    KRB,
    KRB_TCP,
    LDAP,
    NONE,
    RDP,
    SMB,
    SNMP,
    SSH,
    SSL,
    TCP,
    UDP,
)
from pipelines.simulate.roles import weekday

__all__ = ["DC_DYNAMIC_PORT", "INTERNAL"]

#: the RPC endpoint-mapper-assigned port of NETLOGON/DRSUAPI on each DC (stable per DC)
DC_DYNAMIC_PORT = 49668


def _rpc_pair(
    s: Slot,
    t: np.ndarray,
    src: np.ndarray | int,
    dst: np.ndarray | int,
    dyn: np.ndarray | int,
    pout: np.ndarray,
    pin: np.ndarray,
) -> None:
    """An RPC call: endpoint mapper on 135, then the dynamic port it hands out."""
    n = len(t)
    s.parts.flow(
        t,
        0.01,
        src,
        dst,
        135,
        TCP,
        150 + s.rng.integers(0, 100, n),
        180 + s.rng.integers(0, 100, n),
        DCE_RPC,
    )
    s.parts.flow(
        t + s.rng.uniform(0.01, 0.05, n),
        s.rng.uniform(0.05, 3, n),
        src,
        dst,
        dyn,
        TCP,
        pout,
        pin,
        DCE_RPC,
    )


def ad_auth(s: Slot) -> None:
    """Logon bursts and periodic Kerberos, LDAP and GPO refresh (SMB SYSVOL) to the DC."""
    net, rng = s.net, s.rng
    # logon: the first minute of each working day (workstations)
    start, _end, present = s.activity.day_window(s.day)
    logon = s.day_start(s.day) + start * 3600.0
    sel = net.ws[present[net.ws] & (logon[net.ws] >= s.t0) & (logon[net.ws] < s.t1)]
    if len(sel):
        for port, k, proto, svc, pin_med in (
            (88, 4, TCP, KRB_TCP, 1600),
            (88, 2, UDP, KRB, 1200),
            (389, 6, TCP, LDAP, 4000),
            (445, 3, TCP, SMB, 60000),
        ):
            h = np.repeat(sel, k)
            t = np.repeat(logon[sel], k) + rng.uniform(0, 50, len(h))
            s.parts.flow(
                t.clip(s.t0, s.t1 - 1e-3),
                rng.uniform(0.01, 2, len(h)),
                h,
                net.resolver[h],
                port,
                proto,
                lognormal(rng, 1400, 0.4, len(h)),
                lognormal(rng, pin_med, 0.8, len(h)),
                svc,
            )
        t = logon[sel] + rng.uniform(5, 40, len(sel))
        _rpc_pair(
            s,
            t.clip(s.t0, s.t1 - 1),
            sel,
            net.resolver[sel],
            DC_DYNAMIC_PORT,
            lognormal(rng, 1500, 0.3, len(sel)),
            lognormal(rng, 1500, 0.3, len(sel)),
        )
    members = np.concatenate([net.ws, net.srv, net.jump])
    a = s.act[members]
    powered = s.powered[members]
    h, t = s.poisson(members, (5.0 * a + 0.6) * powered)
    s.parts.flow(
        t,
        rng.uniform(0.005, 0.5, len(h)),
        h,
        net.resolver[h],
        88,
        TCP,
        lognormal(rng, 1500, 0.3, len(h)),
        lognormal(rng, 1700, 0.3, len(h)),
        KRB_TCP,
    )
    h, t = s.poisson(members, (4.0 * a + 1.0) * powered)
    s.parts.flow(
        t,
        rng.uniform(0.005, 1, len(h)),
        h,
        net.resolver[h],
        389,
        TCP,
        lognormal(rng, 700, 0.5, len(h)),
        lognormal(rng, 3000, 1.0, len(h)),
        LDAP,
    )
    # Group Policy refresh every ~90 minutes: LDAP + SMB SYSVOL
    h, t = s.periodic(members, 5400.0, s.net.phase[members, 4], 600.0)
    s.parts.flow(
        t,
        rng.uniform(0.1, 2, len(h)),
        h,
        net.resolver[h],
        389,
        TCP,
        lognormal(rng, 900, 0.3, len(h)),
        lognormal(rng, 6000, 0.5, len(h)),
        LDAP,
    )
    s.parts.flow(
        t + 0.3,
        rng.uniform(0.2, 3, len(h)),
        h,
        net.resolver[h],
        445,
        TCP,
        lognormal(rng, 3000, 0.4, len(h)),
        lognormal(rng, 25000, 0.8, len(h)),
        SMB,
    )


def apps(s: Slot) -> None:
    """File shares, intranet/app/SQL servers, server-to-server and syslog."""
    net, rng = s.net, s.rng
    ws = net.ws
    h, t = s.poisson(ws, 20.0 * s.act[ws])
    n = len(h)
    s.parts.flow(
        t,
        np.minimum(rng.lognormal(0.5, 1.5, n), 3600),
        h,
        net.home_fs[h],
        445,
        TCP,
        lognormal(rng, 20000, 2.0, n, 5e8),
        lognormal(rng, 100_000, 2.0, n, 1e9),
        SMB,
    )
    h, t = s.poisson(ws, 15.0 * s.act[ws])
    n = len(h)
    pick = (net.fav[h] + rng.integers(0, 2, n)) % len(net.appservers)
    port = np.array([443, 8080, 1433])[(net.fav[h] + pick) % 3]
    svc = np.where(port == 443, SSL, np.where(port == 8080, HTTP, NONE))
    s.parts.flow(
        t,
        rng.uniform(0.1, 20, n),
        h,
        net.appservers[pick],
        port,
        TCP,
        lognormal(rng, 2000, 1.0, n),
        lognormal(rng, 30000, 1.5, n),
        svc,
    )
    # app tier -> SQL, and every server -> log server syslog
    sql = net.appservers[[net.hosts[i].function == "sql" for i in net.appservers]]
    app = net.appservers[[net.hosts[i].function in ("app", "web") for i in net.appservers]]
    if len(sql) and len(app):
        h, t = s.poisson(app, 40.0 * s.act[app])
        s.parts.flow(
            t,
            rng.uniform(0.01, 2, len(h)),
            h,
            sql[h % len(sql)],
            1433,
            TCP,
            lognormal(rng, 1500, 1.0, len(h)),
            lognormal(rng, 12000, 1.5, len(h)),
            NONE,
        )
    logsrv = [i for i in net.srv.tolist() if net.hosts[i].function == "log"]
    if logsrv:
        h, t = s.periodic(net.srv, 300.0, net.phase[net.srv, 6], 5.0)
        s.parts.flow(t, 0.001, h, logsrv[0], 514, UDP, lognormal(rng, 3000, 0.8, len(h)), 0, NONE)


def admins(s: Slot) -> None:
    """Jump hosts → servers (same edges every working day); IT staff → jump hosts over RDP."""
    net, rng = s.net, s.rng
    drng = s.day_rng(s.day, 606)
    start, end, present = s.activity.day_window(s.day)
    if weekday(s.day) >= 5:
        return
    day0 = s.day_start(s.day)
    for jump, srv, port in net.admin_edges:
        k = 1 + int(drng.integers(0, 3))
        when = day0 + 3600.0 * drng.uniform(9.0, 16.5, k)
        lengths = drng.uniform(
            600, 5400, k
        )  # drawn for every session: the day's schedule is shared by all slots
        here = (when >= s.t0) & (when < s.t1)
        for t, length in zip(when[here].tolist(), lengths[here].tolist(), strict=True):
            if port == 3389:
                s.parts.flow(
                    np.array([t]),
                    length,
                    jump,
                    srv,
                    3389,
                    TCP,
                    int(rng.integers(200_000, 5_000_000)),
                    int(rng.integers(2_000_000, 50_000_000)),
                    RDP,
                )
            elif port == 22:
                s.parts.flow(
                    np.array([t]),
                    length,
                    jump,
                    srv,
                    22,
                    TCP,
                    int(rng.integers(20_000, 400_000)),
                    int(rng.integers(50_000, 2_000_000)),
                    SSH,
                )
            else:
                m = int(rng.integers(4, 20))
                tt = t + np.sort(rng.uniform(0, 300, m))
                s.parts.flow(
                    tt.clip(s.t0, s.t1 - 1e-3),
                    rng.uniform(0.2, 8, m),
                    jump,
                    srv,
                    5985,
                    TCP,
                    lognormal(rng, 6000, 0.8, m),
                    lognormal(rng, 9000, 1.0, m),
                    HTTP,
                )
    for i, ws in enumerate(net.it_staff.tolist()):
        if not present[ws]:
            continue
        t = day0 + 3600.0 * (start[ws] + 0.2 + 0.1 * i)
        if s.t0 <= t < s.t1:
            jump = net.jump[i % len(net.jump)]
            length = 3600.0 * max(0.5, float(end[ws] - start[ws] - 1.0))
            s.parts.flow(
                np.array([t]),
                length,
                ws,
                jump,
                3389,
                TCP,
                int(rng.integers(1_000_000, 20_000_000)),
                int(rng.integers(20_000_000, 300_000_000)),
                RDP,
            )


def replication(s: Slot) -> None:
    """DC ↔ DC: RPC 135 + dynamic port (DRSUAPI) every 15 min, LDAP and Kerberos."""
    net, rng = s.net, s.rng
    for a in net.dc.tolist():
        for b in net.dc.tolist():
            if a == b:
                continue
            h, t = s.periodic(
                np.array([a], dtype=np.int32), 900.0, net.phase[[a], 5], 20.0, need_power=False
            )
            n = len(t)
            _rpc_pair(
                s,
                t,
                h,
                b,
                DC_DYNAMIC_PORT,
                lognormal(rng, 20000, 1.0, n),
                lognormal(rng, 30000, 1.0, n),
            )
            h, t = s.periodic(
                np.array([a], dtype=np.int32), 1800.0, net.phase[[a], 6], 30.0, need_power=False
            )
            s.parts.flow(
                t,
                0.2,
                h,
                b,
                389,
                TCP,
                lognormal(rng, 1200, 0.3, len(t)),
                lognormal(rng, 8000, 0.8, len(t)),
                LDAP,
            )
            s.parts.flow(t + 0.1, 0.05, h, b, 88, TCP, 1500, 1700, KRB_TCP)


def management(s: Slot) -> None:
    """Patch/inventory server → workstations (SMB + RPC) daily; agents check in hourly; SNMP to printers."""
    net, rng = s.net, s.rng
    mgmt = net.mgmt
    start, _end, present = s.activity.day_window(s.day)
    when = s.day_start(s.day) + 3600.0 * (start + 0.5 + 2.0 * net.phase[:, 0])
    sel = net.ws[present[net.ws] & (when[net.ws] >= s.t0) & (when[net.ws] < s.t1)]
    if len(sel):
        t = when[sel]
        dyn = 49152 + (net.fav[sel] % 40).astype(np.int32)
        _rpc_pair(
            s,
            t,
            np.full(len(sel), mgmt, np.int32),
            sel,
            dyn,
            lognormal(rng, 3000, 0.4, len(sel)),
            lognormal(rng, 20000, 0.6, len(sel)),
        )
        s.parts.flow(
            t + 2.0,
            rng.uniform(1, 20, len(sel)),
            mgmt,
            sel,
            445,
            TCP,
            lognormal(rng, 400_000, 1.0, len(sel)),
            lognormal(rng, 20000, 0.6, len(sel)),
            SMB,
        )
    hosts = np.concatenate([net.ws, net.srv])
    h, t = s.periodic(hosts, 3600.0, net.phase[hosts, 1], 120.0)
    s.parts.flow(
        t,
        rng.uniform(0.1, 2, len(h)),
        h,
        mgmt,
        8530,
        TCP,
        lognormal(rng, 2000, 0.4, len(h)),
        lognormal(rng, 8000, 0.8, len(h)),
        HTTP,
    )
    h, t = s.periodic(net.prn, 300.0, net.phase[net.prn, 2], 1.0, need_power=False)
    s.parts.flow(
        t, 0.01, mgmt, h, 161, UDP, 90, 300, SNMP, sport=rng.integers(49152, 65536, len(h))
    )


def printing(s: Slot) -> None:
    """Print jobs (9100) and IPP status polls (631) from workstations to their printer."""
    net, rng = s.net, s.rng
    h, t = s.poisson(net.ws, 0.4 * s.act[net.ws])
    n = len(h)
    size = lognormal(rng, 300_000, 1.3, n, 5e7)
    s.parts.flow(t, 1 + size / 1e6, h, net.printer[h], 9100, TCP, size, 0, NONE)
    h, t = s.poisson(net.ws, 2.0 * s.act[net.ws])
    s.parts.flow(
        t,
        rng.uniform(0.01, 0.2, len(h)),
        h,
        net.printer[h],
        631,
        TCP,
        400,
        lognormal(rng, 1200, 0.3, len(h)),
        IPP,
    )


INTERNAL: dict[str, Callable[[Slot], None]] = {
    "ad_auth": ad_auth,
    "apps": apps,
    "admins": admins,
    "replication": replication,
    "management": management,
    "printing": printing,
}
