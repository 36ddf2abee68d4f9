"""goflow2 protobuf (``-format=bin``): varint length-prefixed ``flowpb.FlowMessage``.

A small hand-rolled protobuf wire decoder (no protoc). Field numbers follow goflow2's
``pb/flow.proto``; the older v1 seconds fields (``TimeReceived`` 2, ``TimeFlowEnd`` 5,
``TimeFlowStart`` 38) are used when the v2 nanosecond fields (110-112) are absent.
One message may carry several length-prefixed FlowMessages; a message cut short
becomes a ``truncated`` dead letter (records before the cut are kept).

>>> fm = encode_flow({"time_flow_start_ns": 1_700_000_000_000_000_000, "bytes": 100,
...                   "packets": 2, "sampling_rate": 4, "proto": 17,
...                   "src_addr": bytes([10, 0, 0, 1]), "dst_addr": bytes([8, 8, 8, 8]),
...                   "src_port": 5353, "dst_port": 53})
>>> r = Goflow2ProtobufDecoder().decode([Message(fm + fm, "t/0", 1)])
>>> r.flows.bytes_out.tolist(), r.flows.dst.tolist(), r.flows.ts_start.tolist()[0]
([400, 400], ['8.8.8.8', '8.8.8.8'], 1700000000.0)
>>> Goflow2ProtobufDecoder().decode([Message(fm[:-3], "t/0", 2)]).dead[0].reason
'truncated'
"""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from pipelines.records import FlowBatch
from stream.decoders._json import COUNTER_MAX, finish_flows
from stream.decoders.base import (
    MAX_MESSAGE_BYTES,
    DeadLetter,
    Decoder,
    DecodeResult,
    Message,
)
from stream.decoders.goflow2_pb_fast import fast_parse

__all__ = ["FIELDS", "Goflow2ProtobufDecoder", "encode_flow"]

#: field number -> name, for the fields the decoder keeps (goflow2 pb/flow.proto)
FIELDS: dict[int, str] = {
    1: "type",
    2: "time_received",
    3: "sampling_rate",
    4: "sequence_num",
    5: "time_flow_end",
    6: "src_addr",
    7: "dst_addr",
    9: "bytes",
    10: "packets",
    11: "sampler_address",
    18: "in_if",
    19: "out_if",
    20: "proto",
    21: "src_port",
    22: "dst_port",
    26: "tcp_flags",
    30: "etype",
    38: "ip_flags_or_v1_start",
    110: "time_received_ns",
    111: "time_flow_start_ns",
    112: "time_flow_end_ns",
}
_NUMBERS = {v: k for k, v in FIELDS.items()}
_ADDR_FIELDS = frozenset((6, 7, 11))


class _Bad(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while pos < end:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise _Bad("schema", "varint longer than 10 bytes")
    raise _Bad("truncated", "varint runs past the end")


_ADDR_CACHE: dict[bytes, str] = {}


def _addr(raw: bytes) -> str:
    got = _ADDR_CACHE.get(raw)
    if got is not None:
        return got
    if len(raw) == 4:
        text = "{}.{}.{}.{}".format(*raw)
    elif len(raw) == 16:
        ip = ipaddress.IPv6Address(raw)
        text = str(ip.ipv4_mapped) if ip.ipv4_mapped else str(ip)
    else:
        raise _Bad("bad_value", f"address of {len(raw)} bytes")
    text = sys.intern(text)
    if len(_ADDR_CACHE) > 1_000_000:
        _ADDR_CACHE.clear()
    _ADDR_CACHE[raw] = text
    return text


def _parse_flow(buf: bytes, pos: int, end: int) -> dict[int, Any]:
    """Fields of one FlowMessage in ``buf[pos:end]`` (last value wins, as protobuf says).

    One-byte keys and values (most of a FlowMessage) are read inline; longer varints go
    through :func:`_varint`.
    """
    out: dict[int, Any] = {}
    varint = _varint
    while pos < end:
        key = buf[pos]
        if key < 0x80:
            pos += 1
        elif pos + 1 < end and buf[pos + 1] < 0x80:
            key = (key & 0x7F) | (buf[pos + 1] << 7)
            pos += 2
        else:
            key, pos = varint(buf, pos, end)
        num, wire = key >> 3, key & 7
        if wire == 0:
            if num in _ADDR_FIELDS or num == 0:
                raise _Bad("schema", f"field {num} with wire type 0")
            if pos < end and buf[pos] < 0x80:
                out[num] = buf[pos]
                pos += 1
            elif pos + 1 < end and buf[pos + 1] < 0x80:
                out[num] = (buf[pos] & 0x7F) | (buf[pos + 1] << 7)
                pos += 2
            else:
                out[num], pos = varint(buf, pos, end)
        elif wire == 2:
            if num == 0:
                raise _Bad("schema", "field number 0")
            size, pos = varint(buf, pos, end)
            if pos + size > end:
                raise _Bad("truncated", f"field {num}: {size} bytes past the end")
            if num in _ADDR_FIELDS:
                out[num] = buf[pos : pos + size]
            pos += size
        elif wire == 1 or wire == 5:
            if num == 0 or num in _ADDR_FIELDS:
                raise _Bad("schema", f"field {num} with wire type {wire}")
            pos += 8 if wire == 1 else 4
            if pos > end:
                raise _Bad("truncated", f"field {num} runs past the end")
        else:
            raise _Bad("schema", f"field {num}: unsupported wire type {wire}")
    return out


def encode_flow(values: Mapping[str, Any]) -> bytes:
    """Encode a FlowMessage (varint length-prefixed) from field names; for tests and benchmarks."""

    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            b = n & 0x7F
            n >>= 7
            if n:
                out.append(b | 0x80)
            else:
                out.append(b)
                return bytes(out)

    body = bytearray()
    for name, val in values.items():
        num = _NUMBERS[name]
        if isinstance(val, (bytes, bytearray)):
            body += varint(num << 3 | 2) + varint(len(val)) + bytes(val)
        else:
            body += varint(num << 3) + varint(int(val))
    return varint(len(body)) + bytes(body)


class Goflow2ProtobufDecoder(Decoder):
    """goflow2 binary FlowMessages -> unidirectional :class:`FlowBatch` rows.

    ``length_prefixed=False`` reads each message as one bare FlowMessage.
    """

    name: ClassVar[str] = "goflow2-pb"

    def __init__(self, length_prefixed: bool = True) -> None:
        self.length_prefixed = length_prefixed

    def decode(self, messages: Sequence[Message]) -> DecodeResult:
        out = DecodeResult()
        if not len(messages):
            return out
        # a block of messages (values/origin/offsets held as columns) is read as columns
        block = isinstance(getattr(messages, "values", None), list) and hasattr(messages, "offsets")
        values: list[bytes] = messages.values if block else [m.value for m in messages]  # type: ignore[attr-defined]
        fast = fast_parse(values, self.length_prefixed, _addr)
        slow_rows: list[dict[int, Any]] = []
        slow_msgs: list[Message] = []
        slow_idx: list[int] = []
        for i in np.flatnonzero(fast.slow).tolist():  # anything unusual: the exact scalar path
            m = messages[i]
            k = len(slow_rows)
            self._one(m, slow_rows, slow_msgs, out)
            slow_idx.extend([i] * (len(slow_rows) - k))
        cols: dict[str, Any] = dict(fast.columns())
        order = fast.msg
        if slow_rows:
            extra = self._columns(slow_rows)
            cols = {c: np.concatenate([np.asarray(cols[c]), _as_array(extra[c])]) for c in cols}
            order = np.concatenate([order, np.asarray(slow_idx, dtype=np.int64)])
            pick = np.argsort(order, kind="stable")
            cols = {c: v[pick] for c, v in cols.items()}
            order = order[pick]
        if not len(order):
            return out
        idx = order.tolist()
        if block:
            offs = messages.offsets  # type: ignore[attr-defined]
            origins: list[str] = [messages.origin] * len(idx)  # type: ignore[attr-defined]
            offsets = np.fromiter((offs[i] for i in idx), dtype=np.int64, count=len(idx))
        else:
            origins = [messages[i].origin for i in idx]
            offsets = np.fromiter((messages[i].offset for i in idx), np.int64, count=len(idx))
        if np.isfinite(cols["ts_start"]).all() and np.isfinite(cols["ts_end"]).all():
            # addresses come from _addr (canonical already), proto is checked to 0..255 and
            # times are finite: nothing for finish_flows to fix or reject
            cols["origin"], cols["offset"] = origins, offsets
            out.flows = FlowBatch.from_columns(cols)
        else:  # pragma: no cover - times from integers are always finite
            for c in ("src", "dst", "proto", "sensor"):
                cols[c] = np.asarray(cols[c]).tolist()
            row_msgs = [messages[i] for i in idx]
            out.flows = finish_flows(cols, row_msgs, self.name, out.dead)
        return out

    def _one(
        self, m: Message, rows: list[dict[int, Any]], row_msgs: list[Message], out: DecodeResult
    ) -> None:
        buf = m.value
        end = len(buf)
        if end > MAX_MESSAGE_BYTES:
            out.dead.append(
                DeadLetter.of(m, "oversized", f"{end} bytes > {MAX_MESSAGE_BYTES}", self.name)
            )
            return
        if end == 0:
            out.dead.append(DeadLetter.of(m, "truncated", "empty message", self.name))
            return
        pos = 0
        got: list[dict[int, Any]] = []
        try:
            while pos < end:
                if self.length_prefixed:
                    size, pos = _varint(buf, pos, end)
                    if pos + size > end:
                        raise _Bad("truncated", f"FlowMessage of {size} bytes, {end - pos} left")
                    stop = pos + size
                else:
                    stop = end
                fields = _parse_flow(buf, pos, stop)
                pos = stop
                if 6 not in fields or 7 not in fields:
                    raise _Bad("schema", "FlowMessage without src_addr/dst_addr")
                fields[6] = _addr(fields[6])
                fields[7] = _addr(fields[7])
                fields[11] = _addr(fields[11]) if len(fields.get(11, b"")) in (4, 16) else ""
                for num in (9, 10):
                    if fields.get(num, 0) > COUNTER_MAX:
                        raise _Bad("bad_value", f"field {num} counter too large")
                if fields.get(3, 0) > 1 << 16:
                    raise _Bad("bad_value", "sampling_rate too large")
                for num in (20, 21, 22, 26):
                    if fields.get(num, 0) > (255 if num == 20 else 65535):
                        raise _Bad("bad_value", f"field {num} out of range")
                got.append(fields)
        except _Bad as exc:
            out.dead.append(DeadLetter.of(m, exc.reason, str(exc), self.name))
        rows.extend(got)
        row_msgs.extend([m] * len(got))

    @staticmethod
    def _columns(rows: list[dict[int, Any]]) -> dict[str, Any]:
        def col(num: int, default: Any = 0) -> list[Any]:
            return [r.get(num, default) for r in rows]

        start_ns = np.asarray(col(111), dtype=np.float64)
        end_ns = np.asarray(col(112), dtype=np.float64)
        recv_ns = np.asarray(col(110), dtype=np.float64)
        v1_start = np.asarray(col(38), dtype=np.float64)
        v1_start = np.where(v1_start > 1e8, v1_start, 0.0)
        v1_end = np.asarray(col(5), dtype=np.float64)
        v1_recv = np.asarray(col(2), dtype=np.float64)
        start = np.where(start_ns > 0, start_ns * 1e-9, v1_start)
        recv = np.where(recv_ns > 0, recv_ns * 1e-9, v1_recv)
        end = np.where(end_ns > 0, end_ns * 1e-9, v1_end)
        start = np.where(start > 0, start, np.where(end > 0, end, recv))
        end = np.where(end > 0, end, start)
        rate = np.maximum(np.asarray(col(3), dtype=np.int64), 1)
        return {
            "ts_start": start,
            "ts_end": end,
            "src": col(6),
            "dst": col(7),
            "src_port": col(21),
            "dst_port": col(22),
            "proto": col(20),
            "bytes_out": np.asarray(col(9), dtype=np.int64) * rate,
            "pkts_out": np.asarray(col(10), dtype=np.int64) * rate,
            "tcp_flags": col(26),
            "sensor": col(11, ""),
            "sampling_rate": rate,
        }


def _as_array(values: Any) -> np.ndarray:
    if isinstance(values, np.ndarray):
        return values
    if values and isinstance(values[0], str):
        return np.asarray(values, dtype=object)
    return np.asarray(values)
