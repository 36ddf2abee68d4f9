r"""Zeek conn.log and dns.log: JSON (zeek-kafka, ``LogAscii::use_json``) and TSV files.

JSON records may be bare, tagged (``{"conn": {...}}`` with zeek-kafka ``tag_json=T``),
use dotted (``id.orig_h``) or underscore (``id_orig_h``) keys, and carry ``@stream``/
``@path``/``_path`` wrapper fields. ``ts`` is epoch seconds or ISO-8601
(``JSON::TS_ISO8601``). Bytes are IP-layer (``orig_ip_bytes``), payload counters go to
``payload_out``/``payload_in``; unset fields are omitted by Zeek and get the defaults.
Other log types (http, ssl, ...) are counted as ``ignored``.

>>> conn = (b'{"ts":1707834880.5,"uid":"C1","id.orig_h":"10.0.0.5","id.orig_p":50123,'
...         b'"id.resp_h":"203.0.113.9","id.resp_p":443,"proto":"tcp","service":"ssl",'
...         b'"duration":2.5,"orig_bytes":100,"resp_bytes":2000,"conn_state":"SF",'
...         b'"orig_pkts":5,"orig_ip_bytes":360,"resp_pkts":4,"resp_ip_bytes":2208}')
>>> r = ZeekJsonDecoder().decode([Message(conn, "zeek/0", 3), Message(b'{"http": {"ts": 1}}')])
>>> row = next(r.flows.rows())
>>> row["bytes_out"], row["bytes_in"], row["payload_out"], row["ts_end"], row["service"], r.ignored
(360, 2208, 100, 1707834883.0, 'ssl', 1)

The TSV decoder (:class:`ZeekTsvDecoder`) is in :mod:`stream.decoders.zeek_tsv`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from itertools import repeat
from operator import attrgetter
from typing import Annotated, Any, ClassVar

import msgspec
import numpy as np

from stream.decoders._json import (
    ChunkedDecoder,
    Columns,
    Counter,
    Port,
    column,
    finish_dns,
    finish_flows,
    parse_ts_many,
    typed_decode,
    values_of,
)
from stream.decoders._zeek_batch import decode_batch
from stream.decoders.base import (
    MAX_MESSAGE_BYTES,
    DeadLetter,
    DecodeResult,
    Message,
    MessageBlock,
)

__all__ = ["ZeekJsonDecoder"]  # ZeekTsvDecoder: module __getattr__ below

Duration = Annotated[float, msgspec.Meta(ge=0)]

_CONN_ONLY = ("duration", "orig_bytes", "resp_bytes", "orig_ip_bytes", "resp_ip_bytes",
              "orig_pkts", "resp_pkts", "conn_state", "history")  # fmt: skip


def _record_type(sep: str) -> type[msgspec.Struct]:
    """The union of the conn.log and dns.log fields, with ``id<sep>orig_h`` key spelling."""
    fields: list[Any] = [
        ("ts", float | str | None, None),
        ("orig_h", str | None, msgspec.field(default=None, name=f"id{sep}orig_h")),
        ("orig_p", Port | None, msgspec.field(default=None, name=f"id{sep}orig_p")),
        ("resp_h", str | None, msgspec.field(default=None, name=f"id{sep}resp_h")),
        ("resp_p", Port | None, msgspec.field(default=None, name=f"id{sep}resp_p")),
        ("proto", str | int | None, None),
        ("service", str | None, None),
        ("duration", Duration | None, None),
        *[(c, Counter | None, None) for c in _CONN_ONLY[1:7]],
        ("conn_state", str | None, None),
        ("history", str | None, None),
        ("query", str | None, None),
        ("qtype", int | None, None),
        ("rcode", int | None, None),
        ("answers", list[str] | None, None),
        ("path", str | None, msgspec.field(default=None, name="_path")),
        ("at_path", str | None, msgspec.field(default=None, name="@path")),
        ("at_stream", str | None, msgspec.field(default=None, name="@stream")),
        ("at_system", str | None, msgspec.field(default=None, name="@system")),
        ("system_name", str | None, msgspec.field(default=None, name="_system_name")),
    ]
    name = "ZeekDotted" if sep == "." else "ZeekUnderscore"
    return msgspec.defstruct(name, fields, gc=False)


_Dotted = _record_type(".")
_Under = _record_type("_")
_TaggedDotted = msgspec.defstruct(
    "ZeekTaggedDotted", [("conn", _Dotted | None, None), ("dns", _Dotted | None, None)], gc=False
)
_TaggedUnder = msgspec.defstruct(
    "ZeekTaggedUnder", [("conn", _Under | None, None), ("dns", _Under | None, None)], gc=False
)
_TAG = re.compile(rb'\s*\{\s*"([A-Za-z0-9_]+)"\s*:\s*\{')
#: what :data:`_TAG` matches with group conn/dns, in the spelling zeek-kafka writes
_TAG_PREFIXES = (b'{"conn":{', b'{"dns":{')
_CONN = attrgetter("conn")
_DNS = attrgetter("dns")


def _pick(msgs: Sequence[Message], index: list[int]) -> Sequence[Message]:
    """The messages at ``index`` (a :class:`MessageBlock` stays one)."""
    if isinstance(msgs, MessageBlock):
        values, offsets = msgs.values, msgs.offsets
        return MessageBlock([values[i] for i in index], msgs.origin, [offsets[i] for i in index])
    return [msgs[i] for i in index]


def _kind(r: Any) -> str:
    """'conn', 'dns', 'other' (another Zeek log) or 'bad' (not a Zeek record)."""
    path = r.at_stream or r.at_path or r.path
    if path:
        p = path.lower()
        if r.ts is None or r.orig_h is None or r.resp_h is None:
            return "bad" if p.startswith(("conn", "dns")) else "other"
        return "conn" if p.startswith("conn") else "dns" if p.startswith("dns") else "other"
    if r.ts is None or r.orig_h is None or r.resp_h is None:
        return "bad"
    if r.query is not None or r.qtype is not None or r.rcode is not None or r.answers is not None:
        return "dns"
    if any(getattr(r, c) is not None for c in _CONN_ONLY):
        return "conn"
    return "other"


def _kinds(recs: list[Any], col: _Columns) -> list[str]:
    """:func:`_kind` of every record; column-wise for the common bare conn/dns batch."""
    n = len(recs)
    if not (
        col.all_none("at_stream", "at_path", "path")
        and None not in col("ts")
        and None not in col("orig_h")
        and None not in col("resp_h")
    ):
        return [_kind(r) for r in recs]
    cols = zip(
        col("query"),
        col("qtype"),
        col("rcode"),
        col("answers"),
        col("conn_state"),
        col("orig_pkts"),
        strict=True,
    )
    fast = [
        "dns" if q is not None or t is not None
        else "conn" if (c is not None or p is not None) and r is None and a is None
        else ""
        for q, t, r, a, c, p in cols
    ]  # fmt: skip
    if "" in fast:
        return [k or _kind(r) for k, r in zip(fast, recs, strict=True)]
    return fast if len(fast) == n else [_kind(r) for r in recs]


def _one_kind(col: _Columns, tag: str | None) -> str | None:
    """'conn' or 'dns' if :func:`_kind` gives that for every record, else None (ask each).

    ``tag`` is the zeek-kafka tag every record came under (then no record may carry a
    path field of its own). Checked column-wise, with as few field passes as possible.
    """
    if not col.n or not col.all_none("at_stream", "at_path", "path"):
        return None
    if None in col("ts") or None in col("orig_h") or None in col("resp_h"):
        return None
    if tag is not None:
        return tag
    if col.all_none("query", "qtype", "rcode", "answers"):
        states = col("conn_state")
        if None in states:
            pkts = col("orig_pkts")
            if any(c is None and p is None for c, p in zip(states, pkts, strict=True)):
                return None
        return "conn"
    if None not in col("query"):
        return "dns"
    if all(q is not None or t is not None for q, t in zip(col("query"), col("qtype"), strict=True)):
        return "dns"
    return None


_Columns = Columns


def _or(values: list[Any], default: Any) -> list[Any]:
    if None not in values:
        return values
    return [default if v is None else v for v in values]


class _ZeekRows:
    """Shared record -> batch conversion of the JSON and TSV decoders."""

    name: ClassVar[str]

    def _emit(
        self, recs: list[Any], msgs: Sequence[Message], out: DecodeResult, tag: str | None = None
    ) -> None:
        """Rows of ``recs`` into ``out``. ``tag``: every record came tagged ``conn`` or ``dns``
        (zeek-kafka ``tag_json``) and ``at_path`` was not filled in from it."""
        col = _Columns(recs)
        kind = _one_kind(col, tag)
        if kind == "conn":
            out.flows = finish_flows(self._conn_columns(recs, col), msgs, self.name, out.dead)
            return
        if kind == "dns":
            out.dns = finish_dns(self._dns_columns(recs, col), msgs, self.name, out.dead)
            return
        if tag is not None:  # the general path reads the tag from at_path
            for r in recs:
                if r.at_stream is None and r.at_path is None and r.path is None:
                    r.at_path = tag
            col = _Columns(recs)
        kinds = _kinds(recs, col)
        if kinds.count("conn") == len(recs):
            if recs:
                out.flows = finish_flows(self._conn_columns(recs, col), msgs, self.name, out.dead)
            return
        if kinds.count("dns") == len(recs):
            out.dns = finish_dns(self._dns_columns(recs, col), msgs, self.name, out.dead)
            return
        conn: list[Any] = []
        conn_m: list[Message] = []
        dns: list[Any] = []
        dns_m: list[Message] = []
        for r, m, k in zip(recs, msgs, kinds, strict=True):
            if k == "conn":
                conn.append(r)
                conn_m.append(m)
            elif k == "dns":
                dns.append(r)
                dns_m.append(m)
            elif k == "other":
                out.ignored += 1
            else:
                out.dead.append(
                    DeadLetter.of(m, "schema", "missing ts / id.orig_h / id.resp_h", self.name)
                )
        if conn:
            out.flows = finish_flows(self._conn_columns(conn), conn_m, self.name, out.dead)
        if dns:
            out.dns = finish_dns(self._dns_columns(dns), dns_m, self.name, out.dead)

    @staticmethod
    def _sensor(col: _Columns) -> Sequence[str] | None:
        if col.all_none("at_system", "system_name"):
            return None  # the default, ""
        return [x or y or "" for x, y in zip(col("at_system"), col("system_name"), strict=True)]

    def _conn_columns(self, recs: list[Any], col: _Columns | None = None) -> dict[str, Any]:
        col = col or _Columns(recs)
        ts = parse_ts_many(col("ts"))
        dur = _or(col("duration"), 0.0)
        return {
            "ts_start": ts,
            "ts_end": ts + np.asarray(dur, dtype=np.float64),
            "src": col("orig_h"),
            "dst": col("resp_h"),
            "src_port": _or(col("orig_p"), -1),
            "dst_port": _or(col("resp_p"), -1),
            "proto": _or(col("proto"), 0),
            "bytes_out": _or(col("orig_ip_bytes"), 0),
            "pkts_out": _or(col("orig_pkts"), 0),
            "bytes_in": _or(col("resp_ip_bytes"), 0),
            "pkts_in": _or(col("resp_pkts"), 0),
            "payload_out": _or(col("orig_bytes"), -1),
            "payload_in": _or(col("resp_bytes"), -1),
            "service": _or(col("service"), ""),
            "conn_state": _or(col("conn_state"), ""),
            "sensor": self._sensor(col),
            "bidirectional": np.ones(len(recs), dtype=np.bool_),
        }

    def _dns_columns(self, recs: list[Any], col: _Columns | None = None) -> dict[str, Any]:
        col = col or _Columns(recs)
        answers = _or(col("answers"), [])
        return {
            "ts": parse_ts_many(col("ts")),
            "src": col("orig_h"),
            "dst": col("resp_h"),
            "src_port": _or(col("orig_p"), -1),
            "dst_port": _or(col("resp_p"), -1),
            "proto": _or(col("proto"), 17),
            "query": _or(col("query"), ""),
            "qtype": _bounded(_or(col("qtype"), 0), 0),
            "rcode": _bounded(_or(col("rcode"), -1), -1),
            "answers_n": list(map(len, answers)),
            "answers": list(map(",".join, answers)),
            "sensor": self._sensor(col),
        }


def _bounded(values: list[int], default: int) -> Any:
    """``values`` with those outside 0..65535 replaced by ``default`` (numpy when they fit)."""
    try:
        arr = np.asarray(values, dtype=np.int64)
    except (OverflowError, TypeError, ValueError):
        return [v if 0 <= v <= 65535 else default for v in values]
    return np.where((arr >= 0) & (arr <= 65535), arr, default)


class ZeekJsonDecoder(_ZeekRows, ChunkedDecoder):
    """Zeek conn/dns JSON records (bare or tagged, dotted or underscore keys)."""

    name: ClassVar[str] = "zeek-json"

    def __init__(self, chunk: int = 512) -> None:
        self.chunk = chunk
        self._dotted = msgspec.json.Decoder(_Dotted)
        self._under = msgspec.json.Decoder(_Under)
        self._tag_dotted = msgspec.json.Decoder(_TaggedDotted)
        self._tag_under = msgspec.json.Decoder(_TaggedUnder)
        self._tagged = False  # the previous chunk was all tagged conn/dns with dotted keys

    def __getstate__(self) -> dict[str, Any]:
        return {"chunk": self.chunk}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    @classmethod
    def sniff(cls, value: bytes) -> bool:
        head = value[:400]
        if head[:1] != b"{" and head.lstrip()[:1] != b"{":
            return False
        if b'"id.orig_h"' in value or b'"id_orig_h"' in value:
            return True
        tag = _TAG.match(head)
        return tag is not None and tag.group(1) in (b"conn", b"dns") and b'"ts"' in value

    def _decode_tagged(self, messages: Sequence[Message], out: DecodeResult) -> bool:
        """Fast path for a chunk of only tagged conn/dns records with dotted keys (what the
        general path below would do for it, with one parse per message instead of two).
        False (and ``out`` untouched) for any other chunk."""
        values = values_of(messages)
        try:
            plain = sum(map(bytes.startswith, values, repeat(_TAG_PREFIXES))) == len(values)
        except TypeError:  # a value that is not bytes
            return False
        if not plain:
            match = _TAG.match
            for v in values:
                tag = match(v, 0, 200)
                if tag is None or tag.group(1) not in (b"conn", b"dns"):
                    return False
        tagged, ok, dead = typed_decode(self._tag_dotted, messages, self.name)
        if dead:
            return False
        conns = list(map(_CONN, tagged))
        if None not in conns:
            return self._tagged_rows(conns, ok, "conn", out)
        dnss = list(map(_DNS, tagged))
        if conns.count(None) == len(conns):
            return self._tagged_rows(dnss, ok, "dns", out)
        recs = [c if c is not None else d for c, d in zip(conns, dnss, strict=True)]
        if None in recs or None in column(recs, "orig_h"):
            return False
        ic = [i for i, c in enumerate(conns) if c is not None]
        idn = [i for i, c in enumerate(conns) if c is None]
        c_recs, d_recs = [recs[i] for i in ic], [recs[i] for i in idn]
        c_col, d_col = _Columns(c_recs), _Columns(d_recs)
        if _one_kind(c_col, "conn") == "conn" and _one_kind(d_col, "dns") == "dns":
            c_m, d_m = _pick(ok, ic), _pick(ok, idn)
            out.flows = finish_flows(self._conn_columns(c_recs, c_col), c_m, self.name, out.dead)
            out.dns = finish_dns(self._dns_columns(d_recs, d_col), d_m, self.name, out.dead)
            return True
        for c, inner in zip(conns, recs, strict=True):
            if inner.at_stream is None and inner.at_path is None and inner.path is None:
                inner.at_path = "conn" if c is not None else "dns"
        self._emit(recs, ok, out)
        return True

    def _tagged_rows(
        self, recs: list[Any], ok: Sequence[Message], tag: str, out: DecodeResult
    ) -> bool:
        if None in column(recs, "orig_h"):
            return False
        self._emit(recs, ok, out, tag)
        return True

    def decode(self, messages: Sequence[Message], assume_tagged: bool = False) -> DecodeResult:
        """Decode a batch; ``assume_tagged``: the caller checked that every message starts
        like a zeek-kafka tagged conn/dns record (``{"conn":{`` or ``{"dns":{``) and that
        none is over :data:`MAX_MESSAGE_BYTES`."""
        values = values_of(messages)
        if not values:
            return DecodeResult()
        if assume_tagged:
            return decode_batch(self, messages, True, sized=True)
        first = values[0]
        if first.startswith(_TAG_PREFIXES):
            try:
                n = sum(map(bytes.startswith, values, repeat(_TAG_PREFIXES)))
            except TypeError:  # a value that is not bytes
                n = -1
            if n == len(values):
                return decode_batch(self, messages, True)
        elif first.startswith(b'{"ts":') and b'"id.orig_h"' in first:
            return decode_batch(self, messages, False)
        return self.decode_chunks(messages)

    def decode_chunks(self, messages: Sequence[Message]) -> DecodeResult:
        """The general path: chunk by chunk, every layout and every kind of bad record."""
        return ChunkedDecoder.decode(self, messages)

    def decode_chunk(self, messages: Sequence[Message]) -> DecodeResult:
        out = DecodeResult()
        first = values_of(messages)[:1]
        tagged = self._tagged or (bool(first) and first[0].startswith(_TAG_PREFIXES))
        if tagged and self._decode_tagged(messages, out):
            self._tagged = True
            return out
        recs, ok, dead = typed_decode(self._dotted, messages, self.name)
        if not dead and None not in column(recs, "orig_h"):  # all bare records with dotted keys
            self._emit(recs, ok, out)
            return out
        groups: dict[str, list[Message]] = {"dotted": [], "under": [], "tdotted": [], "tunder": []}
        for m in messages:
            v = m.value
            under = b'"id.orig_h"' not in v and b'"id_orig_h"' in v
            tag = _TAG.match(v, 0, 200)
            if tag is not None and tag.group(1) not in (b"conn", b"dns"):
                if len(v) > MAX_MESSAGE_BYTES:
                    out.dead.append(DeadLetter.of(m, "oversized", f"{len(v)} bytes", self.name))
                else:
                    out.ignored += 1  # a tagged record of another Zeek log (http, ssl, ...)
                continue
            key = ("t" if tag is not None else "") + ("under" if under else "dotted")
            groups[key].append(m)
        self._tagged = len(groups["tdotted"]) == len(messages)
        recs = []
        msgs: list[Message] = []
        for key, dec in (("dotted", self._dotted), ("under", self._under)):
            if groups[key]:
                r, ok, dead = typed_decode(dec, groups[key], self.name)
                recs += r
                msgs += ok
                out.dead += dead
        for key, dec in (("tdotted", self._tag_dotted), ("tunder", self._tag_under)):
            if groups[key]:
                r, ok, dead = typed_decode(dec, groups[key], self.name)
                out.dead += dead
                for t, m in zip(r, ok, strict=True):
                    inner = t.conn if t.conn is not None else t.dns
                    if inner is None:
                        out.dead.append(
                            DeadLetter.of(m, "schema", "tagged record with no body", self.name)
                        )
                        continue
                    if inner.at_stream is None and inner.at_path is None and inner.path is None:
                        inner.at_path = "conn" if t.conn is not None else "dns"
                    recs.append(inner)
                    msgs.append(m)
        self._emit(recs, msgs, out)
        return out


def __getattr__(name: str) -> Any:
    """``ZeekTsvDecoder`` lives in :mod:`stream.decoders.zeek_tsv` (it builds on _ZeekRows)."""
    if name == "ZeekTsvDecoder":
        from stream.decoders.zeek_tsv import ZeekTsvDecoder

        return ZeekTsvDecoder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
