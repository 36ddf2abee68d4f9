"""Raw frame parsing into packet-summary columns, and the DNS messages of port-53 packets.

Pure code on bytes: the caller (``stream.decoders.pcap``) walks the capture records and
hands over one buffer plus the offset, captured length, link type and timestamp of each
frame. :meth:`PacketParser.parse` reads every header field for all frames at once with
numpy gathers (no per-packet Python), so parsing costs well under a microsecond a packet.

Link types: Ethernet (1, with 802.1Q/802.1ad tags), Linux SLL (113), SLL2 (276), raw IP
(101, 12, 14, 228, 229), BSD loopback / null (0, 108). IPv4 (only the first fragment has
ports), IPv6 (hop-by-hop, routing, destination options, AH and fragment headers skipped),
TCP (9 flag bits), UDP, ICMP / ICMPv6 (``sport`` = type, ``dport`` = code, as Zeek does).
``ip_len`` is the IP-layer length from the header (IPv4 total length, 40 + IPv6 payload
length), which is what NetFlow/IPFIX count; a zero IPv4 total length (segmentation
offload on the capturing host) is replaced by the captured length, as Wireshark does.

>>> import struct
>>> ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 1, 0, 64, 6, 0,
...                  bytes([10, 0, 0, 1]), bytes([8, 8, 8, 8]))
>>> tcp = struct.pack("!HHIIBBHHH", 40000, 443, 0, 0, 0x50, 0x02, 0, 0, 0)
>>> frame = b"\\x00" * 12 + b"\\x08\\x00" + ip + tcp
>>> p = PacketParser().parse(frame, np.array([0]), np.array([len(frame)]), 1, np.array([1.5]))
>>> p.src.tolist(), p.dst.tolist(), p.sport.tolist(), p.dport.tolist(), p.tcp_flags.tolist()
(['10.0.0.1'], ['8.8.8.8'], [40000], [443], [2])
>>> p.ip_len.tolist(), p.payload_len.tolist()
([40], [0])
"""

from __future__ import annotations

import socket
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipelines.dns_wire import DnsColumns, DnsMessage, dns_columns, parse_dns

__all__ = [
    "DnsMessage",
    "PacketColumns",
    "PacketParser",
    "dns_messages",
    "dns_payloads",
    "parse_dns",
]

ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
_VLAN = (0x8100, 0x88A8, 0x9100)
_RAW_LINKTYPES = (101, 12, 14, 228, 229)
_V6_EXT = (0, 43, 60, 51, 44)


@dataclass
class PacketColumns:
    """Columnar packet summaries (one entry per IP packet).

    ``index`` is the record number in the capture; ``l4_off``/``l4_end`` delimit the
    transport payload inside the parsed buffer (``-1`` when unknown), used for DNS.
    ``addrs``/``src_code``/``dst_code`` (when set) encode the addresses as small integers,
    equal codes meaning equal strings (lets consumers skip per-packet dict lookups).
    """

    ts: np.ndarray
    src: np.ndarray
    dst: np.ndarray
    sport: np.ndarray
    dport: np.ndarray
    proto: np.ndarray
    ip_len: np.ndarray
    tcp_flags: np.ndarray
    payload_len: np.ndarray
    index: np.ndarray
    l4_off: np.ndarray
    l4_end: np.ndarray
    stats: dict[str, int] = field(default_factory=dict)
    #: distinct address strings of the chunk; ``src``/``dst`` = ``addrs[src_code/dst_code]``
    addrs: np.ndarray | None = None
    src_code: np.ndarray | None = None
    dst_code: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ts)


class PacketParser:
    """Vectorised header parser with bounded address-string caches.

    >>> PacketParser().v4_strings(np.array([0x0A000001, 0x08080808], dtype=np.uint32)).tolist()
    ['10.0.0.1', '8.8.8.8']
    """

    def __init__(self, max_cache: int = 1_000_000) -> None:
        self.max_cache = max_cache
        self._v4: dict[int, str] = {}
        self._v6: dict[bytes, str] = {}

    # -- address strings -------------------------------------------------------------
    def v4_strings(self, values: np.ndarray) -> np.ndarray:
        """Interned dotted-quad strings for an array of host-order uint32 addresses."""
        names, inv = self.v4_codes(values)
        return names[inv]

    def v4_codes(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(distinct address strings, index of each value's string) for uint32 addresses."""
        if len(values) == 0:
            return np.empty(0, dtype=object), np.zeros(0, dtype=np.int64)
        uniq, inv = np.unique(values, return_inverse=True)
        cache = self._v4
        if len(cache) > self.max_cache:
            cache.clear()
        names = np.empty(len(uniq), dtype=object)
        for i, v in enumerate(uniq.tolist()):
            s = cache.get(v)
            if s is None:
                s = sys.intern(socket.inet_ntoa(v.to_bytes(4, "big")))
                cache[v] = s
            names[i] = s
        return names, inv.reshape(-1)

    def v6_strings(self, raw: np.ndarray) -> np.ndarray:
        """Interned compressed IPv6 strings for an ``(n, 16)`` uint8 array."""
        names, inv = self.v6_codes(raw)
        return names[inv]

    def v6_codes(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(distinct address strings, index of each row's string) for ``(n, 16)`` uint8 rows."""
        if len(raw) == 0:
            return np.empty(0, dtype=object), np.zeros(0, dtype=np.int64)
        packed = np.ascontiguousarray(raw).view("V16").reshape(-1)
        uniq, inv = np.unique(packed, return_inverse=True)
        cache = self._v6
        if len(cache) > self.max_cache:
            cache.clear()
        names = np.empty(len(uniq), dtype=object)
        for i, v in enumerate(uniq.tolist()):
            b = bytes(v)
            s = cache.get(b)
            if s is None:
                s = sys.intern(socket.inet_ntop(socket.AF_INET6, b))
                cache[b] = s
            names[i] = s
        return names, inv.reshape(-1)

    # -- frames ------------------------------------------------------------------------
    def parse(
        self,
        buf: bytes | bytearray | memoryview,
        offsets: np.ndarray,
        caplens: np.ndarray,
        linktypes: np.ndarray | int,
        ts: np.ndarray,
        index: np.ndarray | None = None,
    ) -> PacketColumns:
        """Parse frames at ``offsets`` (length ``caplens``) of ``buf``; non-IP frames are dropped."""
        b = np.frombuffer(buf, dtype=np.uint8)
        nbuf = len(b)
        off = np.asarray(offsets, dtype=np.int64)
        n = len(off)
        end = off + np.asarray(caplens, dtype=np.int64)
        if index is None:
            index = np.arange(n, dtype=np.int64)
        lt = np.broadcast_to(np.asarray(linktypes, dtype=np.int64), (n,))
        last = max(nbuf - 1, 0)
        if nbuf == 0:
            b = np.zeros(1, dtype=np.uint8)

        def u8(pos: np.ndarray) -> np.ndarray:
            return b[np.minimum(pos, last)].astype(np.int64)

        def u16(pos: np.ndarray) -> np.ndarray:
            return (u8(pos) << 8) | u8(pos + 1)

        def u32(pos: np.ndarray) -> np.ndarray:
            return (u16(pos) << 16) | u16(pos + 2)

        et = np.zeros(n, dtype=np.int64)
        l3 = off.copy()
        m = lt == 1
        if m.any():
            et[m] = u16(off[m] + 12)
            l3[m] = off[m] + 14
            for _ in range(2):
                v = m & np.isin(et, _VLAN)
                if v.any():
                    et[v] = u16(l3[v] + 2)
                    l3[v] += 4
        m = lt == 113
        if m.any():
            et[m] = u16(off[m] + 14)
            l3[m] = off[m] + 16
        m = lt == 276
        if m.any():
            et[m] = u16(off[m])
            l3[m] = off[m] + 20
        m = np.isin(lt, (0, 108))
        if m.any():
            fam = u8(off[m]) | u8(off[m] + 3)
            et[m] = np.where(
                fam == 2, ETH_IPV4, np.where(np.isin(fam, (10, 24, 28, 30)), ETH_IPV6, 0)
            )
            l3[m] = off[m] + 4
        m = np.isin(lt, _RAW_LINKTYPES)
        if m.any():
            ver = u8(off[m]) >> 4
            et[m] = np.where(ver == 4, ETH_IPV4, np.where(ver == 6, ETH_IPV6, 0))

        ver = u8(l3) >> 4
        is4 = (et == ETH_IPV4) & (ver == 4) & (l3 + 20 <= end)
        is6 = (et == ETH_IPV6) & (ver == 6) & (l3 + 40 <= end)
        ip = is4 | is6
        stats = {"packets": n, "non_ip": int(np.count_nonzero(~np.isin(et, (ETH_IPV4, ETH_IPV6))))}
        stats["short"] = int(n - stats["non_ip"] - np.count_nonzero(ip))
        keep = np.flatnonzero(ip)
        off, end, l3, is4, is6 = off[keep], end[keep], l3[keep], is4[keep], is6[keep]
        ts = np.asarray(ts, dtype=np.float64)[keep]
        index = np.asarray(index, dtype=np.int64)[keep]
        k = len(keep)

        ip_len = np.zeros(k, dtype=np.int64)
        proto = np.zeros(k, dtype=np.int64)
        l4 = np.zeros(k, dtype=np.int64)
        has_l4 = np.ones(k, dtype=bool)
        src = np.empty(k, dtype=object)
        dst = np.empty(k, dtype=object)
        src_code = np.zeros(k, dtype=np.int64)
        dst_code = np.zeros(k, dtype=np.int64)
        addrs = [np.empty(0, dtype=object)]

        i4 = np.flatnonzero(is4)
        if len(i4):
            p = l3[i4]
            ip_len[i4] = u16(p + 2)
            proto[i4] = u8(p + 9)
            l4[i4] = p + (u8(p) & 15) * 4
            has_l4[i4] = (u16(p + 6) & 0x1FFF) == 0
            names, inv = self.v4_codes(np.concatenate([u32(p + 12), u32(p + 16)]).astype(np.uint32))
            both = names[inv]
            src[i4], dst[i4] = both[: len(i4)], both[len(i4) :]
            src_code[i4], dst_code[i4] = inv[: len(i4)], inv[len(i4) :]
            addrs.append(names)
        i6 = np.flatnonzero(is6)
        if len(i6):
            p = l3[i6]
            ip_len[i6] = 40 + u16(p + 4)
            nh = u8(p + 6)
            q = p + 40
            e = end[i6]
            frag_ok = np.ones(len(i6), dtype=bool)
            for _ in range(6):
                x = np.isin(nh, _V6_EXT) & (q + 8 <= e)
                if not x.any():
                    break
                hl = u8(q + 1)
                size = np.where(nh == 51, (hl + 2) * 4, np.where(nh == 44, 8, (hl + 1) * 8))
                frag_ok &= ~(x & (nh == 44) & ((u16(q + 2) >> 3) != 0))
                nxt = u8(q)
                nh = np.where(x, nxt, nh)
                q = np.where(x, q + size, q)
            proto[i6] = nh
            l4[i6] = q
            has_l4[i6] = frag_ok & ~np.isin(nh, _V6_EXT)
            gather = np.minimum(np.concatenate([p + 8, p + 24])[:, None] + np.arange(16), last)
            names, inv = self.v6_codes(b[gather])
            both = names[inv]
            src[i6], dst[i6] = both[: len(i6)], both[len(i6) :]
            base = sum(len(a) for a in addrs)
            src_code[i6], dst_code[i6] = inv[: len(i6)] + base, inv[len(i6) :] + base
            addrs.append(names)

        tso = (
            ip_len == 0
        )  # TSO/LRO capture: header length 0, use what was captured (as Wireshark does)
        if tso.any():
            ip_len[tso] = end[tso] - l3[tso]
            stats["tso"] = int(np.count_nonzero(tso))
        ip_end = l3 + ip_len
        sport = np.full(k, -1, dtype=np.int64)
        dport = np.full(k, -1, dtype=np.int64)
        flags = np.zeros(k, dtype=np.int64)
        payload = np.maximum(ip_end - l4, 0)
        l4_off = np.full(k, -1, dtype=np.int64)

        t = np.flatnonzero(has_l4 & (proto == 6) & (l4 + 14 <= end))
        if len(t):
            q = l4[t]
            sport[t], dport[t] = u16(q), u16(q + 2)
            b12 = u8(q + 12)
            flags[t] = u8(q + 13) | ((b12 & 1) << 8)
            data = q + (b12 >> 4) * 4
            payload[t] = np.maximum(ip_end[t] - data, 0)
            l4_off[t] = data
        t = np.flatnonzero(has_l4 & (proto == 17) & (l4 + 8 <= end))
        if len(t):
            q = l4[t]
            sport[t], dport[t] = u16(q), u16(q + 2)
            payload[t] = np.maximum(ip_end[t] - q - 8, 0)
            l4_off[t] = q + 8
        t = np.flatnonzero(has_l4 & np.isin(proto, (1, 58)) & (l4 + 4 <= end))
        if len(t):
            q = l4[t]
            sport[t], dport[t] = u8(q), u8(q + 1)
            payload[t] = np.maximum(ip_end[t] - q - 8, 0)
        stats["fragments"] = int(np.count_nonzero(~has_l4))
        return PacketColumns(
            ts=ts,
            src=src,
            dst=dst,
            sport=sport.astype(np.int32),
            dport=dport.astype(np.int32),
            proto=proto.astype(np.uint8),
            ip_len=ip_len,
            tcp_flags=flags.astype(np.uint16),
            payload_len=payload,
            index=index,
            l4_off=l4_off,
            l4_end=np.minimum(ip_end, end),
            stats=stats,
            addrs=np.concatenate(addrs),
            src_code=src_code,
            dst_code=dst_code,
        )


def dns_messages(
    cols: PacketColumns, buf: Any, parser: PacketParser | None = None
) -> tuple[np.ndarray, DnsColumns]:
    """(packet rows, their parsed DNS fields) for the port-53 TCP/UDP packets with payload.

    All messages of the chunk are parsed together (:func:`pipelines.dns_wire.dns_columns`).
    TCP segments are kept only when they start with the 2-byte length prefix of a
    message they contain in full (best effort, no stream reassembly); others are left
    out (not counted as malformed).
    """
    is_dns = (
        ((cols.sport == 53) | (cols.dport == 53))
        & (cols.l4_off >= 0)
        & ((cols.proto == 6) | (cols.proto == 17))
        & (cols.payload_len > 0)
    )
    rows = np.flatnonzero(is_dns)
    a = cols.l4_off[rows]
    z = cols.l4_end[rows]
    tcp = cols.proto[rows] == 6
    if tcp.any():
        b = np.frombuffer(buf, dtype=np.uint8)
        last = max(len(b) - 1, 0)
        b = b if len(b) else np.zeros(1, dtype=np.uint8)
        pre = (b[np.minimum(a, last)].astype(np.int64) << 8) | b[np.minimum(a + 1, last)]
        keep = ~tcp | ((z - a >= 14) & (pre + 2 <= z - a))
        rows, a, z, tcp, pre = rows[keep], a[keep], z[keep], tcp[keep], pre[keep]
        a = np.where(tcp, a + 2, a)
        z = np.where(tcp, a + pre, z)
    if parser is None:
        return rows, dns_columns(buf, a, z)
    return rows, dns_columns(buf, a, z, parser.v4_strings, parser.v6_strings)


def dns_payloads(
    cols: PacketColumns, buf: Any, cache: Any = None, parser: PacketParser | None = None
) -> list[tuple[int, DnsMessage | None, int]]:
    """(row, parsed message or None if malformed, message length) for port-53 packets.

    The per-message form of :func:`dns_messages` (``cache`` is accepted and unused).
    """
    del cache
    rows, dc = dns_messages(cols, buf, parser)
    sizes = dc.size.tolist()
    return [(r, dc.message(i), sizes[i]) for i, r in enumerate(rows.tolist())]
