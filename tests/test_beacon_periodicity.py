"""The vectorised periodicity statistics and prevalence counts equal the one-series reference
bit for bit (beacon findings must not change when the implementation is vectorised)."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.detectors._periodicity import regularity
from pipelines.detectors._periodicity_many import regularity_flat, regularity_many
from pipelines.detectors.beacon import BeaconDetector


def _series(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    k = int(rng.integers(1, 140))  # beyond 129 the scalar fallback is used
    kind = int(rng.integers(0, 10))
    t: np.ndarray
    if kind == 0:
        t = np.cumsum(rng.exponential(60, k))
    elif kind == 1:
        t = np.cumsum(60 + rng.uniform(-15, 15, k))
    elif kind == 2:  # missed check-ins (folding)
        t = np.cumsum(
            60 * (1 + (rng.random(k) < 0.2) * rng.integers(1, 3, k)) + rng.normal(0, 1, k)
        )
    elif kind == 3:  # bursts merged below merge_gap
        t = np.cumsum(rng.choice([0.1, 0.2, 30, 3000], k))
    elif kind == 4:  # zero span
        t = np.full(k, 5.0)
    elif kind == 5:  # outages
        t = np.cumsum(np.where(rng.random(k) < 0.05, 20000, 300) + rng.normal(0, 3, k))
    elif kind == 6:  # ties
        t = np.round(np.cumsum(rng.exponential(2, k)))
    elif kind == 7:  # uneven histogram counts
        t = rng.uniform(0, 1000, k)
    elif kind == 8:
        t = rng.choice(np.arange(0, 5000, 7.3), k)
    else:  # hourly over days (hour consistency)
        t = 1.7e9 + np.cumsum(3600 * (1 + rng.uniform(-0.2, 0.2, k)))
    sizes = [np.zeros(k), np.full(k, 900.0), rng.lognormal(7, 1, k), rng.integers(0, 3, k) * 100.0]
    s = sizes[int(rng.integers(0, 4))].astype(np.float32).astype(np.float64)
    return np.sort(t), s


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("kw", [{}, {"fold_min": 8, "max_missed": 0.5, "merge_gap": 0.0}])
def test_regularity_many_is_bit_identical(seed: int, kw: dict[str, float]) -> None:
    rng = np.random.default_rng(seed)
    series = [_series(rng) for _ in range(600)]
    ref = [regularity(t, s, **kw) for t, s in series]  # type: ignore[arg-type]
    got = regularity_many(series, **kw)  # type: ignore[arg-type]
    assert [list(d) for d in got] == [list(d) for d in ref]  # same keys, same order
    assert got == ref
    assert any(d.get("folded") for d in ref) and any(d.get("outages") for d in ref)


def test_regularity_flat_of_nothing_and_of_short_series() -> None:
    assert regularity_many([]) == []
    one = regularity_flat(np.array([1.0, 1.2]), np.array([5.0, 6.0]), np.array([2]))
    assert one == [{"checkins": 1, "score": 0.0, "period": 0.0}]


def test_same_counts_equal_the_set_union() -> None:
    rng = np.random.default_rng(7)
    det = BeaconDetector()
    now = 1e6
    hosts = [f"10.0.0.{i}" for i in range(40)]
    for _ in range(50):
        known = {h: (float(rng.choice([60.0, 80.0, 300.0])), now - float(rng.uniform(0, 9e5)))
                 for h in rng.choice(hosts, int(rng.integers(0, 30)), replace=False).tolist()}  # fmt: skip
        cur = {h: (float(rng.choice([59.0, 84.0, 420.0])), now)
               for h in rng.choice(hosts, int(rng.integers(0, 10)), replace=False).tolist()}  # fmt: skip
        srcs = rng.choice(hosts, 5).tolist()
        periods = rng.choice([60.0, 75.0, 300.0, 1000.0], 5).tolist()
        want = [
            len(det._same_schedule(known, s, p, now) | det._same_schedule(cur, s, p, now))
            for s, p in zip(srcs, periods, strict=True)
        ]
        assert det._same_counts((known, cur), srcs, periods, now) == want
