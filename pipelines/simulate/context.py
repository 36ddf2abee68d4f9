"""What a scenario works with: :class:`ScenarioContext` (network, RNG, placement, host picking) and :class:`Incident`.

>>> from pipelines.simulate.network import Network
>>> net = Network(hosts=40, seed=5)
>>> ctx = ScenarioContext(net, "x", seed=5, start=1_699_833_600.0, end=1_699_833_600.0 + 86400, tz=0.0, used=set())
>>> ctx.place(ctx.local(3, 10.0), 3600.0)[1]  # too late for a 1-day run: moved earlier
3600.0
>>> ctx.notes
['x: moved 59.0 h earlier to fit the simulated span']
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from pipelines.simulate.core import Parts
from pipelines.simulate.network import Network

__all__ = ["Incident", "ScenarioContext", "chunks", "mb"]


@dataclass
class Incident:
    """One labelled incident (times are epoch seconds; truth.py renders ISO-8601)."""

    id: str
    kind: str
    attack: list[str]
    src: str
    dst: str
    dst_ports: list[int]
    start: float
    end: float
    evidence: str
    extra: dict[str, object] = field(default_factory=dict)


class ScenarioContext:
    """What a scenario may use: the network, a per-scenario RNG, placement and host picking."""

    def __init__(
        self,
        net: Network,
        name: str,
        seed: int,
        start: float,
        end: float,
        tz: float,
        used: set[int],
    ) -> None:
        self.net = net
        self.name = name
        self.start = start
        self.end = end
        self.tz = tz
        self.used = used
        self.rng = np.random.default_rng([seed, zlib.crc32(name.encode()), 707])
        self.parts = Parts(net, self.rng)
        self.incidents: list[Incident] = []
        self.notes: list[str] = []
        self.externals: dict[str, str] = {}

    # -- helpers -------------------------------------------------------------------------
    def pick(self, candidates: np.ndarray, prefer: np.ndarray | None = None) -> int:
        """A host from ``candidates`` not used by another scenario (``prefer`` mask first)."""
        cand = np.array([c for c in candidates.tolist() if c not in self.used], dtype=np.int64)
        if prefer is not None and len(cand):
            better = cand[prefer[cand]]
            cand = better if len(better) else cand
        if not len(cand):
            cand = np.asarray(candidates, dtype=np.int64)
        got = int(cand[int(self.rng.integers(len(cand)))])
        self.used.add(got)
        return got

    def desktop(self) -> int:
        """A desktop workstation (always on, so an implant can run around the clock)."""
        return self.pick(self.net.ws, ~self.net.laptop)

    def new_external(self, label: str) -> int:
        """A fresh attacker address in a documentation range, registered in the address table."""
        while True:
            pre = ("203.0.113", "198.51.100", "192.0.2")[int(self.rng.integers(3))]
            ip = f"{pre}.{int(self.rng.integers(2, 254))}"
            if ip not in self.net.index:
                self.externals[ip] = label
                return self.net.add_external(ip, label)

    def domain(self) -> str:
        w = (
            "stone",
            "pixel",
            "metric",
            "static",
            "sync",
            "edge",
            "asset",
            "cache",
            "relay",
            "node",
        )
        a, b = self.rng.choice(w, 2, replace=False)
        return f"{a}{b}-{self.rng.bytes(2).hex()}.{('com', 'net', 'info', 'io')[int(self.rng.integers(4))]}"

    def local(self, day: int, hour: float) -> float:
        """Epoch seconds of local ``hour`` on simulation day ``day`` (0 = first day)."""
        first = (self.start + self.tz * 3600.0) // 86400.0
        return (first + day) * 86400.0 - self.tz * 3600.0 + hour * 3600.0

    def place(self, start: float, duration: float) -> tuple[float, float]:
        """Fit [start, start+duration] into the simulation; note any move in truth.notes."""
        margin = 60.0
        if start + duration <= self.end - margin and start >= self.start:
            return start, duration
        latest = self.end - margin - duration
        if latest >= self.start + 0.1 * (self.end - self.start):
            self.notes.append(
                f"{self.name}: moved {(start - latest) / 3600.0:.1f} h earlier to fit the simulated span"
            )
            return latest, duration
        begin = self.start + 0.25 * (self.end - self.start)
        short = max(60.0, self.end - margin - begin)
        self.notes.append(
            f"{self.name}: shortened from {duration / 3600.0:.1f} h to {short / 3600.0:.1f} h (simulation too short)"
        )
        return begin, short

    def incident(
        self,
        kind: str,
        attack: list[str],
        src: int,
        dst: str,
        ports: list[int],
        parts: Parts,
        evidence: str,
        **extra: object,
    ) -> None:
        """Declare an incident whose rows are in ``parts``; they are merged into the scenario rows."""
        starts, ends = [], []
        for r in parts.flows:
            starts.append(float(r["ts"].min()))
            ends.append(float((r["ts"] + r["dur"]).max()))
        for r in parts.dns_rows:
            starts.append(float(r["ts"].min()))
            ends.append(float(r["ts"].max()) + 0.01)
        self.parts.flows.extend(parts.flows)
        self.parts.dns_rows.extend(parts.dns_rows)
        iid = f"{self.name}-{len(self.incidents) + 1}"
        net = self.net
        self.incidents.append(
            Incident(
                iid,
                kind,
                attack,
                net.addrs[src],
                dst,
                ports,
                min(starts),
                max(ends),
                evidence,
                dict(extra),
            )
        )


def mb(x: float) -> str:
    return f"{x / 1e6:.1f} MB"


def chunks(rng: np.random.Generator, total_ip_bytes: float, lo: int, hi: int) -> np.ndarray:
    """Payload sizes whose IP-layer size (payload + 60 B/packet) lies in [lo, hi] and sums to ~total."""
    p_lo = lo - 60 * (3 + lo // 1400 + 1)
    p_hi = hi - 60 * (3 + hi // 1400 + 1)
    n = int(total_ip_bytes / ((lo + hi) / 2) * 1.2) + 10
    pay = rng.integers(p_lo, p_hi, n)
    ip = pay + 60 * (3 + -(-pay // 1400))
    k = int(np.searchsorted(np.cumsum(ip), total_ip_bytes)) + 1
    return pay[:k]
