"""RITA-style regularity score of one connection series (timestamps and sizes).

Sub-scores, each in ``[0, 1]`` (1 = perfectly regular):

* **interval** (``ts``): mean of ``1 - |Bowley skew|``, ``1 - MAD/median`` and
  ``1 - CV`` of the inter-arrival times (the CV is the most sample-efficient of the three
  on short series; callers gate on it). Gaps longer than ``max_fold`` periods are
  *outages* (host off) and are left out. Missed check-ins are tolerated by *folding*:
  when at most ``max_missed`` of the gaps are ~k× the median period (k ≥ 2) and there are
  at least ``fold_min`` gaps and at most 10 % of the gaps are shorter than half a period,
  they are divided by their multiple if that lowers the CV (Poisson traffic has ~35 %
  multiple gaps and ~29 % short ones, so folding cannot make it look periodic).
  ``halves`` is the ratio of the median gap of the first and second half of the series.
* **size** (``ds``): the same two statistics on bytes per check-in.
* **histogram**: connection starts binned over the pair's observed span
  (``clip(n // 3, 4, 24)`` bins, so short dense series get meaningful counts); the max
  of ``1 - CV`` of bin counts and the *two-mode fit* (share of bins whose count is one of
  the two most common non-zero counts, adjacent counts only) that tolerates jittered
  sleep alternating between ⌊rate⌋ and ⌈rate⌉ per bin.
* **duration**: coverage ``1 - outage time / span`` and, once the span is at least
  ``hour_span`` seconds, the max of that and the share of clock hours in the span with
  activity (consistency). Coverage is measured against the pair's own period, so a short
  dense series (22 check-ins in 67 s) is fully covered and is not vetoed; long sleeps
  (1 h over days) are judged on hours.

``score`` is the weighted mean ``(w_ts·ts + w_ds·ds + w_hist·hist + w_dur·dur) / Σw``.

>>> import numpy as np
>>> rng = np.random.default_rng(1)
>>> t = np.cumsum(60 + rng.uniform(-15, 15, 40))
>>> r = regularity(t, np.full(40, 900.0))
>>> round(r["period"]), r["score"] > 0.8
(60, True)
>>> p = np.cumsum(rng.exponential(60, 40))
>>> q = regularity(p, rng.lognormal(7, 1, 40))
>>> q["ts_cv"] > 0.4, q["score"] < r["score"] - 0.15
(True, True)
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np

__all__ = ["bowley_madm", "merge_bursts", "regularity"]


def _quantile(xs: np.ndarray, q: float) -> float:
    """Linear-interpolated quantile of a sorted array (numpy's default method)."""
    pos = q * (len(xs) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return float(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo))


def _mean_std(x: np.ndarray) -> tuple[float, float]:
    """``(x.mean(), x.std())`` computed the way numpy does (same bits), without its overhead.

    >>> _mean_std(np.array([1.0, 2.0, 4.0])) == (np.mean([1.0, 2, 4]), np.std([1.0, 2, 4]))
    True
    """
    n = len(x)
    mean = float(x.sum()) / n
    d = x - mean
    return mean, math.sqrt(float((d * d).sum()) / n)


def bowley_madm(x: np.ndarray) -> tuple[float, float, float]:
    """``(1 - |Bowley skew|, 1 - MAD/median, median)`` of ``x`` (scores clipped to [0, 1]).

    >>> bowley_madm(np.array([10.0, 10, 10, 10]))
    (1.0, 1.0, 10.0)
    """
    xs = np.sort(x)
    q1, q2, q3 = _quantile(xs, 0.25), _quantile(xs, 0.5), _quantile(xs, 0.75)
    iqr = q3 - q1
    skew = 0.0 if iqr <= 1e-9 * max(abs(q2), 1.0) else (q1 + q3 - 2 * q2) / iqr
    if q2 <= 0:
        return 1.0 - min(1.0, abs(skew)), 0.0, q2
    mad = _quantile(np.sort(np.abs(xs - q2)), 0.5)
    return 1.0 - min(1.0, abs(skew)), 1.0 - min(1.0, mad / q2), q2


def merge_bursts(ts: np.ndarray, sizes: np.ndarray, gap: float) -> tuple[np.ndarray, np.ndarray]:
    """Merge connections starting less than ``gap`` s after the previous one into one check-in.

    >>> merge_bursts(np.array([0.0, 0.1, 5.0, 10.0, 10.2]), np.array([1.0, 2, 3, 4, 5]), 0.5)
    (array([ 0.,  5., 10.]), array([3., 3., 9.]))
    """
    if len(ts) < 2:
        return ts, sizes
    new = np.empty(len(ts), dtype=bool)
    new[0] = True
    new[1:] = (ts[1:] - ts[:-1]) >= gap
    starts = np.flatnonzero(new)
    return ts[starts], np.add.reduceat(sizes, starts)


def _interval_scores(
    iat: np.ndarray, max_missed: float, max_fold: int, fold_min: int, max_early: float = 0.1
) -> dict[str, Any]:
    skew, madm, period = bowley_madm(iat)
    if period <= 0:
        return {
            "skew": skew,
            "madm": madm,
            "period": period,
            "missed": 0.0,
            "outages": 0,
            "folded": False,
            "cv": 1.0,
            "gap_time": 0.0,
        }
    k = np.maximum(1.0, np.round(iat / period))
    outage = k > max_fold
    n_out = int(np.count_nonzero(outage))
    if n_out and len(iat) - n_out >= 2:
        keep = ~outage
        used, ku = iat[keep], k[keep]
    else:
        used, ku = iat, k
    missed = np.count_nonzero(ku > 1) / len(ku)
    mean, std = _mean_std(used)
    cv = std / mean if mean > 0 else 1.0
    folded = False
    early = np.count_nonzero(used < 0.5 * period) / len(used)  # Poisson: ~29 %, a beacon: ~0
    if 0 < missed <= max_missed and len(used) >= fold_min and early <= max_early:
        f = used / ku
        f_mean, f_std = _mean_std(f)
        f_cv = f_std / f_mean
        if f_cv < cv:
            skew, madm, period = bowley_madm(f)
            cv, folded = f_cv, True
    gap_time = float(iat[outage].sum()) if n_out else 0.0
    return {
        "skew": skew,
        "madm": madm,
        "period": period,
        "missed": missed,
        "outages": n_out,
        "folded": folded,
        "cv": cv,
        "gap_time": gap_time,
    }


def _histogram_scores(ts: np.ndarray) -> tuple[float, float, int]:
    n = len(ts)
    bins = min(max(n // 3, 4), 24)
    span = float(ts[-1] - ts[0])
    if span <= 0:
        return 0.0, 0.0, bins
    pos = np.minimum(((ts - ts[0]) * (bins / span)).astype(np.int64), bins - 1)
    counts = np.bincount(pos, minlength=bins).tolist()
    mean = sum(counts) / bins
    var = sum((c - mean) ** 2 for c in counts) / bins
    cv_score = 1.0 - min(1.0, var**0.5 / mean) if mean > 0 else 0.0
    freq = Counter(c for c in counts if c > 0)
    ranked = sorted(freq.items(), key=lambda kv: (-kv[1], kv[0]))
    m1 = ranked[0][0]
    modes = {m1}
    if len(ranked) > 1 and abs(ranked[1][0] - m1) <= max(1, round(0.25 * m1)):
        modes.add(ranked[1][0])
    hits = sum(1 for c in counts if c in modes)
    if bins >= 12:
        hits += 1  # forgive one outlier bin on long histograms
    bimodal = min(1.0, hits / bins)
    return cv_score, bimodal, bins


def regularity(
    ts: np.ndarray,
    sizes: np.ndarray,
    *,
    merge_gap: float = 0.5,
    max_missed: float = 0.3,
    max_fold: int = 4,
    fold_min: int = 32,
    hour_span: float = 7200.0,
    weights: tuple[float, float, float, float] = (0.35, 0.15, 0.25, 0.25),
) -> dict[str, Any]:
    """Score a series of connection start times ``ts`` (sorted) with bytes ``sizes``.

    Returns the sub-scores, the final ``score``, the period estimate (median gap of the
    folded series, seconds) and the jitter (MAD/median of the gaps).
    """
    t, s = merge_bursts(
        np.asarray(ts, dtype=np.float64), np.asarray(sizes, dtype=np.float64), merge_gap
    )
    n = len(t)
    out: dict[str, Any] = {"checkins": n, "score": 0.0, "period": 0.0}
    if n < 3:
        return out
    iat = t[1:] - t[:-1]
    iv = _interval_scores(iat, max_missed, max_fold, fold_min)
    half = len(iat) // 2
    p1, p2 = _quantile(np.sort(iat[:half]), 0.5), _quantile(np.sort(iat[half:]), 0.5)
    halves = min(p1, p2) / max(p1, p2) if max(p1, p2) > 0 else 0.0
    skew, madm, period, missed, cv = iv["skew"], iv["madm"], iv["period"], iv["missed"], iv["cv"]
    cv_score = max(0.0, 1.0 - cv)
    ts_score = (skew + madm + cv_score) / 3
    s_skew, s_madm, s_median = bowley_madm(s)
    ds_score = (s_skew + s_madm) / 2
    h_cv, bimodal, bins = _histogram_scores(t)
    hist_score = max(h_cv, bimodal)
    span = float(t[-1] - t[0])
    coverage = 1.0 - iv["gap_time"] / span if span > 0 else 0.0
    hours = np.floor(t / 3600.0)
    hour_total = int(hours[-1] - hours[0]) + 1
    consistency = (1 + int(np.count_nonzero(hours[1:] != hours[:-1]))) / hour_total  # t is sorted
    dur_score = max(coverage, consistency) if span >= hour_span else coverage
    w = weights
    score = (w[0] * ts_score + w[1] * ds_score + w[2] * hist_score + w[3] * dur_score) / sum(w)
    out.update(
        score=float(score),
        period=float(period),
        jitter=float(1.0 - madm),
        span=span,
        ts_score=float(ts_score),
        ts_skew=float(skew),
        ts_madm=float(madm),
        ts_cv=float(cv),
        halves=float(halves),
        ds_score=float(ds_score),
        ds_skew=float(s_skew),
        ds_madm=float(s_madm),
        size_median=float(s_median),
        hist_score=float(hist_score),
        hist_cv=float(h_cv),
        hist_bimodal=float(bimodal),
        hist_bins=bins,
        dur_score=float(dur_score),
        coverage=float(coverage),
        consistency=float(consistency),
        missed=float(missed),
        outages=iv["outages"],
        folded=iv["folded"],
    )
    return out
