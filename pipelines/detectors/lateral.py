"""Living-off-the-land lateral movement and discovery over the internal admin-protocol graph.

Per internal source host the detector keeps a capped LRU of its (destination, service)
admin edges, the admin services it ever used, an hour-of-day activity profile and small
robust baselines (distinct admin destinations per window, LDAP volume, SSH/RDP attempts).
Roles (DC, server, jump host, admin workstation, workstation) are learned from the same
baseline (:mod:`pipelines.roles`); config can pin them. After a host's warm-up (days of
event time) it reports

* a **new admin edge** from a host whose role does not normally administer others
  (WinRM → T1021.006, RDP → T1021.001, SSH → T1021.004, SMB to a non-serving host →
  T1021.002, RPC 135 followed within seconds by a dynamic port → T1047/T1021.003, or with
  SMB to the same host → T1021.002 + T1569.002; a large SMB upload adds T1570);
  first use of an admin protocol and off-hours activity raise the score;
* **fan-out**: distinct admin destinations in a window far above the host's baseline and
  its role peers (``discovery`` T1018/T1046 when most attempts failed);
* **LDAP bursts** (``discovery``, T1087.002) far above the host's LDAP baseline;
* **SSH/RDP guessing** (``brute_force``, T1110): many short connections to one host;
* **chains**: A→B flagged, then B→C on an admin service within ``chain_seconds``: one
  finding on A with the whole path.

Legitimate admin activity seen during warm-up is learnt (edges, roles) and stays quiet.
Only windows without findings are learnt (poisoning resistance).

>>> det = LateralDetector(warmup_days=0.0)
>>> det.name, det.params()["edge_cap"]
('lateral', 64)
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from pipelines.baselines import SharedBaseline
from pipelines.detectors._lateral_rules import score_window
from pipelines.detectors.base import Detector, Finding, Window
from pipelines.records import DnsBatch, FlowBatch
from pipelines.roles import HostRoles, HourProfile
from pipelines.sketches import CappedKeySets, HostIndex

__all__ = ["ADMIN_PORTS", "SERVICES", "LateralDetector", "admin_service"]

log = logging.getLogger(__name__)

SERVICES = ("smb", "rpc", "rpc_dyn", "winrm", "rdp", "ssh", "ldap", "kerberos")
SMB, RPC, RPC_DYN, WINRM, RDP, SSH, LDAP, KERBEROS = range(len(SERVICES))
ADMIN_PORTS: dict[int, int] = {
    445: SMB, 139: SMB, 135: RPC, 5985: WINRM, 5986: WINRM, 3389: RDP, 22: SSH,
    389: LDAP, 636: LDAP, 3268: LDAP, 3269: LDAP, 88: KERBEROS,
}  # fmt: skip
_PORT_TABLE = np.full(65536, -1, dtype=np.int8)
for _port, _svc in ADMIN_PORTS.items():
    _PORT_TABLE[_port] = _svc
_FAILED_STATES = frozenset({"S0", "REJ", "RSTOS0", "RSTRH", "SH", "SHR"})
_HASH_CACHE: dict[str, int] = {}
# membership bits of the per-host structures in the detector's shared HostIndex
_LAT, _ROLES, _HOURS, _FANOUT, _LDAP, _AUTH = 1, 2, 4, 8, 16, 32


def admin_service(port: np.ndarray) -> np.ndarray:
    """Admin service code per destination port (-1 for other ports).

    >>> [SERVICES[s] if s >= 0 else "-" for s in admin_service(np.array([445, 5985, 80, -1])).tolist()]
    ['smb', 'winrm', '-', '-']
    """
    p = np.asarray(port, dtype=np.int64)
    out = np.full(len(p), -1, dtype=np.int8)
    ok = (p >= 0) & (p < 65536)
    out[ok] = _PORT_TABLE[p[ok]]
    return out


def _h64(text: str) -> int:
    """Stable (process-independent) non-zero 63-bit hash of a string."""
    got = _HASH_CACHE.get(text)
    if got is None:
        got = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1
        got = got or 1
        if len(_HASH_CACHE) < 200_000:
            _HASH_CACHE[text] = got
    return got


@dataclass
class Edge:
    """One (src, dst, service) aggregate of a window."""

    src: str
    dst: str
    svc: int
    conns: int = 0
    bytes_out: int = 0
    bytes_in: int = 0
    first: float = math.inf
    last: float = -math.inf
    failed: int = 0
    ports: set[int] = field(default_factory=set)
    positions: list[tuple[str, int]] = field(default_factory=list)
    dyn_port: int = -1  # the dynamic RPC endpoint (rpc_dyn edges are per endpoint)

    @property
    def key(self) -> str:
        """Text of the per-host edge key: destination, service (and RPC endpoint port)."""
        return (
            f"{self.dst}|{self.svc}"
            if self.dyn_port < 0
            else f"{self.dst}|{self.svc}|{self.dyn_port}"
        )


@dataclass
class LateralWindow:
    """What :meth:`LateralDetector.close` hands to ``score``/``learn``."""

    window: Window
    edges: list[Edge]
    active: list[str]
    in_clients: dict[str, int]


class LateralDetector(Detector):
    """Admin-protocol graph detector (see module docstring)."""

    name = "lateral"

    def __init__(
        self,
        warmup_days: float = 3.0,
        edge_cap: int = 64,
        network_edge_cap: int = 65536,
        rpc_follow_seconds: float = 10.0,
        chain_seconds: float = 3600.0,
        fanout_min: int = 5,
        fanout_z: float = 3.0,
        fanout_ratio: float = 1.5,
        ldap_min_bytes: int = 262144,
        ldap_z: float = 2.5,
        ldap_ratio: float = 10.0,
        brute_min_conns: int = 10,
        brute_max_bytes: int = 20000,
        smb_upload_bytes: int = 1_000_000,
        smb_min_bytes: int = 1000,
        alert_score: float = 0.5,
        off_hours_share: float = 0.01,
        utc_offset_hours: float = 0.0,
        idle_days: float = 30.0,
        roles: Mapping[str, str] | None = None,
    ) -> None:
        self.warmup_days = warmup_days
        self.edge_cap = edge_cap
        self.network_edge_cap = network_edge_cap
        self.rpc_follow_seconds = rpc_follow_seconds
        self.chain_seconds = chain_seconds
        self.fanout_min = fanout_min
        self.fanout_z = fanout_z
        self.fanout_ratio = fanout_ratio
        self.ldap_min_bytes = ldap_min_bytes
        self.ldap_z = ldap_z
        self.ldap_ratio = ldap_ratio
        self.brute_min_conns = brute_min_conns
        self.brute_max_bytes = brute_max_bytes
        self.smb_upload_bytes = smb_upload_bytes
        self.smb_min_bytes = smb_min_bytes
        self.alert_score = alert_score
        self.off_hours_share = off_hours_share
        self.utc_offset_hours = utc_offset_hours
        self.idle_days = idle_days
        self.roles = roles
        # per-host state: one registry of hosts for every table below (a bit each)
        self.hosts = HostIndex()
        self.first_seen = np.zeros(0, dtype=np.float64)
        self.last_seen = np.zeros(0, dtype=np.float64)
        self.svc_mask = np.zeros(0, dtype=np.int16)
        self.fan_max = np.zeros(0, dtype=np.float32)  # most admin destinations in one calm window
        self.edges = CappedKeySets(edge_cap)  # per host: (destination, service) edge hashes
        hosts = self.hosts
        self.host_roles = HostRoles(pinned=self.roles, registry=hosts, bit=_ROLES)
        self.hours = HourProfile(utc_offset_hours, off_hours_share, registry=hosts, bit=_HOURS)
        self.fanout = SharedBaseline(hosts, _FANOUT, ("admin_dsts",), warmup=12)
        self.ldap = SharedBaseline(hosts, _LDAP, ("ldap_bytes_in", "ldap_conns"), warmup=3)
        self.auth = SharedBaseline(hosts, _AUTH, ("auth_conns",), warmup=3)
        self.popularity: dict[int, int] = {}  # hash(dst, svc) -> distinct sources seen
        self.taints: dict[str, tuple[tuple[str, ...], float]] = {}  # host -> (path to it, time)
        self.rpc_recent: dict[tuple[str, str], float] = {}  # (src, dst) -> last RPC 135 time
        self.day = -1
        # window accumulators
        self._edges: dict[tuple[str, str, int, int], Edge] = {}
        self._active: set[str] = set()
        self._in_clients: dict[str, int] = {}

    # -- ingest -----------------------------------------------------------------------
    def ingest(self, flows: FlowBatch, dns: DnsBatch, window: Window) -> None:
        if not len(flows):
            return
        inside = flows.src_inside
        if inside.any():
            self._active.update(np.unique(flows.src[inside]).tolist())
        internal = inside & flows.dst_inside
        if not internal.any():
            return
        idx = np.flatnonzero(internal)
        src, dst = flows.src[idx], flows.dst[idx]
        # distinct internal clients per destination (server / DC role evidence)
        _, si = np.unique(src, return_inverse=True)
        du, di = np.unique(dst, return_inverse=True)
        pairs = np.unique(di.astype(np.int64) * (int(si.max()) + 1) + si)
        counts = np.bincount(pairs // (int(si.max()) + 1), minlength=len(du))
        for host, c in zip(du.tolist(), counts.tolist(), strict=True):
            if c > self._in_clients.get(host, 0):
                self._in_clients[host] = int(c)
        port = flows.dst_port[idx]
        svc = admin_service(port)
        self._rpc_follow(flows, idx, svc)
        keep = svc >= 0
        if not keep.any():
            return
        self._accumulate(flows, idx[keep], svc[keep])

    def _rpc_follow(self, flows: FlowBatch, idx: np.ndarray, svc: np.ndarray) -> None:
        """Mark high-port TCP flows that follow an RPC 135 flow to the same host as ``rpc_dyn``."""
        rpc = svc == RPC
        if rpc.any():
            for s, d, t in zip(flows.src[idx[rpc]].tolist(), flows.dst[idx[rpc]].tolist(),
                               flows.ts_start[idx[rpc]].tolist(), strict=True):  # fmt: skip
                if t > self.rpc_recent.get((s, d), -math.inf):
                    self.rpc_recent[(s, d)] = t
            if len(self.rpc_recent) > 4096:
                newest = sorted(self.rpc_recent.items(), key=lambda kv: kv[1])[-2048:]
                self.rpc_recent = dict(newest)
        if not self.rpc_recent:
            return
        cand = (svc < 0) & (flows.dst_port[idx] >= 1024) & (flows.proto[idx] == 6)
        if not cand.any():
            return
        callers = {s for s, _ in self.rpc_recent}
        cand &= np.isin(flows.src[idx], np.array(sorted(callers), dtype=object))
        for j in np.flatnonzero(cand).tolist():
            i = int(idx[j])
            t0 = self.rpc_recent.get((flows.src[i], flows.dst[i]))
            if t0 is not None and 0.0 <= flows.ts_start[i] - t0 <= self.rpc_follow_seconds:
                svc[j] = RPC_DYN

    def _accumulate(self, flows: FlowBatch, idx: np.ndarray, svc: np.ndarray) -> None:
        src, dst = flows.src[idx].tolist(), flows.dst[idx].tolist()
        ts, bo, bi = (
            flows.ts_start[idx].tolist(),
            flows.bytes_out[idx].tolist(),
            flows.bytes_in[idx].tolist(),
        )
        state = flows.conn_state[idx].tolist()
        pin, port = flows.pkts_in[idx].tolist(), flows.dst_port[idx].tolist()
        origin, offset = flows.origin[idx].tolist(), flows.offset[idx].tolist()
        for k in range(len(idx)):
            dyn = int(port[k]) if svc[k] == RPC_DYN else -1
            key = (src[k], dst[k], int(svc[k]), dyn)
            e = self._edges.get(key)
            if e is None:
                e = self._edges[key] = Edge(src[k], dst[k], int(svc[k]), dyn_port=dyn)
            e.conns += 1
            e.bytes_out += int(bo[k])
            e.bytes_in += int(bi[k])
            e.first = min(e.first, ts[k])
            e.last = max(e.last, ts[k])
            if state[k] in _FAILED_STATES or (state[k] == "" and pin[k] == 0 and bi[k] == 0):
                e.failed += 1
            if len(e.ports) < 8:
                e.ports.add(int(port[k]))
            if len(e.positions) < 8 and origin[k]:
                e.positions.append((str(origin[k]), int(offset[k])))

    # -- window protocol --------------------------------------------------------------------
    def close(self, window: Window) -> LateralWindow:
        edges = sorted(self._edges.values(), key=lambda e: (e.src, e.dst, e.svc, e.dyn_port))
        out = LateralWindow(window, edges, sorted(self._active), dict(self._in_clients))
        self._edges, self._active, self._in_clients = {}, set(), {}
        return out

    def score(self, features: LateralWindow) -> list[Finding]:
        if not features.edges:
            return []
        return score_window(self, features)

    def learn(self, features: LateralWindow, findings: list[Finding]) -> None:
        w = features.window
        day = int(w.start // 86400.0)
        if day != self.day:
            self.day = day
            self._evict(w.start - self.idle_days * 86400.0, w.end - w.start)
        flagged = {f.src or f.entity for f in findings}
        for f in findings:
            if f.direction == "lateral" and f.kind == "lateral_movement":
                for d in f.dst:
                    path = f.facts.get("path") or (f.src or f.entity, d)
                    self.taints[d] = (tuple(path), f.end)
        if len(self.taints) > 4096:
            self.taints = dict(sorted(self.taints.items(), key=lambda kv: kv[1][1])[-2048:])
        if not features.active and not features.edges:
            return
        for h in features.active:
            j = self._row(h)
            if self.first_seen[j] <= 0.0:
                self.first_seen[j] = w.start
            self.last_seen[j] = w.end
        calm = [h for h in features.active if h not in flagged]
        self.hours.observe(calm, w.start)
        self._learn_edges(features, flagged)
        self._learn_baselines(features, flagged, calm)

    def _learn_edges(self, features: LateralWindow, flagged: set[str]) -> None:
        out_admin: dict[str, set[str]] = {}
        in_auth: dict[str, set[str]] = {}
        in_admin: dict[str, set[str]] = {}
        out_smb: dict[str, set[str]] = {}
        t = features.window.end
        for e in features.edges:
            if e.src in flagged:
                continue
            j = self._row(e.src)
            key = _h64(e.key)
            if self.edges.touch(j, key, t) and (e.conns > e.failed or e.svc == RPC_DYN):
                self.popularity[key] = self.popularity.get(key, 0) + 1
                if len(self.popularity) > self.network_edge_cap:
                    del self.popularity[next(iter(self.popularity))]
            self.svc_mask[j] |= 1 << e.svc
            if e.svc in (LDAP, KERBEROS):
                in_auth.setdefault(e.dst, set()).add(e.src)
            elif e.svc in (WINRM, RDP, SSH):
                in_admin.setdefault(e.dst, set()).add(e.src)
                out_admin.setdefault(e.src, set()).add(e.dst)
            elif e.svc == RPC_DYN:
                out_admin.setdefault(e.src, set()).add(e.dst)
            elif e.svc == SMB:
                out_smb.setdefault(e.src, set()).add(e.dst)
        hosts = (
            set(out_admin) | set(out_smb) | set(in_auth) | set(in_admin) | set(features.in_clients)
        )
        stats = {
            h: (sorted(in_auth.get(h, ())), features.in_clients.get(h, 0), sorted(in_admin.get(h, ())),
                sorted(out_admin.get(h, ())), sorted(out_smb.get(h, ())))
            for h in sorted(hosts)
        }  # fmt: skip
        self.host_roles.observe(stats, t)

    def _learn_baselines(self, features: LateralWindow, flagged: set[str], calm: list[str]) -> None:
        admin: dict[str, set[str]] = {h: set() for h in calm}
        ldap: dict[str, list[int]] = {}
        auth: dict[str, int] = {}
        for e in features.edges:
            if e.src in flagged:
                continue
            if self.counts_as_admin(e):
                admin.setdefault(e.src, set()).add(e.dst)
            if e.svc == LDAP:
                v = ldap.setdefault(e.src, [0, 0])
                v[0] += e.bytes_in
                v[1] += e.conns
            if e.svc in (SSH, RDP):
                auth[e.src] = max(auth.get(e.src, 0), e.conns)
        t = int(features.window.index)
        if admin:
            names = sorted(admin)
            counts = np.array([[len(admin[h])] for h in names], float)
            self.fanout.learn(self.fanout.ids(names), counts, t=t)
            rows = np.array([self._row(h) for h in names], dtype=np.int64)
            self.fan_max[rows] = np.maximum(self.fan_max[rows], counts[:, 0])
        if ldap:
            names = sorted(ldap)
            self.ldap.learn(self.ldap.ids(names), np.array([ldap[h] for h in names], float), t=t)
        if auth:
            names = sorted(auth)
            self.auth.learn(self.auth.ids(names), np.array([[auth[h]] for h in names], float), t=t)

    # -- helpers used by the rules ------------------------------------------------------------
    def counts_as_admin(self, e: Edge) -> bool:
        """Whether an edge administers its destination (not LDAP/Kerberos, not SMB/RPC to a server)."""
        if e.svc in (LDAP, KERBEROS):
            return False
        return not (e.svc in (SMB, RPC) and self.host_roles.serving(e.dst))

    def warm(self, host: str, t: float) -> bool:
        j = self.hosts.get(host, _LAT)
        return (
            j >= 0
            and self.first_seen[j] > 0.0
            and t - self.first_seen[j] >= self.warmup_days * 86400.0
        )

    def known_edge(self, e: Edge) -> bool:
        j = self.hosts.get(e.src, _LAT)
        return j >= 0 and self.edges.contains(j, _h64(e.key))

    def used_service(self, host: str, svc: int) -> bool:
        j = self.hosts.get(host, _LAT)
        return j >= 0 and bool(self.svc_mask[j] & (1 << svc))

    def sources_of(self, dst: str, svc: int) -> int:
        """How many distinct sources were seen using ``svc`` on ``dst`` (network-wide)."""
        return self.popularity.get(_h64(f"{dst}|{svc}"), 0)

    def sources_of_edge(self, e: Edge) -> int:
        """How many distinct sources were seen on this edge's destination/service/endpoint."""
        return self.popularity.get(_h64(e.key), 0)

    def most_fanout(self, host: str) -> float:
        """The most admin destinations the host reached in one learnt window."""
        j = self.hosts.get(host, _LAT)
        return float(self.fan_max[j]) if j >= 0 else 0.0

    def _row(self, host: str) -> int:
        j = self.hosts.acquire(host, _LAT)
        if j >= len(self.first_seen):
            grow = max(64, len(self.first_seen) // 4, self.hosts.capacity - len(self.first_seen))
            self.first_seen = np.concatenate([self.first_seen, np.zeros(grow)])
            self.last_seen = np.concatenate([self.last_seen, np.zeros(grow)])
            self.svc_mask = np.concatenate([self.svc_mask, np.zeros(grow, np.int16)])
            self.fan_max = np.concatenate([self.fan_max, np.zeros(grow, np.float32)])
            self.edges.resize(len(self.first_seen))
        return j

    def _evict(self, before: float, length: float) -> None:
        older = int(before // max(length, 1e-9))  # baselines are learnt with t = window index
        for b in (self.fanout, self.ldap, self.auth):
            b.evict(older)
        live = self.hosts.members(_LAT)
        stale = live[self.last_seen[live] < before]
        if len(stale):
            log.debug("lateral: evicting %d idle hosts", len(stale))
            for a in (self.first_seen, self.last_seen, self.svc_mask, self.fan_max):
                a[stale] = 0
            self.edges.clear(stale)
            self.hosts.release(stale, _LAT)
        self.host_roles.evict(before)
        self.hours.evict(before)
        self.taints = {h: v for h, v in self.taints.items() if v[1] >= before}

    # -- introspection --------------------------------------------------------------------------
    def entities(self) -> int:
        return len(self.hosts.members(_LAT))

    def nbytes(self) -> int:
        """Approximate state size in bytes."""
        arrays = sum(
            a.nbytes for a in (self.first_seen, self.last_seen, self.svc_mask, self.fan_max)
        )
        arrays += self.edges.nbytes()
        return int(
            arrays
            + sum(len(s) + 90 for s in self.hosts.names)
            + self.hosts.refs.nbytes
            + self.host_roles.nbytes()
            + self.hours.nbytes()
            + self.fanout.nbytes()
            + self.ldap.nbytes()
            + self.auth.nbytes()
            + 100 * (len(self.popularity) + len(self.taints) + len(self.rpc_recent))
        )
