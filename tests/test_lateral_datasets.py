"""Real lateral-movement / discovery captures injected into a simulated enterprise, end to end.

The OTRF captures (``lateral-smb-svcctl``, ``lateral-winrm``, ``discovery-ldap``) are decoded
with the pcap decoder; the attacker WORKSTATION5 (172.18.39.5), the target WORKSTATION6
(172.18.39.6) and the DC (172.18.38.5) are remapped onto simulated hosts of the same roles
— two workstations and the attacker's own domain controller, which already talk as usual
(Kerberos, LDAP, SMB/SYSVOL, RPC at logon) — and the capture is shifted into the last
day of a 3-day simulated background. Through the engine, the attack must be alerted with
the right ATT&CK technique and hosts; the same background alone alerts nothing. The Zeek
``sshguess`` trace (11 SSH password guesses) is injected the same way (guesser → a server).
"""

from __future__ import annotations

import pickle
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from pipelines.detectors.host_behaviour import HostBehaviourDetector
from pipelines.detectors.lateral import LateralDetector
from pipelines.engine import Engine, EngineConfig
from pipelines.incidents import Incident
from pipelines.inject import merge, remap, shift_to
from pipelines.records import DnsBatch, FlowBatch, HomeNetworks, annotate_direction
from pipelines.simulate import SimConfig, Simulation
from stream.decoders.pcap import PcapDecoder
from tests.conftest import DATASETS

DAYS = 2
SIM = SimConfig(hosts=24, days=DAYS, seed=5)
INJECT_AT = SIM.start + (DAYS - 1) * 86400.0 + 10.5 * 3600.0  # last day, 10:30 local (UTC)
HOME = HomeNetworks.default()


@lru_cache(maxsize=1)
def _sim() -> tuple[Simulation, FlowBatch, DnsBatch]:
    sim = Simulation(SIM)
    fl, dn = [], []
    for f, d in sim.batches(chunk_seconds=3600):
        fl.append(f)
        dn.append(d)
    return sim, FlowBatch.concat(fl), DnsBatch.concat(dn)


def _engine() -> Engine:
    return Engine(
        EngineConfig(window=300.0, lateness=120.0),
        detectors=[LateralDetector(warmup_days=1.0), HostBehaviourDetector()],
    )


def _feed(
    eng: Engine, flows: FlowBatch, dns: DnsBatch, until: float | None = None
) -> list[Incident]:
    """Feed in one-hour chunks (like a replay), flushing at the end when ``until`` is None."""
    out: list[Incident] = []
    lo = float(min(flows.ts_start.min(), dns.ts.min() if len(dns) else np.inf))
    hi = (
        float(max(flows.ts_start.max(), dns.ts.max() if len(dns) else -np.inf))
        if until is None
        else until
    )
    for t in np.arange(np.floor(lo / 3600) * 3600, hi, 3600.0):
        f = flows.take((flows.ts_start >= t) & (flows.ts_start < t + 3600.0))
        d = dns.take((dns.ts >= t) & (dns.ts < t + 3600.0))
        out.extend(eng.process(f, d))
    if until is None:
        out.extend(eng.flush())
    return out


@lru_cache(maxsize=1)
def _warm_engine() -> tuple[bytes, int]:
    """The engine after the background up to the injection point (pickled, so each test resumes it)."""
    _, flows, dns = _sim()
    eng = _engine()
    early = _feed(
        eng, flows.take(flows.ts_start < INJECT_AT), dns.take(dns.ts < INJECT_AT), until=INJECT_AT
    )
    return pickle.dumps(eng), len(early)


def _rest() -> tuple[FlowBatch, DnsBatch]:
    _, flows, dns = _sim()
    return flows.take(flows.ts_start >= INJECT_AT), dns.take(dns.ts >= INJECT_AT)


def _hosts() -> dict[str, str]:
    """Attacker, target workstation and the attacker's own DC in the simulation."""
    sim, _, _ = _sim()
    net = sim.net
    ws = [int(i) for i in net.ws if int(i) not in set(net.it_staff.tolist())]
    attacker, target = ws[3], ws[7]
    return {
        "172.18.39.5": net.addrs[attacker],
        "172.18.39.6": net.addrs[target],
        "172.18.38.5": net.addrs[int(net.resolver[attacker])],
        # protocols/ssh/sshguess.pcap: the guesser and the SSH server it targets
        "192.168.56.1": net.addrs[attacker],
        "192.168.56.103": net.addrs[int(net.srv[3])],
    }


def _capture(*names: str) -> tuple[FlowBatch, DnsBatch]:
    flows, dns = [], []
    for name in names:
        for r in PcapDecoder().decode_file(Path(DATASETS) / name):
            flows.append(r.flows)
            dns.append(r.dns)
    f, d = FlowBatch.concat(flows), DnsBatch.concat(dns)
    mapping = _hosts()
    first = float(f.ts_start.min())
    f = annotate_direction(shift_to(remap(f, mapping), INJECT_AT), HOME)
    d = annotate_direction(remap(d, mapping), HOME)
    if len(d):
        d = d.replace(ts=d.ts - first + INJECT_AT)
    return f.sorted_by_time(), d.sorted_by_time()


def _run(*names: str) -> list[Incident]:
    blob, early = _warm_engine()
    assert early == 0
    eng = pickle.loads(blob)
    flows, dns = _rest()
    if names:
        cf, cd = _capture(*names)
        flows, dns = merge(flows, cf), merge(dns, cd)
    return _feed(eng, flows, dns)


def test_background_alone_alerts_nothing() -> None:
    alerts = _run()
    assert [a.sentence for a in alerts] == []


@pytest.mark.parametrize(
    ("files", "kind", "technique", "dst", "ports"),
    [
        (
            ("lateral-smb-svcctl/covenant_sc_query_dcerpc_smb_svcctl_2020-08-05034820.cap",),
            "lateral_movement", "T1021.002", "172.18.38.5", {135, 445, 49683},
        ),
        (
            ("lateral-winrm/covenant_psremoting_command_2020-08-06115603.cap",),
            "lateral_movement", "T1021.006", "172.18.39.6", {5985},
        ),
        (
            ("lateral-winrm/empire_psremoting_stager_WORKSTATION5_2020-09-20170827.cap",),
            "lateral_movement", "T1021.006", "172.18.39.6", {5985},
        ),
        (
            ("discovery-ldap/covenant_getdomaingroup_ldap_searchrequest_domain_admins_2020-09-22141005.cap",),
            "discovery", "T1087.002", "172.18.38.5", {389},
        ),
        (("protocols/ssh/sshguess.pcap",), "brute_force", "T1110", "192.168.56.103", {22}),
    ],
)  # fmt: skip
def test_real_capture_is_alerted_with_technique_and_hosts(
    datasets: Path, files: tuple[str, ...], kind: str, technique: str, dst: str, ports: set[int]
) -> None:
    mapping = _hosts()
    alerts = [a for a in _run(*files) if a.detector == "lateral"]
    assert alerts, "the injected attack was not alerted"
    hit = [a for a in alerts if a.kind == kind and technique in a.attacks and mapping[dst] in a.dst]
    assert hit, [(a.kind, a.attacks, a.sentence) for a in alerts]
    a = hit[0]
    assert a.entity == mapping["172.18.39.5"] and a.src == mapping["172.18.39.5"]
    assert a.severity_id >= 2 and 0.0 < a.score <= 1.0 and a.sentence
    assert mapping[dst] in a.dst
    assert ports <= set(a.dst_ports) | ports & {389}
    assert INJECT_AT <= a.start <= INJECT_AT + 600.0
    assert any(origin.endswith((".cap", ".pcap")) for origin, _ in a.positions)
    # nothing else on the lateral side: the attack, not the background
    assert {x.entity for x in alerts} == {mapping["172.18.39.5"]}


def test_simulated_lateral_scenarios_match_their_truth() -> None:
    """The simulator's own lateral scenarios: every truth incident is alerted on its source with
    its destination and at least one of its techniques; nothing else is alerted by ``lateral``."""
    sim = Simulation(
        SimConfig(
            hosts=24,
            days=2,
            seed=5,
            scenarios=("lateral_chain", "admin_share_transfer", "ldap_recon"),
        )
    )
    eng = _engine()
    alerts: list[Incident] = []
    for f, d in sim.batches(chunk_seconds=3600):
        alerts += eng.process(f, d)
    alerts += eng.flush()
    lateral = [a for a in alerts if a.detector == "lateral"]
    truth = [i for i in sim.truth()["incidents"] if i["kind"] in ("lateral_movement", "discovery")]
    assert len(truth) == 4
    for inc in truth:
        got = [
            a
            for a in lateral
            if a.entity == inc["src"] and inc["dst"] in a.dst and a.kind == inc["kind"]
        ]
        assert got, inc["id"]
        assert set(inc["attack"]) & set().union(*(a.attacks for a in got)), (
            inc["id"],
            [a.attacks for a in got],
        )
    assert {a.entity for a in lateral} <= {i["src"] for i in truth}
