"""Vectorised :func:`~pipelines.detectors._periodicity.regularity` over many series at once.

Same statistics, same floating-point operations in the same order, so the results are
bit-for-bit those of the one-series function (checked by ``tests/test_beacon_periodicity.py``
on random and adversarial series): series are padded into ``(series, check-ins)`` arrays,
quantiles are read from row-wise sorts, and every sum that the scalar code takes with
``ndarray.sum`` is recomputed with numpy's own pairwise order (:func:`_np_sum_rows`), every
Python ``sum`` left to right. Series longer than 129 connections fall back to the scalar
function (the pairwise emulation covers numpy's 128-element block).

>>> import numpy as np
>>> from pipelines.detectors._periodicity import regularity
>>> rng = np.random.default_rng(1)
>>> series = [(np.cumsum(60 + rng.uniform(-15, 15, k)), rng.lognormal(7, 1, k)) for k in (2, 30, 90)]
>>> many = regularity_many(series)
>>> many == [regularity(t, s) for t, s in series]
True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pipelines.detectors._periodicity import regularity

__all__ = ["regularity_flat", "regularity_many"]

_BLOCK = 128  # numpy's pairwise-summation block (PW_BLOCKSIZE)


def _np_sum_rows(a: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Row sums of the first ``n[i]`` values of each row, bit-identical to ``a[i, :n[i]].sum()``.

    numpy sums a contiguous float64 array of ``n <= 128`` values with 8 accumulators over
    whole blocks of 8, combined pairwise, then adds the remainder one by one (``n < 8``:
    one by one from 0). Padding beyond ``n`` is masked to 0, which adds exactly nothing.

    >>> x = np.random.default_rng(0).lognormal(3, 2, (3, 40))
    >>> n = np.array([5, 17, 40])
    >>> [float(v) for v in _np_sum_rows(x, n)] == [float(x[i, : n[i]].sum()) for i in range(3)]
    True
    """
    s = len(a)
    if s == 0:
        return np.zeros(0)
    width = min(a.shape[1], _BLOCK)
    full = max(8, -(-width // 8) * 8) + 8  # whole blocks, plus room for the remainder
    w = np.zeros((s, full))
    w[:, :width] = a[:, :width]
    m = np.where(n >= 8, n - n % 8, 0)
    col = np.arange(full)
    blocks = np.where(col[None, :] < m[:, None], w, 0.0).reshape(s, full // 8, 8)
    r = blocks[:, 0, :].copy()
    for k in range(1, full // 8):
        r += blocks[:, k, :]
    res = ((r[:, 0] + r[:, 1]) + (r[:, 2] + r[:, 3])) + ((r[:, 4] + r[:, 5]) + (r[:, 6] + r[:, 7]))
    rows = np.arange(s)
    for t in range(8):
        j = m + t
        res = res + np.where(j < n, w[rows, np.minimum(j, full - 1)], 0.0)
    return res


def _compact(a: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the kept values moved to the front (order kept), zero padded; and their counts."""
    cnt = np.count_nonzero(keep, axis=1)
    out = np.zeros_like(a)
    r, c = np.nonzero(keep)
    pos = np.cumsum(keep, axis=1)[r, c] - 1
    out[r, pos] = a[r, c]
    return out, cnt


def _sorted_rows(a: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Each row's first ``n`` values sorted (padding sorts last as +inf)."""
    col = np.arange(a.shape[1])
    return np.sort(np.where(col[None, :] < n[:, None], a, np.inf), axis=1)


def _quantile_rows(xs: np.ndarray, n: np.ndarray, q: float) -> np.ndarray:
    """``_periodicity._quantile`` of each sorted row of length ``n`` (same arithmetic)."""
    pos = q * (n - 1).astype(np.float64)
    lo = pos.astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    rows = np.arange(len(xs))
    a, b = xs[rows, np.maximum(lo, 0)], xs[rows, np.maximum(hi, 0)]
    return a + (b - a) * (pos - lo)


def _bowley_madm_rows(x: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row-wise ``_periodicity.bowley_madm`` (rows of length ``n >= 1``)."""
    xs = _sorted_rows(x, n)
    q1, q2, q3 = (_quantile_rows(xs, n, q) for q in (0.25, 0.5, 0.75))
    iqr = q3 - q1
    with np.errstate(divide="ignore", invalid="ignore"):
        skew = np.where(iqr <= 1e-9 * np.maximum(np.abs(q2), 1.0), 0.0, (q1 + q3 - 2 * q2) / iqr)
        dev = _sorted_rows(np.abs(xs - q2[:, None]), n)
        mad = _quantile_rows(dev, n, 0.5)
        madm = np.where(q2 <= 0, 0.0, 1.0 - np.minimum(1.0, mad / q2))
    return 1.0 - np.minimum(1.0, np.abs(skew)), madm, q2


def _mean_std_rows(x: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise ``_periodicity._mean_std`` (zero padded rows of length ``n``)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = _np_sum_rows(x, n) / n
        d = x - mean[:, None]
        return mean, np.sqrt(_np_sum_rows(d * d, n) / n)


def _merge(
    ts: np.ndarray, sz: np.ndarray, lens: np.ndarray, gap: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``merge_bursts`` of concatenated series, padded: (times, sizes, check-ins per series)."""
    first = np.zeros(len(ts), dtype=bool)
    first[np.cumsum(lens)[:-1]] = True
    first[0] = True
    new = first.copy()
    new[1:] |= (ts[1:] - ts[:-1]) >= gap
    starts = np.flatnonzero(new)
    t, s = ts[starts], np.add.reduceat(sz, starts)
    row = np.repeat(np.arange(len(lens)), lens)[starts]
    cnt = np.bincount(row, minlength=len(lens))
    col = np.arange(len(starts)) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    width = max(1, int(cnt.max(initial=1)))
    tt, ss = np.zeros((len(lens), width)), np.zeros((len(lens), width))
    tt[row, col], ss[row, col] = t, s
    return tt, ss, cnt


def _intervals(
    iat: np.ndarray, ni: np.ndarray, max_missed: float, max_fold: int, fold_min: int
) -> dict[str, np.ndarray]:
    """Row-wise ``_periodicity._interval_scores`` (max_early 0.1)."""
    col = np.arange(iat.shape[1])
    valid = col[None, :] < ni[:, None]
    skew, madm, period = _bowley_madm_rows(iat, ni)
    ok = period > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        k = np.maximum(1.0, np.round(iat / np.where(ok, period, 1.0)[:, None]))
    outage = (k > max_fold) & valid
    n_out = np.count_nonzero(outage, axis=1)
    drop = (n_out > 0) & (ni - n_out >= 2)
    keep = valid & ~(outage & drop[:, None])
    used, nu = _compact(iat, keep)
    ku, _ = _compact(k, keep)
    missed = np.count_nonzero((ku > 1) & (col[None, :] < nu[:, None]), axis=1) / nu
    mean, std = _mean_std_rows(used, nu)
    with np.errstate(divide="ignore", invalid="ignore"):
        cv = np.where(mean > 0, std / mean, 1.0)
        early_n = np.count_nonzero((used < 0.5 * period[:, None]) & (col[None, :] < nu[:, None]), 1)
        early = early_n / nu
        fold = ok & (missed > 0) & (missed <= max_missed) & (nu >= fold_min) & (early <= 0.1)
        folded = np.zeros(len(iat), dtype=bool)
        if fold.any():
            fi = np.flatnonzero(fold)
            f = np.where(
                col[None, :] < nu[fi, None], used[fi] / np.where(ku[fi] > 0, ku[fi], 1.0), 0
            )
            f_mean, f_std = _mean_std_rows(f, nu[fi])
            f_cv = f_std / f_mean
            better = f_cv < cv[fi]
            if better.any():
                bi = fi[better]
                fb_skew, fb_madm, fb_period = _bowley_madm_rows(f[better], nu[bi])
                skew[bi], madm[bi], period[bi] = fb_skew, fb_madm, fb_period
                cv[bi] = f_cv[better]
                folded[bi] = True
    gaps, n_gaps = _compact(iat, outage)
    gap_time = np.where(n_out > 0, _np_sum_rows(gaps, n_gaps), 0.0)
    bad = ~ok  # period <= 0: the scalar code returns early with these values
    missed = np.where(bad, 0.0, missed)
    n_out = np.where(bad, 0, n_out)
    cv = np.where(bad, 1.0, cv)
    gap_time = np.where(bad, 0.0, gap_time)
    folded &= ~bad
    return {"skew": skew, "madm": madm, "period": period, "missed": missed, "outages": n_out,
            "folded": folded, "cv": cv, "gap_time": gap_time}  # fmt: skip


def _histograms(t: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row-wise ``_periodicity._histogram_scores``."""
    s = len(t)
    rows = np.arange(s)
    bins = np.minimum(np.maximum(n // 3, 4), 24)
    span = t[rows, n - 1] - t[:, 0]
    ok = span > 0
    col = np.arange(t.shape[1])
    valid = (col[None, :] < n[:, None]) & ok[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = bins / np.where(ok, span, 1.0)
        pos = ((t - t[:, :1]) * scale[:, None]).astype(np.int64)
    pos = np.minimum(np.where(valid, pos, 0), (bins - 1)[:, None])
    r, c = np.nonzero(valid)
    counts = np.bincount(r * 24 + pos[r, c], minlength=s * 24).reshape(s, 24)
    mean = n / bins
    var = np.zeros(s)
    two, half = np.full(s, 2.0), np.full(s, 0.5)
    for b in range(24):  # Python's left-to-right sum over the bins
        # np.power with an array exponent is libm pow, as Python's ``x ** 2`` (not x * x,
        # which differs in the last bit for ~0.1 % of values; ``** 0.5`` is not sqrt either)
        sq = np.power(counts[:, b] - mean, two)
        var = var + np.where(b < bins, sq, 0.0)
    var = var / bins
    with np.errstate(divide="ignore", invalid="ignore"):
        sd = np.power(var, half)
        cv_score = np.where(mean > 0, 1.0 - np.minimum(1.0, sd / mean), 0.0)
    in_bins = np.arange(24)[None, :] < bins[:, None]
    top = int(counts.max(initial=0)) + 1
    nz = in_bins & (counts > 0)
    rr, cc = np.nonzero(nz)
    freq = np.bincount(rr * top + counts[rr, cc], minlength=s * top).reshape(s, top)
    m1 = np.argmax(freq, axis=1)  # most frequent count, smallest on ties
    hits = freq[rows, m1].astype(np.int64)
    second = freq.copy()
    second[rows, m1] = -1
    m2 = np.argmax(second, axis=1)
    near = np.abs(m2 - m1) <= np.maximum(1, np.round(0.25 * m1))
    hits = hits + np.where((second[rows, m2] > 0) & near, freq[rows, m2], 0)
    hits = hits + (bins >= 12)
    bimodal = np.minimum(1.0, hits / bins)
    return np.where(ok, cv_score, 0.0), np.where(ok, bimodal, 0.0), bins


def regularity_many(
    series: Sequence[tuple[np.ndarray, np.ndarray]], **kw: Any
) -> list[dict[str, Any]]:
    """``[regularity(ts, sizes, **kw) for ts, sizes in series]``, computed together."""
    lens = np.array([len(t) for t, _ in series], dtype=np.int64)
    if len(series) == 0:
        return []
    ts = np.concatenate([np.asarray(t, dtype=np.float64) for t, _ in series])
    sz = np.concatenate([np.asarray(s, dtype=np.float64) for _, s in series])
    return regularity_flat(ts, sz, lens, **kw)


def regularity_flat(
    ts: np.ndarray,
    sz: np.ndarray,
    lens: np.ndarray,
    *,
    merge_gap: float = 0.5,
    max_missed: float = 0.3,
    max_fold: int = 4,
    fold_min: int = 32,
    hour_span: float = 7200.0,
    weights: tuple[float, float, float, float] = (0.35, 0.15, 0.25, 0.25),
) -> list[dict[str, Any]]:
    """:func:`regularity` of each series of the concatenated, per-series sorted ``ts`` / ``sz``
    (float64; series ``i`` has ``lens[i] >= 1`` connections)."""
    kw: dict[str, Any] = dict(merge_gap=merge_gap, max_missed=max_missed, max_fold=max_fold,
                              fold_min=fold_min, hour_span=hour_span, weights=weights)  # fmt: skip
    out: list[dict[str, Any]] = [{} for _ in range(len(lens))]
    ends = np.cumsum(lens)
    big = lens > _BLOCK + 1
    for i in np.flatnonzero(big).tolist():
        a, b = int(ends[i] - lens[i]), int(ends[i])
        out[i] = regularity(ts[a:b], sz[a:b], **kw)
    small = np.flatnonzero(~big)
    if len(small) == 0:
        return out
    if big.any():
        keep = np.repeat(~big, lens)
        ts, sz, lens = ts[keep], sz[keep], lens[small]
    small_l = small.tolist()
    t, s, n = _merge(ts, sz, lens, merge_gap)
    live = np.flatnonzero(n >= 3)
    for j in np.flatnonzero(n < 3).tolist():
        out[small_l[j]] = {"checkins": int(n[j]), "score": 0.0, "period": 0.0}
    if len(live) == 0:
        return out
    t, s, n = t[live], s[live], n[live]
    rows = np.arange(len(live))
    iat = t[:, 1:] - t[:, :-1]
    ni = n - 1
    iv = _intervals(iat, ni, max_missed, max_fold, fold_min)
    half = ni // 2
    col = np.arange(iat.shape[1])
    p1 = _quantile_rows(_sorted_rows(iat, half), half, 0.5)
    second = iat[rows[:, None], np.minimum(col[None, :] + half[:, None], iat.shape[1] - 1)]
    p2 = _quantile_rows(_sorted_rows(second, ni - half), ni - half, 0.5)
    hi, lo = np.maximum(p1, p2), np.minimum(p1, p2)
    with np.errstate(divide="ignore", invalid="ignore"):
        halves = np.where(hi > 0, lo / hi, 0.0)
    skew, madm, period, cv = iv["skew"], iv["madm"], iv["period"], iv["cv"]
    cv_score = np.maximum(0.0, 1.0 - cv)
    ts_score = (skew + madm + cv_score) / 3
    s_skew, s_madm, s_median = _bowley_madm_rows(s, n)
    ds_score = (s_skew + s_madm) / 2
    h_cv, bimodal, bins = _histograms(t, n)
    hist_score = np.maximum(h_cv, bimodal)
    span = t[rows, n - 1] - t[:, 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        coverage = np.where(span > 0, 1.0 - iv["gap_time"] / span, 0.0)
    hours = np.floor(t / 3600.0)
    hour_total = (hours[rows, n - 1] - hours[:, 0]).astype(np.int64) + 1
    change = (hours[:, 1:] != hours[:, :-1]) & (col[None, :] < ni[:, None])
    consistency = (1 + np.count_nonzero(change, axis=1)) / hour_total
    dur_score = np.where(span >= hour_span, np.maximum(coverage, consistency), coverage)
    w = weights
    score = (w[0] * ts_score + w[1] * ds_score + w[2] * hist_score + w[3] * dur_score) / sum(w)
    cols = {
        "score": score, "period": period, "jitter": 1.0 - madm, "span": span,
        "ts_score": ts_score, "ts_skew": skew, "ts_madm": madm, "ts_cv": cv, "halves": halves,
        "ds_score": ds_score, "ds_skew": s_skew, "ds_madm": s_madm, "size_median": s_median,
        "hist_score": hist_score, "hist_cv": h_cv, "hist_bimodal": bimodal,
    }  # fmt: skip
    lists = {k: v.tolist() for k, v in cols.items()}
    tail = {"dur_score": dur_score.tolist(), "coverage": coverage.tolist(),
            "consistency": consistency.tolist(), "missed": iv["missed"].tolist()}  # fmt: skip
    n_l, bins_l, outages_l = n.tolist(), bins.tolist(), iv["outages"].tolist()
    folded_l = iv["folded"].tolist()
    head = ("score", "period", "jitter", "span", "ts_score", "ts_skew", "ts_madm", "ts_cv",
            "halves", "ds_score", "ds_skew", "ds_madm", "size_median", "hist_score", "hist_cv",
            "hist_bimodal")  # fmt: skip
    for j in range(len(live)):
        d: dict[str, Any] = {"checkins": n_l[j]}
        for k in head:
            d[k] = lists[k][j]
        d["hist_bins"] = bins_l[j]
        for k in ("dur_score", "coverage", "consistency", "missed"):
            d[k] = tail[k][j]
        d["outages"] = outages_l[j]
        d["folded"] = folded_l[j]
        out[small_l[int(live[j])]] = d
    return out
