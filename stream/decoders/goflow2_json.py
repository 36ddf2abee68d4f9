"""goflow2 JSON (``-format=json``): one unidirectional flow per message.

goflow2 v2 keys (``time_flow_start_ns``, ``src_addr``, ``proto`` as a name such as
``"TCP"``) and the older v1 keys (``TimeFlowStart`` in seconds, ``SrcAddr``, numeric
``Proto``) are both accepted. ``bytes``/``packets`` are multiplied by ``sampling_rate``
(0 or absent means unsampled). Non-IP flows (``etype`` ARP, ...) are ``ignored``.

>>> msg = (b'{"type":"IPFIX","time_received_ns":1707834881000000000,"sampling_rate":10,'
...        b'"sampler_address":"192.0.2.1","time_flow_start_ns":1707834880000000000,'
...        b'"time_flow_end_ns":1707834880500000000,"bytes":150,"packets":2,'
...        b'"src_addr":"10.0.0.5","dst_addr":"203.0.113.9","etype":"IPv4","proto":"TCP",'
...        b'"src_port":50123,"dst_port":443,"tcp_flags":27}')
>>> r = Goflow2JsonDecoder().decode([Message(msg, "flow-messages/0", 42)])
>>> row = next(r.flows.rows())
>>> row["bytes_out"], row["pkts_out"], row["proto"], row["dst_port"], row["ts_end"], row["offset"]
(1500, 20, 6, 443, 1707834880.5, 42)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, ClassVar

import msgspec
import numpy as np

from pipelines.records import FlowBatch
from stream.decoders._json import (
    ChunkedDecoder,
    Counter,
    Flags,
    Port,
    Proto,
    Rate,
    column,
    finish_flows,
    typed_decode,
)
from stream.decoders.base import DeadLetter, DecodeResult, Message

__all__ = ["Goflow2JsonDecoder"]

Nanos = Annotated[int, msgspec.Meta(ge=0)]
Seconds = Annotated[float, msgspec.Meta(ge=0)]


class _V2(msgspec.Struct, gc=False):
    src_addr: str
    dst_addr: str
    time_received_ns: Nanos = 0
    sampling_rate: Rate = 0
    sampler_address: str = ""
    time_flow_start_ns: Nanos = 0
    time_flow_end_ns: Nanos = 0
    bytes: Counter = 0
    packets: Counter = 0
    proto: Proto = 0
    src_port: Port = 0
    dst_port: Port = 0
    tcp_flags: Flags = 0
    etype: int | str = 0


class _V1(msgspec.Struct, gc=False):
    src_addr: str = msgspec.field(name="SrcAddr")
    dst_addr: str = msgspec.field(name="DstAddr")
    time_received: Seconds = msgspec.field(default=0, name="TimeReceived")
    sampling_rate: Rate = msgspec.field(default=0, name="SamplingRate")
    sampler_address: str = msgspec.field(default="", name="SamplerAddress")
    time_flow_start: Seconds = msgspec.field(default=0, name="TimeFlowStart")
    time_flow_end: Seconds = msgspec.field(default=0, name="TimeFlowEnd")
    bytes: Counter = msgspec.field(default=0, name="Bytes")
    packets: Counter = msgspec.field(default=0, name="Packets")
    proto: Proto = msgspec.field(default=0, name="Proto")
    src_port: Port = msgspec.field(default=0, name="SrcPort")
    dst_port: Port = msgspec.field(default=0, name="DstPort")
    tcp_flags: Flags = msgspec.field(default=0, name="TCPFlags")
    etype: int | str = msgspec.field(default=0, name="Etype")


#: EtherTypes of IP flows (0: not reported); other flows (ARP, MPLS-only, ...) are ignored
_IP_ETYPES = frozenset({0, 0x800, 0x86DD, "IPv4", "IPv6", "ipv4", "ipv6"})


def _times(start: list[Any], end: list[Any], recv: list[Any], scale: float) -> tuple[Any, Any]:
    s = np.asarray(start, dtype=np.float64)
    e = np.asarray(end, dtype=np.float64)
    r = np.asarray(recv, dtype=np.float64)
    s = np.where(s > 0, s, np.where(e > 0, e, r)) * scale
    e = np.where(e > 0, e * scale, s)
    return s, e


class Goflow2JsonDecoder(ChunkedDecoder):
    """goflow2 JSON flow messages -> unidirectional :class:`FlowBatch` rows."""

    name: ClassVar[str] = "goflow2-json"

    def __init__(self, chunk: int = 512) -> None:
        self.chunk = chunk
        self._v2 = msgspec.json.Decoder(_V2)
        self._v1 = msgspec.json.Decoder(_V1)

    def __getstate__(self) -> dict[str, Any]:
        return {"chunk": self.chunk}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    @classmethod
    def sniff(cls, value: bytes) -> bool:
        head = value[:600]
        return head[:1] == b"{" and (
            (
                b'"src_addr"' in value
                and (b'"time_flow_start_ns"' in value or b'"sampler_address"' in value)
            )
            or (b'"SrcAddr"' in head and b'"TimeFlowStart"' in value)
        )

    def decode_chunk(self, messages: Sequence[Message]) -> DecodeResult:
        out = DecodeResult()
        v1: tuple[list[Any], list[Message]] = ([], [])
        recs, ok, out.dead = typed_decode(self._v2, messages, self.name, alt=self._v1, alt_out=v1)
        v1_recs, v1_ok = self._ip_only(v1[0], v1[1], out) if v1[0] else v1
        recs, ok = self._ip_only(recs, ok, out)
        out.flows = self._columns(recs, ok, 1e-9, out.dead)
        if v1_recs:
            out.flows = FlowBatch.concat([out.flows, self._columns(v1_recs, v1_ok, 1.0, out.dead)])
        return out

    @staticmethod
    def _ip_only(
        recs: list[Any], ok: Sequence[Message], out: DecodeResult
    ) -> tuple[list[Any], Sequence[Message]]:
        if set(column(recs, "etype")) <= _IP_ETYPES:
            return recs, ok
        keep = [i for i, r in enumerate(recs) if r.etype in _IP_ETYPES]
        out.ignored += len(recs) - len(keep)
        return [recs[i] for i in keep], [ok[i] for i in keep]

    def _columns(
        self, recs: list[Any], ok: Sequence[Message], scale: float, dead: list[DeadLetter]
    ) -> FlowBatch:
        if not recs:
            return FlowBatch.empty()
        if scale == 1.0:
            start, end, recv = (
                column(recs, "time_flow_start"),
                column(recs, "time_flow_end"),
                column(recs, "time_received"),
            )
        else:
            start, end, recv = (
                column(recs, "time_flow_start_ns"),
                column(recs, "time_flow_end_ns"),
                column(recs, "time_received_ns"),
            )
        ts_start, ts_end = _times(start, end, recv, scale)
        rate = np.maximum(np.asarray(column(recs, "sampling_rate"), dtype=np.int64), 1)
        cols: dict[str, Any] = {
            "ts_start": ts_start,
            "ts_end": ts_end,
            "src": column(recs, "src_addr"),
            "dst": column(recs, "dst_addr"),
            "src_port": column(recs, "src_port"),
            "dst_port": column(recs, "dst_port"),
            "proto": column(recs, "proto"),
            "bytes_out": np.asarray(column(recs, "bytes"), dtype=np.int64) * rate,
            "pkts_out": np.asarray(column(recs, "packets"), dtype=np.int64) * rate,
            "tcp_flags": column(recs, "tcp_flags"),
            "sensor": column(recs, "sampler_address"),
            "sampling_rate": rate,
        }
        return finish_flows(cols, ok, self.name, dead)
