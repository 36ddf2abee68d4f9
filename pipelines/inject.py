"""Inject real captures into simulated traffic: shift records in time, remap addresses.

Pure helpers over :class:`~pipelines.records.FlowBatch` / :class:`~pipelines.records.DnsBatch`
(the type of the input is kept). They never mutate their input: they return a new batch
whose untouched columns are shared with the old one.

Typical use: decode a labelled pcap, :func:`remap` its attacker/victim addresses onto
simulated hosts of the right roles, :func:`shift` it to a chosen point of a simulated
background, re-annotate direction, and :func:`merge` it with the background.

>>> from pipelines.records import FlowBatch
>>> b = FlowBatch.from_columns({"ts_start": [100.0, 160.0], "ts_end": [101.0, 170.0],
...                             "src": ["172.18.39.5", "172.18.39.5"],
...                             "dst": ["172.18.38.5", "10.10.10.5"]})
>>> s = shift(b, 1000.0)
>>> s.ts_start.tolist(), s.ts_end.tolist(), b.ts_start.tolist()
([1100.0, 1160.0], [1101.0, 1170.0], [100.0, 160.0])
>>> r = remap(b, {"172.18.39.5": "10.1.0.20", "172.18.38.5": "10.2.1.10"})
>>> r.src.tolist(), r.dst.tolist()
(['10.1.0.20', '10.1.0.20'], ['10.2.1.10', '10.10.10.5'])
>>> shift_to(b, 5000.0).ts_start.tolist()
[5000.0, 5060.0]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar

import numpy as np

from pipelines.exceptions import PipelinesError
from pipelines.records import DnsBatch, FlowBatch

__all__ = ["InjectError", "merge", "remap", "shift", "shift_to", "span"]

B = TypeVar("B", FlowBatch, DnsBatch)


class InjectError(PipelinesError):
    """Raised when batches cannot be injected (e.g. mixing flow and DNS batches)."""


def _time_columns(batch: FlowBatch | DnsBatch) -> tuple[str, ...]:
    return ("ts_start", "ts_end") if isinstance(batch, FlowBatch) else ("ts",)


def shift(batch: B, seconds: float) -> B:
    """Move every timestamp of ``batch`` by ``seconds`` (may be negative).

    >>> from pipelines.records import DnsBatch
    >>> shift(DnsBatch.from_columns({"ts": [1.0, 2.5]}), -1.0).ts.tolist()
    [0.0, 1.5]
    """
    if not len(batch):
        return batch
    cols = {c: getattr(batch, c) + float(seconds) for c in _time_columns(batch)}
    return batch.replace(**cols)


def span(batch: FlowBatch | DnsBatch) -> tuple[float, float]:
    """(first, last) record time of ``batch`` (ts_start for flows); ``(nan, nan)`` if empty.

    >>> span(FlowBatch.from_columns({"ts_start": [5.0, 3.0]}))
    (3.0, 5.0)
    """
    t = getattr(batch, batch.TIME)
    if not len(t):
        return (float("nan"), float("nan"))
    return (float(np.nanmin(t)), float(np.nanmax(t)))


def shift_to(batch: B, start: float) -> B:
    """Shift ``batch`` so that its first record starts at ``start``."""
    first, _ = span(batch)
    if not len(batch):
        return batch
    return shift(batch, start - first)


def remap(batch: B, mapping: Mapping[str, str], columns: Sequence[str] = ("src", "dst")) -> B:
    """Replace addresses in ``columns`` by ``mapping[old]`` (others are kept).

    DNS answers (comma-separated IPs) are remapped too for a :class:`DnsBatch`.
    Direction flags are *not* recomputed: call
    :func:`pipelines.records.annotate_direction` afterwards.

    >>> from pipelines.records import DnsBatch
    >>> d = DnsBatch.from_columns({"ts": [1.0], "src": ["a"], "dst": ["b"], "answers": ["b,c"]})
    >>> d2 = remap(d, {"b": "x"})
    >>> d2.dst.tolist(), d2.answers.tolist()
    (['x'], ['x,c'])
    """
    if not len(batch) or not mapping:
        return batch
    table = dict(mapping)
    cols: dict[str, np.ndarray] = {}
    for c in columns:
        old = getattr(batch, c)
        new = np.empty(len(old), dtype=object)
        new[:] = [table.get(v, v) for v in old.tolist()]
        cols[c] = new
    if isinstance(batch, DnsBatch):
        ans = batch.answers.tolist()
        out = np.empty(len(ans), dtype=object)
        out[:] = [",".join(table.get(a, a) for a in v.split(",")) if v else v for v in ans]
        cols["answers"] = out
    return batch.replace(**cols)


def merge(*batches: B) -> B:
    """Concatenate batches of one type and sort by time (stable).

    >>> a = FlowBatch.from_columns({"ts_start": [1.0, 4.0]})
    >>> merge(a, FlowBatch.from_columns({"ts_start": [2.0]})).ts_start.tolist()
    [1.0, 2.0, 4.0]
    """
    if not batches:
        raise InjectError("merge needs at least one batch")
    kind = type(batches[0])
    if any(type(b) is not kind for b in batches):
        raise InjectError("merge: all batches must be of the same type")
    return kind.concat(list(batches)).sorted_by_time()
