"""Half-Space Trees over whole batches: River's ``HalfSpaceTrees``, walked with numpy.

:class:`BatchHalfSpaceTrees` is **exactly** River's ``anomaly.HalfSpaceTrees`` (same trees
for the same seed and feature names — drawn with the same random calls as River's
``make_padded_tree`` — same ``l_mass``/``r_mass`` bookkeeping,
same window swaps, same score formula), but it scores and learns a matrix of rows at a
time. Every tree is stored as a complete binary tree in heap order (children of node
``i`` are ``2i + 1`` and ``2i + 2``): split feature and threshold per internal node, the
two masses per node. A batch walks all trees for all rows level by level with array
indexing, so the Python cost per batch does not grow with the number of rows.

Order semantics: :meth:`score_many` scores every row against the current model (as
calling River's ``score_one`` on each row in turn, which does not change the model);
:meth:`learn_many` learns the rows in order, as River's ``learn_one`` one after the
other, including a window swap (``r_mass = l_mass; l_mass = 0``) after exactly
``window_size`` rows, wherever it falls inside the batch. A row's path through a tree
depends on its values only (never on masses: rows are dense, there are no missing
features), which is what makes learning a run of rows between two swaps one
``bincount``.

Rows must be dense (one column per feature). A NaN value goes right, as in River
(``nan < threshold`` is false).

>>> import numpy as np
>>> m = BatchHalfSpaceTrees(n_features=2, n_trees=3, height=3, window_size=4, seed=1)
>>> m.score_many(np.array([[0.5, 0.5]])).tolist()  # first window: not ready
[0.0]
>>> m.learn_many(np.full((4, 2), 0.2))
>>> s = m.score_many(np.array([[0.2, 0.2], [0.95, 0.95]]))
>>> bool(s[0] < s[1])
True
"""

from __future__ import annotations

import random
from bisect import bisect
from collections.abc import Callable, Sequence
from itertools import accumulate
from typing import Any

import numpy as np

from pipelines.exceptions import PipelinesError

__all__ = ["BatchHalfSpaceTrees"]

_PADDING = 0.15  # River's HalfSpaceTrees builds its trees with this padding


class BatchHalfSpaceTrees:
    """River-exact Half-Space Trees scoring and learning whole batches of rows."""

    def __init__(
        self,
        n_features: int,
        n_trees: int = 10,
        height: int = 8,
        window_size: int = 250,
        seed: int | None = None,
        names: Sequence[str] | None = None,
        limits: dict[str, tuple[float, float]] | None = None,
    ) -> None:
        if n_features < 1 or n_trees < 1 or height < 1 or window_size < 1:
            raise PipelinesError("n_features, n_trees, height and window_size must be >= 1")
        self.n_features = n_features
        self.n_trees = n_trees
        self.height = height
        self.window_size = window_size
        self.seed = seed
        self.names = (
            tuple(names) if names is not None else tuple(f"f{k}" for k in range(n_features))
        )
        if len(self.names) != n_features:
            raise PipelinesError("names must have one entry per feature")
        self.limits = dict(limits or {})
        inner, nodes = 2**height - 1, 2 ** (height + 1) - 1
        self.feature = np.zeros((n_trees, inner), dtype=np.int16)
        self.threshold = np.zeros((n_trees, inner), dtype=np.float64)
        self.l_mass = np.zeros((n_trees, nodes), dtype=np.int32)
        self.r_mass = np.zeros((n_trees, nodes), dtype=np.int32)
        self.counter = 0
        self.first_window = True
        self._build(random.Random(seed))

    # -- construction ---------------------------------------------------------------
    def _build(self, rng: random.Random) -> None:
        """Draw the trees as River does on its first ``learn_one``.

        The same random calls as River's ``make_padded_tree`` (node, then its left subtree,
        then its right one; features in sorted name order): ``rng.choices`` weighted by the
        current limit widths and ``rng.uniform`` over the padded limits, spelt out inline as
        CPython implements them (``bisect`` of the cumulative weights at ``random() *
        total``; ``a + (b - a) * random()``) and written straight into arrays. The tests
        check every split against River's own trees.
        """
        order = sorted(self.names)
        col = [self.names.index(name) for name in order]
        inner = 2**self.height - 1
        feature = [0] * (self.n_trees * inner)
        threshold = [0.0] * (self.n_trees * inner)
        for t in range(self.n_trees):
            lo = [float(self.limits.get(i, (0.0, 1.0))[0]) for i in order]
            hi = [float(self.limits.get(i, (0.0, 1.0))[1]) for i in order]
            f, th = _draw_tree(rng.random, lo, hi, col, inner)
            feature[t * inner : (t + 1) * inner] = f
            threshold[t * inner : (t + 1) * inner] = th
        self.feature = np.array(feature, dtype=np.int16).reshape(self.n_trees, inner)
        self.threshold = np.array(threshold, dtype=np.float64).reshape(self.n_trees, inner)

    def _load_tree(self, t: int, root: Any, col: dict[str, int], masses: bool) -> None:
        stack = [(root, 0)]
        inner = 2**self.height - 1
        while stack:
            node, i = stack.pop()
            if masses:
                self.l_mass[t, i] = node.l_mass
                self.r_mass[t, i] = node.r_mass
            if i < inner:
                self.feature[t, i] = col[node.feature]
                self.threshold[t, i] = node.threshold
                stack.append((node.children[0], 2 * i + 1))
                stack.append((node.children[1], 2 * i + 2))

    @classmethod
    def from_river(cls, model: Any, names: Sequence[str]) -> BatchHalfSpaceTrees:
        """The exact batch equivalent of a River ``HalfSpaceTrees`` (trees, masses, counter).

        ``names`` are the feature names the River model was (or will be) fed, in column order.
        """
        limits = {k: tuple(v) for k, v in model.limits.items()}
        out = cls.__new__(cls)
        out.__dict__.update(
            n_features=len(names), n_trees=model.n_trees, height=model.height,
            window_size=model.window_size, seed=model.seed, names=tuple(names), limits=limits,
        )  # fmt: skip
        inner, nodes = 2**model.height - 1, 2 ** (model.height + 1) - 1
        out.feature = np.zeros((model.n_trees, inner), dtype=np.int16)
        out.threshold = np.zeros((model.n_trees, inner), dtype=np.float64)
        out.l_mass = np.zeros((model.n_trees, nodes), dtype=np.int32)
        out.r_mass = np.zeros((model.n_trees, nodes), dtype=np.int32)
        out.counter = int(model.counter)
        out.first_window = bool(model._first_window)
        if model.trees:
            col = {name: k for k, name in enumerate(out.names)}
            for t, root in enumerate(model.trees):
                out._load_tree(t, root, col, masses=True)
        else:  # not built yet: River would draw them from its (pickled) generator
            rng = random.Random()
            rng.setstate(model.rng.getstate())
            out._build(rng)
        return out

    # -- batch walks ------------------------------------------------------------------
    @property
    def size_limit(self) -> float:
        """Scoring stops below this ``r_mass`` (River: ``0.1 * window_size``)."""
        return 0.1 * self.window_size

    @property
    def max_score(self) -> int:
        return self.n_trees * self.window_size * (2 ** (self.height + 1) - 1)

    def _rows(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise PipelinesError(f"expected rows of {self.n_features} features, got {x.shape}")
        return x

    def _tables(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per global node (``tree * nodes + node``): split feature, threshold, right child.

        Derived from ``feature``/``threshold``; cached, not pickled."""
        cached = self.__dict__.get("_cache")
        if cached is None:
            t, h = self.n_trees, self.height
            inner, nodes = 2**h - 1, 2 ** (h + 1) - 1
            feat = np.zeros((t, nodes), dtype=np.intp)
            thr = np.zeros((t, nodes))
            right = np.zeros((t, nodes), dtype=np.intp)
            feat[:, :inner] = self.feature
            thr[:, :inner] = self.threshold
            right[:, :inner] = (
                (np.arange(t, dtype=np.intp) * nodes)[:, None]
                + 2 * np.arange(inner, dtype=np.intp)
                + 2
            )
            cached = self._cache = (feat.ravel(), thr.ravel(), right.ravel())
        return cached

    def paths(self, x: np.ndarray) -> np.ndarray:
        """Global node index (``tree * nodes + node``) at every level: shape (height + 1, trees, rows)."""
        x = self._rows(x)
        n = len(x)
        feat, thr, right = self._tables()
        xt = np.ascontiguousarray(
            x.T
        ).ravel()  # feature-major: value of row r, feature f at f*n + r
        fn = feat * n
        nodes = 2 ** (self.height + 1) - 1
        out = np.empty((self.height + 1, self.n_trees * n), dtype=np.intp)
        g = np.repeat(np.arange(self.n_trees, dtype=np.intp) * nodes, n)
        rows = np.tile(np.arange(n, dtype=np.intp), self.n_trees)
        out[0] = g
        for d in range(self.height):
            g = right[g] - (xt[fn[g] + rows] < thr[g])  # left child when value < threshold
            out[d + 1] = g
        return out.reshape(self.height + 1, self.n_trees, n)

    def score_many(self, x: np.ndarray, paths: np.ndarray | None = None) -> np.ndarray:
        """River's ``score_one`` of every row (0.0 during the first window). Pure.

        Sums of integer masses times powers of two: exact in float64, so the order of the
        additions does not matter and the result equals River's bit for bit."""
        x = self._rows(x)
        if self.first_window or not len(x):
            return np.zeros(len(x))
        p = self.paths(x) if paths is None else paths
        levels = self.height + 1
        r = self.r_mass.ravel()[p.reshape(levels, -1)]  # (levels, trees * rows)
        stop = np.logical_or.accumulate(r < self.size_limit, axis=0)
        mass = r.astype(np.float64)
        mass[1:][stop[:-1]] = 0.0  # River stops after the first node below the size limit
        total = (np.ldexp(1.0, np.arange(levels)) @ mass).reshape(self.n_trees, -1).sum(axis=0)
        return 1.0 - total / self.max_score

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_cache", None)
        return state

    def learn_many(self, x: np.ndarray, paths: np.ndarray | None = None) -> None:
        """River's ``learn_one`` of every row, in order (window swaps where they fall)."""
        x = self._rows(x)
        if not len(x):
            return
        p = self.paths(x) if paths is None else paths
        size = self.l_mass.size
        a = 0
        while a < len(x):
            b = min(len(x), a + self.window_size - self.counter)
            hits = np.bincount(p[:, :, a:b].ravel(), minlength=size)
            self.l_mass += hits.reshape(self.l_mass.shape).astype(np.int32)
            self.counter += b - a
            if self.counter == self.window_size:
                self.r_mass = self.l_mass
                self.l_mass = np.zeros_like(self.r_mass)
                self.first_window = False
                self.counter = 0
            a = b

    def nbytes(self) -> int:
        return int(
            self.feature.nbytes + self.threshold.nbytes + self.l_mass.nbytes + self.r_mass.nbytes
        )


def _draw_tree(
    draw: Callable[[], float], lo: list[float], hi: list[float], col: list[int], inner: int
) -> tuple[list[int], list[float]]:
    """One tree's splits in heap order, drawn as River's ``make_padded_tree`` draws them."""
    n, last = len(lo), len(lo) - 1
    feature, threshold = [0] * inner, [0.0] * inner

    def grow(i: int) -> None:
        cum = list(accumulate([hi[k] - lo[k] for k in range(n)]))
        k = bisect(cum, draw() * (cum[-1] + 0.0), 0, last)  # rng.choices(weights=widths)
        a, b = lo[k], hi[k]
        x, y = a + _PADDING * (b - a), b - _PADDING * (b - a)
        at = x + (y - x) * draw()  # rng.uniform(x, y)
        feature[i], threshold[i] = col[k], at
        if 2 * i + 1 < inner:
            hi[k] = at
            grow(2 * i + 1)
            hi[k] = b
            lo[k] = at
            grow(2 * i + 2)
            lo[k] = a

    grow(0)
    return feature, threshold
