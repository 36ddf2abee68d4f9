"""Per-entity robust baselines with poisoning guards, vectorised over entities.

:class:`RobustBaseline` keeps, for every entity (host, host+destination …) and every
feature, a location and a spread on the ``log1p`` scale — an exponentially weighted
median/MAD approximation. It is built to resist baseline poisoning (MITRE ATLAS
AML.T0020):

* **warm-up**: an entity is not *warm* (and should not alert) before ``warmup`` samples;
* **capped moves**: one sample moves the location by at most ``max_step`` spreads, so a
  burst cannot drag the baseline with it;
* **gated learning**: :meth:`learn` takes a mask — callers pass ``False`` for entities
  whose window scored anomalous;
* **frozen reference**: when an entity finishes warm-up its location/spread are copied
  to a reference that never adapts; :meth:`drift` says how far the adaptive baseline has
  walked away from it (in reference spreads).

Memory per entity is ``4 × features`` float32 numbers plus two counters.

>>> b = RobustBaseline(("bytes",), warmup=3)
>>> ids = b.ids(["h1", "h2"])
>>> for v in (1000.0, 1100.0, 900.0, 1000.0):
...     b.learn(ids, np.array([[v], [v * 10]]))
>>> bool(b.warm(ids).all())
True
>>> z = b.z(ids, np.array([[50_000.0], [10_000.0]]))
>>> bool(z[0, 0] > 3.0), bool(abs(z[1, 0]) < 1.0)
(True, True)
>>> round(float(b.typical(ids)[0, 0]), -2)
1000.0
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pipelines.sketches import HostIndex

__all__ = ["RobustBaseline", "SharedBaseline"]

_MAD_TO_SIGMA = 1.4826
_T_MIN, _T_MAX = int(np.iinfo(np.int32).min), int(np.iinfo(np.int32).max)


class RobustBaseline:
    """Robust per-entity location/spread of several features (log1p scale).

    Parameters are kept verbatim as attributes:

    ``features`` names the columns of the matrices passed in; ``warmup`` samples before
    an entity is warm; ``rate`` is the exponential learning rate after warm-up (during
    warm-up a running mean is used); ``max_step`` caps one update at that many spreads;
    ``min_spread`` floors the spread (log units) so that a perfectly regular host does
    not get infinite z-scores; ``init_spread`` is the spread before anything is known.
    """

    def __init__(
        self,
        features: Sequence[str],
        warmup: int = 12,
        rate: float = 0.05,
        max_step: float = 0.5,
        min_spread: float = 0.25,
        init_spread: float = 1.0,
    ) -> None:
        self.features = tuple(features)
        self.warmup = warmup
        self.rate = rate
        self.max_step = max_step
        self.min_spread = min_spread
        self.init_spread = init_spread
        self.index: dict[str, int] = {}
        self.names: list[str] = []
        self.free: list[int] = []  # rows of evicted entities, reused first
        f = len(self.features)
        self.n = np.zeros(0, dtype=np.int32)
        self.loc = np.zeros((0, f), dtype=np.float32)
        self.spread = np.zeros((0, f), dtype=np.float32)
        self.ref_loc = np.zeros((0, f), dtype=np.float32)
        self.ref_spread = np.zeros((0, f), dtype=np.float32)
        self.last_seen = np.zeros(
            0, dtype=np.int32
        )  # the ``t`` of learn (an hour/day/window index)

    # -- entity bookkeeping -------------------------------------------------------
    def __len__(self) -> int:
        return len(self.index)

    def _grow(self, need: int) -> None:
        cap = len(self.n)
        if need <= cap:
            return
        new = max(need, cap + cap // 4, 64)
        f = len(self.features)

        def pad(a: np.ndarray, fill: float = 0.0) -> np.ndarray:
            shape = (new - cap, *a.shape[1:])
            return np.concatenate([a, np.full(shape, fill, dtype=a.dtype)])

        self.n = pad(self.n)
        self.loc = pad(self.loc)
        self.spread = pad(self.spread, self.init_spread)
        self.ref_loc = pad(self.ref_loc)
        self.ref_spread = pad(self.ref_spread, self.init_spread)
        self.last_seen = pad(self.last_seen)
        assert self.loc.shape[1] == f

    def ids(self, entities: Sequence[str], create: bool = True) -> np.ndarray:
        """Row numbers of ``entities`` (new ones are added when ``create``; else -1)."""
        index = self.index
        out = np.empty(len(entities), dtype=np.int64)
        for i, e in enumerate(entities):
            j = index.get(e)
            if j is None:
                if not create:
                    out[i] = -1
                    continue
                if self.free:
                    j = self.free.pop()
                    self.names[j] = e
                else:
                    j = len(self.names)
                    self.names.append(e)
                index[e] = j
            out[i] = j
        self._grow(len(self.names))
        return out

    def ensure(self, rows: int) -> None:
        """Make room for rows ``0..rows-1`` without naming them (row-addressed use).

        A caller that keeps its own entity index (one dict for several baselines) passes
        row numbers straight to :meth:`z`, :meth:`learn` … and frees rows with :meth:`clear`.

        >>> b = RobustBaseline(("x",), warmup=1)
        >>> b.ensure(2); b.learn(np.array([1]), np.array([[9.0]]))
        >>> b.warm(np.array([0, 1])).tolist(), len(b)
        ([False, True], 0)
        """
        self._grow(rows)

    def known(self, entities: Sequence[str]) -> np.ndarray:
        """Row numbers of ``entities`` without adding any (-1 for unknown). Pure."""
        return np.array([self.index.get(e, -1) for e in entities], dtype=np.int64)

    # -- reading (pure) -------------------------------------------------------------
    def warm(self, ids: np.ndarray) -> np.ndarray:
        """True where the entity has finished warm-up (unknown ids, -1, are not warm)."""
        ok = ids >= 0
        out = np.zeros(len(ids), dtype=bool)
        out[ok] = self.n[ids[ok]] >= self.warmup
        return out

    def samples(self, ids: np.ndarray) -> np.ndarray:
        out = np.zeros(len(ids), dtype=np.int32)
        ok = ids >= 0
        out[ok] = self.n[ids[ok]]
        return out

    def _gather(self, arr: np.ndarray, ids: np.ndarray, fill: float) -> np.ndarray:
        out = np.full((len(ids), len(self.features)), fill, dtype=np.float64)
        ok = ids >= 0
        out[ok] = arr[ids[ok]]
        return out

    def z(self, ids: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Robust z-scores of raw values ``x`` (shape ``(len(ids), features)``), log1p scale."""
        lx = np.log1p(np.maximum(np.asarray(x, dtype=np.float64), 0.0))
        loc = self._gather(self.loc, ids, 0.0)
        spread = np.maximum(self._gather(self.spread, ids, self.init_spread), self.min_spread)
        return (lx - loc) / spread

    def typical(self, ids: np.ndarray) -> np.ndarray:
        """The baseline location back on the raw scale (≈ the entity's median)."""
        return np.expm1(self._gather(self.loc, ids, 0.0))

    def reference(self, ids: np.ndarray) -> np.ndarray:
        """The frozen reference location on the raw scale (0 before warm-up ends)."""
        return np.expm1(self._gather(self.ref_loc, ids, 0.0))

    def drift(self, ids: np.ndarray) -> np.ndarray:
        """How far the adaptive location has moved from the frozen reference, in
        reference spreads (signed; 0 for entities still warming up)."""
        loc = self._gather(self.loc, ids, 0.0)
        ref = self._gather(self.ref_loc, ids, 0.0)
        spread = np.maximum(self._gather(self.ref_spread, ids, self.init_spread), self.min_spread)
        out = (loc - ref) / spread
        out[~self.warm(ids)] = 0.0
        return out

    # -- learning -----------------------------------------------------------------------
    def learn(
        self, ids: np.ndarray, x: np.ndarray, allow: np.ndarray | None = None, t: int = 0
    ) -> None:
        """Update the entities ``ids`` with raw values ``x`` where ``allow`` is True.

        ``ids`` must be unique within one call (one sample per entity and window).
        """
        if allow is not None:
            ids, x = ids[allow], np.asarray(x)[allow]
        if not len(ids):
            return
        lx = np.log1p(np.maximum(np.asarray(x, dtype=np.float64), 0.0))
        n = self.n[ids].astype(np.float64)
        loc = self.loc[ids].astype(np.float64)
        spread = self.spread[ids].astype(np.float64)
        first = n == 0
        warming = n < self.warmup
        # running mean while warming up, exponential afterwards
        rate = np.where(warming, 1.0 / (n + 1.0), self.rate)[:, None]
        dev = lx - loc
        # capped move: a single sample moves the location at most max_step spreads
        cap = self.max_step * np.maximum(spread, self.min_spread) / np.maximum(rate, 1e-12)
        capped = np.where(warming[:, None] & (n[:, None] < 3), dev, np.clip(dev, -cap, cap))
        new_loc = loc + rate * capped
        abs_dev = np.abs(lx - new_loc) * _MAD_TO_SIGMA
        abs_dev = np.minimum(abs_dev, 4.0 * np.maximum(spread, self.min_spread))
        new_spread = np.where(
            first[:, None],
            self.init_spread,
            spread + rate * (abs_dev - spread),
        )
        new_loc = np.where(first[:, None], lx, new_loc)
        self.loc[ids] = new_loc
        self.spread[ids] = np.maximum(new_spread, self.min_spread * 0.5)
        self.n[ids] = np.minimum(n + 1, np.iinfo(np.int32).max).astype(np.int32)
        self.last_seen[ids] = min(max(int(t), _T_MIN), _T_MAX)
        done = self.n[ids] == self.warmup
        if done.any():
            just = ids[done]
            self.ref_loc[just] = self.loc[just]
            self.ref_spread[just] = self.spread[just]

    def reset(self, ids: np.ndarray) -> None:
        """Forget entities ``ids``: their rows are cleared and reused by new entities."""
        ids = np.unique(np.asarray(ids, dtype=np.int64))
        ids = ids[(ids >= 0) & (ids < len(self.names))]
        for j in ids.tolist():
            name = self.names[j]
            if self.index.get(name) == j:
                del self.index[name]
                self.names[j] = ""
                self.free.append(j)
        self.clear(ids)

    def clear(self, ids: np.ndarray) -> None:
        """Reset the rows ``ids`` to "nothing learnt" (no change to the entity index)."""
        self.n[ids] = 0
        self.loc[ids] = 0.0
        self.spread[ids] = self.init_spread
        self.ref_loc[ids] = 0.0
        self.ref_spread[ids] = self.init_spread
        self.last_seen[ids] = 0

    def evict(self, older_than: int) -> list[str]:
        """Forget every entity last learnt before ``older_than`` (the ``t`` of :meth:`learn`).

        >>> b = RobustBaseline(("x",))
        >>> b.learn(b.ids(["old", "new"]), np.array([[1.0], [2.0]]), t=5)
        >>> b.learn(b.ids(["new"]), np.array([[2.0]]), t=9)
        >>> b.evict(older_than=8), len(b), int(b.ids(["again"])[0])
        (['old'], 1, 0)
        """
        live = np.array(list(self.index.values()), dtype=np.int64)
        if not len(live):
            return []
        stale = live[self.last_seen[live] < older_than]
        names = [self.names[j] for j in stale.tolist()]
        self.reset(stale)
        return names

    def refreeze(self, ids: np.ndarray) -> None:
        """Accept the current adaptive baseline as the new reference (an operator action)."""
        self.ref_loc[ids] = self.loc[ids]
        self.ref_spread[ids] = self.spread[ids]

    def nbytes(self) -> int:
        """Approximate state size in bytes (arrays plus the entity index)."""
        arrays = sum(
            a.nbytes
            for a in (self.n, self.loc, self.spread, self.ref_loc, self.ref_spread, self.last_seen)
        )
        return int(arrays + sum(len(s) + 90 for s in self.names))


class SharedBaseline(RobustBaseline):
    """A :class:`RobustBaseline` whose entities live in a shared :class:`HostIndex`.

    Same answers as a plain baseline (membership via ``bit``); several baselines and
    tables of one detector then share one dict entry per host. Arrays are sized to the
    registry's rows.

    >>> ix = HostIndex()
    >>> b = SharedBaseline(ix, 1, ("x",), warmup=1)
    >>> b.learn(b.ids(["h1", "h2"]), np.array([[1.0], [2.0]]), t=5)
    >>> b.known(["h2", "zz"]).tolist(), b.names, len(b)
    ([1, -1], ['h1', 'h2'], 2)
    >>> b.evict(older_than=6), len(b), len(ix)
    (['h1', 'h2'], 0, 0)
    """

    def __init__(self, registry: HostIndex, bit: int, features: Sequence[str], **kw: Any) -> None:
        super().__init__(features, **kw)
        self.registry = registry
        self.bit = bit
        del self.index, self.free

    @property  # type: ignore[override]
    def names(self) -> list[str]:
        reg = self.registry
        return [reg.names[j] for j in reg.members(self.bit).tolist()]

    @names.setter
    def names(self, _value: list[str]) -> None:  # the registry holds the names
        pass

    def __len__(self) -> int:
        return len(self.registry.members(self.bit))

    def ids(self, entities: Sequence[str], create: bool = True) -> np.ndarray:
        reg, bit = self.registry, self.bit
        if create:
            out = np.array([reg.acquire(e, bit) for e in entities], dtype=np.int64)
        else:
            out = self.known(entities)
        self._grow(reg.capacity)
        return out

    def known(self, entities: Sequence[str]) -> np.ndarray:
        reg, bit = self.registry, self.bit
        return np.array([reg.get(e, bit) for e in entities], dtype=np.int64)

    def reset(self, ids: np.ndarray) -> None:
        ids = np.unique(np.asarray(ids, dtype=np.int64))
        ids = ids[(ids >= 0) & (ids < len(self.n))]
        self.clear(ids)
        self.registry.release(ids, self.bit)

    def evict(self, older_than: int) -> list[str]:
        live = self.registry.members(self.bit)
        stale = live[self.last_seen[live] < older_than]
        names = [self.registry.names[j] for j in stale.tolist()]
        self.reset(stale)
        return names

    def nbytes(self) -> int:
        arrays = sum(
            a.nbytes
            for a in (self.n, self.loc, self.spread, self.ref_loc, self.ref_spread, self.last_seen)
        )
        return int(arrays)
