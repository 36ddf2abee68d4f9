"""NetFlow v9 / IPFIX information elements that slowburn reads, declared as data.

``ELEMENTS`` maps (enterprise number, element id) to (IANA name, role). The role says
what the decoder does with a value; elements not listed are skipped by length. v9 field
types 1-127 share numbers with IPFIX (RFC 3954 §8, RFC 7012), so one table serves both.
Enterprise 29305 is RFC 5103's reverse-direction PEN: the same element numbers counted
for the biflow's reverse direction.

Roles: ``src4 dst4 src6 dst6`` addresses · ``sport dport proto flags`` · ``bytes pkts``
(delta counters; ``*_total`` used only when no delta is present) · ``rbytes rpkts rflags``
(reverse direction) · time stamps ``up_start up_end`` (ms of sysUpTime),
``s_start s_end`` (seconds), ``ms_start ms_end``, ``us_start us_end`` / ``ns_start
ns_end`` (NTP format), ``dus_start dus_end`` (µs before export time), ``init_ms``
(systemInitTimeMilliseconds) · sampling: ``sampler_id``, ``sampling_interval``,
``sampler_random_interval``, ``packet_interval``, ``packet_space``, ``selector_id``.

>>> ELEMENTS[(0, 1)], ELEMENTS[(29305, 1)]
(('octetDeltaCount', 'bytes'), ('reverseOctetDeltaCount', 'rbytes'))
>>> ROLE_OF[(0, 152)]
'ms_start'
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from stream.exceptions import DecodeError

__all__ = [
    "ELEMENTS",
    "INTEGER_ROLES",
    "REVERSE_PEN",
    "ROLE_OF",
    "V5_RECORD",
    "VARIABLE",
    "Template",
    "TemplateError",
    "flow_times",
    "inline_rates",
]

REVERSE_PEN = 29305
VARIABLE = 0xFFFF

ELEMENTS: dict[tuple[int, int], tuple[str, str]] = {
    (0, 1): ("octetDeltaCount", "bytes"),
    (0, 2): ("packetDeltaCount", "pkts"),
    (0, 85): ("octetTotalCount", "bytes_total"),
    (0, 86): ("packetTotalCount", "pkts_total"),
    (0, 23): ("postOctetDeltaCount", "bytes_post"),  # v9 OUT_BYTES
    (0, 24): ("postPacketDeltaCount", "pkts_post"),  # v9 OUT_PKTS
    (0, 4): ("protocolIdentifier", "proto"),
    (0, 6): ("tcpControlBits", "flags"),
    (0, 7): ("sourceTransportPort", "sport"),
    (0, 11): ("destinationTransportPort", "dport"),
    (0, 8): ("sourceIPv4Address", "src4"),
    (0, 12): ("destinationIPv4Address", "dst4"),
    (0, 27): ("sourceIPv6Address", "src6"),
    (0, 28): ("destinationIPv6Address", "dst6"),
    (0, 22): ("flowStartSysUpTime", "up_start"),
    (0, 21): ("flowEndSysUpTime", "up_end"),
    (0, 150): ("flowStartSeconds", "s_start"),
    (0, 151): ("flowEndSeconds", "s_end"),
    (0, 152): ("flowStartMilliseconds", "ms_start"),
    (0, 153): ("flowEndMilliseconds", "ms_end"),
    (0, 154): ("flowStartMicroseconds", "us_start"),
    (0, 155): ("flowEndMicroseconds", "us_end"),
    (0, 156): ("flowStartNanoseconds", "ns_start"),
    (0, 157): ("flowEndNanoseconds", "ns_end"),
    (0, 158): ("flowStartDeltaMicroseconds", "dus_start"),
    (0, 159): ("flowEndDeltaMicroseconds", "dus_end"),
    (0, 160): ("systemInitTimeMilliseconds", "init_ms"),
    (0, 34): ("samplingInterval", "sampling_interval"),
    (0, 35): ("samplingAlgorithm", "sampling_algorithm"),
    (0, 48): ("samplerId", "sampler_id"),
    (0, 49): ("samplerMode", "sampler_mode"),
    (0, 50): ("samplerRandomInterval", "sampler_random_interval"),
    (0, 302): ("selectorId", "selector_id"),
    (0, 305): ("samplingPacketInterval", "packet_interval"),
    (0, 306): ("samplingPacketSpace", "packet_space"),
    (0, 136): ("flowEndReason", "end_reason"),
    (0, 60): ("ipVersion", "ip_version"),
    (0, 10): ("ingressInterface", "in_if"),
    (0, 14): ("egressInterface", "out_if"),
    (REVERSE_PEN, 1): ("reverseOctetDeltaCount", "rbytes"),
    (REVERSE_PEN, 2): ("reversePacketDeltaCount", "rpkts"),
    (REVERSE_PEN, 85): ("reverseOctetTotalCount", "rbytes_total"),
    (REVERSE_PEN, 86): ("reversePacketTotalCount", "rpkts_total"),
    (REVERSE_PEN, 6): ("reverseTcpControlBits", "rflags"),
}

ROLE_OF: dict[tuple[int, int], str] = {k: role for k, (_name, role) in ELEMENTS.items()}

#: roles whose values are unsigned integers (any length 1-8, reduced-size encoding allowed)
INTEGER_ROLES = frozenset(
    role for role in ROLE_OF.values() if role not in {"src4", "dst4", "src6", "dst6"}
)

#: NetFlow v5 flow record (48 bytes): field names in struct order (RFC-less, Cisco format)
V5_RECORD = (
    "!IIIHHIIIIHHBBBBHHBBH",
    (
        "src4",
        "dst4",
        "nexthop",
        "in_if",
        "out_if",
        "pkts",
        "bytes",
        "up_start",
        "up_end",
        "sport",
        "dport",
        "pad1",
        "flags",
        "proto",
        "tos",
        "src_as",
        "dst_as",
        "src_mask",
        "dst_mask",
        "pad2",
    ),
)

_INT_CODES = {1: "B", 2: "H", 4: "I", 8: "Q"}


class TemplateError(DecodeError):
    """A template or record that cannot be decoded (reason is a dead-letter label)."""


@dataclass
class Template:
    """A (options) template compiled for decoding: struct format and role → value position."""

    fields: tuple[tuple[int, int, int], ...]  # (enterprise, element id, length)
    scope: int
    fmt: str
    reclen: int
    roles: dict[str, int]
    conv: tuple[int, ...]
    variable: bool
    _struct: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def build(cls, fields: Sequence[tuple[int, int, int]], scope: int = 0) -> Template:
        """Compile a template; raises ``TemplateError`` for a template that cannot be decoded.

        >>> t = Template.build([(0, 8, 4), (0, 12, 4), (0, 1, 4), (0, 99, 3)])
        >>> t.fmt, t.reclen, t.roles
        ('!III3x', 15, {'src4': 0, 'dst4': 1, 'bytes': 2})
        """
        codes, roles, conv = ["!"], {}, []
        reclen, pos, variable = 0, 0, False
        for pen, ie, length in fields:
            role = ROLE_OF.get((pen, ie))
            if length == VARIABLE:
                variable = True
                if role is not None and role not in roles:
                    roles[role] = pos
                    pos += 1
                continue
            reclen += length
            ok = role is not None and role not in roles
            if ok and role in ("src4", "dst4") and length != 4:
                ok = False
            if ok and role in ("src6", "dst6") and length != 16:
                ok = False
            if ok and role in INTEGER_ROLES and length > 8:
                ok = False
            if not ok:
                codes.append(f"{length}x")
                continue
            assert role is not None
            roles[role] = pos
            if role in ("src6", "dst6"):
                codes.append("16s")
            elif length in _INT_CODES:
                codes.append(_INT_CODES[length])
            else:
                codes.append(f"{length}s")
                conv.append(pos)
            pos += 1
        if not variable and reclen == 0:
            raise TemplateError("bad_value", "template with zero record length")
        return cls(tuple(fields), scope, "".join(codes), reclen, roles, tuple(conv), variable)

    def rows(self, body: bytes) -> list[tuple[Any, ...]]:
        """Decode every whole record of a data set body (trailing padding ignored)."""
        if self.variable:
            return self._variable_rows(body)
        if self._struct is None:
            self._struct = struct.Struct(self.fmt)
        n = len(body) // self.reclen
        if n == 0:
            return []
        rows = list(self._struct.iter_unpack(body[: n * self.reclen]))
        if self.conv:
            cv = self.conv
            fixed = []
            for r in rows:
                lst = list(r)
                for p in cv:
                    lst[p] = int.from_bytes(lst[p], "big")
                fixed.append(tuple(lst))
            rows = fixed
        return rows

    def _variable_rows(self, body: bytes) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = []
        pos, n = 0, len(body)
        nroles = len(self.roles)
        while pos < n:
            vals: list[Any] = [0] * nroles
            seen: set[str] = set()
            start = pos
            for pen, ie, length in self.fields:
                if length == VARIABLE:
                    if pos >= n:
                        return rows
                    length = body[pos]
                    pos += 1
                    if length == 255:
                        if pos + 2 > n:
                            return rows
                        length = (body[pos] << 8) | body[pos + 1]
                        pos += 2
                if pos + length > n:
                    return rows
                raw = body[pos : pos + length]
                pos += length
                role = ROLE_OF.get((pen, ie))
                if role is None or role in seen or role not in self.roles:
                    continue
                seen.add(role)
                if role in ("src6", "dst6"):
                    vals[self.roles[role]] = raw if length == 16 else b""
                elif role in ("src4", "dst4"):
                    vals[self.roles[role]] = int.from_bytes(raw, "big") if length == 4 else -1
                else:
                    vals[self.roles[role]] = int.from_bytes(raw[:8], "big")
            if pos == start:
                break
            rows.append(tuple(vals))
        return rows

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_struct"] = None
        return state


NTP_EPOCH = 2_208_988_800


def inline_rates(r: dict[str, int], cols: list[Any], n: int) -> list[int] | None:
    """Sampling rate per record from sampling elements in the records, if any.

    >>> inline_rates({"packet_interval": 0, "packet_space": 1}, [[1, 10], [99, 0]], 2)
    [100, 1]
    """
    if "packet_interval" in r:
        iv = cols[r["packet_interval"]]
        sp = cols[r["packet_space"]] if "packet_space" in r else [0] * n
        return [max(1, (a + b) // a) if a > 0 else 1 for a, b in zip(iv, sp, strict=True)]
    for role in ("sampling_interval", "sampler_random_interval"):
        if role in r:
            return [max(1, v) for v in cols[r[role]]]
    return None


def flow_times(
    r: dict[str, int],
    cols: list[Any],
    export: float,
    uptime: int | None,
    init_ms: int | None,
    which: str,
) -> list[float] | None:
    """Flow start or end (``which``) in epoch seconds from whichever time element is present.

    ``uptime`` is the v5/v9 header sysUptime (ms); IPFIX sysUpTime-relative elements use
    systemInitTimeMilliseconds from the record or from options data (``init_ms``).

    >>> flow_times({"up_start": 0}, [[9_000]], 100.0, 10_000, None, "start")
    [99.0]
    >>> flow_times({"ms_end": 0}, [[1_500]], 100.0, None, None, "end")
    [1.5]
    """
    if f"ms_{which}" in r:
        return [v / 1000.0 for v in cols[r[f"ms_{which}"]]]
    if f"s_{which}" in r:
        return [float(v) for v in cols[r[f"s_{which}"]]]
    for role in (f"us_{which}", f"ns_{which}"):
        if role in r:
            return [(v >> 32) - NTP_EPOCH + (v & 0xFFFFFFFF) / 4294967296.0 for v in cols[r[role]]]
    if f"dus_{which}" in r:
        return [export - v / 1e6 for v in cols[r[f"dus_{which}"]]]
    if f"up_{which}" in r:
        vals = cols[r[f"up_{which}"]]
        if uptime is not None:
            out = []
            for v in vals:
                d = (uptime - v) & 0xFFFFFFFF
                if d >= 1 << 31:
                    d -= 1 << 32
                out.append(export - d / 1000.0)
            return out
        if "init_ms" in r:
            return [(a + v) / 1000.0 for a, v in zip(cols[r["init_ms"]], vals, strict=True)]
        if init_ms is not None:
            return [(init_ms + v) / 1000.0 for v in vals]
    return None
