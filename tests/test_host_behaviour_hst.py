"""BatchHalfSpaceTrees is River's HalfSpaceTrees, batch for batch (River is the reference)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from river import anomaly

from pipelines.detectors._hst import BatchHalfSpaceTrees
from pipelines.exceptions import PipelinesError


def _dicts(x: np.ndarray) -> list[dict[str, float]]:
    return [{f"f{k}": float(v) for k, v in enumerate(row.tolist())} for row in x]


def _masses(model: anomaly.HalfSpaceTrees) -> tuple[np.ndarray, np.ndarray]:
    """River's masses in heap order (children of i at 2i+1, 2i+2), per tree."""
    n = 2 ** (model.height + 1) - 1
    lm, rm = np.zeros((model.n_trees, n), np.int64), np.zeros((model.n_trees, n), np.int64)
    for t, root in enumerate(model.trees):
        stack = [(root, 0)]
        while stack:
            node, i = stack.pop()
            lm[t, i], rm[t, i] = node.l_mass, node.r_mass
            if i < 2**model.height - 1:
                stack += [(node.children[0], 2 * i + 1), (node.children[1], 2 * i + 2)]
    return lm, rm


def _splits(model: anomaly.HalfSpaceTrees) -> tuple[list[list[str]], list[list[float]]]:
    """River's split features and thresholds in heap order, per tree."""
    inner = 2**model.height - 1
    feature, threshold = [], []
    for root in model.trees:
        f, t = [""] * inner, [0.0] * inner
        stack = [(root, 0)]
        while stack:
            node, i = stack.pop()
            if i < inner:
                f[i], t[i] = node.feature, node.threshold
                stack += [(node.children[0], 2 * i + 1), (node.children[1], 2 * i + 2)]
        feature.append(f)
        threshold.append(t)
    return feature, threshold


def _stream(seed: int, n_features: int, sizes: list[int]) -> list[np.ndarray]:
    """Batches of a drifting mixture: a dense normal cluster, spread points, a few extremes."""
    rng = np.random.default_rng(seed)
    out = []
    for i, n in enumerate(sizes):
        centre = 0.2 + 0.5 * (i % 3) / 2
        x = np.clip(rng.normal(centre, 0.08, (n, n_features)), 0.0, 1.0)
        spread = rng.random(n) < 0.2
        x[spread] = rng.random((int(spread.sum()), n_features))
        x[rng.random(n) < 0.05] = 1.0  # saturated values (as clipped z-scores are)
        x[:, -1] = rng.random(n) < 0.1  # a 0/1 flag column
        out.append(x)
    return out


def _compare(
    river: anomaly.HalfSpaceTrees, ours: BatchHalfSpaceTrees, batches: list[np.ndarray]
) -> int:
    """Score every row of a batch, then learn the batch in order, on both; return swaps seen."""
    swaps = 0
    for x in batches:
        want = np.array([float(river.score_one(d)) for d in _dicts(x)])
        got = ours.score_many(x)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
        assert np.array_equal(got, want)  # in fact bit for bit: integer masses, same formula
        was = river._first_window, river.counter
        for d in _dicts(x):
            river.learn_one(d)
        ours.learn_many(x)
        swaps += (was[1] + len(x)) // river.window_size
        assert (ours.counter, ours.first_window) == (river.counter, river._first_window)
        lm, rm = _masses(river)
        assert np.array_equal(ours.l_mass, lm) and np.array_equal(ours.r_mass, rm)
    return swaps


@pytest.mark.parametrize(
    ("seed", "n_trees", "height", "window", "n_features"),
    [(42, 10, 8, 250, 8), (3, 6, 6, 100, 8), (7, 4, 5, 37, 3), (11, 3, 4, 50, 12)],
)
def test_batch_hst_equals_river_over_several_window_swaps(
    seed: int, n_trees: int, height: int, window: int, n_features: int
) -> None:
    river = anomaly.HalfSpaceTrees(n_trees=n_trees, height=height, window_size=window, seed=seed)
    ours = BatchHalfSpaceTrees(
        n_features, n_trees=n_trees, height=height, window_size=window, seed=seed
    )
    # batch sizes: a swap inside a batch, exactly on a batch edge, several swaps in one batch
    sizes = [window // 3, window - window // 3, 1, window + 5, 3 * window + 2, 0, 17, 130, 90, 7]
    sizes += [int(s) for s in np.random.default_rng(seed).integers(0, 2 * window, 12)]
    swaps = _compare(river, ours, _stream(seed, n_features, sizes))
    assert swaps >= 8 and not ours.first_window
    # same trees as River drew: every split, feature for feature, threshold for threshold
    feature, threshold = _splits(river)
    assert [[ours.names[k] for k in row] for row in ours.feature.tolist()] == feature
    assert ours.threshold.tolist() == threshold


def test_from_river_continues_exactly_and_pickles() -> None:
    river = anomaly.HalfSpaceTrees(n_trees=5, height=6, window_size=64, seed=9)
    batches = _stream(9, 8, [40, 70, 100, 33, 64, 65, 120])
    for x in batches[:3]:
        for d in _dicts(x):
            river.learn_one(d)
    ours = BatchHalfSpaceTrees.from_river(river, [f"f{k}" for k in range(8)])
    ours = pickle.loads(pickle.dumps(ours))
    assert _compare(river, ours, batches[3:]) >= 3
    # an untrained River model converts to the trees it would have drawn
    fresh = BatchHalfSpaceTrees.from_river(
        anomaly.HalfSpaceTrees(n_trees=5, height=6, window_size=64, seed=9),
        [f"f{k}" for k in range(8)],
    )
    assert (
        _compare(
            anomaly.HalfSpaceTrees(n_trees=5, height=6, window_size=64, seed=9), fresh, batches
        )
        >= 5
    )


def test_nan_goes_right_as_in_river_and_bad_shapes_raise() -> None:
    river = anomaly.HalfSpaceTrees(n_trees=3, height=4, window_size=20, seed=1)
    ours = BatchHalfSpaceTrees(4, n_trees=3, height=4, window_size=20, seed=1)
    x = _stream(1, 4, [30, 25, 40])
    for b in x:
        b[::5, 1] = np.nan
    assert _compare(river, ours, x) >= 3
    with pytest.raises(PipelinesError):
        ours.score_many(np.zeros((2, 3)))
    with pytest.raises(PipelinesError):
        BatchHalfSpaceTrees(2, names=["a"])
