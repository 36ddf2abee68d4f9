"""Small bounded-memory helpers: stable 64-bit string hashes and a tiny HyperLogLog.

Python's ``hash()`` is salted per process, so sketches hash with BLAKE2b: the same
names give the same registers in every process (pickles restore to identical results).

>>> h = HyperLogLog(p=6)
>>> h.add_hashes(hash64([f"n{i}.example.com" for i in range(1000)]))
>>> 800 < h.estimate() < 1200
True
>>> h2 = HyperLogLog(p=6)
>>> h2.add_hashes(hash64(["a", "a", "b"]))
>>> round(h2.estimate())
2
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

__all__ = ["HyperLogLog", "hash64", "hll_estimate", "hll_update"]


def hash64(values: Iterable[str]) -> np.ndarray:
    """Stable unsigned 64-bit hashes of strings."""
    out = [
        int.from_bytes(
            hashlib.blake2b(v.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little"
        )
        for v in values
    ]
    return np.array(out, dtype=np.uint64)


def _rank(h: np.ndarray, p: int) -> tuple[np.ndarray, np.ndarray]:
    idx = (h >> np.uint64(64 - p)).astype(np.int64)
    rest = (h << np.uint64(p)) | np.uint64(1 << (p - 1))  # guard bit bounds the rank
    # rank = number of leading zeros + 1 of the remaining bits
    lz = np.zeros(len(h), dtype=np.int64)
    x = rest.copy()
    for shift in (32, 16, 8, 4, 2, 1):
        top = x >> np.uint64(64 - shift)
        zero = top == 0
        lz += np.where(zero, shift, 0)
        x = np.where(zero, x << np.uint64(shift), x)
    return idx, (lz + 1).astype(np.uint8)


def hll_update(registers: np.ndarray, rows: np.ndarray, hashes: np.ndarray, p: int) -> None:
    """Add ``hashes`` to the HyperLogLog registers ``registers[rows[i]]`` (2-D, in place)."""
    if len(hashes) == 0:
        return
    idx, rank = _rank(hashes, p)
    np.maximum.at(registers, (rows, idx), rank)


def hll_estimate(registers: np.ndarray) -> np.ndarray:
    """Cardinality estimates of each row of a 2-D register array (with small-range correction)."""
    regs = np.atleast_2d(registers).astype(np.float64)
    m = regs.shape[1]
    alpha = (
        0.673 if m == 16 else 0.697 if m == 32 else 0.709 if m == 64 else 0.7213 / (1 + 1.079 / m)
    )
    raw = alpha * m * m / np.sum(np.exp2(-regs), axis=1)
    zeros = np.sum(regs == 0, axis=1)
    with np.errstate(divide="ignore"):
        linear = m * np.log(np.where(zeros > 0, m / np.maximum(zeros, 1), 1.0))
    return np.where((raw <= 2.5 * m) & (zeros > 0), linear, raw)


class HyperLogLog:
    """One HyperLogLog sketch of ``2**p`` one-byte registers."""

    def __init__(self, p: int = 6) -> None:
        self.p = p
        self.registers = np.zeros((1, 1 << p), dtype=np.uint8)

    def add_hashes(self, hashes: np.ndarray) -> None:
        hll_update(self.registers, np.zeros(len(hashes), dtype=np.int64), hashes, self.p)

    def estimate(self) -> float:
        return float(hll_estimate(self.registers)[0])
