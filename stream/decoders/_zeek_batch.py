"""Whole-batch fast path of the Zeek JSON decoder (used by :mod:`stream.decoders.zeek`).

A batch is walked in sub-chunks (cache-sized): each is parsed with one typed ``msgspec``
call per message, and the fields a conn or dns row needs are transposed in one pass per
record into per-field lists that grow over the whole batch; numpy columns, address
canonicalisation and the batch itself are then built once. A sub-chunk this path cannot
prove simple (a parse error, a record of another kind, wrapper fields, a missing key
field) is decoded by the general per-chunk path instead, in place, so the rows keep their
message order; a batch whose rows produce any dead letter is redone by the general path
altogether (so dead letters come in exactly its order).

>>> from stream.decoders.zeek import ZeekJsonDecoder
>>> from stream.decoders.base import MessageBlock
>>> conn = b'{"conn":{"ts":1.5,"id.orig_h":"10.0.0.1","id.orig_p":1,"id.resp_h":"10.0.0.2","id.resp_p":80,"proto":"tcp","conn_state":"S0"}}'
>>> dns = b'{"dns":{"ts":2.5,"id.orig_h":"10.0.0.1","id.orig_p":5,"id.resp_h":"10.0.0.53","id.resp_p":53,"proto":"udp","query":"a.b","answers":["1.2.3.4"]}}'
>>> r = ZeekJsonDecoder(chunk=2).decode(MessageBlock([conn, dns, b"nope", conn], "f", range(1, 5)))
>>> r.flows.offset.tolist(), r.dns.answers.tolist(), [(d.reason, d.offset) for d in r.dead]
([1, 4], ['1.2.3.4'], [('not_json', 3)])
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter
from typing import TYPE_CHECKING, Any

import numpy as np

from pipelines.records import DnsBatch, FlowBatch
from stream.decoders._json import (
    Columns,
    canon_ips,
    finish_dns,
    finish_flows,
    merge_results,
    parse_ts_many,
    values_of,
)
from stream.decoders.base import MAX_MESSAGE_BYTES, DecodeResult, Message, MessageBlock

if TYPE_CHECKING:
    from stream.decoders.zeek import ZeekJsonDecoder

__all__ = ["decode_batch"]

_WRAP = ("at_stream", "at_path", "path", "at_system", "system_name")
_KEY = ("ts", "orig_h", "orig_p", "resp_h", "resp_p", "proto")
_CONN = (*_KEY, "service", "duration", "orig_bytes", "resp_bytes", "orig_ip_bytes",
         "resp_ip_bytes", "orig_pkts", "resp_pkts", "conn_state")  # fmt: skip
_DNS = (*_KEY, "query", "qtype", "rcode", "answers")
# one list per field (not one tuple per record: tuples are tracked by the cyclic GC,
# and hundreds of thousands of them make it walk the heap again and again)
_GET_CONN = [attrgetter(f) for f in _CONN]
_GET_DNS = [attrgetter(f) for f in _DNS]
_WRAP_GETTERS = [attrgetter(f) for f in _WRAP]
_TAG_CONN = attrgetter("conn")
_TAG_DNS = attrgetter("dns")


#: numpy dtype and default of the numeric fields (None: kept as python objects)
_NUM: dict[str, tuple[Any, Any]] = {
    "orig_p": (np.int32, -1), "resp_p": (np.int32, -1), "duration": (np.float64, 0.0),
    "orig_bytes": (np.int64, -1), "resp_bytes": (np.int64, -1), "orig_ip_bytes": (np.int64, 0),
    "resp_ip_bytes": (np.int64, 0), "orig_pkts": (np.int64, 0), "resp_pkts": (np.int64, 0),
    "qtype": (np.int64, 0), "rcode": (np.int64, -1),
}  # fmt: skip
_CONN_OBJ: dict[str, Any] = {"proto": 0, "service": "", "conn_state": ""}
_DNS_OBJ: dict[str, Any] = {"proto": 17, "query": "", "answers": []}


def _num(values: Sequence[Any], dtype: Any, default: Any) -> np.ndarray | None:
    """``values`` as an array, unset ones as ``default``; None if some do not fit."""
    try:
        try:
            return np.asarray(values, dtype=dtype)
        except (TypeError, ValueError):  # unset (None) fields
            return np.asarray([default if v is None else v for v in values], dtype=dtype)
    except (OverflowError, TypeError, ValueError):
        return None


class _Rows:
    """Columns of one kind of row, built sub-chunk by sub-chunk while its records are hot in
    the CPU cache (numeric fields to numpy, unset fields to their defaults), joined at the end."""

    def __init__(self, fields: tuple[str, ...], obj: dict[str, Any]) -> None:
        self.fields = fields
        self.obj = obj
        self.parts: dict[str, list[Any]] = {f: [] for f in fields}
        self.index: list[int] = []

    def add(self, recs: list[Any], getter: list[Any], index: Sequence[int]) -> bool:
        """Append ``recs`` (all of this kind); False if some lack a key field or carry wrappers."""
        n = len(recs)
        for g in _WRAP_GETTERS:
            if list(map(g, recs)).count(None) != n:
                return False
        cols = [list(map(g, recs)) for g in getter]
        if None in cols[0] or None in cols[1] or None in cols[3]:  # ts, orig_h, resp_h
            return False
        nums: dict[str, np.ndarray] = {}
        for name, col in zip(self.fields, cols, strict=True):
            num = _NUM.get(name)
            if num is not None:
                got = _num(col, *num)
                if got is None:
                    return False
                nums[name] = got
        parts = self.parts
        parts["ts"].append(parse_ts_many(cols[0]))
        parts["orig_h"].extend(canon_ips(cols[1]))  # while the strings are in the CPU cache
        parts["resp_h"].extend(canon_ips(cols[3]))
        for name, col in zip(self.fields, cols, strict=True):
            if name in nums:
                parts[name].append(nums[name])
            elif name in self.obj:
                d = self.obj[name]
                parts[name].extend(col if None not in col else [d if v is None else v for v in col])
        self.index.extend(index)
        return True

    def __len__(self) -> int:
        return len(self.index)

    def undo(self, n: int) -> None:
        """Back to the first ``n`` rows (an add that must be taken back)."""
        k = len(self.index) - n
        if k <= 0:
            return
        del self.index[n:]
        for name, part in self.parts.items():
            if name in _NUM or name == "ts":
                got = 0
                while got < k:
                    got += len(part.pop())
            else:
                del part[n:]

    def col(self, name: str) -> Any:
        part = self.parts[name]
        if name in _NUM or name == "ts":
            return np.concatenate(part)
        return part


def _pick(msgs: Sequence[Message], index: list[int]) -> Sequence[Message]:
    if isinstance(msgs, MessageBlock):
        values, offsets = msgs.values, msgs.offsets
        if len(index) == len(values):
            return msgs
        return MessageBlock([values[i] for i in index], msgs.origin, [offsets[i] for i in index])
    return [msgs[i] for i in index]


def _bounded(arr: np.ndarray, default: int) -> np.ndarray:
    return np.where((arr >= 0) & (arr <= 65535), arr, default)


def _flows(rows: _Rows, msgs: Sequence[Message], out: DecodeResult, name: str) -> FlowBatch:
    col = rows.col
    ts = col("ts")
    cols = {
        "ts_start": ts,
        "ts_end": ts + col("duration"),
        "src": col("orig_h"),
        "dst": col("resp_h"),
        "src_port": col("orig_p"),
        "dst_port": col("resp_p"),
        "proto": col("proto"),
        "bytes_out": col("orig_ip_bytes"),
        "pkts_out": col("orig_pkts"),
        "bytes_in": col("resp_ip_bytes"),
        "pkts_in": col("resp_pkts"),
        "payload_out": col("orig_bytes"),
        "payload_in": col("resp_bytes"),
        "service": col("service"),
        "conn_state": col("conn_state"),
        "bidirectional": np.ones(len(ts), dtype=np.bool_),
    }
    return finish_flows(cols, _pick(msgs, rows.index), name, out.dead)


def _dns(rows: _Rows, msgs: Sequence[Message], out: DecodeResult, name: str) -> DnsBatch:
    col = rows.col
    answers = col("answers")
    cols = {
        "ts": col("ts"),
        "src": col("orig_h"),
        "dst": col("resp_h"),
        "src_port": col("orig_p"),
        "dst_port": col("resp_p"),
        "proto": col("proto"),
        "query": col("query"),
        "qtype": _bounded(col("qtype"), 0),
        "rcode": _bounded(col("rcode"), -1),
        "answers_n": list(map(len, answers)),
        "answers": list(map(",".join, answers)),
    }
    return finish_dns(cols, _pick(msgs, rows.index), name, out.dead)


def _bare_kind(recs: list[Any]) -> str | None:
    """'conn'/'dns' when every bare record is that kind by the column rule of zeek._kinds."""
    col = Columns(recs)
    if col.all_none("query", "qtype", "rcode", "answers"):
        states = col("conn_state")
        if None in states and any(
            c is None and p is None for c, p in zip(states, col("orig_pkts"), strict=True)
        ):
            return None
        return "conn"
    if None not in col("query"):
        return "dns"
    return None


def _sub(
    dec: ZeekJsonDecoder, values: list[bytes], base: int, tagged: bool, conn: _Rows, dns: _Rows
) -> bool:
    """Add one sub-chunk's rows to ``conn``/``dns``; False (nothing added) if not simple."""
    parse = (dec._tag_dotted if tagged else dec._dotted).decode
    try:
        recs = list(map(parse, values))
    except (ValueError, TypeError, RecursionError):  # msgspec errors are ValueErrors
        return False
    index = range(base, base + len(recs))
    if tagged:
        inner = list(map(_TAG_CONN, recs))
        if None in inner:
            if inner.count(None) != len(inner):
                return _mixed(inner, list(map(_TAG_DNS, recs)), index, conn, dns)
            inner = list(map(_TAG_DNS, recs))
            if None in inner:
                return False
            return dns.add(inner, _GET_DNS, index)
        return conn.add(inner, _GET_CONN, index)
    kind = _bare_kind(recs)
    if kind == "conn":
        return conn.add(recs, _GET_CONN, index)
    if kind == "dns":
        return dns.add(recs, _GET_DNS, index)
    return False


def _mixed(conns: list[Any], dnss: list[Any], index: range, conn: _Rows, dns: _Rows) -> bool:
    ic = [i for i, c in enumerate(conns) if c is not None]
    idn = [i for i, c in enumerate(conns) if c is None]
    c_recs = [conns[i] for i in ic]
    d_recs = [dnss[i] for i in idn]
    if None in d_recs:
        return False
    n_c, n_d = len(conn), len(dns)
    if conn.add(c_recs, _GET_CONN, [index[i] for i in ic]) and dns.add(
        d_recs, _GET_DNS, [index[i] for i in idn]
    ):
        return True
    conn.undo(n_c)
    dns.undo(n_d)
    return False


def decode_batch(
    dec: ZeekJsonDecoder, messages: Sequence[Message], tagged: bool, sized: bool = False
) -> DecodeResult:
    """Decode a batch of bare dotted (``tagged=False``) or zeek-kafka tagged records.

    ``sized``: the caller made sure no message is over MAX_MESSAGE_BYTES."""
    values = values_of(messages)
    if not sized and max(map(len, values)) > MAX_MESSAGE_BYTES:
        return dec.decode_chunks(messages)
    step = max(int(dec.chunk), 1)
    parts: list[DecodeResult] = []
    conn, dns = _Rows(_CONN, _CONN_OBJ), _Rows(_DNS, _DNS_OBJ)
    fast_dead = False

    def close() -> None:
        nonlocal conn, dns, fast_dead
        if len(conn) or len(dns):
            part = DecodeResult()
            if len(conn):
                part.flows = _flows(conn, messages, part, dec.name)
            if len(dns):
                part.dns = _dns(dns, messages, part, dec.name)
            fast_dead = fast_dead or bool(part.dead)
            parts.append(part)
            conn, dns = _Rows(_CONN, _CONN_OBJ), _Rows(_DNS, _DNS_OBJ)

    for i in range(0, len(values), step):
        if not _sub(dec, values[i : i + step], i, tagged, conn, dns):
            close()
            parts.append(dec.decode_chunk(messages[i : i + step]))
    close()
    if fast_dead:  # rare: let the general path give the dead letters in its order
        return dec.decode_chunks(messages)
    return merge_results(parts) if parts else DecodeResult()
