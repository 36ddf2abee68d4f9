"""Bounded table of connection series: one ring of (start time, bytes) per key.

Struct-of-arrays storage (numpy, grown by doubling up to ``max_pairs`` rows) so a batch
is appended with one sort and a few scatter operations. When the table is full, new
keys evict the least recently active rows first; a row with ``n`` connections counts as
``protect_s · min(1, n / protect_n)`` seconds more recent, so one-off pairs (the bulk of
the churn) go first and a scan cannot flush established series out.

Ring storage is *tiered*: a series lives in a slot of the smallest tier (capacities
``tiers``, the last is ``ring``) that holds its connections and moves up as it grows
(lower tiers never wrap, so the ring content and order are those of one ``ring``-sized
ring). Most pairs are one-offs, so a row costs ~73 bytes of counters plus 12 bytes per
slot of its tier (4 for a one-off) instead of ``ring × 12``. Tier arrays grow
geometrically; freed slots are reused.

>>> t = PairTable(ring=4, max_pairs=2)
>>> rows = t.rows([("a", "x", 1), ("a", "x", 1), ("b", "y", 2)], now=10.0)
>>> rows.tolist(), t.last_fresh
([0, 0, 1], [0, 1])
>>> t.append(rows, np.array([1.0, 2.0, 3.0]), np.array([10.0, 20.0, 30.0]), np.zeros(3), np.zeros(3),
...          np.zeros(3, bool))
>>> t.series(0), int(t.tier[0]), t.caps
((array([1., 2.]), array([10., 20.])), 0, (4,))
>>> t.rows([("c", "z", 3)], now=20.0).tolist()  # full: evicts the least active row
[1]
"""

from __future__ import annotations

import sys
from collections.abc import Hashable, Sequence

import numpy as np

__all__ = ["PairTable"]

_intern = sys.intern

_COUNTERS = ("n", "failed", "fill", "head", "scored", "slot")
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
    slot: np.ndarray
    tier: np.ndarray

    def __init__(
        self,
        ring: int = 128,
        max_pairs: int = 20_000,
        protect_n: int = 12,
        protect_s: float = 3600.0,
        tiers: tuple[int, ...] = (4, 16, 48),
    ) -> None:
        self.ring = ring
        self.caps = tuple(sorted({min(int(c), ring) for c in tiers if c > 0} | {ring}))
        self.tts = [np.zeros((0, c)) for c in self.caps]  # tier -> (slots, cap) start times
        self.tsz = [np.zeros((0, c), dtype=np.float32) for c in self.caps]  # and sizes
        self.tfree: list[list[int]] = [[] for _ in self.caps]
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
        old = self.__dict__.get("n")
        n_old = 0 if old is None else len(old)
        for name in _COUNTERS:
            a = np.zeros(cap, dtype=np.int32)  # counts per series fit easily; half the bytes
            if old is not None:
                a[:n_old] = getattr(self, name)
            setattr(self, name, a)
        for name in _FLOATS:
            a = np.full(cap, -np.inf if name == "emitted" else 0.0, dtype=np.float64)
            if old is not None:
                a[:n_old] = getattr(self, name)
            setattr(self, name, a)
        tier = np.full(cap, -1, dtype=np.int8)  # -1: no ring slot yet
        if old is not None:
            tier[:n_old] = self.tier
        self.tier = tier
        self.keys.extend([None] * (cap - n_old))
        self.free.extend(range(cap - 1, n_old - 1, -1))

    def _slots(self, i: int, k: int) -> np.ndarray:
        """``k`` free slots of tier ``i`` (the tier arrays grow geometrically)."""
        free = self.tfree[i]
        if len(free) < k:
            have = len(self.tts[i])
            grow = max(have // 2, k - len(free), 16)
            c = self.caps[i]
            self.tts[i] = np.concatenate([self.tts[i], np.zeros((grow, c))])
            self.tsz[i] = np.concatenate([self.tsz[i], np.zeros((grow, c), dtype=np.float32)])
            free.extend(range(have + grow - 1, have - 1, -1))
        got = free[len(free) - k :]
        del free[len(free) - k :]
        return np.array(got[::-1], dtype=np.int64)

    def _release(self, rows: np.ndarray) -> None:
        """Give the ring slots of ``rows`` back to their tiers."""
        tiers = self.tier[rows]
        for i in np.unique(tiers[tiers >= 0]).tolist():
            self.tfree[i].extend(self.slot[rows[tiers == i]].tolist())
        self.tier[rows] = -1

    def _grow_rings(self, rows: np.ndarray, need: np.ndarray) -> None:
        """Move ``rows`` (unique) to the smallest tier holding ``need`` connections."""
        caps = np.array(self.caps)
        want = np.searchsorted(caps, need).astype(np.int8)
        cur = self.tier[rows]
        move = want > cur
        if not move.any():
            return
        rows, want, cur = rows[move], want[move], cur[move]
        old_slot = self.slot[rows].copy()
        for i in np.unique(want).tolist():
            m = want == i
            r = rows[m]
            slots = self._slots(i, len(r))
            for j in np.unique(cur[m]).tolist():
                if j < 0:
                    continue
                mm = cur[m] == j
                c = self.caps[j]
                self.tts[i][slots[mm], :c] = self.tts[j][old_slot[m][mm]]
                self.tsz[i][slots[mm], :c] = self.tsz[j][old_slot[m][mm]]
            self._release(r)
            self.tier[r] = i
            self.slot[r] = slots

    def _rings(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ring contents of ``rows`` as ``(rows, widest tier)`` arrays (unused slots zero)."""
        tiers = self.tier[rows]
        width = self.caps[int(tiers.max(initial=0))] if len(rows) else 1
        ts = np.zeros((len(rows), width))
        sz = np.zeros((len(rows), width), dtype=np.float32)
        for i in np.unique(tiers[tiers >= 0]).tolist():
            m = tiers == i
            c = self.caps[i]
            ts[m, :c] = self.tts[i][self.slot[rows[m]]]
            sz[m, :c] = self.tsz[i][self.slot[rows[m]]]
        return ts, sz

    def __getstate__(self) -> dict[str, object]:
        state = self.__dict__.copy()
        state["last_fresh"] = []  # transient: read right after rows()
        return state

    def __len__(self) -> int:
        return len(self.index)

    def nbytes(self) -> int:
        """Bytes held by the numpy state (all allocated rows and tier slots)."""
        return int(
            sum(a.nbytes for a in self.tts)
            + sum(a.nbytes for a in self.tsz)
            + sum(getattr(self, n).nbytes for n in _COUNTERS + _FLOATS)
            + self.tier.nbytes
        )

    def row_bytes(self) -> int:
        """Bytes of numpy state per row with a full ring."""
        return self.ring * 12 + 4 * len(_COUNTERS) + 8 * len(_FLOATS) + 1

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
        if len(rows):
            self._release(np.asarray(rows, dtype=np.int64))
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
        # stored keys share one string object per address (smaller in memory and in pickles)
        new = [tuple(_intern(x) if type(x) is str else x for x in k) if type(k) is tuple else k
               for k in new]  # fmt: skip
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
            if need < len(cand):  # the ``need`` smallest (prio, row): a stable sort of those only
                kth = np.partition(prio, need - 1)[need - 1]
                low = prio <= kth
                cand, prio = cand[low], prio[low]
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
        self._grow_rings(uniq, np.minimum(self.ring, self.fill[uniq] + count))
        rk, pk = rows[keep], pos[keep]
        tk = self.tier[rk]
        for i in np.unique(tk).tolist():
            m = tk == i
            sl = self.slot[rk[m]]
            self.tts[i][sl, pk[m]] = ts[keep][m]
            self.tsz[i][sl, pk[m]] = size[keep][m]
        kept = np.minimum(count, self.ring)
        self.head[uniq] = (self.head[uniq] + kept) % self.ring
        self.fill[uniq] = np.minimum(self.ring, self.fill[uniq] + kept)
        self.n[uniq] += count
        orig = order
        np.add.at(self.failed, rows, failed[orig].astype(self.failed.dtype))
        np.add.at(self.out, rows, out[orig].astype(np.float64))
        np.add.at(self.inb, rows, inb[orig].astype(np.float64))
        np.maximum.at(self.last, rows, ts)

    def dispersion(self, rows: np.ndarray, merge_gap: float) -> tuple[np.ndarray, np.ndarray]:
        """Vectorised pre-filter over many rows: (gaps counted, MAD/median of the gaps).

        Gaps shorter than ``merge_gap`` (bursts) are ignored, as in :func:`merge_bursts`.
        """
        if len(rows) == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        t, _ = self._rings(rows)
        t[np.arange(t.shape[1])[None, :] >= self.fill[rows][:, None]] = np.nan
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
        t, z = self._rings(rows)
        valid = np.arange(t.shape[1])[None, :] < fill[:, None]
        order = np.argsort(np.where(valid, t, np.inf), axis=1, kind="stable")
        ts = np.take_along_axis(t, order, axis=1)[valid]
        sz = np.take_along_axis(z, order, axis=1)[valid].astype(np.float64)
        return ts, sz, fill

    def series(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """The row's ring as time-sorted ``(start times, sizes)``."""
        ts, sz, _ = self.series_flat(np.array([row], dtype=np.int64))
        return ts, sz
