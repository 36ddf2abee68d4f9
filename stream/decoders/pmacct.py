"""pmacct JSON (nfacctd/pmacctd ``kafka`` or ``print`` plugin, ``output: json``).

The keys present depend on the ``aggregate:`` directive; ``ip_src``/``ip_dst`` are
required (a record aggregated without hosts says nothing about any host). Time is
``timestamp_start``/``timestamp_end`` when aggregated on them, else ``stamp_inserted``/
``stamp_updated`` (the time bin), else ``timestamp_arrival``. Times are
``"2024-02-13 14:34:00"`` strings (naive = UTC: run pmacct with ``timestamps_utc: true``)
or epoch numbers/strings (``timestamps_since_epoch: true``). Records are unidirectional;
``sampling_rate`` (when aggregated) scales bytes and packets. Marker records
(``event_type`` ``purge_init``/``purge_close``) are ``ignored``.

>>> rec = (b'{"event_type": "purge", "ip_src": "10.0.0.5", "ip_dst": "203.0.113.9", '
...        b'"port_src": 50123, "port_dst": 443, "ip_proto": "tcp", "tcp_flags": "27", '
...        b'"timestamp_start": "2024-02-13 14:34:40.856120", "timestamp_end": "2024-02-13 14:34:43.356120", '
...        b'"stamp_inserted": "2024-02-13 14:34:00", "stamp_updated": "2024-02-13 14:35:01", '
...        b'"packets": 9, "flows": 1, "bytes": 2568, "writer_id": "default_kafka/1234"}')
>>> r = PmacctDecoder().decode([Message(rec, "pmacct/0", 5), Message(b'{"event_type": "purge_init"}')])
>>> row = next(r.flows.rows())
>>> row["bytes_out"], row["pkts_out"], row["proto"], row["tcp_flags"], row["ts_start"], row["ts_end"], r.ignored
(2568, 9, 6, 27, 1707834880.85612, 1707834883.35612, 1)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import msgspec
import numpy as np

from stream.decoders._json import (
    ChunkedDecoder,
    Counter,
    Port,
    Proto,
    Rate,
    column,
    finish_flows,
    parse_ts_many,
    typed_decode,
)
from stream.decoders.base import DeadLetter, DecodeResult, Message

__all__ = ["PmacctDecoder"]

_Time = str | float | None


class _Rec(msgspec.Struct, gc=False):
    event_type: str = ""
    ip_src: str | None = None
    ip_dst: str | None = None
    port_src: Port = 0
    port_dst: Port = 0
    ip_proto: Proto = 0
    tcp_flags: int | str = 0
    bytes: Counter = 0
    packets: Counter = 0
    sampling_rate: Rate = 1
    timestamp_start: _Time = None
    timestamp_end: _Time = None
    timestamp_arrival: _Time = None
    timestamp_min: _Time = None
    timestamp_max: _Time = None
    stamp_inserted: _Time = None
    stamp_updated: _Time = None
    peer_ip_src: str | None = None
    writer_id: str = ""


_FLAGS: dict[Any, int] = {}


def _flag(value: Any) -> int:
    if isinstance(value, str):
        value = int(value) if value.isascii() and value.isdigit() and len(value) < 6 else 0
    return value if isinstance(value, int) and 0 <= value <= 0xFFFF else 0


def _flags(values: list[Any]) -> list[int]:
    try:
        return list(map(_FLAGS.__getitem__, values))
    except (KeyError, TypeError):
        out = [_flag(v) for v in values]
        if len(_FLAGS) < 70_000:
            _FLAGS.update(zip(values, out, strict=True))
        return out


def _times(r: Any) -> tuple[Any, Any]:
    """(start, end) raw values of a record, from the best pair of time fields it has."""
    if r.timestamp_start is not None:
        return r.timestamp_start, r.timestamp_end
    if r.timestamp_min is not None:
        return r.timestamp_min, r.timestamp_max
    if r.stamp_inserted is not None:
        return r.stamp_inserted, r.stamp_updated
    return r.timestamp_arrival, None


class PmacctDecoder(ChunkedDecoder):
    """pmacct JSON records -> unidirectional :class:`FlowBatch` rows."""

    name: ClassVar[str] = "pmacct"

    def __init__(self, chunk: int = 512) -> None:
        self.chunk = chunk
        self._dec = msgspec.json.Decoder(_Rec)

    def __getstate__(self) -> dict[str, Any]:
        return {"chunk": self.chunk}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    @classmethod
    def sniff(cls, value: bytes) -> bool:
        return value[:1] == b"{" and (
            (b'"ip_src"' in value and (b'"ip_dst"' in value or b'"packets"' in value))
            or b'"event_type": "purge' in value
            or b'"event_type":"purge' in value
        )

    def decode_chunk(self, messages: Sequence[Message]) -> DecodeResult:
        out = DecodeResult()
        recs, ok, out.dead = typed_decode(self._dec, messages, self.name)
        if (
            None not in column(recs, "ip_src")
            and None not in column(recs, "ip_dst")
            and (
                None not in column(recs, "timestamp_start")
                or None not in column(recs, "timestamp_min")
            )
        ):
            if recs:  # the common case: every record has hosts and a flow time
                out.flows = finish_flows(self._columns(recs), ok, self.name, out.dead)
            return out
        keep: list[Any] = []
        keep_m: list[Message] = []
        for r, m in zip(recs, ok, strict=True):
            if r.ip_src is not None and r.ip_dst is not None:
                if _times(r)[0] is None:
                    if m.timestamp is None:
                        out.dead.append(
                            DeadLetter.of(m, "schema", "record without any timestamp", self.name)
                        )
                        continue
                    r.timestamp_arrival = m.timestamp
                keep.append(r)
                keep_m.append(m)
            elif r.event_type.startswith("purge_") or r.event_type == "log_init":
                out.ignored += 1
            else:
                out.dead.append(
                    DeadLetter.of(m, "schema", "record without ip_src/ip_dst", self.name)
                )
        if keep:
            out.flows = finish_flows(self._columns(keep), keep_m, self.name, out.dead)
        return out

    @staticmethod
    def _columns(recs: list[Any]) -> dict[str, Any]:
        pairs = [_times(r) for r in recs]
        start = parse_ts_many([p[0] for p in pairs])
        end_raw = [p[1] for p in pairs]
        end = parse_ts_many([e if e is not None else "" for e in end_raw])
        end = np.where(np.isfinite(end) & (end >= start), end, start)  # unset, 0 or before start
        rate = np.maximum(np.asarray(column(recs, "sampling_rate"), dtype=np.int64), 1)
        return {
            "ts_start": start,
            "ts_end": end,
            "src": column(recs, "ip_src"),
            "dst": column(recs, "ip_dst"),
            "src_port": column(recs, "port_src"),
            "dst_port": column(recs, "port_dst"),
            "proto": column(recs, "ip_proto"),
            "bytes_out": np.asarray(column(recs, "bytes"), dtype=np.int64) * rate,
            "pkts_out": np.asarray(column(recs, "packets"), dtype=np.int64) * rate,
            "tcp_flags": _flags(column(recs, "tcp_flags")),
            "sensor": [r.peer_ip_src or r.writer_id for r in recs],
            "sampling_rate": rate,
        }
