"""Packet summaries (``slowburn sensor`` output) → flows through :class:`FlowTable`, plus DNS rows.

Wire format: JSON, one packet per object, ``"kind": "pkt"``::

    {"kind":"pkt","ts":1707834880.85,"src":"10.0.0.5","dst":"8.8.8.8","sport":51000,"dport":53,
     "proto":17,"len":73,"flags":0,"plen":45,
     "dns":{"id":4660,"qr":false,"rcode":0,"query":"example.com","qtype":1,"ancount":0,"answers":[],"size":45}}

``len`` is the IP-layer length, ``plen`` the transport payload, ``flags`` the TCP flags.
A message is one object (file lines) or a JSON array of objects (Kafka batches from one
sensor, all keyed by the same internal host). The decoder is stateful: flows come out as
they end (packet time) and :meth:`SummaryDecoder.flush` emits the open ones.

>>> d = SummaryDecoder()
>>> r = d.decode([Message(b'{"kind":"pkt","ts":1.0,"src":"10.0.0.5","dst":"10.0.0.53","sport":5000,'
...                       b'"dport":53,"proto":17,"len":60,"flags":0,"plen":32,"dns":{"id":7,"qr":false,'
...                       b'"rcode":0,"query":"a.example","qtype":1,"ancount":0,"answers":[],"size":32}}', "s", 0)])
>>> f = next(d.flush().flows.rows()); f["src"], f["dst_port"], f["bytes_out"], f["service"]
('10.0.0.5', 53, 60, 'dns')
>>> d.decode([Message(b'[{"kind":"pkt"}]', "s", 1)]).dead[0].reason
'schema'
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Sequence
from typing import Annotated, Any, ClassVar

import msgspec

from pipelines.flowtable import DnsPairer, FlowTable
from pipelines.records import FlowBatch, intern_ip
from stream.decoders.base import MAX_MESSAGE_BYTES, DeadLetter, Decoder, DecodeResult, Message

__all__ = ["DnsSummary", "PacketSummary", "SummaryDecoder"]

U16 = Annotated[int, msgspec.Meta(ge=-1, le=65535)]
Size = Annotated[int, msgspec.Meta(ge=0, le=1 << 20)]


class DnsSummary(msgspec.Struct, omit_defaults=True):
    """Parsed DNS fields of a port-53 packet."""

    id: U16
    qr: bool
    rcode: int = 0
    query: str = ""
    qtype: int = 0
    ancount: int = 0
    answers: list[str] = []
    size: Size = 0


class PacketSummary(msgspec.Struct, omit_defaults=True):
    """One packet as the sensor publishes it."""

    kind: str
    ts: float
    src: str
    dst: str
    sport: U16 = -1
    dport: U16 = -1
    proto: Annotated[int, msgspec.Meta(ge=0, le=255)] = 0
    len: Size = 0
    flags: Annotated[int, msgspec.Meta(ge=0, le=0x1FF)] = 0
    plen: Size = 0
    dns: DnsSummary | None = None


_DECODER = msgspec.json.Decoder(PacketSummary | list[PacketSummary])


def _valid_ip(text: str, cache: dict[str, bool]) -> bool:
    ok = cache.get(text)
    if ok is None:
        try:
            ipaddress.ip_address(text.split("%", 1)[0])
            ok = True
        except ValueError:
            ok = False
        if len(cache) > 1_000_000:
            cache.clear()
        cache[text] = ok
    return ok


class SummaryDecoder(Decoder):
    """Stateful decoder for packet summaries (see module docstring)."""

    name: ClassVar[str] = "summary"

    def __init__(
        self,
        active_timeout: float = 1800.0,
        idle_timeout: float = 60.0,
        tcp_idle_timeout: float = 300.0,
        close_linger: float = 5.0,
        max_flows: int = 200_000,
        sensor: str = "",
    ) -> None:
        self.table = FlowTable(
            active_timeout=active_timeout,
            idle_timeout=idle_timeout,
            tcp_idle_timeout=tcp_idle_timeout,
            close_linger=close_linger,
            max_flows=max_flows,
            sensor=sensor,
        )
        self.pairer = DnsPairer(sensor=sensor)
        self._ips: dict[str, bool] = {}

    @classmethod
    def sniff(cls, value: bytes) -> bool:
        head = value[:80].replace(b" ", b"")
        return head[:2] in (b'{"', b"[{") and b'"kind":"pkt"' in head

    def decode(self, messages: Sequence[Message]) -> DecodeResult:
        result = DecodeResult()
        cols: dict[str, list[Any]] = {
            k: []
            for k in (
                "ts",
                "src",
                "dst",
                "sport",
                "dport",
                "proto",
                "ip_len",
                "tcp_flags",
                "payload_len",
                "origin",
                "offset",
            )
        }
        for m in messages:
            if len(m.value) > MAX_MESSAGE_BYTES:
                result.dead.append(
                    DeadLetter.of(m, "oversized", f"{len(m.value)} bytes", self.name)
                )
                continue
            try:
                got = _DECODER.decode(m.value)
            except msgspec.ValidationError as exc:
                result.dead.append(DeadLetter.of(m, "schema", str(exc), self.name))
                continue
            except msgspec.DecodeError as exc:
                result.dead.append(DeadLetter.of(m, "not_json", str(exc), self.name))
                continue
            pkts = got if isinstance(got, list) else [got]
            bad = ""
            for p in pkts:
                if p.kind != "pkt":
                    bad = f"kind {p.kind!r} is not 'pkt'"
                elif not math.isfinite(p.ts):
                    bad = "non-finite ts"
                elif not (_valid_ip(p.src, self._ips) and _valid_ip(p.dst, self._ips)):
                    bad = "invalid IP address"
                if bad:
                    break
            if bad:
                result.dead.append(
                    DeadLetter.of(m, "nan" if "ts" in bad else "bad_value", bad, self.name)
                )
                continue
            for p in pkts:
                cols["ts"].append(p.ts)
                cols["src"].append(intern_ip(p.src))
                cols["dst"].append(intern_ip(p.dst))
                cols["sport"].append(p.sport)
                cols["dport"].append(p.dport)
                cols["proto"].append(p.proto)
                cols["ip_len"].append(p.len)
                cols["tcp_flags"].append(p.flags)
                cols["payload_len"].append(p.plen)
                cols["origin"].append(m.origin)
                cols["offset"].append(m.offset)
                q = p.dns
                if q is not None:
                    self.pairer.add(
                        p.ts,
                        cols["src"][-1],
                        cols["dst"][-1],
                        p.sport,
                        p.dport,
                        p.proto,
                        q.id,
                        q.qr,
                        q.rcode,
                        q.query,
                        q.qtype,
                        q.ancount,
                        tuple(q.answers),
                        q.size,
                        m.origin,
                        m.offset,
                    )
        flows = self.table.add(cols) if cols["ts"] else FlowBatch.empty()
        result.flows = flows
        result.dns = self.pairer.take()
        return result

    def flush(self) -> DecodeResult:
        return DecodeResult(flows=self.table.flush(), dns=self.pairer.take(final=True))
