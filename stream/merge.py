"""Merge several time-ordered streams of decoded chunks into one, in event-time order.

Each input yields :class:`~stream.decoders.base.DecodeResult` chunks whose records are
(nearly) time-ordered. :func:`merge_chunks` releases records only up to the smallest
"frontier" (latest time loaded) among inputs that still have data, so a file that
starts later never forces the engine to treat another file's records as late.

>>> import numpy as np
>>> from pipelines.records import FlowBatch
>>> from stream.decoders.base import DecodeResult
>>> def chunks(times):
...     for t in times:
...         yield DecodeResult(flows=FlowBatch.from_columns({"ts_start": np.array(t, float)}))
>>> out = merge_chunks([chunks([[1, 2], [5, 6]]), chunks([[3, 4], [7]])])
>>> [r.flows.ts_start.tolist() for r in out]
[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0]]
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import numpy as np

from pipelines.records import DnsBatch, FlowBatch
from stream.decoders.base import DecodeResult

__all__ = ["merge_chunks"]


def _max_ts(r: DecodeResult) -> float:
    m = -math.inf
    if len(r.flows):
        m = max(m, float(np.nanmax(r.flows.ts_start)))
    if len(r.dns):
        m = max(m, float(np.nanmax(r.dns.ts)))
    return m


def _split(r: DecodeResult, upto: float) -> tuple[DecodeResult, DecodeResult]:
    """(records with time <= upto, the rest); dead letters go with the first part."""
    fmask = r.flows.ts_start <= upto
    dmask = r.dns.ts <= upto
    now = DecodeResult(
        flows=r.flows.take(fmask), dns=r.dns.take(dmask), dead=r.dead, ignored=r.ignored
    )
    later = DecodeResult(flows=r.flows.take(~fmask), dns=r.dns.take(~dmask))
    return now, later


def merge_chunks(inputs: Iterable[Iterable[DecodeResult]]) -> Iterator[DecodeResult]:
    """Yield merged chunks in time order (see module docstring)."""
    iters = [iter(i) for i in inputs]
    if len(iters) == 1:
        for r in iters[0]:
            yield DecodeResult(
                flows=r.flows.sorted_by_time(),
                dns=r.dns.sorted_by_time(),
                dead=r.dead,
                ignored=r.ignored,
            )
        return
    held: list[DecodeResult] = [DecodeResult() for _ in iters]
    frontier = [-math.inf] * len(iters)
    alive = [True] * len(iters)

    def load(i: int) -> None:
        for r in iters[i]:
            held[i].extend(r)
            m = _max_ts(r)
            if m > frontier[i]:
                frontier[i] = m
            if len(r.flows) or len(r.dns):
                return
            if r.dead or r.ignored:  # pass bookkeeping on promptly
                return
        alive[i] = False
        frontier[i] = math.inf

    for i in range(len(iters)):
        load(i)
    while True:
        safe = min(frontier)
        parts: list[DecodeResult] = []
        for i in range(len(iters)):
            now, later = _split(held[i], safe)
            held[i] = later
            parts.append(now)
        flows = FlowBatch.concat([p.flows for p in parts]).sorted_by_time()
        dns = DnsBatch.concat([p.dns for p in parts]).sorted_by_time()
        dead = [d for p in parts for d in p.dead]
        ignored = sum(p.ignored for p in parts)
        if len(flows) or len(dns) or dead or ignored:
            yield DecodeResult(flows=flows, dns=dns, dead=dead, ignored=ignored)
        if not any(alive):
            return
        # advance the input that holds everyone back
        laggard = min((i for i in range(len(iters)) if alive[i]), key=lambda i: frontier[i])
        load(laggard)
