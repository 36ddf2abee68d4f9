"""MITRE ATT&CK® (Enterprise) names and tactics for the techniques slowburn reports.

Detectors put bare technique ids in :attr:`Finding.attacks` (``"T1048.003"``); the alert
renderers look the names and tactics up here. Names follow ATT&CK Enterprise v16
(checked against attack.mitre.org technique pages); a sub-technique also names its
parent technique. A technique that belongs to several tactics lists them all, the
first being the one slowburn's detection speaks to.

>>> technique_name("T1048.003")
'Exfiltration Over Unencrypted Non-C2 Protocol'
>>> parent("T1021.002"), technique_name(parent("T1021.002"))
('T1021', 'Remote Services')
>>> [t.name for t in tactics("T1071.004")]
['Command and Control']
>>> technique_name("T9999") is None
True
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = [
    "ATTACK_VERSION",
    "TACTICS",
    "TECHNIQUES",
    "Tactic",
    "is_subtechnique",
    "parent",
    "tactics",
    "technique_name",
]

#: ATT&CK Enterprise release the names below were taken from
ATTACK_VERSION = "16.1"


class Tactic(NamedTuple):
    """An ATT&CK tactic: ``uid`` (``TA0010``) and ``name`` (``Exfiltration``)."""

    uid: str
    name: str


#: tactic short key -> Tactic
TACTICS: dict[str, Tactic] = {
    "execution": Tactic("TA0002", "Execution"),
    "persistence": Tactic("TA0003", "Persistence"),
    "privilege-escalation": Tactic("TA0004", "Privilege Escalation"),
    "credential-access": Tactic("TA0006", "Credential Access"),
    "discovery": Tactic("TA0007", "Discovery"),
    "lateral-movement": Tactic("TA0008", "Lateral Movement"),
    "exfiltration": Tactic("TA0010", "Exfiltration"),
    "command-and-control": Tactic("TA0011", "Command and Control"),
}

#: technique id -> (name, tactic keys)
TECHNIQUES: dict[str, tuple[str, tuple[str, ...]]] = {
    # Exfiltration
    "T1048": ("Exfiltration Over Alternative Protocol", ("exfiltration",)),
    "T1048.003": ("Exfiltration Over Unencrypted Non-C2 Protocol", ("exfiltration",)),
    "T1041": ("Exfiltration Over C2 Channel", ("exfiltration",)),
    "T1030": ("Data Transfer Size Limits", ("exfiltration",)),
    "T1029": ("Scheduled Transfer", ("exfiltration",)),
    "T1567": ("Exfiltration Over Web Service", ("exfiltration",)),
    "T1567.002": ("Exfiltration to Cloud Storage", ("exfiltration",)),
    # Command and control
    "T1071": ("Application Layer Protocol", ("command-and-control",)),
    "T1071.001": ("Web Protocols", ("command-and-control",)),
    "T1071.004": ("DNS", ("command-and-control",)),
    "T1573": ("Encrypted Channel", ("command-and-control",)),
    "T1571": ("Non-Standard Port", ("command-and-control",)),
    "T1572": ("Protocol Tunneling", ("command-and-control",)),
    # Lateral movement
    "T1021": ("Remote Services", ("lateral-movement",)),
    "T1021.001": ("Remote Desktop Protocol", ("lateral-movement",)),
    "T1021.002": ("SMB/Windows Admin Shares", ("lateral-movement",)),
    "T1021.003": ("Distributed Component Object Model", ("lateral-movement",)),
    "T1021.004": ("SSH", ("lateral-movement",)),
    "T1021.006": ("Windows Remote Management", ("lateral-movement",)),
    "T1570": ("Lateral Tool Transfer", ("lateral-movement",)),
    # Execution (remote execution seen on the wire)
    "T1047": ("Windows Management Instrumentation", ("execution",)),
    "T1569": ("System Services", ("execution",)),
    "T1569.002": ("Service Execution", ("execution",)),
    "T1053": ("Scheduled Task/Job", ("execution", "persistence", "privilege-escalation")),
    "T1053.005": ("Scheduled Task", ("execution", "persistence", "privilege-escalation")),
    # Discovery
    "T1087": ("Account Discovery", ("discovery",)),
    "T1087.002": ("Domain Account", ("discovery",)),
    "T1069": ("Permission Groups Discovery", ("discovery",)),
    "T1069.002": ("Domain Groups", ("discovery",)),
    "T1018": ("Remote System Discovery", ("discovery",)),
    "T1046": ("Network Service Discovery", ("discovery",)),
    # Credential access
    "T1110": ("Brute Force", ("credential-access",)),
}


def is_subtechnique(uid: str) -> bool:
    """``T1048.003`` is a sub-technique, ``T1048`` is not.

    >>> is_subtechnique("T1048.003"), is_subtechnique("T1048")
    (True, False)
    """
    return "." in uid


def parent(uid: str) -> str:
    """The parent technique of a sub-technique (a technique is its own parent)."""
    return uid.split(".", 1)[0]


def technique_name(uid: str) -> str | None:
    """The ATT&CK name of a technique or sub-technique, ``None`` when unknown."""
    entry = TECHNIQUES.get(uid)
    return entry[0] if entry else None


def tactics(uid: str) -> list[Tactic]:
    """The tactics of a technique (inherited from the parent for an unknown sub-technique)."""
    entry = TECHNIQUES.get(uid) or TECHNIQUES.get(parent(uid))
    return [TACTICS[k] for k in entry[1]] if entry else []
