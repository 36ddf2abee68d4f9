"""Tests of the bounded-memory helpers in pipelines.sketches."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np

from pipelines.sketches import (
    CappedDistinct,
    CappedKeySets,
    HostIndex,
    HyperLogLog,
    LruIndex,
    factorize,
    hash32,
    mix64,
)


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


def test_capped_key_sets_behave_like_dense_lru_rows() -> None:
    """Pooled blocks give the same membership as one dense (rows, cap) matrix with -inf
    stamps and argmin replacement, through growth, compaction, clearing and pickling."""
    rng = np.random.default_rng(5)
    rows, cap = 300, 16
    sets = CappedKeySets(cap)
    sets.resize(rows)
    keys = np.zeros((rows, cap), np.int64)
    stamps = np.full((rows, cap), -np.inf)
    for step in range(20_000):
        r = int(rng.integers(rows))
        k = int(rng.integers(1, 40))
        t = float(step // 7)
        hit = np.flatnonzero(keys[r] == k)
        if len(hit):
            stamps[r, hit[0]] = t
        else:
            slot = int(np.argmin(stamps[r]))
            keys[r, slot], stamps[r, slot] = k, t
        assert sets.touch(r, k, t) == (not len(hit))
        if step % 5000 == 4999:
            gone = rng.choice(rows, 40, replace=False)
            sets.clear(gone)
            keys[gone], stamps[gone] = 0, -np.inf
            sets = pickle.loads(pickle.dumps(sets))
    for r in range(rows):
        for k in range(1, 40):
            assert sets.contains(r, k) == bool((keys[r] == k).any())
        assert sets.count(r) == int(np.isfinite(stamps[r]).sum())
    small = CappedKeySets(64)  # 5 keys per row: ~8 slots of 16 bytes, not 64
    small.resize(5000)
    for r in range(5000):
        for k in range(1, 6):
            small.touch(r, k, 1.0)
    assert small.nbytes() < 5000 * 8 * 16 * 1.3


def test_host_index_frees_a_row_only_when_every_holder_released_it() -> None:
    ix = HostIndex()
    a, b = ix.acquire("10.0.0.1", 1), ix.acquire("10.0.0.2", 1)
    assert ix.acquire("10.0.0.1", 2) == a and ix.get("10.0.0.2", 2) == -1
    ix.release(np.array([a, b]), 1)
    assert ix.get("10.0.0.1", 2) == a and ix.get("10.0.0.2", 1) == -1 and len(ix) == 1
    assert ix.acquire("10.0.0.3", 4) == b  # the freed row is reused
    assert ix.members(2).tolist() == [a] and ix.members(4).tolist() == [b]
