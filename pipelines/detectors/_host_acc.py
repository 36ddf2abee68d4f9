"""Columnar accumulators of :mod:`~pipelines.detectors.host_behaviour`: per-host sums of the
open window and of the open day, each with a bounded sample of record positions.

Both keep numpy arrays, never a Python object per host: :class:`WindowAccumulator` a
sorted host array with one row of sums per host, :class:`DayAccumulator` rows indexed by
the caller's entity rows (the host baseline's row numbers). Sums are added in arrival
order, so they equal adding one row after the other per host; the position sample of a
host is its first records (in arrival order, records without an origin skipped after the
pick, as the audit trail always did), at most ``limit`` per host.

>>> acc = WindowAccumulator(width=1, limit=2)
>>> acc.add(np.array(["a", "b"], dtype=object), np.array([0, 1, 0, 0]), np.array([[3.0], [1.0]]),
...         np.array(["f", "f", "", "f"], dtype=object), np.array([10, 11, 12, 13]))
>>> w = acc.close()
>>> w.hosts.tolist(), w.x.tolist(), w.positions(0), w.positions(1)
(['a', 'b'], [[3.0], [1.0]], (('f', 10),), (('f', 11),))
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["DayAccumulator", "WindowAccumulator", "WindowSums"]

Positions = tuple[tuple[str, int], ...]
_NO_OBJ = np.empty(0, dtype=object)
_NO_INT = np.empty(0, dtype=np.int64)


def _firsts(group: np.ndarray, n: int, need: np.ndarray) -> np.ndarray:
    """Indices of the first ``need[g]`` records of every group ``g`` (grouped, arrival order)."""
    order = np.argsort(group, kind="stable")
    sg = group[order]
    start = np.searchsorted(sg, np.arange(n))
    rank = np.arange(len(sg)) - start[sg]
    return order[rank < need[sg]]


@dataclass
class WindowSums:
    """One closed window: sorted hosts, their sums, and their position samples (by host)."""

    hosts: np.ndarray  # object, sorted
    x: np.ndarray  # (hosts, width) float64
    origin: np.ndarray  # positions, grouped by host in host order
    offset: np.ndarray
    start: np.ndarray  # host i's positions are [start[i], start[i + 1])

    def positions(self, i: int) -> Positions:
        a, b = int(self.start[i]), int(self.start[i + 1])
        return tuple(zip(self.origin[a:b].tolist(), self.offset[a:b].tolist(), strict=True))


class WindowAccumulator:
    """Per-host sums of the open window and the first ``limit`` record positions per host."""

    def __init__(self, width: int, limit: int = 8) -> None:
        self.width = width
        self.limit = limit
        self.hosts = _NO_OBJ
        self.x = np.zeros((0, width))
        self.npos = _NO_INT
        self.pos: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (host, origin, offset)

    def __len__(self) -> int:
        return len(self.hosts)

    def _have(self, hosts: np.ndarray) -> np.ndarray:
        if not len(self.hosts):
            return np.zeros(len(hosts), dtype=np.int64)
        at = np.searchsorted(self.hosts, hosts)
        ok = at < len(self.hosts)
        ok[ok] = self.hosts[at[ok]] == hosts[ok]
        return np.where(ok, self.npos[np.minimum(at, len(self.hosts) - 1)], 0)

    def add(
        self,
        hosts: np.ndarray,
        inv: np.ndarray,
        cols: np.ndarray,
        origin: np.ndarray | None = None,
        offset: np.ndarray | None = None,
    ) -> None:
        """Add ``cols`` (one row per host of ``hosts``: sorted, unique) and sample positions
        of the records (``inv``: record -> host index; ``origin``/``offset`` per record)."""
        kept = np.zeros(len(hosts), dtype=np.int64)
        if origin is not None and offset is not None and len(inv):
            need = np.maximum(self.limit - self._have(hosts), 0)
            rows = _firsts(inv, len(hosts), need)
            rows = rows[origin[rows].astype(bool)]
            if len(rows):
                self.pos.append((hosts[inv[rows]], origin[rows], offset[rows]))
                kept = np.bincount(inv[rows], minlength=len(hosts))
        if not len(self.hosts):
            self.hosts, self.x, self.npos = hosts, np.array(cols, dtype=np.float64), kept
            return
        names, ui = np.unique(np.concatenate([self.hosts, hosts]), return_inverse=True)
        x = np.zeros((len(names), self.width))
        np.add.at(x, ui, np.concatenate([self.x, cols]))
        npos = np.bincount(ui, np.concatenate([self.npos, kept]), len(names)).astype(np.int64)
        self.hosts, self.x, self.npos = names, x, npos

    def close(self) -> WindowSums:
        """The window's sums and samples; the accumulator starts empty again."""
        hosts, x = self.hosts, self.x
        if self.pos:
            names = np.concatenate([p[0] for p in self.pos])
            origin = np.concatenate([p[1] for p in self.pos])
            offset = np.concatenate([p[2] for p in self.pos])
            h = np.searchsorted(hosts, names)
            order = np.argsort(h, kind="stable")
            origin, offset = origin[order], offset[order]
            start = np.searchsorted(h[order], np.arange(len(hosts) + 1))
        else:
            origin, offset, start = _NO_OBJ, _NO_INT, np.zeros(len(hosts) + 1, dtype=np.int64)
        self.hosts, self.x, self.npos, self.pos = _NO_OBJ, np.zeros((0, self.width)), _NO_INT, []
        return WindowSums(hosts, x, origin, offset, start)


class DayAccumulator:
    """Per-row sums of the open day and the first ``limit`` positions per row, by entity row.

    >>> d = DayAccumulator(width=1, limit=3)
    >>> w = WindowSums(np.array(["a"], dtype=object), np.array([[2.0]]),
    ...                np.array(["f", "f"], dtype=object), np.array([1, 2]), np.array([0, 2]))
    >>> d.add(np.array([5]), w.x, w); d.add(np.array([5]), w.x, w)
    >>> rows, x, pos = d.flush()
    >>> rows.tolist(), x.tolist(), pos
    ([5], [[4.0]], [(('f', 1), ('f', 2), ('f', 1))])
    """

    def __init__(self, width: int, limit: int = 8) -> None:
        self.width = width
        self.limit = limit
        self.x = np.zeros((0, width))
        self.seen = np.zeros(0, dtype=bool)
        self.npos = np.zeros(0, dtype=np.int16)
        self.pos: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (row, origin, offset)

    def _grow(self, need: int) -> None:
        cap = len(self.seen)
        if need <= cap:
            return
        new = max(need, 2 * cap, 64) - cap
        self.x = np.concatenate([self.x, np.zeros((new, self.width))])
        self.seen = np.concatenate([self.seen, np.zeros(new, dtype=bool)])
        self.npos = np.concatenate([self.npos, np.zeros(new, dtype=np.int16)])

    def add(self, rows: np.ndarray, x: np.ndarray, w: WindowSums) -> None:
        """Add one window: ``rows`` (unique) are the entity rows of ``w.hosts``; ``x`` their values."""
        if not len(rows):
            return
        self._grow(int(rows.max()) + 1)
        self.x[rows] += x
        self.seen[rows] = True
        counts = np.diff(w.start)
        if not counts.any():
            return
        owner = np.repeat(np.arange(len(rows)), counts)
        rank = np.arange(len(owner)) - w.start[owner]
        take = rank < self.limit - self.npos[rows[owner]]
        if take.any():
            r = rows[owner[take]]
            self.pos.append((r, w.origin[take], w.offset[take]))
            self.npos += np.bincount(r, minlength=len(self.npos)).astype(np.int16)

    def flush(self) -> tuple[np.ndarray, np.ndarray, list[Positions]]:
        """(rows seen today, their sums, their position samples); the accumulator starts empty."""
        rows = np.flatnonzero(self.seen)
        x = self.x[rows]
        pos: list[Positions] = [()] * len(rows)
        if self.pos:
            r = np.concatenate([p[0] for p in self.pos])
            origin = np.concatenate([p[1] for p in self.pos]).tolist()
            offset = np.concatenate([p[2] for p in self.pos]).tolist()
            order = np.argsort(r, kind="stable")
            at = np.searchsorted(rows, r[order]).tolist()
            groups: dict[int, list[tuple[str, int]]] = {}
            for i, k in zip(at, order.tolist(), strict=True):
                groups.setdefault(i, []).append((origin[k], offset[k]))
            for i, g in groups.items():
                pos[i] = tuple(g)
        self.x[rows] = 0.0
        self.seen[rows] = False
        self.npos[rows] = 0
        self.pos = []
        return rows, x, pos

    def nbytes(self) -> int:
        return int(
            self.x.nbytes
            + self.seen.nbytes
            + self.npos.nbytes
            + 100 * sum(len(p[0]) for p in self.pos)
        )
