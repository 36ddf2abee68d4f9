"""Columnar accumulators of :mod:`~pipelines.detectors.host_behaviour`: per-host sums of the
open window and of the open day, each with a bounded sample of record positions.

Both keep numpy arrays, never a Python object per host: :class:`WindowAccumulator` a
sorted host array with one row of sums per host, :class:`DayAccumulator` rows indexed by
the caller's entity rows (the host baseline's row numbers). Sums are added in arrival
order, so they equal adding one row after the other per host; the position sample of a
host is its first records (in arrival order, records without an origin skipped after the
pick, as the audit trail always did), at most ``limit`` per host.

>>> acc = WindowAccumulator(width=1, limit=2)
>>> acc.add(np.array(["a", "b"], dtype=object), np.array([[3.0], [1.0]]),
...         [(np.array([0, 1, 0, 0]), np.array(["f", "f", "", "f"], dtype=object), np.array([10, 11, 12, 13]))])
>>> w = acc.close()
>>> w.hosts.tolist(), w.x.tolist(), w.positions(0), w.positions(1)
(['a', 'b'], [[3.0], [1.0]], (('f', 10),), (('f', 11),))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat

import numpy as np

__all__ = ["DayAccumulator", "WindowAccumulator", "WindowSums", "codes", "distinct_per", "groups"]

Positions = tuple[tuple[str, int], ...]
_NO_OBJ = np.empty(0, dtype=object)
_NO_INT = np.empty(0, dtype=np.int64)


def codes(values: np.ndarray) -> np.ndarray:
    """A code per value, equal for equal values (the index of the value's first occurrence).

    >>> codes(np.array(["b", "a", "b"], dtype=object)).tolist()
    [0, 1, 0]
    """
    first: dict[object, int] = {}
    n = len(values)
    return np.fromiter(map(first.setdefault, values.tolist(), range(n)), np.int64, n)


def groups(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct values in order of first appearance, index of each value in them): one dict
    pass over hashable objects (host names), no sort.

    >>> u, inv = groups(np.array(["b", "a", "b", "c"], dtype=object))
    >>> u.tolist(), inv.tolist()
    (['b', 'a', 'c'], [0, 1, 0, 2])
    """
    pos = codes(values)
    first = np.flatnonzero(pos == np.arange(len(pos)))
    lut = np.empty(len(pos), dtype=np.int64)
    lut[first] = np.arange(len(first))
    return values[first], lut[pos]


def distinct_per(group: np.ndarray, key: np.ndarray, n: int) -> np.ndarray:
    """How many distinct ``key`` values each group ``0..n-1`` has.

    >>> distinct_per(np.array([0, 0, 1, 0]), np.array([5, 5, 5, 6]), 3).tolist()
    [2, 1, 0]
    """
    if not len(group):
        return np.zeros(n, dtype=np.int64)
    k = np.sort(group.astype(np.int64) * (int(key.max()) + 1) + key)
    keep = np.ones(len(k), dtype=bool)
    keep[1:] = k[1:] != k[:-1]
    return np.bincount(k[keep] // (int(key.max()) + 1), minlength=n)


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
    """Per-host sums of the open window and the first ``limit`` record positions per host.

    Hosts get rows in order of arrival; :meth:`close` sorts them by name once per window.
    """

    def __init__(self, width: int, limit: int = 8) -> None:
        self.width = width
        self.limit = limit
        self._reset()

    def _reset(self) -> None:
        self.index: dict[str, int] = {}
        self.names: list[str] = []
        self.x = np.zeros((0, self.width))
        self.npos = _NO_INT
        self.pos: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (row, origin, offset)

    def __len__(self) -> int:
        return len(self.names)

    def _rows(self, hosts: np.ndarray) -> np.ndarray:
        names = hosts.tolist()
        rows = np.fromiter(map(self.index.get, names, repeat(-1)), np.int64, len(names))
        new = np.flatnonzero(rows < 0)
        if len(new):
            ids = np.arange(len(self.names), len(self.names) + len(new))
            rows[new] = ids
            fresh = [names[i] for i in new.tolist()]
            self.index.update(zip(fresh, ids.tolist(), strict=True))
            self.names.extend(fresh)
            if len(self.names) > len(self.x):
                grow = max(len(self.names), 2 * len(self.x), 64) - len(self.x)
                self.x = np.concatenate([self.x, np.zeros((grow, self.width))])
                self.npos = np.concatenate([self.npos, np.zeros(grow, dtype=np.int64)])
        return rows

    def add(
        self,
        hosts: np.ndarray,
        cols: np.ndarray,
        parts: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]] = (),
    ) -> None:
        """Add ``cols`` (one row per host of ``hosts``: distinct) and sample positions from
        ``parts``, one after the other: (record -> host index, origin, offset) per record."""
        rows = self._rows(hosts)
        self.x[rows] += cols
        for inv, origin, offset in parts:
            if not len(inv):
                continue
            need = np.maximum(self.limit - self.npos[rows], 0)
            pick = _firsts(inv, len(hosts), need)
            pick = pick[origin[pick].astype(bool)]
            if len(pick):
                h = rows[inv[pick]]
                self.pos.append((h, origin[pick], offset[pick]))
                self.npos += np.bincount(h, minlength=len(self.npos))

    def close(self) -> WindowSums:
        """The window's sums (hosts sorted by name) and samples; the accumulator starts empty."""
        n = len(self.names)
        names = np.array(self.names, dtype=object)
        # sorted() of str keys is ~2x faster than numpy's argsort of an object array
        order = np.array(sorted(range(n), key=self.names.__getitem__), dtype=np.int64)
        hosts, x = names[order], self.x[:n][order]
        if self.pos:
            rank = np.empty(n, dtype=np.int64)
            rank[order] = np.arange(n)
            h = rank[np.concatenate([p[0] for p in self.pos])]
            by = np.argsort(h, kind="stable")
            origin = np.concatenate([p[1] for p in self.pos])[by]
            offset = np.concatenate([p[2] for p in self.pos])[by]
            start = np.searchsorted(h[by], np.arange(n + 1))
        else:
            origin, offset, start = _NO_OBJ, _NO_INT, np.zeros(n + 1, dtype=np.int64)
        self._reset()
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
            self.pos.append((r.astype(np.int32), w.origin[take], w.offset[take]))
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
