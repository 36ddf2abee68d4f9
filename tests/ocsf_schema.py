"""A strict validator for OCSF 1.8.0 Detection Finding events (class 2004), for tests.

Written from the published schema (ocsf-schema repository: ``events/base_event.json``,
``events/findings/finding.json``, ``events/findings/detection_finding.json``,
``dictionary.json`` and the objects ``metadata``, ``product``, ``finding_info``,
``analytic``, ``attack``, ``technique``, ``sub_technique``, ``tactic``, ``evidences``,
``network_endpoint``, ``network_connection_info``, ``dns_query``, ``observable``), not
from a model library: unknown keys are *reported*, never silently dropped.

What is checked (each problem is one string naming its JSON path):

* required attributes of the class and of every nested object (``activity_id``,
  ``category_uid``, ``class_uid``, ``type_uid``, ``time``, ``severity_id``,
  ``metadata``, ``finding_info``; ``metadata.version`` / ``metadata.product``;
  ``product.name``; ``finding_info.uid``; ``analytic.type_id``;
  ``connection_info.direction_id``; ``observable.name`` / ``type_id``;
  ``dns_query.hostname``); ``finding_info.title`` (recommended) is also required here;
* attribute types: integers are ``int`` (not ``bool``/``float``), strings ``str``,
  ``timestamp_t`` integer epoch **milliseconds** (a value that looks like seconds is
  flagged), ``ip_t`` a valid IPv4/IPv6 address, ``port_t`` 0–65535, arrays are lists,
  objects are dicts, ``float_t`` finite numbers;
* enum values (``activity_id``, ``severity_id``, ``status_id``, ``confidence_id``,
  ``risk_level_id``, ``analytic.type_id``, ``direction_id``, ``observable.type_id``,
  ``category_uid`` = 2, ``class_uid`` = 2004) and that a string sibling
  (``severity``, ``activity_name``, ``status``, ``confidence``, ``risk_level``,
  ``analytic.type``, ``connection_info.direction``, ``category_name``, ``class_name``,
  ``type_name``, ``observable.type``) equals the caption of its id;
* ``type_uid == class_uid * 100 + activity_id``; ``metadata.version == "1.8.0"``;
* ranges: ``risk_score`` and ``confidence_score`` 0–100, ``count`` ≥ 0;
  ``start_time <= end_time``; ``first_seen_time <= last_seen_time``;
* constraints: an ``attack`` has at least one of tactic / technique / sub_technique; a
  technique/sub-technique/tactic has at least one of ``uid`` / ``name``; ATT&CK uids
  look like ``T1234``, ``T1234.001``, ``TA0001``; a sub-technique's parent matches the
  technique; an ``evidences`` item has at least one evidence attribute;
* unknown attributes at the top level and in every object listed above.

>>> validate_detection_finding({"class_uid": 2004})[:2]
['missing required attribute activity_id', 'missing required attribute category_uid']
"""

from __future__ import annotations

import ipaddress
import math
import re
from typing import Any, TypeGuard

__all__ = ["OCSF_VERSION", "validate_detection_finding"]

OCSF_VERSION = "1.8.0"

REQ, REC, OPT = "required", "recommended", "optional"

# -- enums (id -> caption) -----------------------------------------------------------------
ACTIVITY = {0: "Unknown", 1: "Create", 2: "Update", 3: "Close", 99: "Other"}
SEVERITY = {
    0: "Unknown",
    1: "Informational",
    2: "Low",
    3: "Medium",
    4: "High",
    5: "Critical",
    6: "Fatal",
    99: "Other",
}
STATUS = {
    0: "Unknown",
    1: "New",
    2: "In Progress",
    3: "Suppressed",
    4: "Resolved",
    5: "Archived",
    6: "Deleted",
    99: "Other",
}
CONFIDENCE = {0: "Unknown", 1: "Low", 2: "Medium", 3: "High", 99: "Other"}
RISK_LEVEL = {0: "Info", 1: "Low", 2: "Medium", 3: "High", 4: "Critical", 99: "Other"}
ANALYTIC_TYPE = {
    0: "Unknown",
    1: "Rule",
    2: "Behavioral",
    3: "Statistical",
    4: "Learning (ML/DL)",
    99: "Other",
}
DIRECTION = {0: "Unknown", 1: "Inbound", 2: "Outbound", 3: "Lateral", 99: "Other"}
OBSERVABLE_TYPE = {
    0: "Unknown", 1: "Hostname", 2: "IP Address", 3: "MAC Address", 4: "User Name",
    5: "Email Address", 6: "URL String", 7: "File Name", 8: "Hash", 9: "Process Name",
    10: "Resource UID", 11: "Port", 12: "Subnet", 13: "Command Line", 14: "Country",
    15: "Process ID", 16: "HTTP User-Agent", 17: "CWE Object: uid", 18: "CVE Object: uid",
    19: "User Credential ID", 20: "Endpoint", 21: "User", 22: "Email",
    23: "Uniform Resource Locator", 24: "File", 25: "Process", 26: "Geo Location",
    27: "Container", 28: "Registry Key", 29: "Registry Value", 30: "Fingerprint", 99: "Other",
}  # fmt: skip
#: observable type ids added after 1.0 that this validator accepts without a caption check
OBSERVABLE_EXTRA = range(31, 99)

# -- attribute specs: name -> (type, requirement[, enum]) ----------------------------------
# types: int, long, float, str, bool, ts (timestamp_t ms), ip, port, json, obj:<name>, [T] for arrays
Spec = dict[str, tuple[Any, ...]]


def _many(t: Any, req: str, names: str) -> Spec:
    """Several attributes of one type and requirement (space-separated names)."""
    return {n: (t, req) for n in names.split()}


ROOT: Spec = {
    # base_event
    "activity_id": ("int", REQ, ACTIVITY),
    "activity_name": ("str", OPT),
    "category_uid": ("int", REQ, {2: "Findings"}),
    "category_name": ("str", OPT),
    "class_uid": ("int", REQ, {2004: "Detection Finding"}),
    "class_name": ("str", OPT),
    "type_uid": ("long", REQ),
    "type_name": ("str", OPT),
    "time": ("ts", REQ),
    "time_dt": ("str", OPT),
    "severity_id": ("int", REQ, SEVERITY),
    "severity": ("str", OPT),
    "metadata": ("obj:metadata", REQ),
    "message": ("str", REC),
    "count": ("int", OPT),
    "duration": ("long", OPT),
    "start_time": ("ts", OPT),
    "start_time_dt": ("str", OPT),
    "end_time": ("ts", OPT),
    "end_time_dt": ("str", OPT),
    "status_id": ("int", REC, STATUS),
    **_many("str", OPT, "status status_code status_detail"),
    "timezone_offset": ("int", REC),
    "observables": (["obj:observable"], REC),
    **_many(["json"], OPT, "enrichments"),
    **_many("str", OPT, "raw_data"),
    **_many("json", OPT, "raw_data_hash"),
    "raw_data_size": ("long", OPT),
    "unmapped": ("json", OPT),
    # finding
    "finding_info": ("obj:finding_info", REQ),
    "confidence_id": ("int", REC, CONFIDENCE),
    "confidence": ("str", OPT),
    "confidence_score": ("int", OPT),
    "risk_score": ("int", OPT),
    "risk_level_id": ("int", OPT, RISK_LEVEL),
    **_many("str", OPT, "risk_level risk_details comment"),
    **_many("json", OPT, "device vendor_attributes assignee assignee_group"),
    **_many(["json"], REC, "resources"),
    "priority_id": ("int", OPT),
    **_many("str", OPT, "priority src_url"),
    **_many("json", OPT, "ticket"),
    **_many(["json"], OPT, "tickets"),
    "verdict_id": ("int", OPT),
    "verdict": ("str", OPT),
    "is_suspected_breach": ("bool", OPT),
    # detection_finding
    "evidences": (["obj:evidences"], REC),
    "is_alert": ("bool", REC),
    "impact_id": ("int", OPT),
    "impact": ("str", OPT),
    "impact_score": ("int", OPT),
    **_many(["json"], OPT, "anomaly_analyses malware vulnerabilities"),
    **_many("json", OPT, "malware_scan_info remediation"),
    # security_control / host / osint profiles a detection finding may carry
    "attacks": (["obj:attack"], OPT),
    "action_id": ("int", OPT),
    "action": ("str", OPT),
    "disposition_id": ("int", OPT),
    **_many("str", OPT, "disposition"),
    **_many("json", OPT, "actor cloud api"),
    **_many(["json"], OPT, "osint"),
    "trace": ("json", OPT),
}

OBJECTS: dict[str, Spec] = {
    "metadata": {
        "version": ("str", REQ),
        "product": ("obj:product", REQ),
        **_many("str", OPT, "uid correlation_uid event_code log_level log_version"),
        **_many("str", REC, "log_name log_provider"),
        "logged_time": ("ts", OPT),
        "modified_time": ("ts", OPT),
        "original_time": ("str", REC),
        "processed_time": ("ts", OPT),
        "profiles": (["str"], OPT),
        "labels": (["str"], OPT),
        "tags": (["json"], OPT),
        "tenant_uid": ("str", OPT),
        "sequence": ("int", OPT),
        **_many("json", OPT, "extension"),
        **_many(["json"], OPT, "extensions loggers"),
        **_many("str", OPT, "source"),
        "is_truncated": ("bool", OPT),
        "untruncated_size": ("int", OPT),
        "debug": (["str"], OPT),
        "transmit_time": ("ts", OPT),
        "transformation_info_list": (["json"], OPT),
    },
    "product": {
        "name": ("str", REQ),
        **_many("str", REC, "vendor_name version uid lang"),
        **_many("json", OPT, "feature data_classification"),
        **_many("str", OPT, "path cpe_name url_string"),
        **_many(["json"], OPT, "data_classifications"),
    },
    "finding_info": {
        "uid": ("str", REQ),
        "title": ("str", REQ),  # recommended in 1.8.0; slowburn always sets it
        "desc": ("str", OPT),
        "types": (["str"], OPT),
        "analytic": ("obj:analytic", REC),
        "attacks": (["obj:attack"], OPT),
        "created_time": ("ts", OPT),
        "modified_time": ("ts", OPT),
        "first_seen_time": ("ts", OPT),
        "last_seen_time": ("ts", OPT),
        **_many(
            "str", OPT, "created_time_dt modified_time_dt first_seen_time_dt last_seen_time_dt"
        ),
        "data_sources": (["str"], OPT),
        "kill_chain": (["json"], OPT),
        "product": ("obj:product", OPT),
        "product_uid": ("str", OPT),
        "related_analytics": (["obj:analytic"], OPT),
        "related_events": (["json"], OPT),
        "related_events_count": ("int", OPT),
        **_many("str", OPT, "src_url uid_alt"),
        **_many(["json"], OPT, "tags traits"),
        **_many("json", OPT, "attack_graph"),
    },
    "analytic": {
        "type_id": ("int", REQ, ANALYTIC_TYPE),
        **_many("str", OPT, "type version category desc algorithm"),
        **_many("str", REC, "name uid"),
        "state_id": ("int", OPT),
        "state": ("str", OPT),
    },
    "attack": {
        "tactic": ("obj:tactic", OPT),
        "technique": ("obj:technique", OPT),
        "sub_technique": ("obj:sub_technique", OPT),
        "tactics": (["obj:tactic"], OPT),
        "version": ("str", REC),
        "mitigation": ("json", OPT),
    },
    "technique": {"uid": ("str", OPT), "name": ("str", OPT), "src_url": ("str", OPT)},
    "sub_technique": {"uid": ("str", OPT), "name": ("str", OPT), "src_url": ("str", OPT)},
    "tactic": {"uid": ("str", OPT), "name": ("str", OPT), "src_url": ("str", OPT)},
    "evidences": {
        "actor": ("json", REC),
        "api": ("json", REC),
        "connection_info": ("obj:network_connection_info", REC),
        **_many("json", REC, "container database databucket device"),
        **_many("json", OPT, "data"),
        "dst_endpoint": ("obj:network_endpoint", REC),
        **_many("json", REC, "email file http_request http_response job process"),
        **_many(["json"], REC, "ja4_fingerprint_list"),
        **_many("str", OPT, "name"),
        "query": ("obj:dns_query", REC),
        **_many("json", OPT, "reg_key reg_value"),
        **_many(["json"], REC, "resources"),
        **_many("json", REC, "script"),
        "src_endpoint": ("obj:network_endpoint", REC),
        **_many("json", REC, "tls url user"),
        **_many("str", OPT, "uid"),
        "verdict_id": ("int", OPT),
        "verdict": ("str", OPT),
    },
    "network_endpoint": {
        "ip": ("ip", REC),
        "port": ("port", REC),
        **_many("str", REC, "hostname name uid"),
        **_many("str", OPT, "domain mac"),
        "type_id": ("int", OPT),
        **_many("str", OPT, "type instance_uid interface_name interface_uid"),
        **_many("str", REC, "svc_name"),
        "intermediate_ips": (["ip"], OPT),
        **_many("str", OPT, "subnet_uid vlan_uid vpc_uid zone"),
        **_many("json", OPT, "location os owner autonomous_system container hw_info"),
        **_many(["json"], OPT, "agent_list"),
        "namespace_pid": ("int", OPT),
        "proxy_endpoint": ("json", OPT),
    },
    "network_connection_info": {
        "direction_id": ("int", REQ, DIRECTION),
        "direction": ("str", OPT),
        "boundary_id": ("int", OPT),
        "boundary": ("str", OPT),
        "protocol_name": ("str", REC),
        "protocol_num": ("int", REC),
        "protocol_ver_id": ("int", OPT),
        "protocol_ver": ("str", OPT),
        "tcp_flags": ("int", OPT),
        **_many("str", OPT, "uid community_uid flag_history"),
        **_many("json", OPT, "session"),
    },
    "dns_query": {
        "hostname": ("str", REQ),
        **_many("str", OPT, "type class opcode"),
        "opcode_id": ("int", OPT),
        "packet_uid": ("int", OPT),
    },
    "observable": {
        "name": ("str", REQ),
        "type_id": ("int", REQ, OBSERVABLE_TYPE),
        **_many("str", OPT, "type value event_uid"),
        **_many("json", OPT, "reputation"),
        "type_uid": ("long", OPT),
    },
}

#: enum attribute -> string sibling, per spec scope
SIBLINGS = {
    "activity_id": "activity_name",
    "severity_id": "severity",
    "status_id": "status",
    "confidence_id": "confidence",
    "risk_level_id": "risk_level",
    "category_uid": "category_name",
    "class_uid": "class_name",
    "type_id": "type",  # analytic, observable
    "direction_id": "direction",
}

EVIDENCE_AT_LEAST_ONE = (
    "actor", "api", "connection_info", "data", "database", "databucket", "device",
    "dst_endpoint", "email", "file", "process", "query", "resources", "src_endpoint",
    "url", "user", "job", "script",
)  # fmt: skip

TECH_RE = re.compile(r"^T\d{4}$")
SUB_RE = re.compile(r"^T\d{4}\.\d{3}$")
TACTIC_RE = re.compile(r"^TA\d{4}$")
#: 1973-03-03 in ms; epoch seconds stay below this until the year 5138, so smaller means seconds
MIN_MS = 100_000_000_000


def _is_int(v: Any) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_value(t: Any, v: Any, path: str, problems: list[str]) -> None:
    if isinstance(t, list):
        if not isinstance(v, list):
            problems.append(f"{path}: expected an array, got {type(v).__name__}")
            return
        for i, item in enumerate(v):
            _check_value(t[0], item, f"{path}[{i}]", problems)
        return
    if t in ("int", "long"):
        if not _is_int(v):
            problems.append(f"{path}: expected an integer, got {type(v).__name__}")
    elif t == "float":
        if not (_is_int(v) or isinstance(v, float)) or (
            isinstance(v, float) and not math.isfinite(v)
        ):
            problems.append(f"{path}: expected a finite number")
    elif t == "str":
        if not isinstance(v, str):
            problems.append(f"{path}: expected a string, got {type(v).__name__}")
    elif t == "bool":
        if not isinstance(v, bool):
            problems.append(f"{path}: expected a boolean, got {type(v).__name__}")
    elif t == "ts":
        if not _is_int(v):
            problems.append(
                f"{path}: timestamp_t must be integer epoch milliseconds, got {type(v).__name__}"
            )
        elif 0 < v < MIN_MS:
            problems.append(f"{path}: timestamp {v} looks like seconds, not milliseconds")
        elif v < 0:
            problems.append(f"{path}: negative timestamp")
    elif t == "ip":
        try:
            ipaddress.ip_address(v)
        except ValueError:
            problems.append(f"{path}: not an IP address: {v!r}")
    elif t == "port":
        if not _is_int(v) or not 0 <= v <= 65535:
            problems.append(f"{path}: port must be an integer 0-65535, got {v!r}")
    elif t == "json":
        pass
    elif isinstance(t, str) and t.startswith("obj:"):
        if not isinstance(v, dict):
            problems.append(f"{path}: expected an object, got {type(v).__name__}")
            return
        _check_object(t[4:], OBJECTS[t[4:]], v, path, problems)


def _check_object(name: str, spec: Spec, d: dict[str, Any], path: str, problems: list[str]) -> None:
    prefix = f"{path}." if path else ""
    for attr, (_, req, *_rest) in spec.items():
        if req == REQ and attr not in d:
            problems.append(f"missing required attribute {prefix}{attr}")
    for attr, v in d.items():
        where = f"{prefix}{attr}"
        if attr not in spec:
            problems.append(f"unknown attribute {where}")
            continue
        t, _, *enum = spec[attr]
        if v is None:
            problems.append(f"{where}: null is not a value (omit the attribute)")
            continue
        _check_value(t, v, where, problems)
        if enum and _is_int(v):
            captions: dict[int, str] = enum[0]
            extra_ok = name == "observable" and v in OBSERVABLE_EXTRA
            if v not in captions and not extra_ok:
                problems.append(f"{where}: {v} is not a valid enum value ({sorted(captions)})")
            sib = SIBLINGS.get(attr)
            if sib and sib in d and v in captions and d[sib] != captions[v] and v != 99:
                problems.append(
                    f"{prefix}{sib}: {d[sib]!r} does not match {attr}={v} ({captions[v]!r})"
                )
    _constraints(name, d, path, problems)


def _constraints(name: str, d: dict[str, Any], path: str, problems: list[str]) -> None:
    prefix = f"{path}." if path else ""
    if name == "attack":
        if not any(k in d for k in ("tactic", "technique", "sub_technique")):
            problems.append(
                f"{path}: attack needs at least one of tactic, technique, sub_technique"
            )
        tech, sub = d.get("technique"), d.get("sub_technique")
        if isinstance(tech, dict) and isinstance(sub, dict):
            tu, su = tech.get("uid"), sub.get("uid")
            if isinstance(tu, str) and isinstance(su, str) and su.split(".")[0] != tu:
                problems.append(f"{path}: sub_technique {su} is not a child of technique {tu}")
    elif name in ("technique", "sub_technique", "tactic"):
        if "uid" not in d and "name" not in d:
            problems.append(f"{path}: needs at least one of uid, name")
        uid = d.get("uid")
        pattern = {"technique": TECH_RE, "sub_technique": SUB_RE, "tactic": TACTIC_RE}[name]
        if isinstance(uid, str) and not pattern.match(uid):
            problems.append(f"{prefix}uid: {uid!r} is not a valid ATT&CK {name} id")
    elif name == "evidences":
        if not any(k in d for k in EVIDENCE_AT_LEAST_ONE):
            problems.append(f"{path}: evidences needs at least one evidence attribute")
    elif name == "metadata":
        if d.get("version") != OCSF_VERSION:
            problems.append(f"{prefix}version: expected {OCSF_VERSION!r}, got {d.get('version')!r}")
    elif name == "finding_info":
        a, b = d.get("first_seen_time"), d.get("last_seen_time")
        if _is_int(a) and _is_int(b) and a > b:
            problems.append(f"{prefix}first_seen_time is after last_seen_time")


def validate_detection_finding(d: Any) -> list[str]:
    """Problems of ``d`` as an OCSF 1.8.0 Detection Finding; ``[]`` when valid."""
    if not isinstance(d, dict):
        return [f"event must be an object, got {type(d).__name__}"]
    problems: list[str] = []
    _check_object("detection_finding", ROOT, d, "", problems)
    cls, act, tuid = d.get("class_uid"), d.get("activity_id"), d.get("type_uid")
    if _is_int(cls) and _is_int(act) and _is_int(tuid) and tuid != cls * 100 + act:
        problems.append(f"type_uid: {tuid} != class_uid*100 + activity_id ({cls * 100 + act})")
    if (
        "type_name" in d
        and _is_int(act)
        and act in ACTIVITY
        and d["type_name"] != f"Detection Finding: {ACTIVITY[act]}"
    ):
        problems.append(f"type_name: {d['type_name']!r} does not match activity_id={act}")
    for attr in ("risk_score", "confidence_score"):
        v = d.get(attr)
        if _is_int(v) and not 0 <= v <= 100:
            problems.append(f"{attr}: {v} outside 0-100")
    if _is_int(d.get("count")) and d["count"] < 0:
        problems.append("count: negative")
    s, e = d.get("start_time"), d.get("end_time")
    if _is_int(s) and _is_int(e) and s > e:
        problems.append("start_time is after end_time")
    return problems
