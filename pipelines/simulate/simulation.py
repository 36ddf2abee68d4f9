"""The simulation driver: configuration, hour-by-hour generation, chunking, truth.

Generation runs one hour slot at a time, each slot with its own RNG seeded by
``(seed, slot start)``, so memory is bounded by one hour of traffic and the records do
not depend on ``chunk_seconds`` (chunks are cut from the slots by start time).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from pipelines.exceptions import ConfigError
from pipelines.records import DnsBatch, FlowBatch
from pipelines.simulate.benign import BENIGN, Slot
from pipelines.simulate.internal import INTERNAL
from pipelines.simulate.network import Host, Network
from pipelines.simulate.roles import Activity
from pipelines.simulate.scenarios import SCENARIOS, Incident, ScenarioContext
from pipelines.simulate.truth import build_truth

__all__ = ["DEFAULT_START", "SimConfig", "Simulation"]

#: Monday 2023-11-13 00:00:00 UTC
DEFAULT_START = 1_699_833_600.0
_GENERATORS = {**BENIGN, **INTERNAL}


@dataclass(frozen=True)
class SimConfig:
    """What to simulate.

    ``hosts`` internal hosts for ``days`` days (rounded up to whole hours) from ``start``
    (epoch seconds; default Monday 2023-11-13 00:00 UTC), local time ``tz_offset_h`` hours
    from UTC, with the attack ``scenarios`` (names in :data:`SCENARIOS`). ``name`` names
    the truth document (default derived from the configuration).

    >>> SimConfig(hosts=50, days=1, seed=2).end
    1699920000.0
    """

    hosts: int = 200
    days: float = 3.0
    seed: int = 1
    start: float = DEFAULT_START
    scenarios: tuple[str, ...] = field(default_factory=tuple)
    tz_offset_h: float = 0.0
    name: str = ""

    @property
    def hours(self) -> int:
        return math.ceil(self.days * 24 - 1e-9)

    @property
    def end(self) -> float:
        return self.start + self.hours * 3600.0

    def validate(self) -> None:
        if self.hosts < 20:
            raise ConfigError("hosts: at least 20")
        if not self.days > 0:
            raise ConfigError("days: must be positive")
        if not math.isfinite(self.start):
            raise ConfigError("start: must be a finite epoch time")
        unknown = [s for s in self.scenarios if s not in SCENARIOS]
        if unknown:
            raise ConfigError(f"scenarios: unknown {unknown}; known: {sorted(SCENARIOS)}")
        if len(set(self.scenarios)) != len(self.scenarios):
            raise ConfigError("scenarios: each scenario at most once")


class Simulation:
    """A labelled synthetic enterprise: :meth:`batches` yields records, :meth:`truth` the labels.

    >>> sim = Simulation(SimConfig(hosts=30, days=1, seed=4, scenarios=("ldap_recon",)))
    >>> chunks = list(sim.batches(chunk_seconds=6 * 3600))
    >>> len(chunks), all(len(f) > 0 for f, _d in chunks)
    (4, True)
    >>> t = sim.truth()
    >>> [i["kind"] for i in t["incidents"]], t["span"]["packets_or_records"] > 10_000
    (['discovery'], True)
    """

    def __init__(self, config: SimConfig) -> None:
        config.validate()
        self.config = config
        self.net = Network(config.hosts, config.seed)
        self.activity = Activity(self.net, config.tz_offset_h, config.seed)
        self.incidents: list[Incident] = []
        self.notes: list[str] = []
        self.externals: dict[str, str] = {}
        used: set[int] = set()
        flows: list[dict[str, np.ndarray]] = []
        dns: list[dict[str, np.ndarray]] = []
        for name in config.scenarios:
            ctx = ScenarioContext(
                self.net, name, config.seed, config.start, config.end, config.tz_offset_h, used
            )
            SCENARIOS[name](ctx)
            self.incidents.extend(ctx.incidents)
            self.notes.extend(ctx.notes)
            self.externals.update(ctx.externals)
            flows.extend(ctx.parts.flows)
            dns.extend(ctx.parts.dns_rows)
        self._attack_flows = _sorted_table(flows)
        self._attack_dns = _sorted_table(dns)
        self.records: int | None = None

    @property
    def hosts(self) -> list[Host]:
        """Internal hosts (address, name, role) — pick attackers/victims by role."""
        return list(self.net.hosts)

    def batches(self, chunk_seconds: float = 3600.0) -> Iterator[tuple[FlowBatch, DnsBatch]]:
        """Time-ordered (FlowBatch, DnsBatch) per ``chunk_seconds`` of simulated time."""
        if not chunk_seconds > 0:
            raise ConfigError("chunk_seconds: must be positive")
        cfg = self.config
        offset = dns_offset = 0
        pending: list[tuple[FlowBatch, DnsBatch]] = []
        k = 1
        edge = cfg.start + chunk_seconds
        for hour in range(cfg.hours):
            t0 = cfg.start + hour * 3600.0
            flows, dns = self._slot(t0, offset, dns_offset)
            offset += len(flows)
            dns_offset += len(dns)
            while edge <= t0 + 3600.0:
                i = int(np.searchsorted(flows.ts_start, edge))
                j = int(np.searchsorted(dns.ts, edge))
                pending.append((flows.take(np.arange(i)), dns.take(np.arange(j))))
                yield _merge(pending)
                pending = []
                flows = flows.take(np.arange(i, len(flows)))
                dns = dns.take(np.arange(j, len(dns)))
                k += 1
                edge = cfg.start + k * chunk_seconds
            pending.append((flows, dns))
        if edge - chunk_seconds < cfg.end:
            yield _merge(pending)
        self.records = offset + dns_offset

    def _slot(self, t0: float, offset: int, dns_offset: int) -> tuple[FlowBatch, DnsBatch]:
        slot = Slot(self.net, self.activity, t0, self.config.seed)
        for gen in _GENERATORS.values():
            gen(slot)
        t1 = t0 + 3600.0
        for table, target in (
            (self._attack_flows, slot.parts.flows),
            (self._attack_dns, slot.parts.dns_rows),
        ):
            if table is not None:
                i, j = np.searchsorted(table["ts"], [t0, t1])
                if j > i:
                    target.append({k: v[i:j] for k, v in table.items()})
        return slot.parts.build(offset, dns_offset, lo=t0, hi=t1)

    def truth(self) -> dict[str, Any]:
        """Labels in the schema of ``shared/datasets/*/truth.json`` (records counted after a full run)."""
        cfg = self.config
        name = cfg.name or f"sim-{cfg.hosts}h-{cfg.days:g}d-seed{cfg.seed}"
        config = asdict(cfg)
        config["scenarios"] = list(cfg.scenarios)
        return build_truth(
            name=name,
            config=config,
            seed=cfg.seed,
            net=self.net,
            start=cfg.start,
            end=cfg.end,
            incidents=self.incidents,
            notes=self.notes,
            records=self.records,
            externals=self.externals,
        )


def _sorted_table(rows: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray] | None:
    if not rows:
        return None
    table = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
    order = np.argsort(table["ts"], kind="stable")
    return {k: v[order] for k, v in table.items()}


def _merge(parts: list[tuple[FlowBatch, DnsBatch]]) -> tuple[FlowBatch, DnsBatch]:
    return FlowBatch.concat([p[0] for p in parts]), DnsBatch.concat([p[1] for p in parts])
