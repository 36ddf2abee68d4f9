"""Tests of the bounded-memory helpers in pipelines.sketches."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np

from pipelines.sketches import CappedDistinct, HyperLogLog, LruIndex, factorize, hash32, mix64


def test_factorize_groups_in_order_of_first_appearance() -> None:
    vals = np.array(["b", "a", "b", "c", "a"], dtype=object)
    codes, uniq = factorize(vals)
    assert uniq == ["b", "a", "c"] and codes.tolist() == [0, 1, 0, 2, 1]
    assert [uniq[c] for c in codes] == vals.tolist()


def test_hash32_is_stable_across_processes() -> None:
    here = hash32(["10.0.0.1", "2001:db8::1"]).tolist()
    code = (
        "from pipelines.sketches import hash32; print(hash32(['10.0.0.1', '2001:db8::1']).tolist())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "123", "PATH": ""}, cwd=".")  # fmt: skip
    assert out.stdout.strip() == str(here) and 0 not in here


def test_capped_distinct_counts_exactly_then_saturates() -> None:
    c = CappedDistinct(cap=4)
    c.resize(3)
    rng = np.random.default_rng(0)
    truth: list[set[int]] = [set(), set(), set()]
    for _ in range(20):
        rows = rng.integers(0, 3, 5)
        vals = rng.integers(1, 7, 5).astype(np.uint32)
        c.add(rows, vals)
        for r, v in zip(rows.tolist(), vals.tolist(), strict=True):
            truth[r].add(v)
    assert c.count(np.arange(3)).tolist() == [min(len(t), 4) for t in truth]
    c.clear(np.array([1]))
    assert c.count(np.array([1])).tolist() == [0]
    assert (
        pickle.loads(pickle.dumps(c)).count(np.arange(3)).tolist() == c.count(np.arange(3)).tolist()
    )


def test_lru_index_is_capped_and_evicts_least_recent() -> None:
    lru = LruIndex(capacity=100, evict_fraction=0.1)
    for t in range(10):
        rows, _new, _ev = lru.lookup([f"k{t}-{i}" for i in range(30)], tick=t)
        assert len(lru) <= 100 and (rows >= 0).all()
    assert len(lru) <= 100 and len(lru.keys) <= 100
    assert all(int(str(k)[1 : str(k).index("-")]) >= 6 for k in lru.index)  # oldest went first
    assert (lru.get([f"k{t}-{i}" for t in (7, 8, 9) for i in range(30)]) >= 0).all()
    assert (lru.get(["k9-0", "k0-0"]) >= 0).tolist() == [True, False]
    keep = lru.get(["k9-0"])[0]
    rows, new, _ = lru.lookup(["k9-0"], tick=11)
    assert rows[0] == keep and not new[0]


def test_hyperloglog_error_and_merge() -> None:
    a, b = HyperLogLog(p=12), HyperLogLog(p=12)
    a.add(mix64(np.arange(0, 60_000, dtype=np.uint64)))
    b.add(mix64(np.arange(30_000, 90_000, dtype=np.uint64)))
    assert abs(a.count() / 60_000 - 1) < 0.05
    a.merge(b)
    assert abs(a.count() / 90_000 - 1) < 0.05
    small = HyperLogLog(p=10)
    small.add(mix64(np.arange(50, dtype=np.uint64)))
    assert abs(small.count() - 50) <= 3
    assert small.registers.nbytes == 1024
