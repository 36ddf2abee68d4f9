"""Host roles learned from the baseline, and per-host hour-of-day activity profiles.

Roles are not configured by hand: :class:`HostRoles` watches, per host and per window,

* ``in_auth`` — distinct internal clients that reached it on Kerberos/LDAP (a DC serves many),
* ``in_clients`` — distinct internal clients on any port (servers serve many),
* ``in_admin`` — distinct internal clients on RDP/SSH/WinRM (jump hosts are administered into),
* ``out_admin`` — distinct internal destinations it administered (RDP/SSH/WinRM, RPC 135 followed
  by a dynamic port): admin workstations, jump hosts, patch servers, DCs do this; and
  ``out_smb`` — distinct SMB destinations (a host pushing SMB to many hosts administers them),

keeps the largest value seen per host (only from windows the caller lets it learn, so an
attacker's burst after warm-up does not promote its host), and derives a role:
``dc`` > ``jump_host`` > ``server`` > ``admin_workstation`` > ``workstation``.
``pinned`` (config) overrides the learned role of a host.

>>> r = HostRoles()
>>> r.observe({"10.2.1.10": (12, 15, 0, 0), "10.2.2.10": (0, 2, ["10.1.0.9"], ["a", "b", "c"]),
...            "10.1.0.5": (0, 0, 0, 0)})
>>> r.role("10.2.1.10"), r.role("10.2.2.10"), r.role("10.1.0.5"), r.role("10.9.9.9")
('dc', 'jump_host', 'workstation', 'workstation')
>>> r.administers("10.2.2.10"), r.administers("10.1.0.5")
(True, False)
>>> HostRoles(pinned={"10.1.0.5": "admin_workstation"}).administers("10.1.0.5")
True
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from pipelines.exceptions import ConfigError
from pipelines.sketches import HostIndex

__all__ = ["ADMIN_ROLES", "ROLES", "SERVING_ROLES", "HostRoles", "HourProfile", "hour_of_day"]

ROLES = ("workstation", "admin_workstation", "server", "dc", "jump_host")
#: roles whose hosts normally administer others
ADMIN_ROLES = frozenset({"admin_workstation", "dc", "jump_host"})
#: roles whose hosts normally serve SMB/LDAP/Kerberos to many clients
SERVING_ROLES = frozenset({"server", "dc"})


_COUNT_MAX = np.iinfo(np.uint16).max


def hour_of_day(ts: float, utc_offset_hours: float = 0.0) -> int:
    """Local hour (0-23) of an event time.

    >>> hour_of_day(3600.0 * 25), hour_of_day(0.0, -5.0)
    (1, 19)
    """
    return int(((ts + utc_offset_hours * 3600.0) % 86400.0) // 3600.0)


class _Rows:
    """Host -> row index with growable float32 arrays and idle eviction."""

    def __init__(self, width: int, dtype: Any = np.float32) -> None:
        self.width = width
        self.index: dict[str, int] = {}
        self.names: list[str] = []
        self.data = np.zeros((0, width), dtype=dtype)
        self.last = np.zeros(0, dtype=np.float64)

    def row(self, host: str, create: bool = True) -> int:
        j = self.index.get(host, -1)
        if j >= 0 or not create:
            return j
        j = len(self.names)
        self.index[host] = j
        self.names.append(host)
        if j >= len(self.data):
            new = max(64, len(self.data) + len(self.data) // 4)
            self.data = np.concatenate(
                [self.data, np.zeros((new - len(self.data), self.width), self.data.dtype)]
            )
            self.last = np.concatenate([self.last, np.zeros(new - len(self.last))])
        return j

    def evict(self, before: float) -> int:
        """Forget hosts last seen before ``before``; returns how many were dropped."""
        n = len(self.names)
        keep = np.flatnonzero(self.last[:n] >= before)
        if len(keep) == n:
            return 0
        self.names = [self.names[i] for i in keep.tolist()]
        self.index = {h: i for i, h in enumerate(self.names)}
        self.data = self.data[keep].copy()
        self.last = self.last[keep].copy()
        return n - len(keep)

    def nbytes(self) -> int:
        return int(self.data.nbytes + self.last.nbytes + sum(len(s) + 90 for s in self.names))


class _SharedRows(_Rows):
    """:class:`_Rows` whose hosts live in a shared :class:`~pipelines.sketches.HostIndex`
    (membership ``bit``); eviction zeroes and releases rows instead of compacting."""

    def __init__(self, width: int, dtype: Any, registry: HostIndex, bit: int) -> None:
        super().__init__(width, dtype)
        self.registry = registry
        self.bit = bit
        self.dropped = np.zeros(0, dtype=np.int64)
        del self.index

    @property  # type: ignore[override]
    def names(self) -> list[str]:
        reg = self.registry
        return [reg.names[j] for j in reg.members(self.bit).tolist()]

    @names.setter
    def names(self, _value: list[str]) -> None:  # the registry holds the names
        pass

    def row(self, host: str, create: bool = True) -> int:
        if not create:
            return self.registry.get(host, self.bit)
        j = self.registry.acquire(host, self.bit)
        if j >= len(self.data):
            new = max(self.registry.capacity, len(self.data) + len(self.data) // 4, 64)
            self.data = np.concatenate(
                [self.data, np.zeros((new - len(self.data), self.width), self.data.dtype)]
            )
            self.last = np.concatenate([self.last, np.zeros(new - len(self.last))])
        return j

    def evict(self, before: float) -> int:
        live = self.registry.members(self.bit)
        live = live[live < len(self.last)]
        stale = live[self.last[live] < before]
        self.data[stale] = 0
        self.last[stale] = 0.0
        self.registry.release(stale, self.bit)
        self.dropped = stale
        return len(stale)

    def nbytes(self) -> int:
        return int(self.data.nbytes + self.last.nbytes)


def _rows(width: int, dtype: Any, registry: HostIndex | None, bit: int) -> _Rows:
    return _Rows(width, dtype) if registry is None else _SharedRows(width, dtype, registry, bit)


def _bit(name: str) -> int:
    return 1 << (zlib.crc32(name.encode()) & 63)


def _distinct(bits: int) -> float:
    """Linear-counting estimate of how many distinct names set ``bits`` (64-bit bitmap)."""
    ones = int(bits).bit_count()
    return 64.0 * math.log(64.0 / (64.0 - ones)) if ones < 64 else 300.0


class HostRoles:
    """Learned host roles (see module docstring).

    ``in_auth``, ``in_admin`` and ``out_admin`` are distinct counts over the whole learnt
    baseline (a 64-bit linear-counting bitmap each); ``in_clients`` is the largest number
    of distinct clients seen in one window. Per host: 4 uint64 + 1 float32 + last-seen.
    """

    def __init__(
        self,
        dc_min_clients: int = 3,
        server_min_clients: int = 3,
        admin_min_dsts: int = 2,
        admin_smb_dsts: int = 8,
        pinned: Mapping[str, str] | None = None,
        registry: HostIndex | None = None,
        bit: int = 1,
    ) -> None:
        self.dc_min_clients = dc_min_clients
        self.server_min_clients = server_min_clients
        self.admin_min_dsts = admin_min_dsts
        self.admin_smb_dsts = admin_smb_dsts
        self.pinned = dict(pinned or {})
        bad = {r for r in self.pinned.values() if r not in ROLES}
        if bad:
            raise ConfigError(f"roles: unknown role(s) {sorted(bad)}; known: {', '.join(ROLES)}")
        self.rows = _rows(1, np.float32, registry, bit)
        self.bits = np.zeros((0, 4), dtype=np.uint64)

    def observe(self, stats: Mapping[str, tuple[Any, ...]], t: float = 0.0) -> None:
        """Learn one window: host -> (auth clients, number of clients, admin clients, admin targets[,
        SMB targets]).

        All but the second item are iterables of host names (or plain counts, treated as
        that many anonymous names — handy in tests); the second is a count.
        """
        rows = self.rows
        for host, (auth, clients, adm_in, adm_out, *rest) in stats.items():
            j = rows.row(host)
            if j >= len(self.bits):
                self.bits = np.concatenate(
                    [self.bits, np.zeros((len(rows.data) - len(self.bits), 4), np.uint64)]
                )
            rows.data[j, 0] = max(float(rows.data[j, 0]), float(clients))
            rows.last[j] = t
            for k, names in enumerate((auth, adm_in, adm_out, rest[0] if rest else ())):
                items = [f"#{i}" for i in range(names)] if isinstance(names, int) else names
                acc = int(self.bits[j, k])
                for name in items:
                    acc |= _bit(name)
                self.bits[j, k] = np.uint64(acc)

    def _stats(self, host: str) -> tuple[float, float, float, float, float]:
        j = self.rows.row(host, create=False)
        if j < 0:
            return (0.0, 0.0, 0.0, 0.0, 0.0)
        b = self.bits[j]
        d0, d1, d2, d3 = (_distinct(int(x)) for x in b.tolist())
        return (d0, float(self.rows.data[j, 0]), d1, d2, d3)

    def role(self, host: str) -> str:
        """The pinned role, else the learned one (``workstation`` for unknown hosts)."""
        pinned = self.pinned.get(host)
        if pinned:
            return pinned
        auth, clients, adm_in, adm_out, _smb = self._stats(host)
        if auth >= self.dc_min_clients - 0.5:
            return "dc"
        if adm_in >= 0.5 and adm_out >= self.admin_min_dsts - 0.5:
            return "jump_host"
        if clients >= self.server_min_clients:
            return "server"
        if adm_out >= self.admin_min_dsts - 0.5:
            return "admin_workstation"
        return "workstation"

    def administers(self, host: str) -> bool:
        """Whether the host normally administers others (by role or by what it did in its baseline)."""
        if self.role(host) in ADMIN_ROLES:
            return True
        if host in self.pinned:
            return False
        st = self._stats(host)
        return st[3] >= self.admin_min_dsts - 0.5 or st[4] >= self.admin_smb_dsts - 0.5

    def serving(self, host: str) -> bool:
        """Whether the host serves many clients (server or DC)."""
        return self.role(host) in SERVING_ROLES

    def evict(self, before: float) -> int:
        if isinstance(self.rows, _SharedRows):
            dropped = self.rows.evict(before)
            self.bits[self.rows.dropped[self.rows.dropped < len(self.bits)]] = 0
            return dropped
        n = len(self.rows.names)
        keep = np.flatnonzero(self.rows.last[:n] >= before)
        dropped = self.rows.evict(before)
        if dropped:
            self.bits = self.bits[keep].copy()
        return dropped

    def __len__(self) -> int:
        return len(self.rows.names)

    def nbytes(self) -> int:
        return self.rows.nbytes() + int(self.bits.nbytes)


class HourProfile:
    """Per-host count of active windows in each local hour of day (24 uint16 per host,
    saturating at 65 535 windows in one hour of day — 15 years of 5-minute windows).

    >>> p = HourProfile()
    >>> for day in range(3):
    ...     for h in range(9, 17):
    ...         p.observe(["ws"], day * 86400.0 + h * 3600.0)
    >>> p.off_hours("ws", 3 * 86400.0 + 3 * 3600.0), p.off_hours("ws", 3 * 86400.0 + 10 * 3600.0)
    (True, False)
    >>> p.off_hours("unknown", 0.0)
    False
    """

    def __init__(
        self,
        utc_offset_hours: float = 0.0,
        share: float = 0.01,
        min_windows: int = 24,
        registry: HostIndex | None = None,
        bit: int = 1,
    ) -> None:
        self.utc_offset_hours = utc_offset_hours
        self.share = share
        self.min_windows = min_windows
        self.rows = _rows(24, np.uint16, registry, bit)

    def observe(self, hosts: list[str] | tuple[str, ...], ts: float) -> None:
        h = hour_of_day(ts, self.utc_offset_hours)
        rows = self.rows
        for host in hosts:
            j = rows.row(host)
            data = rows.data  # (row() may have grown it)
            if data[j, h] < _COUNT_MAX:
                data[j, h] += 1
            rows.last[j] = ts

    def share_at(self, host: str, ts: float) -> float:
        """Share of the host's active windows that fell in the hour of ``ts`` (1.0 if too few)."""
        j = self.rows.row(host, create=False)
        if j < 0:
            return 1.0
        row = self.rows.data[j]
        total = float(row.sum())
        if total < self.min_windows:
            return 1.0
        return float(row[hour_of_day(ts, self.utc_offset_hours)]) / total

    def off_hours(self, host: str, ts: float) -> bool:
        """True when the host is rarely active at this hour (share below ``share``)."""
        return self.share_at(host, ts) < self.share

    def evict(self, before: float) -> int:
        return self.rows.evict(before)

    def nbytes(self) -> int:
        return self.rows.nbytes()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        data = self.rows.data
        if data.dtype != np.uint16:  # snapshots from before the uint16 counts
            self.rows.data = np.minimum(data, _COUNT_MAX).astype(np.uint16)
