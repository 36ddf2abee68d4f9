"""slowburn's own canonical JSON records (``slowburn decode`` output, ``slowburn.flows``).

One JSON object per message with ``"kind": "flow"`` or ``"kind": "dns"`` and the
canonical field names of :mod:`pipelines.records`. ``slowburn repartition`` writes this
format, keyed by internal host, keeping the original ``origin``/``offset`` (the audit
trail points at the sensor's message, not at the re-keyed copy).

>>> row = {"kind": "flow", "ts_start": 10.0, "ts_end": 11.0, "src": "10.0.0.1", "dst": "8.8.8.8",
...        "dst_port": 53, "proto": 17, "bytes_out": 80, "origin": "flow-messages/3", "offset": 42}
>>> r = CanonicalDecoder().decode([Message(encode_rows([row])[0], "slowburn.flows/0", 7)])
>>> r.flows.dst_port.tolist(), r.flows.origin.tolist(), r.flows.offset.tolist()
([53], ['flow-messages/3'], [42])
>>> CanonicalDecoder().decode([Message(b'{"kind":"flow","ts_start":"x"}', "t/0", 1)]).dead[0].reason
'schema'
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

import msgspec

from pipelines.records import DNS_FIELDS, FLOW_FIELDS, DnsBatch, FlowBatch
from stream.decoders.base import MAX_MESSAGE_BYTES, DeadLetter, Decoder, DecodeResult, Message

__all__ = ["CanonicalDecoder", "encode_rows"]


class _Flow(msgspec.Struct, tag_field="kind", tag="flow", forbid_unknown_fields=False):
    ts_start: float
    ts_end: float = math.nan
    src: str = ""
    dst: str = ""
    src_port: int = -1
    dst_port: int = -1
    proto: int = 0
    bytes_out: int = 0
    pkts_out: int = 0
    bytes_in: int = 0
    pkts_in: int = 0
    payload_out: int = -1
    payload_in: int = -1
    tcp_flags: int = 0
    service: str = ""
    conn_state: str = ""
    sensor: str = ""
    sampling_rate: int = 1
    bidirectional: bool = False
    origin: str = ""
    offset: int = -1


class _Dns(msgspec.Struct, tag_field="kind", tag="dns", forbid_unknown_fields=False):
    ts: float
    src: str = ""
    dst: str = ""
    src_port: int = -1
    dst_port: int = -1
    proto: int = 17
    query: str = ""
    qtype: int = 0
    rcode: int = -1
    answers_n: int = 0
    answers: str = ""
    resp_bytes: int = 0
    sensor: str = ""
    origin: str = ""
    offset: int = -1


_FLOW_COLS = [f for f in FLOW_FIELDS if f not in ("src_inside", "dst_inside")]
_DNS_COLS = [f for f in DNS_FIELDS if f not in ("src_inside", "dst_inside")]
_COUNTERS = ("bytes_out", "pkts_out", "bytes_in", "pkts_in")


class CanonicalDecoder(Decoder):
    """Decodes canonical flow/DNS JSON objects (see module docstring)."""

    name: ClassVar[str] = "canonical"

    def __init__(self) -> None:
        self._dec = msgspec.json.Decoder(_Flow | _Dns)

    @classmethod
    def sniff(cls, value: bytes) -> bool:
        head = value[:64]
        return head.lstrip().startswith(b"{") and (
            b'"kind":"flow"' in head or b'"kind":"dns"' in head
        )

    def decode(self, messages: Sequence[Message]) -> DecodeResult:
        out = DecodeResult()
        flows: list[_Flow] = []
        flow_msgs: list[Message] = []
        dns: list[_Dns] = []
        dns_msgs: list[Message] = []
        for m in messages:
            if len(m.value) > MAX_MESSAGE_BYTES:
                out.dead.append(DeadLetter.of(m, "oversized", f"{len(m.value)} bytes", self.name))
                continue
            try:
                rec = self._dec.decode(m.value)
            except msgspec.ValidationError as exc:
                out.dead.append(DeadLetter.of(m, "schema", str(exc), self.name))
                continue
            except (msgspec.DecodeError, RecursionError) as exc:
                out.dead.append(
                    DeadLetter.of(m, "not_json", str(exc) or "nested too deeply", self.name)
                )
                continue
            if isinstance(rec, _Flow):
                if not (
                    math.isfinite(rec.ts_start)
                    and (math.isnan(rec.ts_end) or math.isfinite(rec.ts_end))
                ):
                    out.dead.append(
                        DeadLetter.of(m, "nan", "non-finite ts_start/ts_end", self.name)
                    )
                    continue
                bad = next((c for c in _COUNTERS if getattr(rec, c) < 0), None)
                if bad:
                    out.dead.append(
                        DeadLetter.of(m, "negative", f"{bad} = {getattr(rec, bad)}", self.name)
                    )
                    continue
                flows.append(rec)
                flow_msgs.append(m)
            else:
                if not math.isfinite(rec.ts):
                    out.dead.append(DeadLetter.of(m, "nan", "non-finite ts", self.name))
                    continue
                dns.append(rec)
                dns_msgs.append(m)
        if flows:
            cols = {c: [getattr(r, c) for r in flows] for c in _FLOW_COLS}
            _fill_origin(cols, flow_msgs)
            out.flows = FlowBatch.from_columns(cols)
        if dns:
            cols = {c: [getattr(r, c) for r in dns] for c in _DNS_COLS}
            _fill_origin(cols, dns_msgs)
            out.dns = DnsBatch.from_columns(cols)
        return out


def _fill_origin(cols: dict[str, list[Any]], msgs: list[Message]) -> None:
    """Keep the record's own origin/offset when it has one, else the message's."""
    origin, offset = cols["origin"], cols["offset"]
    for i, m in enumerate(msgs):
        if not origin[i]:
            origin[i], offset[i] = m.origin, m.offset


def encode_rows(rows: Iterable[Mapping[str, Any]]) -> list[bytes]:
    """Canonical rows (``FlowBatch.rows()`` plus ``kind``) -> JSON messages."""
    enc = msgspec.json.Encoder()
    out = []
    for r in rows:
        r = {k: v for k, v in r.items() if k not in ("src_inside", "dst_inside")}
        if "kind" not in r:
            r["kind"] = "dns" if "query" in r else "flow"
        for k, v in r.items():
            if isinstance(v, float) and not math.isfinite(v):
                r[k] = None if k != "ts_end" else r.get("ts_start")
        out.append(enc.encode(r))
    return out
