"""OCSF 1.8.0 / ECS 9 renderings: schema validity, explanation content, determinism."""

from __future__ import annotations

import copy
import json

import pytest

from pipelines.detectors.base import Evidence, Finding
from pipelines.exceptions import ConfigError
from pipelines.incidents import Incident, IncidentBook
from pipelines.serialize import render, to_ecs, to_json_bytes, to_ocsf
from tests.ocsf_schema import validate_detection_finding

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def _f(
    detector,
    kind,
    episode,
    attacks,
    *,
    dst=(),
    ports=(),
    domain="",
    direction="outbound",
    analytic="Statistical",
    t=T0,
    entity="10.0.0.5",
    severity=3,
    score=0.8,
) -> Finding:
    return Finding(
        detector=detector,
        kind=kind,
        entity=entity,
        episode=episode,
        start=t,
        end=t + 300.0,
        score=score,
        severity_id=severity,
        confidence=75,
        attacks=attacks,
        title=f"{kind} from {entity}",
        sentence=f"{entity} did {kind} — 38× its 14-day baseline.",
        evidence=[
            Evidence("bytes_out_24h", 4.81e7, 1.27e6, 7.4, "B", "host 14-day median"),
            Evidence("dst_hosts_seen", 1.0, 12.0, -3.1, "hosts", "destination prevalence"),
        ],
        facts={"bytes": 4.81e7, "connections": 312, "first_seen_h": 9.0},
        src=entity,
        dst=dst,
        dst_ports=ports,
        domain=domain,
        direction=direction,
        count=312,
        positions=(("flows-topic/0", 1200), ("flows-topic/0", 1288)),
        analytic=analytic,
    )


FINDINGS = {
    "exfil": _f(
        "exfil",
        "exfiltration",
        "203.0.113.9",
        ("T1048", "T1567.002"),
        dst=("203.0.113.9",),
        ports=(443,),
    ),
    "beacon": _f(
        "beacon",
        "beaconing",
        "198.51.100.7:443",
        ("T1071.001", "T1573"),
        dst=("198.51.100.7",),
        ports=(443,),
        analytic="Behavioral",
    ),
    "dns_tunnel": _f(
        "dns_tunnel",
        "dns_tunnel",
        "evil-tunnel.example",
        ("T1071.004", "T1572", "T1048.003"),
        dst=("10.0.0.53",),
        ports=(53,),
        domain="evil-tunnel.example",
    ),
    "lateral": _f(
        "lateral",
        "lateral_movement",
        "",
        ("T1021.002", "T1569.002", "T1053.005"),
        dst=("10.0.0.9", "10.0.0.10", "fd00::9"),
        ports=(445, 135),
        direction="lateral",
        analytic="Rule",
        severity=4,
    ),
    "discovery": _f(
        "lateral", "discovery", "scan", ("T1046", "T1018"), dst=("10.0.0.20",), direction="lateral"
    ),
    "host": _f("host_behaviour", "host_anomaly", "", (), analytic="Learning", severity=2),
    "drift": _f("exfil", "baseline_drift", "drift", ("T9999.001",), severity=1, score=0.2),
}


def _incident(key: str, *, updates: int = 0) -> Incident:
    book = IncidentBook(min_update_interval=0.0)
    f = FINDINGS[key]
    out = book.add([f], "model-7", snapshot_id="snap-42", host_scores={f.entity: 0.91})
    for k in range(updates):
        g = copy.deepcopy(f)
        g.start, g.end, g.severity_id, g.score = f.end + k * 300, f.end + (k + 1) * 300, 5, 1.0
        g.count = f.count * 4
        out += book.add([g], "model-7", snapshot_id="snap-43")
    return out[-1]


@pytest.mark.parametrize("key", sorted(FINDINGS))
@pytest.mark.parametrize("updates", [0, 1])
def test_ocsf_rendering_validates(key, updates):
    inc = _incident(key, updates=updates)
    d = to_ocsf(inc, product_version="9.9.9")
    assert validate_detection_finding(d) == []
    # survives the JSON round trip unchanged (only JSON types inside)
    assert validate_detection_finding(json.loads(to_json_bytes(d))) == []
    assert d["activity_id"] == (1 if updates == 0 else 2)
    assert d["type_uid"] == 200400 + d["activity_id"]
    assert d["metadata"]["version"] == "1.8.0" and d["metadata"]["product"]["version"] == "9.9.9"
    assert d["finding_info"]["uid"] == inc.uid == d["metadata"]["correlation_uid"]
    assert d["time"] == round(inc.end * 1000) and d["start_time"] == round(inc.start * 1000)
    assert d["message"] == inc.sentence == d["finding_info"]["desc"]
    assert d["finding_info"]["types"] == [inc.kind]


def test_ocsf_content_for_exfil():
    inc = _incident("exfil")
    d = to_ocsf(inc)
    fi = d["finding_info"]
    assert fi["analytic"] == {
        "name": "exfil",
        "uid": "slowburn.exfil",
        "type_id": 3,
        "type": "Statistical",
        "version": "model-7",
    }
    pairs = [
        (a["technique"]["uid"], a.get("sub_technique", {}).get("uid"), a["tactic"]["uid"])
        for a in fi["attacks"]
    ]
    assert pairs == [("T1048", None, "TA0010"), ("T1567", "T1567.002", "TA0010")]
    assert fi["attacks"][1]["sub_technique"]["name"] == "Exfiltration to Cloud Storage"
    ev = d["evidences"][0]
    assert ev["src_endpoint"] == {"ip": "10.0.0.5"}
    assert ev["dst_endpoint"] == {"ip": "203.0.113.9", "port": 443}
    assert ev["connection_info"]["direction_id"] == 2
    assert {(o["type_id"], o["value"]) for o in d["observables"]} == {
        (2, "10.0.0.5"),
        (2, "203.0.113.9"),
    }
    assert d["status_id"] == 1 and d["is_alert"] is True
    assert d["count"] == 312
    assert 1 <= d["confidence_id"] <= 3 and 0 <= d["risk_score"] <= 100


def test_explanation_is_complete():
    inc = _incident("exfil")
    for doc, expl in ((to_ocsf(inc), None), (to_ecs(inc), None)):
        expl = doc["unmapped"]["slowburn"] if "unmapped" in doc else doc["slowburn"]
        assert expl["sentence"] == inc.sentence
        assert expl["evidence"][0] == {
            "name": "bytes_out_24h",
            "observed": 4.81e7,
            "baseline": 1.27e6,
            "z": 7.4,
            "unit": "B",
            "reference": "host 14-day median",
        }
        assert len(expl["evidence"]) == 2
        assert expl["facts"]["connections"] == 312
        assert expl["model_version"] == "model-7" and expl["snapshot_id"] == "snap-42"
        assert expl["host_behaviour_score"] == 0.91
        assert expl["positions"] == [
            {"origin": "flows-topic/0", "offset": 1200},
            {"origin": "flows-topic/0", "offset": 1288},
        ]
    # the per-feature evidence also sits in OCSF evidences[].data
    assert to_ocsf(inc)["evidences"][0]["data"]["features"][1]["name"] == "dst_hosts_seen"


def test_lateral_and_dns_specifics():
    lat = to_ocsf(_incident("lateral"))
    assert [e["connection_info"]["direction_id"] for e in lat["evidences"]] == [3, 3, 3]
    assert [e["dst_endpoint"]["ip"] for e in lat["evidences"]] == [
        "10.0.0.9",
        "10.0.0.10",
        "fd00::9",
    ]
    assert "port" not in lat["evidences"][0]["dst_endpoint"]  # several ports: not one endpoint's
    tactics = {a["tactic"]["name"] for a in lat["finding_info"]["attacks"]}
    assert {"Lateral Movement", "Execution", "Persistence", "Privilege Escalation"} <= tactics
    dns = to_ocsf(_incident("dns_tunnel"))
    assert dns["evidences"][0]["query"] == {"hostname": "evil-tunnel.example"}
    assert {
        "type_id": 1,
        "type": "Hostname",
        "value": "evil-tunnel.example",
        "name": "evidences[].query.hostname",
    } in dns["observables"]
    host = to_ocsf(_incident("host"))
    assert "attacks" not in host["finding_info"]
    assert host["finding_info"]["analytic"]["type"] == "Learning (ML/DL)"


# -- the validator catches what it should ----------------------------------------------
def _valid() -> dict:
    return to_ocsf(_incident("exfil"))


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda d: d.pop("time"), "missing required attribute time"),
        (lambda d: d.pop("metadata"), "missing required attribute metadata"),
        (
            lambda d: d["metadata"]["product"].pop("name"),
            "missing required attribute metadata.product.name",
        ),
        (lambda d: d["finding_info"].pop("uid"), "missing required attribute finding_info.uid"),
        (lambda d: d["finding_info"]["analytic"].pop("type_id"), "finding_info.analytic.type_id"),
        (lambda d: d["evidences"][0]["connection_info"].pop("direction_id"), "direction_id"),
        (lambda d: d.update(severity_id=7), "severity_id: 7 is not a valid enum value"),
        (
            lambda d: d.update(activity_id=4, type_uid=200404),
            "activity_id: 4 is not a valid enum value",
        ),
        (lambda d: d.update(confidence_id=5), "confidence_id: 5 is not a valid enum value"),
        (lambda d: d.update(status_id=9), "status_id: 9 is not a valid enum value"),
        (
            lambda d: d.update(class_uid=2001, type_uid=200101),
            "class_uid: 2001 is not a valid enum value",
        ),
        (lambda d: d.update(category_uid=1), "category_uid: 1 is not a valid enum value"),
        (lambda d: d.update(type_uid=200402), "type_uid: 200402 != class_uid*100 + activity_id"),
        (lambda d: d.update(severity="Critical"), "severity: 'Critical' does not match"),
        (lambda d: d["evidences"][0]["connection_info"].update(direction_id=7), "direction_id: 7"),
        (
            lambda d: d["observables"][0].update(type_id=100),
            "type_id: 100 is not a valid enum value",
        ),
        (lambda d: d.update(time=d["time"] / 1000), "time: timestamp_t must be integer"),
        (lambda d: d.update(time=d["time"] // 1000), "looks like seconds"),
        (lambda d: d.update(severity_id="4"), "severity_id: expected an integer"),
        (lambda d: d.update(count=True), "count: expected an integer"),
        (lambda d: d.update(message=42), "message: expected a string"),
        (
            lambda d: d["finding_info"].update(types="exfiltration"),
            "finding_info.types: expected an array",
        ),
        (lambda d: d["evidences"][0]["dst_endpoint"].update(ip="999.1.1.1"), "not an IP address"),
        (lambda d: d["evidences"][0]["dst_endpoint"].update(port=70000), "port must be an integer"),
        (lambda d: d["metadata"].update(version="1.1.0"), "metadata.version: expected '1.8.0'"),
        (lambda d: d.update(risk_score=140), "risk_score: 140 outside 0-100"),
        (lambda d: d.update(bogus=1), "unknown attribute bogus"),
        (lambda d: d["finding_info"].update(severity=1), "unknown attribute finding_info.severity"),
        (
            lambda d: d["finding_info"]["attacks"][0].update(tactic={}),
            "needs at least one of uid, name",
        ),
        (
            lambda d: d["finding_info"]["attacks"].append({"version": "16.1"}),
            "attack needs at least one",
        ),
        (
            lambda d: d["finding_info"]["attacks"][0]["technique"].update(uid="1048"),
            "not a valid ATT&CK technique",
        ),
        (
            lambda d: d["finding_info"]["attacks"][1]["sub_technique"].update(uid="T1021.002"),
            "is not a child of",
        ),
        (lambda d: d["evidences"].append({"name": "x"}), "evidences needs at least one"),
        (lambda d: d.update(start_time=d["end_time"] + 1), "start_time is after end_time"),
        (lambda d: d["finding_info"].update(title=None), "finding_info.title: null"),
    ],
)
def test_validator_catches(mutate, expected):
    d = _valid()
    assert validate_detection_finding(d) == []
    mutate(d)
    problems = validate_detection_finding(d)
    assert any(expected in p for p in problems), problems


def test_closed_incident_renders_as_close():
    book = IncidentBook(gap=3600.0)
    book.add([FINDINGS["beacon"]], "m")
    closed = book.close_stale(T0 + 10 * 3600.0)
    assert [c.status for c in closed] == ["closed"]
    d = to_ocsf(closed[0])
    assert (d["activity_id"], d["type_uid"], d["is_alert"]) == (3, 200403, False)
    assert validate_detection_finding(d) == []


def test_validator_rejects_non_objects():
    assert validate_detection_finding([]) == ["event must be an object, got list"]
    assert "metadata.product: expected an object, got str" in validate_detection_finding(
        {**_valid(), "metadata": {"version": "1.8.0", "product": "slowburn"}}
    )


# -- ECS ------------------------------------------------------------------------------
ECS_CATEGORY_TYPES = {  # ECS allowed event.type values per event.category (subset used)
    "network": {"access", "allowed", "connection", "denied", "end", "info", "protocol", "start"},
    "intrusion_detection": {"allowed", "denied", "info"},
}
ECS_DIRECTIONS = {"ingress", "egress", "inbound", "outbound", "internal", "external", "unknown"}


@pytest.mark.parametrize("key", sorted(FINDINGS))
def test_ecs_structure(key):
    inc = _incident(key, updates=1)
    d = to_ecs(inc)
    assert d["ecs"]["version"].startswith("9.")
    assert d["@timestamp"].endswith("Z") and d["@timestamp"] == d["event"]["end"]
    ev = d["event"]
    assert (
        ev["kind"] == "alert" and ev["dataset"] == "slowburn.alerts" and ev["module"] == "slowburn"
    )
    for cat in ev["category"]:
        assert set(ev["type"]) <= ECS_CATEGORY_TYPES[cat]
    assert ev["id"] == f"{inc.uid}:{inc.revision}"
    assert isinstance(ev["severity"], int) and 0.0 <= ev["risk_score"] <= 100.0
    assert ev["start"] <= ev["end"] and isinstance(ev["duration"], int)
    assert d["rule"]["id"] == f"slowburn.{inc.detector}" and d["rule"]["version"] == "model-7"
    assert d["message"] == inc.sentence
    if inc.attacks:
        th = d["threat"]
        assert th["framework"] == "MITRE ATT&CK"
        assert all(t.startswith("T") and "." not in t for t in th["technique"]["id"])
        assert len(th["technique"]["id"]) == len(th["technique"]["name"])
        assert len(th["tactic"]["id"]) == len(th["tactic"]["name"])
    else:
        assert "threat" not in d
    if "network" in d:
        assert d["network"]["direction"] in ECS_DIRECTIONS
    assert d["source"]["ip"] == inc.src
    json.loads(to_json_bytes(d))


def test_ecs_threat_and_network_fields():
    d = to_ecs(_incident("dns_tunnel"))
    th = d["threat"]
    assert th["technique"]["id"] == ["T1071", "T1572", "T1048"]
    assert th["technique"]["name"] == [
        "Application Layer Protocol",
        "Protocol Tunneling",
        "Exfiltration Over Alternative Protocol",
    ]
    assert th["technique"]["subtechnique"]["id"] == ["T1071.004", "T1048.003"]
    assert th["tactic"]["id"] == ["TA0011", "TA0010"]
    assert d["destination"] == {"ip": "10.0.0.53", "port": 53}
    assert d["dns"]["question"]["registered_domain"] == "evil-tunnel.example"
    assert d["network"]["direction"] == "outbound"
    assert to_ecs(_incident("lateral"))["network"]["direction"] == "internal"


# -- render / JSON --------------------------------------------------------------------
def test_render_dispatch_and_unknown_format():
    inc = _incident("beacon")
    assert render(inc) == to_ocsf(inc)
    assert render(inc, "ecs") == to_ecs(inc)
    with pytest.raises(ConfigError):
        render(inc, "cef")


def test_json_bytes_are_deterministic():
    a = to_json_bytes(to_ocsf(_incident("lateral", updates=1)))
    b = to_json_bytes(to_ocsf(_incident("lateral", updates=1)))
    assert a == b
    keys = list(json.loads(a))
    assert keys == sorted(keys)
    # insertion order does not matter
    assert to_json_bytes({"b": {"y": 1, "x": 2}, "a": 1}) == to_json_bytes(
        {"a": 1, "b": {"x": 2, "y": 1}}
    )


def test_numpy_and_nan_in_facts_render():
    import numpy as np

    f = copy.deepcopy(FINDINGS["exfil"])
    f.facts = {
        "bytes": np.float64(3e6),
        "ports": np.array([443, 8443]),
        "ratio": float("nan"),
        "peers": {"b", "a"},
    }
    inc = IncidentBook().add([f], "m")[0]
    d = to_ocsf(inc)
    assert validate_detection_finding(d) == []
    facts = json.loads(to_json_bytes(d))["unmapped"]["slowburn"]["facts"]
    assert facts == {"bytes": 3e6, "ports": [443, 8443], "ratio": None, "peers": ["a", "b"]}
