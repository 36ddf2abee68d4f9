"""Per-host warm-up by first-seen time, shared by the detectors that judge a host's own series.

A detector mixing this in keeps ``hosts`` (host -> first event time seen, insertion
ordered, capped at ``max_hosts`` by dropping the oldest) and ``warmup_seconds``; a host
may be reported once it has been seen for that long.

>>> import numpy as np
>>> from pipelines.records import DnsBatch, FlowBatch
>>> class D(HostWarmup):
...     hosts, max_hosts, warmup_seconds = {}, 10, 600.0
>>> d = D()
>>> f = FlowBatch.from_columns({"ts_start": [100.0], "src": ["10.0.0.1"], "src_inside": [True]})
>>> d._see_hosts(f, DnsBatch.empty())
>>> d._warm("10.0.0.1", Window(2, 600.0, 900.0)), d._warm("10.0.0.1", Window(1, 300.0, 600.0))
(True, False)
"""

from __future__ import annotations

from pipelines.detectors.base import Window
from pipelines.records import DnsBatch, FlowBatch

__all__ = ["HostWarmup"]


class HostWarmup:
    """Mixin: ``_see_hosts`` records first-seen times; ``_warm`` says whether warm-up is over."""

    hosts: dict[str, float]
    max_hosts: int
    warmup_seconds: float

    def _see_hosts(self, flows: FlowBatch, dns: DnsBatch) -> None:
        hosts = self.hosts
        for ips, ts in (
            (flows.src[flows.src_inside], flows.ts_start[flows.src_inside]),
            (dns.src, dns.ts),
        ):
            if len(ips) == 0:
                continue
            first = float(ts.min())
            for ip in set(ips.tolist()) - hosts.keys():
                hosts[ip] = first
        while len(hosts) > self.max_hosts:
            hosts.pop(next(iter(hosts)))

    def _warm(self, host: str, window: Window) -> bool:
        first = self.hosts.get(host)
        return first is not None and window.end - first >= self.warmup_seconds
