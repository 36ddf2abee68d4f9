"""Bounded table of connection series: one fixed-size ring of (start time, bytes) per key.

Struct-of-arrays storage (numpy, grown by doubling up to ``max_pairs`` rows) so a batch
is appended with one sort and a few scatter operations. When the table is full, new
keys evict the least recently active rows first; a row with ``n`` connections counts as
``protect_s · min(1, n / protect_n)`` seconds more recent, so one-off pairs (the bulk of
the churn) go first and a scan cannot flush established series out. Row bytes: ``ring × 12`` (float64 time + float32 size) plus
~72 bytes of counters.

>>> t = PairTable(ring=4, max_pairs=2)
>>> rows = t.rows([("a", "x", 1), ("a", "x", 1), ("b", "y", 2)], now=10.0)
>>> rows.tolist(), t.last_fresh
([0, 0, 1], [0, 1])
>>> t.append(rows, np.array([1.0, 2.0, 3.0]), np.array([10.0, 20.0, 30.0]), np.zeros(3), np.zeros(3),
...          np.zeros(3, bool))
>>> t.series(0)
(array([1., 2.]), array([10., 20.]))
>>> t.rows([("c", "z", 3)], now=20.0).tolist()  # full: evicts the least active row
[1]
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

__all__ = ["PairTable"]

_COUNTERS = ("n", "failed", "fill", "head", "scored")
_FLOATS = ("out", "inb", "first", "last", "emitted", "scored_at")


def _nanmedian_rows(a: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Row-wise median of the ``count`` non-NaN values of each row (``np.nanmedian``, faster).

    >>> _nanmedian_rows(np.array([[3.0, np.nan, 1.0, 2.0], [4.0, 1.0, np.nan, np.nan]]),
    ...                 np.array([3, 2]))
    array([2. , 2.5])
    """
    s = np.sort(a, axis=1)  # NaN sort last
    i = np.arange(len(a))
    return (s[i, (count - 1) // 2] + s[i, count // 2]) / 2


class PairTable:
    """Key → row index with per-row connection rings (see module docstring)."""

    ts: np.ndarray
    sz: np.ndarray
    n: np.ndarray
    failed: np.ndarray
    fill: np.ndarray
    head: np.ndarray
    scored: np.ndarray
    out: np.ndarray
    inb: np.ndarray
    first: np.ndarray
    last: np.ndarray
    emitted: np.ndarray
    scored_at: np.ndarray

    def __init__(
        self,
        ring: int = 128,
        max_pairs: int = 20_000,
        protect_n: int = 12,
        protect_s: float = 3600.0,
    ) -> None:
        self.ring = ring
        self.max_pairs = max_pairs
        self.protect_n = protect_n
        self.protect_s = protect_s
        self.index: dict[Hashable, int] = {}
        self.keys: list[Hashable | None] = []
        self.free: list[int] = []
        self.evicted = 0
        self.dropped = 0
        self.last_fresh: list[int] = []  # rows allocated by the last rows() call
        self._alloc(0)

    def _alloc(self, cap: int) -> None:
        old = self.__dict__.get("ts")
        n_old = 0 if old is None else len(old)
        ts = np.zeros((cap, self.ring), dtype=np.float64)
        sz = np.zeros((cap, self.ring), dtype=np.float32)
        if old is not None:
            ts[:n_old] = self.ts
            sz[:n_old] = self.sz
        self.ts, self.sz = ts, sz
        for name in _COUNTERS:
            a = np.zeros(cap, dtype=np.int64)
            if old is not None:
                a[:n_old] = getattr(self, name)
            setattr(self, name, a)
        for name in _FLOATS:
            a = np.full(cap, -np.inf if name == "emitted" else 0.0, dtype=np.float64)
            if old is not None:
                a[:n_old] = getattr(self, name)
            setattr(self, name, a)
        self.keys.extend([None] * (cap - n_old))
        self.free.extend(range(cap - 1, n_old - 1, -1))

    def __len__(self) -> int:
        return len(self.index)

    def nbytes(self) -> int:
        """Bytes held by the numpy state (all allocated rows)."""
        return int(
            self.ts.nbytes
            + self.sz.nbytes
            + sum(getattr(self, n).nbytes for n in _COUNTERS + _FLOATS)
        )

    def row_bytes(self) -> int:
        """Bytes of numpy state per row."""
        return self.ring * 12 + 8 * (len(_COUNTERS) + len(_FLOATS))

    def _reset(self, rows: np.ndarray, now: float) -> None:
        for name in _COUNTERS:
            getattr(self, name)[rows] = 0
        for name in _FLOATS:
            getattr(self, name)[rows] = 0.0
        self.emitted[rows] = -np.inf
        self.first[rows] = now
        self.last[rows] = now

    def evict_rows(self, rows: Sequence[int]) -> None:
        """Forget rows (their keys disappear, their slots are reused)."""
        for r in rows:
            key = self.keys[r]
            if key is not None:
                del self.index[key]
                self.keys[r] = None
                self.free.append(int(r))

    def _live(self) -> np.ndarray:
        """Mask of rows holding a key (a row's key is ``None`` exactly when it is free)."""
        used = np.ones(len(self.keys), dtype=bool)
        if self.free:
            used[np.array(self.free, dtype=np.int64)] = False
        return used

    def evict_idle(self, before: float) -> int:
        """Evict rows whose last connection is older than ``before``; returns how many."""
        used = self._live()
        idle = np.flatnonzero(used & (self.last < before))
        self.evict_rows(idle.tolist())
        self.evicted += len(idle)
        return len(idle)

    def rows(self, keys: Sequence[Hashable], now: float) -> np.ndarray:
        """Row of each key, allocating rows for new keys; ``-1`` for keys that did not fit."""
        index = self.index
        out = np.fromiter((index.get(k, -1) for k in keys), dtype=np.int64, count=len(keys))
        missing = out < 0
        self.last_fresh = []
        if not missing.any():
            return out
        new = list(dict.fromkeys(k for k, m in zip(keys, missing.tolist(), strict=True) if m))
        need = len(new) - len(self.free)
        if need > 0 and len(self.keys) < self.max_pairs:
            cap = min(self.max_pairs, max(len(self.keys) * 2, len(self.keys) + need, 64))
            self._alloc(cap)
            need = len(new) - len(self.free)
        if need > 0:
            used = self._live()
            used[out[~missing]] = False  # rows of this batch are never victims
            cand = np.flatnonzero(used)
            bonus = self.protect_s * np.minimum(1.0, self.n[cand] / max(1, self.protect_n))
            prio = self.last[cand] + bonus
            victims = cand[np.argsort(prio, kind="stable")[:need]]
            self.evict_rows(victims.tolist())
            self.evicted += len(victims)
        fresh = []
        for k in new:
            if not self.free:
                self.dropped += 1
                continue
            r = self.free.pop()
            index[k] = r
            self.keys[r] = k
            fresh.append(r)
        if fresh:
            self._reset(np.array(fresh, dtype=np.int64), now)
        self.last_fresh = fresh
        # rows found above were never victims (busy), so only the missing keys need a look-up
        at = np.flatnonzero(missing)
        out[at] = np.fromiter(
            (index.get(keys[i], -1) for i in at.tolist()), dtype=np.int64, count=len(at)
        )
        return out

    def append(
        self,
        rows: np.ndarray,
        ts: np.ndarray,
        size: np.ndarray,
        out: np.ndarray,
        inb: np.ndarray,
        failed: np.ndarray,
    ) -> None:
        """Append connections to their rows' rings (rows ``-1`` are ignored); vectorised."""
        ok = rows >= 0
        if not ok.all():
            rows, ts, size, out, inb, failed = (a[ok] for a in (rows, ts, size, out, inb, failed))
        if len(rows) == 0:
            return
        order = np.lexsort((ts, rows))
        rows, ts, size = rows[order], ts[order], size[order]
        uniq, start, count = np.unique(rows, return_index=True, return_counts=True)
        grp = np.repeat(np.arange(len(uniq)), count)
        rank = np.arange(len(rows)) - start[grp]
        skip = np.maximum(0, count - self.ring)[grp]
        keep = rank >= skip
        pos = (self.head[rows] + rank - skip) % self.ring
        self.ts[rows[keep], pos[keep]] = ts[keep]
        self.sz[rows[keep], pos[keep]] = size[keep]
        kept = np.minimum(count, self.ring)
        self.head[uniq] = (self.head[uniq] + kept) % self.ring
        self.fill[uniq] = np.minimum(self.ring, self.fill[uniq] + kept)
        self.n[uniq] += count
        orig = order
        np.add.at(self.failed, rows, failed[orig].astype(np.int64))
        np.add.at(self.out, rows, out[orig].astype(np.float64))
        np.add.at(self.inb, rows, inb[orig].astype(np.float64))
        np.maximum.at(self.last, rows, ts)

    def dispersion(self, rows: np.ndarray, merge_gap: float) -> tuple[np.ndarray, np.ndarray]:
        """Vectorised pre-filter over many rows: (gaps counted, MAD/median of the gaps).

        Gaps shorter than ``merge_gap`` (bursts) are ignored, as in :func:`merge_bursts`.
        """
        if len(rows) == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        t = self.ts[rows].copy()
        t[np.arange(self.ring)[None, :] >= self.fill[rows][:, None]] = np.nan
        t.sort(axis=1)
        d = np.diff(t, axis=1)
        d[~(d >= merge_gap)] = np.nan
        count = np.sum(~np.isnan(d), axis=1)
        ok = count >= 2
        ratio = np.full(len(rows), np.inf)
        if ok.any():
            dd = d[ok]
            med = _nanmedian_rows(dd, count[ok])
            mad = _nanmedian_rows(np.abs(dd - med[:, None]), count[ok])
            ratio[ok] = mad / np.maximum(med, 1e-9)
        return count, ratio

    def series_flat(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`series` of many rows, concatenated: (start times, sizes, lengths)."""
        fill = self.fill[rows]
        t = self.ts[rows]
        valid = np.arange(self.ring)[None, :] < fill[:, None]
        order = np.argsort(np.where(valid, t, np.inf), axis=1, kind="stable")
        ts = np.take_along_axis(t, order, axis=1)[valid]
        sz = np.take_along_axis(self.sz[rows], order, axis=1)[valid].astype(np.float64)
        return ts, sz, fill

    def series(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """The row's ring as time-sorted ``(start times, sizes)``."""
        f = int(self.fill[row])
        if f < self.ring:
            t, s = self.ts[row, :f], self.sz[row, :f]
        else:
            t, s = self.ts[row], self.sz[row]
        order = np.argsort(t, kind="stable")
        return t[order], s[order].astype(np.float64)
