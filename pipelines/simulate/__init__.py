"""Labelled enterprise traffic simulator: benign background with confounders plus attack scenarios.

Pure and deterministic by seed (no I/O, no clock). It powers ``slowburn simulate``,
``slowburn demo`` and the detector tests.

>>> sim = Simulation(SimConfig(hosts=40, days=1, seed=1, scenarios=("admin_share_transfer",)))
>>> flows, dns = next(iter(sim.batches(chunk_seconds=3600)))
>>> bool((flows.ts_start[:-1] <= flows.ts_start[1:]).all()), flows.sensor[0], flows.origin[0]
(True, 'sim', 'sim')
>>> [h.role for h in sim.hosts][:3]
['dc', 'dc', 'server']
>>> sorted(SCENARIOS)[:3]
['admin_share_transfer', 'beacon', 'dns_exfil']
"""

from pipelines.simulate.network import ROLES, Host, Network
from pipelines.simulate.scenarios import SCENARIOS, Incident, ScenarioContext
from pipelines.simulate.simulation import DEFAULT_START, SimConfig, Simulation

__all__ = [
    "DEFAULT_START",
    "ROLES",
    "SCENARIOS",
    "Host",
    "Incident",
    "Network",
    "ScenarioContext",
    "SimConfig",
    "Simulation",
]
