"""Benign internet-facing background: the confounders every detector must live with.

Web/SaaS/CDN browsing (with the DNS lookups that precede it), DNS noise (internal
names, SRV, reverse lookups, NXDOMAIN), OS telemetry and EDR check-ins (periodic,
beacon-like, every host), NTP, software updates (same few CDNs, large downloads),
nightly cloud backups of servers (2-20 GB uploads at ~01:00-03:00), cloud file sync
uploads from some workstations, and e-mail. Each generator takes a :class:`Slot`
(one hour) and adds rows to its :class:`~pipelines.simulate.core.Parts`.

>>> from pipelines.simulate.network import Network
>>> from pipelines.simulate.roles import Activity
>>> net = Network(hosts=30, seed=2)
>>> slot = Slot(net, Activity(net, 0.0, 2), 1_699_833_600.0 + 10 * 3600, seed=2)
>>> web(slot); flows, dns = slot.parts.build()
>>> len(flows) > 100, len(dns) > 10, set(flows.dst_port.tolist()) <= {53, 80, 443}
(True, True, True)
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pipelines.simulate.core import HTTP, NTP, REJ, S0, SF, SMTP, SSL, TCP, UDP, Parts
from pipelines.simulate.network import Network
from pipelines.simulate.roles import BIN, BINS, Activity, local_day

__all__ = ["BENIGN", "Slot"]


class Slot:
    """One hour of simulated time: activity bins, a seeded RNG and the rows being built."""

    def __init__(self, net: Network, activity: Activity, t0: float, seed: int) -> None:
        self.net = net
        self.t0 = t0
        self.t1 = t0 + 3600.0
        self.seed = seed
        self.tz = activity.tz
        self.activity = activity
        self.rng = np.random.default_rng([seed, int(t0), 303])
        self.starts, self.act, self.powered = activity.bins(t0)
        self.day = local_day(t0, activity.tz)
        self.parts = Parts(net, self.rng)

    def day_rng(self, day: int, key: int) -> np.random.Generator:
        """An RNG shared by every slot of local ``day`` (daily schedules)."""
        return np.random.default_rng([self.seed, day, key])

    def day_start(self, day: int) -> float:
        """Epoch seconds of local midnight of ``day``."""
        return day * 86400.0 - self.tz * 3600.0

    def poisson(
        self, hosts: np.ndarray, per_hour: np.ndarray | float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Events at ``per_hour`` (scalar or (len(hosts), BINS)) → (host index, time)."""
        lam = np.broadcast_to(np.asarray(per_hour, dtype=np.float64), (len(hosts), BINS)) * (
            BIN / 3600.0
        )
        counts = self.rng.poisson(lam).ravel()
        h = np.repeat(np.repeat(hosts, BINS), counts)
        t = (
            np.repeat(np.tile(self.starts, len(hosts)), counts)
            + self.rng.random(counts.sum()) * BIN
        )
        return h.astype(np.int32), t

    def periodic(
        self,
        hosts: np.ndarray,
        period: float,
        phase: np.ndarray,
        jitter: float,
        need_power: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Events every ``period`` s at per-host ``phase`` (0..1) ± ``jitter`` s, while powered."""
        m = int(np.ceil(3600.0 / period)) + 1
        off = phase * period
        k0 = np.ceil((self.t0 - off) / period)
        t = (k0[:, None] + np.arange(m)[None, :]) * period + off[:, None]
        keep = (t >= self.t0) & (t < self.t1)
        hh = np.broadcast_to(hosts[:, None], t.shape)[keep]
        t = t[keep]
        if need_power:
            b = ((t - self.t0) // BIN).astype(np.int64).clip(0, BINS - 1)
            on = self.powered[hh, b]
            hh, t = hh[on], t[on]
        t = (t + self.rng.normal(0.0, jitter, len(t))).clip(self.t0, self.t1 - 1e-3)
        return hh.astype(np.int32), t

    def act_of(self, hosts: np.ndarray) -> np.ndarray:
        return self.act[hosts]


def lognormal(
    rng: np.random.Generator, median: float, sigma: float, n: int, cap: float = 5e9
) -> np.ndarray:
    return np.minimum(rng.lognormal(np.log(median), sigma, n), cap).astype(np.int64)


def _states(rng: np.random.Generator, n: int, s0: float = 0.01, rej: float = 0.003) -> np.ndarray:
    r = rng.random(n)
    return np.where(r < s0, S0, np.where(r < s0 + rej, REJ, SF)).astype(np.int8)


def web(s: Slot) -> None:
    """Browsing and SaaS: popular CDNs shared by many hosts plus each host's long tail."""
    net, rng = s.net, s.rng
    groups = (
        (net.ws, 130.0 * s.act[net.ws]),
        (net.jump, 25.0 * s.act[net.jump]),
        (net.srv, np.full((len(net.srv), BINS), 6.0)),
    )
    for hosts, rate in groups:
        h, t = s.poisson(hosts, rate)
        n = len(h)
        if n == 0:
            continue
        popular = (rng.random(n) < 0.6) | (net.role[h] == 1)
        rank = np.minimum(rng.zipf(1.25, n) - 1, len(net.popular) - 1)
        tail = (net.fav[h] + np.minimum(rng.zipf(1.15, n), 3000)) % len(net.tail)
        pos = np.where(popular, rank, len(net.popular) + tail)
        dst = net.web_dst[pos]
        port = np.where(rng.random(n) < 0.92, 443, 80)
        pout = lognormal(rng, 900, 0.8, n)
        post = rng.random(n) < 0.05
        pout = np.where(post, lognormal(rng, 8000, 1.0, n), pout)
        pin = lognormal(rng, 15000, 1.8, n, cap=3e8)
        dur = np.minimum(rng.lognormal(np.log(1.5), 1.3, n), 3000.0)
        s.parts.flow(
            t, dur, h, dst, port, TCP, pout, pin, np.where(port == 443, SSL, HTTP), _states(rng, n)
        )
        # the lookup that preceded the connection (the rest were cached)
        look = np.flatnonzero(rng.random(n) < 0.45)
        ts = t[look] - rng.uniform(0.004, 0.08, len(look))
        src = h[look]
        names = net.web_names[pos[look]]
        addrs = net.addr_arr()[dst[look]]
        fwd = rng.random(len(look)) < 0.3
        s.parts.dns(ts, src, net.resolver[src], names, 1, 0, addrs, 1 + (pos[look] % 3 == 0), fwd)
        v6 = rng.random(len(look)) < 0.5  # Windows asks AAAA too; no v6 answers here
        s.parts.dns(
            ts[v6] + 0.0003, src[v6], net.resolver[src[v6]], names[v6], 28, 0, "", 0, fwd[v6]
        )


def dns_noise(s: Slot) -> None:
    """Lookups not followed by a connection: internal names, SRV, PTR, prefetch, NXDOMAIN."""
    net, rng = s.net, s.rng
    hosts = np.arange(net.n_internal, dtype=np.int32)
    rate = (3.0 + 18.0 * s.act) * s.powered
    rate[net.prn] = 0.5  # printers resolve little
    h, t = s.poisson(hosts, rate)
    n = len(h)
    names = net.internal_names
    k = rng.integers(0, len(names), n)
    q = names[k]
    is_host = k < net.n_internal
    ans = np.where(is_host, net.addr_arr()[np.minimum(k, net.n_internal - 1)], "")
    qtype = np.where(is_host, 1, np.where(k == len(names) - 1, 1, 33))
    rcode = np.where(k == net.n_internal + 2, 3, 0)  # wpad: NXDOMAIN
    ans_n = np.where(rcode == 0, np.where(is_host, 1, len(net.dc)), 0)
    ans = np.where(rcode == 0, ans, "")
    s.parts.dns(t, h, net.resolver[h], q, qtype, rcode, ans, ans_n, False)
    # prefetch / ad-tracker lookups of web names, some NXDOMAIN typos
    h, t = s.poisson(net.ws, 12.0 * s.act[net.ws])
    pos = rng.integers(0, len(net.web_names), len(h))
    nx = rng.random(len(h)) < 0.04
    q = np.where(
        nx, np.char.add("wwww.", net.web_names[pos].astype(str)).astype(object), net.web_names[pos]
    )
    ans = np.where(nx, "", net.addr_arr()[net.web_dst[pos]])
    s.parts.dns(t, h, net.resolver[h], q, 1, np.where(nx, 3, 0), ans, (~nx).astype(np.int32), True)
    # reverse lookups from servers, DCs and jump hosts (log enrichment, admin tools)
    who = np.concatenate([net.srv, net.dc, net.jump])
    h, t = s.poisson(who, 4.0)
    target = rng.integers(0, net.n_internal, len(h))
    s.parts.dns(
        t, h, net.resolver[h], net.ptr_names[target], 12, 0, net.internal_names[target], 1, False
    )


def telemetry(s: Slot) -> None:
    """OS telemetry every 15 min and EDR check-ins every 5 min from every powered host (not printers)."""
    net, rng = s.net, s.rng
    hosts = np.flatnonzero(net.role != 4).astype(np.int32)  # printers run no OS agents
    for col, period, dst, out_med, in_med, jit in (
        (0, 900.0, net.telemetry, 2500, 600, 4.0),
        (1, 300.0, net.edr, 1100, 450, 1.5),
    ):
        h, t = s.periodic(hosts, period, net.phase[hosts, col], jit)
        n = len(h)
        pout = lognormal(rng, out_med, 0.35, n)
        pin = lognormal(rng, in_med, 0.25, n)
        s.parts.flow(
            t,
            rng.uniform(0.2, 1.5, n),
            h,
            dst[0],
            443,
            TCP,
            pout,
            pin,
            SSL,
            _states(rng, n, 0.002, 0.0),
        )
        look = rng.random(n) < 0.25
        name = net.svc_names["telemetry" if col == 0 else "edr"][0]
        q = np.full(int(look.sum()), name, dtype=object)
        s.parts.dns(
            t[look] - 0.02,
            h[look],
            net.resolver[h[look]],
            q,
            1,
            0,
            net.addrs[int(dst[0])],
            1,
            rng.random(len(q)) < 0.2,
        )


def ntp(s: Slot) -> None:
    """Domain members sync time with their DC hourly; DCs with the public pool every 1024 s."""
    net, rng = s.net, s.rng
    members = np.concatenate([net.ws, net.srv, net.jump, net.prn])
    h, t = s.periodic(members, 3600.0, net.phase[members, 2], 20.0)
    s.parts.flow(t, 0.01, h, net.resolver[h], 123, UDP, 48, 48, NTP, sport=123)
    h, t = s.periodic(net.dc, 1024.0, net.phase[net.dc, 2], 2.0)
    dst = net.ntp_ext[rng.integers(0, len(net.ntp_ext), len(h))]
    s.parts.flow(t, 0.02, h, dst, 123, UDP, 48, 48, NTP, sport=123)


def updates(s: Slot) -> None:
    """Update checks (4 h), AV signatures (2 h) and large downloads on some host-days."""
    net, rng = s.net, s.rng
    hosts = np.arange(net.n_internal, dtype=np.int32)
    hosts = hosts[net.role != 4]
    h, t = s.periodic(hosts, 14400.0, net.phase[hosts, 3], 60.0)
    n = len(h)
    s.parts.flow(
        t,
        rng.uniform(0.3, 2, n),
        h,
        net.update[0],
        443,
        TCP,
        lognormal(rng, 3000, 0.3, n),
        lognormal(rng, 20000, 0.8, n),
        SSL,
    )
    h, t = s.periodic(hosts, 7200.0, net.phase[hosts, 4], 120.0)
    n = len(h)
    s.parts.flow(
        t,
        rng.uniform(1, 20, n),
        h,
        net.update[2],
        443,
        TCP,
        lognormal(rng, 1500, 0.3, n),
        lognormal(rng, 900_000, 1.2, n, 3e7),
        SSL,
    )
    # one large download on ~25% of host-days, at a random powered moment of the working day
    drng = s.day_rng(s.day, 404)
    start, end, _present = s.activity.day_window(s.day)
    who = drng.random(net.n_internal) < 0.25
    hour = np.where(
        net.role == 0,
        drng.uniform(start, np.maximum(start + 0.5, end)),
        drng.uniform(3.0, 4.0, net.n_internal),
    )
    when = s.day_start(s.day) + hour * 3600.0
    sel = np.flatnonzero(who & (when >= s.t0) & (when < s.t1) & (net.role != 4))
    if len(sel):
        k = drng.integers(1, 5, net.n_internal)[sel]
        h = np.repeat(sel, k).astype(np.int32)
        t = np.repeat(when[sel], k) + rng.uniform(0, 30, len(h))
        t = t.clip(s.t0, s.t1 - 1e-3)
        size = lognormal(rng, 120e6, 0.9, len(h), 1.5e9)
        s.parts.flow(
            t, size / 8e6, h, net.update[1], 443, TCP, lognormal(rng, 4000, 0.5, len(h)), size, SSL
        )


def backups(s: Slot) -> None:
    """Nightly server backups to cloud object storage: 2-20 GB per server, ~01:00-03:00."""
    net, rng = s.net, s.rng
    for day in (s.day, s.day + 1):
        drng = s.day_rng(day, 505)
        for j, srv in enumerate(net.backup_srv.tolist()):
            base = 2e9 + 18e9 * net.phase[srv, 5]  # per-server size, the same every night
            total = base * drng.uniform(0.9, 1.15)
            begin = (
                s.day_start(day) + 3600.0 * (1.0 + net.phase[srv, 6] * 0.8) + drng.normal(0, 240)
            )
            streams = 8 + int(net.phase[srv, 7] * 16)
            starts = begin + np.sort(drng.uniform(0, 3600.0 * 1.2, streams))
            sizes = (total * drng.dirichlet(np.full(streams, 4.0))).astype(np.int64)
            keep = (starts >= s.t0) & (starts < s.t1)
            if keep.any():
                n = int(keep.sum())
                dst = net.backup[j % len(net.backup)]
                sz = sizes[keep]
                s.parts.flow(
                    starts[keep],
                    sz / 60e6,
                    srv,
                    dst,
                    443,
                    TCP,
                    sz,
                    sz // 400 + rng.integers(2000, 8000, n),
                    SSL,
                )


def cloud_sync(s: Slot) -> None:
    """File sync clients on ~30% of workstations: moderate uploads plus a 5-minute poll."""
    net, rng = s.net, s.rng
    ws = net.ws[net.syncer[net.ws]]
    h, t = s.poisson(ws, 6.0 * s.act[ws])
    n = len(h)
    pout = lognormal(rng, 300_000, 1.5, n, 5e7)
    s.parts.flow(
        t, 0.5 + pout / 2e6, h, net.sync[0], 443, TCP, pout, lognormal(rng, 4000, 0.5, n), SSL
    )
    h, t = s.periodic(ws, 300.0, net.phase[ws, 7], 10.0)
    n = len(h)
    s.parts.flow(
        t,
        rng.uniform(1, 60, n),
        h,
        net.sync[1],
        443,
        TCP,
        lognormal(rng, 700, 0.3, n),
        lognormal(rng, 900, 0.5, n),
        SSL,
    )


def email(s: Slot) -> None:
    """Workstations to hosted mail; the mail server relays SMTP out and receives it in."""
    net, rng = s.net, s.rng
    h, t = s.poisson(net.ws, (8.0 * s.act[net.ws] + 0.3) * s.powered[net.ws])
    n = len(h)
    dst = net.exchange[rng.integers(0, len(net.exchange), n)]
    s.parts.flow(
        t,
        np.minimum(rng.lognormal(1.0, 1.5, n), 1800),
        h,
        dst,
        443,
        TCP,
        lognormal(rng, 2500, 1.2, n),
        lognormal(rng, 20000, 1.5, n),
        SSL,
    )
    mail = np.array([net.mail], dtype=np.int32)
    biz = s.act[mail]
    h, t = s.poisson(mail, 30.0 * biz)
    n = len(h)
    s.parts.flow(
        t,
        rng.uniform(0.5, 5, n),
        h,
        net.smtp_ext[0],
        25,
        TCP,
        lognormal(rng, 40000, 1.5, n),
        900,
        SMTP,
    )
    h, t = s.poisson(mail, 25.0 * biz)
    n = len(h)
    src = net.tail[rng.integers(0, len(net.tail), n)]
    s.parts.flow(
        t, rng.uniform(0.5, 5, n), src, net.mail, 25, TCP, lognormal(rng, 30000, 1.5, n), 800, SMTP
    )


BENIGN: dict[str, Callable[[Slot], None]] = {
    "web": web,
    "dns": dns_noise,
    "telemetry": telemetry,
    "ntp": ntp,
    "updates": updates,
    "backups": backups,
    "cloud_sync": cloud_sync,
    "email": email,
}
