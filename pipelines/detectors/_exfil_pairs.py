"""Bounded tables behind the exfil detector: external destinations and (host, destination) pairs.

* :class:`DestinationTable` — network-wide, LRU-capped (default 200 000 destinations):
  when a destination was first seen and how many distinct internal hosts contact it
  (exact up to 8, a :class:`~pipelines.sketches.CappedDistinct`).
* :class:`PairTable` — per internal host at most ``top_k`` destinations (default 16);
  when a host needs a new slot, the pair with the least "upload × recency" that is not
  accumulating evidence is evicted. Per pair: cumulative bytes up/down, connections,
  first/last time, active hours, hourly upload moments (regularity), a log2 histogram
  of bytes per flow (chunk sizes), the CUSUM and a bounded sample of record positions.

Memory: a pair is found through its host's ``top_k`` slot row (int32) and the
destination's :class:`DestinationTable` row (whose key is its text), so there is no
per-pair Python object or dict entry; columns use the narrowest exact dtype, rarely
needed ones live in extension columns made on demand (~130 bytes per pair in all);
chunk-size histograms count in uint8 and move to a uint32 side table the first time a
bin would pass 255. A pair whose destination left the (LRU) destination table keeps its
text in a small ``orphan_dst`` dict and is re-linked when the destination comes back.

>>> d = DestinationTable(capacity=10)
>>> rows, new, gone, gone_keys = d.observe(["203.0.113.9"], np.array([100.0]), tick=1)
>>> d.add_hosts(rows, np.array([7], dtype=np.uint32))
>>> first, nh = d.stats(["203.0.113.9", "198.51.100.1"])
>>> first.tolist()[0], nh.tolist()
(100.0, [1, 0])
>>> p = PairTable(top_k=2, dests=DestinationTable())
>>> r = p.dests.observe(["a", "b", "c"], np.zeros(3), tick=1)[0]
>>> p.rows(np.array([0, 0]), r[:2], upload=np.array([5.0, 9.0]))[0].tolist()
[1, 0]
>>> p.cols["out"][[0, 1]] = [9.0, 5.0]
>>> p.rows(np.array([0, 0]), r[1:])[0].tolist()  # "a" (less upload) makes room
[0, 1]
>>> sorted(k[1] for k in p.index)
['b', 'c']
>>> p.chunk_quantiles(np.array([0]), (0.5,)).shape
(1, 1)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pipelines.sketches import CappedDistinct, LruIndex

__all__ = ["DestinationTable", "PairTable", "size_bins"]

#: lower edge of histogram bin k is 2 ** (k + _BIN0) bytes (bin 0 collects everything smaller)
_BIN0 = 8


def size_bins(nbytes: np.ndarray, bins: int) -> np.ndarray:
    """log2 size bin of each flow: bin 0 < 512 B, bin k ≥ 2**(k+8) B, last bin open-ended.

    >>> size_bins(np.array([10, 600, 30_000, 10**9]), 12).tolist()
    [0, 1, 6, 11]
    """
    b = np.floor(np.log2(np.maximum(nbytes, 1).astype(np.float64))).astype(np.int64) - _BIN0
    return np.clip(b, 0, bins - 1)


class DestinationTable:
    """External destinations seen by the network (capped LRU), see module docstring."""

    def __init__(self, capacity: int = 200_000, host_cap: int = 8) -> None:
        self.lru = LruIndex(capacity)
        self.first_seen = np.zeros(0, dtype=np.float64)
        self.hosts = CappedDistinct(host_cap)

    def __len__(self) -> int:
        return len(self.lru)

    def observe(
        self, dsts: Sequence[str], first_ts: np.ndarray, tick: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
        """Touch ``dsts`` (unique); new ones get ``first_ts`` as first-seen time.

        Returns their rows, which of them are new, and the rows recycled for them with
        the destinations they held (forgotten)."""
        gone: list[Any] = []
        rows, new, evicted = self.lru.lookup(dsts, tick, dropped=gone)
        n = len(self.lru.keys)
        if n > len(self.first_seen):
            grow = max(n, 2 * len(self.first_seen), 64) - len(self.first_seen)
            self.first_seen = np.concatenate([self.first_seen, np.zeros(grow)])
        self.hosts.resize(len(self.first_seen))
        if len(evicted):
            self.hosts.clear(evicted)
        self.first_seen[rows[new]] = first_ts[new]
        old = ~new
        self.first_seen[rows[old]] = np.minimum(self.first_seen[rows[old]], first_ts[old])
        return rows, new, evicted, gone

    def key(self, row: int) -> str:
        return str(self.lru.keys[row])

    def stats_rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`stats` by row (-1: unknown destination). Pure."""
        ok = rows >= 0
        first = np.full(len(rows), np.nan)
        nh = np.zeros(len(rows), dtype=np.int64)
        first[ok] = self.first_seen[rows[ok]]
        nh[ok] = self.hosts.count(rows[ok])
        return first, nh

    def add_hosts(self, rows: np.ndarray, host_hashes: np.ndarray) -> None:
        self.hosts.add(rows, host_hashes)

    def stats(self, dsts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(first seen, distinct internal hosts) per destination; (nan, 0) when unknown. Pure."""
        rows = self.lru.get(dsts)
        ok = rows >= 0
        first = np.full(len(dsts), np.nan)
        nh = np.zeros(len(dsts), dtype=np.int64)
        first[ok] = self.first_seen[rows[ok]]
        nh[ok] = self.hosts.count(rows[ok])
        return first, nh

    def nbytes(self) -> int:
        return int(self.first_seen.nbytes + self.hosts.slots.nbytes + 100 * len(self.lru))


# name -> (dtype, fill value of a fresh row)
_PAIR_FIELDS: dict[str, tuple[Any, Any]] = {
    "host": (np.int32, -1),
    "drow": (np.int32, -1),  # DestinationTable row of dst (-1: destination forgotten)
    "out": (np.float64, 0.0),
    "inb": (np.float64, 0.0),
    "conns": (np.int32, 0),
    "first_ts": (np.float64, np.nan),
    "last_ts": (np.float64, np.nan),
    "hours": (np.int32, 0),
    "last_hour": (np.int32, -1),  # its UTC day is last_hour // 24
    "hour_out": (np.float64, 0.0),  # upload within last_hour
    "ew_out": (np.float64, 0.0),  # upload decayed with a 1 h half-life (attribution)
    "ew_t": (np.float64, 0.0),
    "day_out": (np.float64, 0.0),  # upload on the day of last_hour
    "port": (np.int32, -1),
    "rare_new": (np.int8, 0),  # destination was new and rare when last scored
    "busy": (np.int8, 0),  # had an upload connection in the open window
    "ext": (np.int32, -1),  # row in the extension columns (-1: all of them at their fill)
}

# Extension columns: non-fill only for pairs active over several hours or days, with
# rare-destination evidence, reported, or with a promoted histogram (most pairs are not).
_EXT_FIELDS: dict[str, tuple[Any, Any]] = {
    "hsum": (np.float64, 0.0),  # sum / sum of squares of completed active-hour uploads
    "hsq": (np.float64, 0.0),
    "cusum": (np.float64, 0.0),
    "cusum_t": (np.float64, 0.0),  # meaningful only while cusum > 0
    "day_max": (np.float64, 0.0),  # largest upload of one earlier day (recurring transfers)
    "emitted": (np.float64, 0.0),  # cumulative upload when last reported
    "big": (np.int32, -1),  # row of its histogram in hist_big once promoted
}

_HIST_MAX = 255  # uint8 histogram bins; a pair whose bin would pass this is promoted


class PairTable:
    """Per (internal host, external destination) statistics, ``top_k`` per host."""

    def __init__(
        self,
        top_k: int = 32,
        hist_bins: int = 12,
        positions: int = 8,
        dests: DestinationTable | None = None,
    ) -> None:
        self.dests = dests if dests is not None else DestinationTable()
        self.top_k = top_k
        self.hist_bins = hist_bins
        self.positions = positions
        self.free: list[int] = []
        self.size = 0
        self.cols: dict[str, np.ndarray] = {
            k: np.zeros(0, dt) for k, (dt, _f) in _PAIR_FIELDS.items()
        }
        self.ext: dict[str, np.ndarray] = {
            k: np.zeros(0, dt) for k, (dt, _f) in _EXT_FIELDS.items()
        }
        self.ext_size = 0
        self.ext_free: list[int] = []
        self.hist = np.zeros((0, hist_bins), dtype=np.uint8)
        self.hist_big = np.zeros((0, hist_bins), dtype=np.uint32)
        self.big_free: list[int] = []
        self.orphan_dst: dict[int, str] = {}  # pair row -> destination no longer in dests
        self.orphan_rows: dict[str, list[int]] = {}  # the same, by destination
        self.sample: dict[int, list[tuple[str, int]]] = {}
        self.host_slots = np.full((0, top_k), -1, dtype=np.int32)
        # last record position per pair of the window being scored (set by the detector)
        self.w_rows = np.zeros(0, dtype=np.int64)
        self.w_origin = np.empty(0, dtype=object)
        self.w_offset = np.zeros(0, dtype=np.int64)

    def __len__(self) -> int:
        return self.size - len(self.free)

    def __getattr__(self, name: str) -> np.ndarray:
        cols = self.__dict__.get("cols")
        if cols is not None and name in cols:
            return cols[name]
        raise AttributeError(name)

    @property
    def index(self) -> dict[tuple[int, str], int]:
        """(host row, destination) -> pair row of every pair (built on demand)."""
        live = np.flatnonzero(self.cols["host"][: self.size] >= 0)
        return {
            (h, d): r
            for h, d, r in zip(
                self.cols["host"][live].tolist(),
                self.dst_of(live),
                live.tolist(),
                strict=True,
            )
        }

    def dst_of(self, rows: np.ndarray) -> list[str]:
        """Destination (text) of each pair row."""
        keys = self.dests.lru.keys
        return [
            str(keys[d]) if d >= 0 else self.orphan_dst[r]
            for r, d in zip(rows.tolist(), self.cols["drow"][rows].tolist(), strict=True)
        ]

    def slots_of(self, host_row: int) -> np.ndarray:
        """Pair rows of one host (int64)."""
        if host_row >= len(self.host_slots):
            return np.zeros(0, dtype=np.int64)
        s = self.host_slots[host_row]
        return s[s >= 0].astype(np.int64)

    def _grow(self, rows: int, hosts: int) -> None:
        have = len(self.hist)
        if rows > have:
            new = max(rows, have + have // 4, 64)
            for k, (dt, fill) in _PAIR_FIELDS.items():
                self.cols[k] = np.concatenate([self.cols[k], np.full(new - have, fill, dt)])
            self.hist = np.concatenate(
                [self.hist, np.zeros((new - have, self.hist_bins), np.uint8)]
            )
        hs = len(self.host_slots)
        if hosts > hs:
            new = max(hosts, hs + hs // 4, 64)
            pad = np.full((new - hs, self.top_k), -1, dtype=np.int32)
            self.host_slots = np.concatenate([self.host_slots, pad])

    # -- extension columns -------------------------------------------------------------
    def get(self, name: str, rows: np.ndarray) -> np.ndarray:
        """Extension column ``name`` of pair ``rows`` (its fill where a pair has no extension)."""
        dt, fill = _EXT_FIELDS[name]
        out = np.full(len(rows), fill, dtype=dt)
        if not self.ext_size:
            return out
        e = self.cols["ext"][rows]
        ok = e >= 0
        out[ok] = self.ext[name][e[ok]]
        return out

    def set(self, name: str, rows: np.ndarray, values: Any) -> None:
        """Write extension column ``name`` (``rows`` unique); extensions are made on demand."""
        if not len(rows):
            return
        _dt, fill = _EXT_FIELDS[name]
        values = np.asarray(values)
        if values.ndim == 0:
            values = np.full(len(rows), values)
        e = self.cols["ext"][rows]
        need = (e < 0) & (values != fill)
        if need.any():
            self._ext_alloc(rows[need])
            e = self.cols["ext"][rows]
        ok = e >= 0
        self.ext[name][e[ok]] = values[ok]

    def ext_of(self, rows: np.ndarray) -> np.ndarray:
        """Extension row of each pair (-1: none)."""
        return self.cols["ext"][rows]

    def _ext_alloc(self, rows: np.ndarray) -> None:
        idx = np.empty(len(rows), dtype=np.int64)
        take = min(len(rows), len(self.ext_free))
        if take:
            idx[:take] = [self.ext_free.pop() for _ in range(take)]
        rest = len(rows) - take
        if rest:
            idx[take:] = np.arange(self.ext_size, self.ext_size + rest)
            self.ext_size += rest
            have = len(self.ext["hsum"])
            if self.ext_size > have:
                new = max(self.ext_size, have + have // 4, 64) - have
                for k, (dt, fill) in _EXT_FIELDS.items():
                    self.ext[k] = np.concatenate([self.ext[k], np.full(new, fill, dt)])
        self.cols["ext"][rows] = idx

    def _reset(self, rows: np.ndarray) -> None:
        e = self.cols["ext"][rows]
        e = e[e >= 0]
        if len(e):
            big = self.ext["big"][e]
            self.big_free.extend(big[big >= 0].tolist())
            for k, (_dt, fill) in _EXT_FIELDS.items():
                self.ext[k][e] = fill
            self.ext_free.extend(e.tolist())
        if self.orphan_dst:
            for r in rows[self.cols["drow"][rows] < 0].tolist():
                d = self.orphan_dst.pop(r, None)
                if d is not None:
                    self.orphan_rows[d].remove(r)
                    if not self.orphan_rows[d]:
                        del self.orphan_rows[d]
        for k, (_dt, fill) in _PAIR_FIELDS.items():
            self.cols[k][rows] = fill
        self.hist[rows] = 0
        for r in rows.tolist():
            self.sample.pop(r, None)

    def _slot_order(self, slots: np.ndarray, now: float) -> np.ndarray:
        """Per host, slots in the order they are given away: empty ones, then the least
        valuable pair (upload / (1 + idle hours)); pairs accumulating evidence or busy in
        the open window come last."""
        occ = slots >= 0
        r = np.where(occ, slots, 0)
        idle_h = np.maximum(now - np.nan_to_num(self.cols["last_ts"][r], nan=0.0), 0.0) / 3600.0
        value = self.cols["out"][r] / (1.0 + idle_h)
        flat = r.ravel()
        keep = (
            (self.get("cusum", flat) > 0).reshape(r.shape)
            | (self.get("emitted", flat) > 0).reshape(r.shape)
            | (self.cols["busy"][r] > 0)
        )
        value = np.where(keep, value + 1e30, value)
        value = np.where(occ, value, -1.0)
        return np.argsort(value, axis=1, kind="stable")

    def orphan(self, drows: np.ndarray, keys: Sequence[str]) -> None:
        """Destination rows ``drows`` (which held ``keys``) were recycled: their pairs keep
        the text of their destination."""
        if not len(drows) or not self.size:
            return
        held = dict(zip(np.asarray(drows).tolist(), keys, strict=True))
        hit = np.flatnonzero(np.isin(self.cols["drow"][: self.size], drows))
        for r, d in zip(hit.tolist(), self.cols["drow"][hit].tolist(), strict=True):
            key = str(held[d])
            self.orphan_dst[r] = key
            self.orphan_rows.setdefault(key, []).append(r)
        self.cols["drow"][hit] = -1

    def relink(self, dsts: Sequence[str], drows: np.ndarray) -> None:
        """Destinations ``dsts`` (re)entered the destination table at ``drows``: pairs that
        had lost theirs point at it again."""
        for d, row in zip(dsts, drows.tolist(), strict=True):
            rs = self.orphan_rows.pop(d, None)
            if rs is not None:
                for r in rs:
                    del self.orphan_dst[r]
                self.cols["drow"][rs] = row

    def find(self, host_rows: np.ndarray, drows: np.ndarray) -> np.ndarray:
        """Rows of the pairs ``(host_rows[i], destination row drows[i])``, -1 when absent. Pure."""
        out = np.full(len(host_rows), -1, dtype=np.int64)
        ok = host_rows < len(self.host_slots)
        if ok.any():
            slots = self.host_slots[host_rows[ok]]
            match = (slots >= 0) & (self.cols["drow"][np.maximum(slots, 0)] == drows[ok][:, None])
            j = np.argmax(match, axis=1)
            got = slots[np.arange(len(slots)), j]
            out[ok] = np.where(match[np.arange(len(slots)), j], got, -1)
        return out

    def rows(
        self,
        host_rows: np.ndarray,
        drows: np.ndarray,
        now: float = 0.0,
        upload: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rows of the (unique) pairs ``(host_rows[i], drows[i])``, creating/evicting as needed,
        and the rows of the pairs evicted to make room (reused by new pairs).

        A host gets at most ``top_k`` new pairs per call (the largest ``upload`` first);
        pairs that do not fit get row -1 (their bytes still count in the host totals).
        """
        out = self.find(host_rows, drows)
        new = np.flatnonzero(out < 0)
        if not len(new):
            return out, np.zeros(0, dtype=np.int64)
        self._grow(max(self.size, 1), int(host_rows.max()) + 1)
        up = np.zeros(len(host_rows)) if upload is None else np.asarray(upload, dtype=np.float64)
        nh = host_rows[new]
        order = np.lexsort((-up[new], nh))
        new, nh = new[order], nh[order]
        starts = np.r_[0, np.flatnonzero(np.diff(nh)) + 1]
        counts = np.diff(np.r_[starts, len(nh)])
        rank = np.arange(len(nh)) - np.repeat(starts, counts)
        keep = rank < self.top_k
        new, nh, rank = new[keep], nh[keep], rank[keep]
        hosts = np.unique(nh)
        slots = self.host_slots[hosts]
        pick = self._slot_order(slots, now)
        hpos = np.searchsorted(hosts, nh)
        slot = pick[hpos, rank]
        old = slots[hpos, slot].astype(np.int64)
        victims = old[old >= 0]
        if len(victims):
            self._reset(victims)
        rows = old.copy()
        fresh = np.flatnonzero(rows < 0)
        take = min(len(fresh), len(self.free))
        if take:
            rows[fresh[:take]] = [self.free.pop() for _ in range(take)]
        rest = fresh[take:]
        if len(rest):
            rows[rest] = np.arange(self.size, self.size + len(rest))
            self.size += len(rest)
            self._grow(self.size, 0)
        self.host_slots[nh, slot] = rows
        self.cols["host"][rows] = nh
        self.cols["drow"][rows] = drows[new]
        out[new] = rows
        return out, victims

    def forget_hosts(self, host_rows: np.ndarray) -> None:
        """Free every pair of ``host_rows`` (evicted hosts); their rows are reused first."""
        host_rows = host_rows[host_rows < len(self.host_slots)]
        slots = self.host_slots[host_rows].ravel()
        slots = slots[slots >= 0].astype(np.int64)
        if not len(slots):
            return
        self._reset(slots)
        self.free.extend(slots.tolist())
        self.host_slots[host_rows] = -1

    def add_hist(self, rows: np.ndarray, counts: np.ndarray) -> None:
        """Add per-pair chunk-size counts (``rows`` unique, ``counts`` shaped (rows, bins))."""
        big = self.get("big", rows)
        prom = big >= 0
        if prom.any():
            self.hist_big[big[prom]] += counts[prom].astype(np.uint32)
        small = ~prom
        r = rows[small]
        tot = self.hist[r].astype(np.int64) + counts[small]
        over = tot.max(axis=1, initial=0) > _HIST_MAX
        self.hist[r[~over]] = tot[~over].astype(np.uint8)
        if over.any():
            up = r[over]
            idx = np.empty(len(up), dtype=np.int64)
            take = min(len(up), len(self.big_free))
            if take:
                idx[:take] = [self.big_free.pop() for _ in range(take)]
            rest = len(up) - take
            if rest:
                have = len(self.hist_big)
                idx[take:] = np.arange(have, have + rest)
                self.hist_big = np.concatenate(
                    [self.hist_big, np.zeros((rest, self.hist_bins), np.uint32)]
                )
            self.hist_big[idx] = tot[over].astype(np.uint32)
            self.hist[up] = 0
            self.set("big", up, idx)

    def hist_of(self, rows: np.ndarray) -> np.ndarray:
        """Chunk-size histograms of ``rows`` as float64 (rows, bins)."""
        h = self.hist[rows].astype(np.float64)
        big = self.get("big", rows)
        prom = big >= 0
        if prom.any():
            h[prom] = self.hist_big[big[prom]]
        return h

    def position(self, r: int) -> tuple[str, int] | None:
        """The open window's last record position of pair ``r`` (None when not touched)."""
        if not len(self.w_rows):
            return None
        i = int(np.searchsorted(self.w_rows, r))
        if i >= len(self.w_rows) or self.w_rows[i] != r or self.w_origin[i] is None:
            return None
        return str(self.w_origin[i]), int(self.w_offset[i])

    def add_sample(self, rows: np.ndarray) -> None:
        """Keep the open window's last position of ``rows`` (first half kept, then newest)."""
        for r in rows.tolist():
            pos = self.position(r)
            if pos is None:
                continue
            s = self.sample.setdefault(r, [])
            if len(s) >= self.positions:
                del s[self.positions // 2]
            s.append(pos)

    def chunk_quantiles(self, rows: np.ndarray, qs: Sequence[float]) -> np.ndarray:
        """Approximate quantiles of bytes per flow from the log2 histograms (log-interpolated)."""
        h = self.hist_of(rows)
        c = np.cumsum(h, axis=1)
        tot = np.maximum(c[:, -1:], 1.0)
        out = np.empty((len(rows), len(qs)))
        for j, q in enumerate(qs):
            k = np.minimum((c / tot < q).sum(axis=1), self.hist_bins - 1)
            below = np.where(
                k > 0, np.take_along_axis(c, np.maximum(k - 1, 0)[:, None], 1)[:, 0], 0.0
            )
            inbin = np.maximum(h[np.arange(len(rows)), k], 1.0)
            f = np.clip((q * tot[:, 0] - below) / inbin, 0.0, 1.0)
            out[:, j] = np.exp2(k + _BIN0 + f)
        return out

    def nbytes(self) -> int:
        arrays = (
            sum(a.nbytes for a in self.cols.values())
            + self.hist.nbytes
            + self.hist_big.nbytes
            + self.host_slots.nbytes
            + sum(a.nbytes for a in self.ext.values())
        )
        return int(arrays + 120 * (len(self.orphan_dst) + len(self.sample)))

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        n = self.size  # rows past size (and host rows past the last used) are spare capacity
        state["cols"] = {k: v[:n].copy() for k, v in self.cols.items()}
        state["ext"] = {k: v[: self.ext_size].copy() for k, v in self.ext.items()}
        state["hist"] = self.hist[:n].copy()
        used = np.flatnonzero((self.host_slots >= 0).any(axis=1))
        state["host_slots"] = self.host_slots[: int(used[-1]) + 1 if len(used) else 0].copy()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
