"""Operator allow-lists applied to findings before they become incidents.

An allow-list entry never hides data from the detectors (they still learn from it); it
only suppresses findings, and the engine counts every suppressed finding.

>>> from pipelines.detectors.base import Finding
>>> s = Suppressor(hosts=["10.0.0.5"], destinations=["203.0.113.0/24"], domains=["corp-backup.example"])
>>> def f(entity, dst=(), domain=""):
...     return Finding("exfil", "exfiltration", entity, "", 0, 1, 0.9, 4, 80, ("T1048",),
...                    "t", "s 1", dst=dst, domain=domain)
>>> [x.entity for x in s.filter([f("10.0.0.5"), f("10.0.0.6", ("203.0.113.9",)),
...                               f("10.0.0.7", domain="eu.corp-backup.example"), f("10.0.0.8")])]
['10.0.0.8']
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from pipelines.detectors.base import Finding
from pipelines.exceptions import ConfigError

__all__ = ["Suppressor", "parse_networks"]


def parse_networks(values: Iterable[str], key: str) -> list[Any]:
    """Parse IPs/CIDRs; a bad entry is a :class:`ConfigError` naming ``key``."""
    out = []
    for v in values:
        try:
            out.append(ipaddress.ip_network(str(v), strict=False))
        except ValueError:
            raise ConfigError(f"{key}: {v!r} is not an IP address or CIDR") from None
    return out


class Suppressor:
    """Drops findings whose host, destination or domain is allow-listed."""

    def __init__(
        self,
        hosts: Iterable[str] = (),
        destinations: Iterable[str] = (),
        domains: Iterable[str] = (),
    ) -> None:
        self.hosts = list(hosts)
        self.destinations = list(destinations)
        self.domains = [d.lower().strip(".") for d in domains]
        self._hosts = parse_networks(self.hosts, "allowlist.hosts")
        self._dsts = parse_networks(self.destinations, "allowlist.destinations")

    def _ip_in(self, ip: str, nets: list[Any]) -> bool:
        if not nets or not ip:
            return False
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr.version == n.version and addr in n for n in nets)

    def _domain_in(self, name: str) -> bool:
        name = name.lower().strip(".")
        return bool(name) and any(name == d or name.endswith("." + d) for d in self.domains)

    def allowed(self, f: Finding) -> bool:
        """True if the finding is allow-listed (to be suppressed)."""
        if self._ip_in(f.entity, self._hosts) or self._ip_in(f.src, self._hosts):
            return True
        if f.dst and all(self._ip_in(d, self._dsts) for d in f.dst):
            return True
        return bool(f.domain) and self._domain_in(f.domain)

    def filter(self, findings: list[Finding]) -> list[Finding]:
        if not (self.hosts or self.destinations or self.domains):
            return findings
        return [f for f in findings if not self.allowed(f)]
