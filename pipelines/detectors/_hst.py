"""Half-Space Trees over whole batches: River's ``HalfSpaceTrees``, walked with numpy.

:class:`BatchHalfSpaceTrees` is **exactly** River's ``anomaly.HalfSpaceTrees`` (same trees
for the same seed and feature names — they are built by River's own
``make_padded_tree`` with the same random draws — same ``l_mass``/``r_mass`` bookkeeping,
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
from collections.abc import Sequence
from typing import Any

import numpy as np
from river.tree.padded import PaddedBranch, make_padded_tree

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
        """Draw the trees as River does on its first ``learn_one`` (features in sorted order)."""
        col = {name: k for k, name in enumerate(self.names)}
        for t in range(self.n_trees):
            limits = {i: self.limits.get(i, (0.0, 1.0)) for i in sorted(self.names)}
            root = make_padded_tree(
                limits=limits, height=self.height, padding=_PADDING, rng=rng, r_mass=0, l_mass=0
            )
            self._load_tree(t, root, col, masses=False)

    def _load_tree(self, t: int, root: Any, col: dict[str, int], masses: bool) -> None:
        stack = [(root, 0)]
        inner = 2**self.height - 1
        while stack:
            node, i = stack.pop()
            if masses:
                self.l_mass[t, i] = node.l_mass
                self.r_mass[t, i] = node.r_mass
            if i < inner:
                if not isinstance(node, PaddedBranch):
                    raise PipelinesError("tree is not complete to its height")
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

    def paths(self, x: np.ndarray) -> np.ndarray:
        """Flat node index (``tree * nodes + node``) of every level: shape (height + 1, trees, rows)."""
        x = self._rows(x)
        n, f = x.shape
        nodes = 2 ** (self.height + 1) - 1
        inner = 2**self.height - 1
        out = np.empty((self.height + 1, self.n_trees, n), dtype=np.int64)
        node = np.zeros((self.n_trees, n), dtype=np.int64)
        tree_inner = (np.arange(self.n_trees, dtype=np.int64) * inner)[:, None]
        row_base = (np.arange(n, dtype=np.int64) * f)[None, :]
        feat, thr, flat_x = self.feature.ravel(), self.threshold.ravel(), x.ravel()
        for d in range(self.height):
            out[d] = node
            k = tree_inner + node
            v = flat_x[row_base + feat[k]]
            node = 2 * node + 2 - (v < thr[k])
        out[self.height] = node
        out += (np.arange(self.n_trees, dtype=np.int64) * nodes)[None, :, None]
        return out

    def score_many(self, x: np.ndarray, paths: np.ndarray | None = None) -> np.ndarray:
        """River's ``score_one`` of every row (0.0 during the first window). Pure."""
        x = self._rows(x)
        if self.first_window or not len(x):
            return np.zeros(len(x))
        p = self.paths(x) if paths is None else paths
        r = self.r_mass.ravel()[p].astype(np.int64)  # (levels, trees, rows)
        below = r < self.size_limit
        alive = np.ones(r.shape, dtype=bool)  # River stops after the first node below the limit
        alive[1:] = ~np.logical_or.accumulate(below[:-1], axis=0)
        weight = (np.int64(1) << np.arange(self.height + 1, dtype=np.int64))[:, None, None]
        total = (r * weight * alive).sum(axis=(0, 1))
        return 1.0 - total.astype(np.float64) / self.max_score

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
