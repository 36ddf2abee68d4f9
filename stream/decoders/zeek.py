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
>>> tsv = ZeekTsvDecoder()
>>> lines = [b"#separator \\x09", b"#path\tdns", b"#fields\tts\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tquery\tqtype\trcode\tanswers",
...          b"#types\ttime\taddr\tport\taddr\tport\tenum\tstring\tcount\tcount\tvector[string]",
...          b"1707834880.1\t10.0.0.5\t5353\t10.0.0.53\t53\tudp\texample.com\t1\t0\t93.184.216.34,1.2.3.4"]
>>> d = tsv.decode([Message(v, "dns.log", i + 1) for i, v in enumerate(lines)])
>>> d.dns.query.tolist(), d.dns.answers_n.tolist(), d.dns.answers.tolist(), d.ignored
(['example.com'], [2], ['93.184.216.34,1.2.3.4'], 4)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, Any, ClassVar

import msgspec

from stream.decoders._json import (
    ChunkedDecoder,
    Columns,
    Counter,
    Port,
    classify,
    column,
    finish_dns,
    finish_flows,
    parse_ts_many,
    typed_decode,
)
from stream.decoders.base import MAX_MESSAGE_BYTES, DeadLetter, Decoder, DecodeResult, Message

__all__ = ["ZeekJsonDecoder", "ZeekTsvDecoder"]

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
    "ZeekTaggedDotted", [("conn", _Dotted | None, None), ("dns", _Dotted | None, None)]
)
_TaggedUnder = msgspec.defstruct(
    "ZeekTaggedUnder", [("conn", _Under | None, None), ("dns", _Under | None, None)]
)
_TAG = re.compile(rb'\s*\{\s*"([A-Za-z0-9_]+)"\s*:\s*\{')


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


_Columns = Columns


def _or(values: Sequence[Any], default: Any) -> Sequence[Any]:
    if None not in values:
        return values
    return [default if v is None else v for v in values]


def _kinds(recs: list[Any], col: _Columns) -> list[str]:
    """:func:`_kind` of every record; column-wise for the common bare conn/dns batch."""
    n = len(recs)
    if not (
        col("at_stream").count(None) == n
        and col("at_path").count(None) == n
        and col("path").count(None) == n
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
    return fast


class _ZeekRows:
    """Shared record -> batch conversion of the JSON and TSV decoders."""

    name: ClassVar[str]

    def _emit(self, recs: list[Any], msgs: list[Message], out: DecodeResult) -> None:
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
    def _ts(col: _Columns) -> list[float]:
        return parse_ts_many(col("ts")).tolist()  # type: ignore[no-any-return]

    @staticmethod
    def _sensor(col: _Columns) -> Sequence[str]:
        a, b = col("at_system"), col("system_name")
        if a.count(None) == len(a) and b.count(None) == len(b):
            return [""] * len(a)
        return [x or y or "" for x, y in zip(a, b, strict=True)]

    def _conn_columns(self, recs: list[Any], col: _Columns | None = None) -> dict[str, Any]:
        col = col or _Columns(recs)
        ts = self._ts(col)
        dur = _or(col("duration"), 0.0)
        return {
            "ts_start": ts,
            "ts_end": [t + d for t, d in zip(ts, dur, strict=True)],
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
            "bidirectional": [True] * len(recs),
        }

    def _dns_columns(self, recs: list[Any], col: _Columns | None = None) -> dict[str, Any]:
        col = col or _Columns(recs)
        answers = _or(col("answers"), [])
        return {
            "ts": self._ts(col),
            "src": col("orig_h"),
            "dst": col("resp_h"),
            "src_port": _or(col("orig_p"), -1),
            "dst_port": _or(col("resp_p"), -1),
            "proto": _or(col("proto"), 17),
            "query": _or(col("query"), ""),
            "qtype": [q if 0 <= q <= 65535 else 0 for q in _or(col("qtype"), 0)],
            "rcode": [c if 0 <= c <= 65535 else -1 for c in _or(col("rcode"), -1)],
            "answers_n": [len(a) for a in answers],
            "answers": [",".join(a) for a in answers],
            "sensor": self._sensor(col),
        }


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
        match = _TAG.match
        for m in messages:
            tag = match(m.value, 0, 200)
            if tag is None or tag.group(1) not in (b"conn", b"dns"):
                return False
        tagged, ok, dead = typed_decode(self._tag_dotted, messages, self.name)
        if dead:
            return False
        recs = []
        for t in tagged:
            inner = t.conn if t.conn is not None else t.dns
            if inner is None or inner.orig_h is None:
                return False
            recs.append(inner)
        for t, inner in zip(tagged, recs, strict=True):
            if inner.at_stream is None and inner.at_path is None and inner.path is None:
                inner.at_path = "conn" if t.conn is not None else "dns"
        self._emit(recs, ok, out)
        return True

    def decode_chunk(self, messages: Sequence[Message]) -> DecodeResult:
        out = DecodeResult()
        if self._tagged and self._decode_tagged(messages, out):
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


class _Header(msgspec.Struct):
    sep: str = "\t"
    set_sep: str = ","
    empty: str = "(empty)"
    unset: str = "-"
    path: str = ""
    fields: list[str] = []
    types: list[str] = []


def _unescape(text: str) -> str:
    return re.sub(r"\\x([0-9a-fA-F]{2})", lambda mo: chr(int(mo.group(1), 16)), text)


class ZeekTsvDecoder(_ZeekRows, Decoder):
    """Zeek ASCII (TSV) log lines, one line per message; headers are tracked per origin."""

    name: ClassVar[str] = "zeek-tsv"

    def __init__(self, max_origins: int = 10_000) -> None:
        self.max_origins = max_origins
        self.headers: dict[str, _Header] = {}

    @classmethod
    def sniff(cls, value: bytes) -> bool:
        return value.startswith((b"#separator", b"#fields\t", b"#set_separator", b"#path\t"))

    def decode(self, messages: Sequence[Message]) -> DecodeResult:
        out = DecodeResult()
        recs: list[Any] = []
        msgs: list[Message] = []
        for m in messages:
            try:
                rec = self._line(m, out)
            except (UnicodeDecodeError, ValueError) as exc:
                out.dead.append(DeadLetter.of(m, "bad_value", str(exc), self.name))
                continue
            if rec is not None:
                recs.append(rec)
                msgs.append(m)
        self._emit(recs, msgs, out)
        return out

    def _header(self, origin: str) -> _Header:
        h = self.headers.get(origin)
        if h is None:
            if len(self.headers) >= self.max_origins:
                self.headers.pop(next(iter(self.headers)))
            h = self.headers[origin] = _Header()
        return h

    def _line(self, m: Message, out: DecodeResult) -> Any:
        if len(m.value) > MAX_MESSAGE_BYTES:
            out.dead.append(DeadLetter.of(m, "oversized", f"{len(m.value)} bytes", self.name))
            return None
        line = m.value.decode("utf-8").rstrip("\r\n")
        if line.startswith("#"):
            self._directive(line, self._header(m.origin))
            out.ignored += 1
            return None
        if not line.strip():
            out.ignored += 1
            return None
        h = self.headers.get(m.origin)
        if h is None or not h.fields:
            out.dead.append(
                DeadLetter.of(m, "schema", "data line before a #fields header", self.name)
            )
            return None
        values = line.split(h.sep)
        if len(values) != len(h.fields):
            out.dead.append(
                DeadLetter.of(
                    m, "schema", f"{len(values)} columns, header has {len(h.fields)}", self.name
                )
            )
            return None
        row: dict[str, Any] = {}
        for i, (name, val) in enumerate(zip(h.fields, values, strict=True)):
            if val == h.unset:
                continue
            kind = h.types[i] if i < len(h.types) else ""
            if kind.startswith(("set", "vector")):
                row[name] = [] if val == h.empty else val.split(h.set_sep)
            else:
                row[name] = "" if val == h.empty else val
        if h.path and "_path" not in row:
            row["_path"] = h.path
        try:
            return msgspec.convert(row, _Dotted, strict=False)
        except msgspec.ValidationError as exc:
            reason, detail = classify(m.value, exc)
            out.dead.append(DeadLetter.of(m, reason, detail, self.name))
            return None

    @staticmethod
    def _directive(line: str, h: _Header) -> None:
        if line.startswith("#separator"):
            h.sep = _unescape(line[len("#separator") :].strip()) or "\t"
            return
        key, _, rest = line[1:].partition(h.sep)
        if key == "set_separator":
            h.set_sep = rest or ","
        elif key == "empty_field":
            h.empty = rest
        elif key == "unset_field":
            h.unset = rest
        elif key == "path":
            h.path = rest
        elif key == "fields":
            h.fields = rest.split(h.sep)
            h.types = []
        elif key == "types":
            h.types = rest.split(h.sep)
