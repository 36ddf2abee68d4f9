"""Suricata EVE JSON: ``flow`` (bidirectional), ``netflow`` (unidirectional), ``dns``.

DNS: Suricata logs requests and answers as separate events (EVE dns v1 per-record
events, v2 grouped answers, v3 ``queries``/``answers`` lists). The decoder pairs an answer
with its pending request (same flow id, DNS id and name) into one row per query; a
request not answered within ``pending_timeout`` seconds of record time (or at
:meth:`flush`) is emitted with ``rcode`` -1. EVE v1 answers (one event per answer record)
are held as long, so that the records of one response merge into one row. A paired
request and the extra per-answer events of EVE v1 count as ``ignored``. Other event
types (alert, http, tls, stats, ...) are ``ignored``.

>>> flow = (b'{"timestamp":"2024-02-13T14:34:46.000000+0000","flow_id":7,"event_type":"flow",'
...         b'"src_ip":"10.0.0.5","src_port":50123,"dest_ip":"203.0.113.9","dest_port":443,'
...         b'"proto":"TCP","app_proto":"tls","flow":{"pkts_toserver":5,"pkts_toclient":4,'
...         b'"bytes_toserver":360,"bytes_toclient":2208,"start":"2024-02-13T14:34:40.856120+0000",'
...         b'"end":"2024-02-13T14:34:43.356120+0000","state":"closed","reason":"timeout"}}')
>>> r = SuricataDecoder().decode([Message(flow, "eve", 1), Message(b'{"event_type":"stats"}')])
>>> row = next(r.flows.rows())
>>> row["bytes_out"], row["bytes_in"], row["service"], row["conn_state"], row["ts_start"], r.ignored
(360, 2208, 'tls', 'closed', 1707834880.85612, 1)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import msgspec
import numpy as np

from stream.decoders._json import (
    ChunkedDecoder,
    Counter,
    Port,
    column,
    finish_dns,
    finish_flows,
    parse_ts,
    parse_ts_many,
    typed_decode,
)
from stream.decoders.base import DeadLetter, DecodeResult, Message

__all__ = ["RCODES", "RRTYPES", "SuricataDecoder", "rcode_number", "rrtype_number"]

RRTYPES: dict[str, int] = {
    "A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "NULL": 10, "WKS": 11, "PTR": 12, "HINFO": 13,
    "MINFO": 14, "MX": 15, "TXT": 16, "RP": 17, "AFSDB": 18, "SIG": 24, "KEY": 25, "AAAA": 28,
    "LOC": 29, "SRV": 33, "NAPTR": 35, "KX": 36, "CERT": 37, "DNAME": 39, "OPT": 41, "DS": 43,
    "SSHFP": 44, "RRSIG": 46, "NSEC": 47, "DNSKEY": 48, "NSEC3": 50, "TLSA": 52, "HIP": 55,
    "CDS": 59, "SVCB": 64, "HTTPS": 65, "SPF": 99, "TKEY": 249, "TSIG": 250, "IXFR": 251,
    "AXFR": 252, "ANY": 255, "URI": 256, "CAA": 257,
}  # fmt: skip
RCODES: dict[str, int] = {
    "NOERROR": 0, "FORMERR": 1, "SERVFAIL": 2, "NXDOMAIN": 3, "NOTIMP": 4, "REFUSED": 5,
    "YXDOMAIN": 6, "YXRRSET": 7, "NXRRSET": 8, "NOTAUTH": 9, "NOTZONE": 10, "BADVERS": 16,
}  # fmt: skip


def rrtype_number(value: Any) -> int:
    """IANA RR type of a Suricata ``rrtype`` ("A", "TXT", "TYPE65534" or a number); 0 if unknown.

    >>> rrtype_number("TXT"), rrtype_number("type65534"), rrtype_number(28), rrtype_number("?")
    (16, 65534, 28, 0)
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return value if 0 <= value <= 65535 else 0
    if not isinstance(value, str):
        return 0
    text = value.upper()
    got = RRTYPES.get(text)
    if got is not None:
        return got
    digits = text[4:] if text.startswith("TYPE") else text
    return int(digits) if digits.isdigit() and int(digits) <= 65535 else 0


def rcode_number(value: Any) -> int:
    """DNS RCODE of a Suricata ``rcode`` name; -1 if absent or unknown."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if 0 <= value <= 65535 else -1
    if not isinstance(value, str):
        return -1
    return RCODES.get(value.upper(), -1)


class _Flow(msgspec.Struct, gc=False):
    pkts_toserver: Counter = 0
    pkts_toclient: Counter = 0
    bytes_toserver: Counter = 0
    bytes_toclient: Counter = 0
    start: str | None = None
    end: str | None = None
    state: str = ""
    reason: str = ""


class _Netflow(msgspec.Struct, gc=False):
    pkts: Counter = 0
    bytes: Counter = 0
    start: str | None = None
    end: str | None = None


class _Tcp(msgspec.Struct, gc=False):
    tcp_flags: str = ""


class _Query(msgspec.Struct, gc=False):
    rrname: str = ""
    rrtype: str | int = ""


class _Answer(msgspec.Struct, gc=False):
    rrname: str = ""
    rrtype: str | int = ""
    rdata: Any = None


class _Dns(msgspec.Struct, gc=False):
    version: int = 0
    type: str = ""
    id: int = 0
    rrname: str | None = None
    rrtype: str | int | None = None
    rcode: str | None = None
    rdata: Any = None
    answers: list[_Answer] | None = None
    queries: list[_Query] | None = None
    grouped: dict[str, Any] | None = None


class _Eve(msgspec.Struct, gc=False):
    event_type: str
    timestamp: str | None = None
    flow_id: int = 0
    src_ip: str | None = None
    dest_ip: str | None = None
    src_port: Port | None = None
    dest_port: Port | None = None
    proto: str | int | None = None
    app_proto: str | None = None
    host: str | None = None
    flow: _Flow | None = None
    netflow: _Netflow | None = None
    tcp: _Tcp | None = None
    dns: _Dns | None = None


def _hex(text: str) -> int:
    try:
        v = int(text, 16)
    except ValueError:
        return 0
    return v if 0 <= v <= 0xFFFF else 0


def _answer_values(d: _Dns) -> list[str]:
    if d.answers:
        return [a.rdata for a in d.answers if isinstance(a.rdata, str)]
    if d.grouped:
        out: list[str] = []
        for vals in d.grouped.values():
            if isinstance(vals, list):
                out.extend(v for v in vals if isinstance(v, str))
        return out
    return [d.rdata] if isinstance(d.rdata, str) else []


class SuricataDecoder(ChunkedDecoder):
    """Suricata EVE ``flow``/``netflow``/``dns`` events -> FlowBatch / DnsBatch rows."""

    name: ClassVar[str] = "suricata"

    def __init__(
        self, pending_timeout: float = 5.0, max_pending: int = 100_000, chunk: int = 512
    ) -> None:
        self.chunk = chunk
        self.pending_timeout = pending_timeout
        self.max_pending = max_pending
        #: (flow key, dns id, name) -> [ts, src, dst, sport, dport, proto, query, qtype, sensor, origin, offset]
        self.pending: dict[tuple[Any, ...], list[Any]] = {}
        #: EVE v1 answered rows held for ``pending_timeout`` to merge per-record answer events
        self.answered: dict[tuple[Any, ...], list[Any]] = {}
        self.max_ts = -math.inf
        self._dec = msgspec.json.Decoder(_Eve)

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_dec"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._dec = msgspec.json.Decoder(_Eve)

    @classmethod
    def sniff(cls, value: bytes) -> bool:
        return value[:1] == b"{" and b'"event_type"' in value

    def decode_chunk(self, messages: Sequence[Message]) -> DecodeResult:
        out = DecodeResult()
        recs, ok, out.dead = typed_decode(self._dec, messages, self.name)
        flows: list[Any] = []
        flow_m: list[Message] = []
        nf: list[Any] = []
        nf_m: list[Message] = []
        dns_rows: list[list[Any]] = []
        for r, m in zip(recs, ok, strict=True):
            et = r.event_type
            if et == "flow" and r.flow is not None and r.src_ip and r.dest_ip:
                flows.append(r)
                flow_m.append(m)
            elif et == "netflow" and r.netflow is not None and r.src_ip and r.dest_ip:
                nf.append(r)
                nf_m.append(m)
            elif et == "dns" and r.dns is not None and r.src_ip and r.dest_ip:
                out.ignored += self._dns(r, m, dns_rows)
            elif et in ("flow", "netflow", "dns"):
                out.dead.append(_dead(m, f"{et} event without {et} object or addresses", self.name))
            else:
                out.ignored += 1
        dns_rows += self._expire(final=False)
        batches = []
        if flows:
            batches.append(
                finish_flows(self._flow_cols(flows, "flow"), flow_m, self.name, out.dead)
            )
        if nf:
            batches.append(finish_flows(self._flow_cols(nf, "netflow"), nf_m, self.name, out.dead))
        out.flows = type(out.flows).concat(batches)
        if dns_rows:
            out.dns = self._dns_batch(dns_rows, out)
        return out

    def flush(self) -> DecodeResult:
        out = DecodeResult()
        rows = self._expire(final=True)
        if rows:
            out.dns = self._dns_batch(rows, out)
        return out

    @staticmethod
    def _flow_cols(recs: list[Any], kind: str) -> dict[str, Any]:
        n = len(recs)
        if kind == "flow":
            body = column(recs, "flow")
            out_b, out_p = column(body, "bytes_toserver"), column(body, "pkts_toserver")
            in_b, in_p = column(body, "bytes_toclient"), column(body, "pkts_toclient")
            service = [(r.app_proto if r.app_proto not in (None, "failed") else "") for r in recs]
            state = column(body, "state")
        else:
            body = column(recs, "netflow")
            out_b, out_p = column(body, "bytes"), column(body, "pkts")
            in_b = in_p = [0] * n
            service = [r.app_proto or "" for r in recs]
            state = [""] * n
        start_raw = column(body, "start")
        if None in start_raw:
            start_raw = [
                b.start if b.start is not None else r.timestamp
                for b, r in zip(body, recs, strict=True)
            ]
        start = parse_ts_many(start_raw)
        end_raw = column(body, "end")
        end = parse_ts_many([e if e is not None else "" for e in end_raw])
        if None in end_raw:
            end = np.where([e is None for e in end_raw], start, end)
        return {
            "ts_start": start,
            "ts_end": end,
            "src": column(recs, "src_ip"),
            "dst": column(recs, "dest_ip"),
            "src_port": [-1 if p is None else p for p in column(recs, "src_port")],
            "dst_port": [-1 if p is None else p for p in column(recs, "dest_port")],
            "proto": [0 if p is None else p for p in column(recs, "proto")],
            "bytes_out": out_b,
            "pkts_out": out_p,
            "bytes_in": in_b,
            "pkts_in": in_p,
            "tcp_flags": [_hex(r.tcp.tcp_flags) if r.tcp is not None else 0 for r in recs],
            "service": service,
            "conn_state": state,
            "sensor": [r.host or "" for r in recs],
            "bidirectional": [kind == "flow"] * n,
        }

    def _dns(self, r: Any, m: Message, rows: list[list[Any]]) -> int:
        """Handle one dns event; return how many messages it makes ``ignored`` (0 or 1)."""
        d = r.dns
        ts = parse_ts(r.timestamp)
        if math.isfinite(ts) and ts > self.max_ts:
            self.max_ts = ts
        sport, dport = (
            r.src_port if r.src_port is not None else -1,
            r.dest_port if r.dest_port is not None else -1,
        )
        src, dst = r.src_ip, r.dest_ip
        qs = (
            d.queries
            if d.queries
            else ([_Query(d.rrname, d.rrtype or "")] if d.rrname is not None else [])
        )
        base = [ts, src, dst, sport, dport, r.proto or 17]
        flow_key: Any = r.flow_id or tuple(sorted([(src, sport), (dst, dport)]))
        if d.type in ("query", "request"):
            dup = 0
            for q in qs:
                key = (flow_key, d.id, q.rrname.lower())
                if key in self.pending:  # a retransmission: keep the first request
                    dup = 1
                    continue
                if len(self.pending) >= self.max_pending:
                    rows.append(self._unanswered(self.pending.pop(next(iter(self.pending)))))
                self.pending[key] = [
                    *base,
                    q.rrname,
                    rrtype_number(q.rrtype),
                    r.host or "",
                    m.origin,
                    m.offset,
                ]
            return 1 if dup or not qs else 0
        if d.type not in ("answer", "response"):
            return 1
        answers = _answer_values(d)
        rcode = rcode_number(d.rcode)
        merged = 0
        # EVE v1 logs one event per answer record: hold the row to merge its siblings
        v1 = d.version < 2 and d.type == "answer" and d.answers is None and d.grouped is None
        for q in qs or [_Query("", "")]:
            key = (flow_key, d.id, q.rrname.lower())
            if v1 and key in self.answered:
                merged = 1
                self.answered[key][9].extend(answers)
                continue
            req = self.pending.pop(key, None)
            if req is not None:
                merged = 1
                row = [*req[:8], rcode, list(answers), req[8], req[9], req[10]]
            else:
                if sport == 53 and dport != 53:
                    src, dst, sport, dport = dst, src, dport, sport
                row = [ts, src, dst, sport, dport, base[5], q.rrname, rrtype_number(q.rrtype), rcode,
                       list(answers), r.host or "", m.origin, m.offset]  # fmt: skip
            if not v1:
                rows.append(row)
                continue
            if len(self.answered) >= self.max_pending:
                rows.append(self.answered.pop(next(iter(self.answered))))
            self.answered[key] = row
        return merged

    @staticmethod
    def _unanswered(req: list[Any]) -> list[Any]:
        return [*req[:8], -1, [], req[8], req[9], req[10]]

    def _expire(self, final: bool) -> list[list[Any]]:
        if not self.pending and not self.answered:
            return []
        if final:
            rows = [self._unanswered(v) for v in self.pending.values()]
            rows += self.answered.values()
            self.pending.clear()
            self.answered.clear()
            return rows
        horizon = self.max_ts - self.pending_timeout
        old = [k for k, v in self.pending.items() if not v[0] >= horizon]
        rows = [self._unanswered(self.pending.pop(k)) for k in old]
        done = [k for k, v in self.answered.items() if not v[0] >= horizon]
        rows += [self.answered.pop(k) for k in done]
        return rows

    def _dns_batch(self, rows: list[list[Any]], out: DecodeResult) -> Any:
        cols = list(zip(*rows, strict=True))
        msgs = [Message(b"", o, off) for o, off in zip(cols[11], cols[12], strict=True)]
        answers: Sequence[list[str]] = cols[9]
        return finish_dns(
            {
                "ts": list(cols[0]),
                "src": list(cols[1]),
                "dst": list(cols[2]),
                "src_port": list(cols[3]),
                "dst_port": list(cols[4]),
                "proto": list(cols[5]),
                "query": list(cols[6]),
                "qtype": list(cols[7]),
                "rcode": list(cols[8]),
                "answers_n": [len(a) for a in answers],
                "answers": [",".join(a) for a in answers],
                "sensor": list(cols[10]),
            },
            msgs,
            self.name,
            out.dead,
        )


def _dead(m: Message, detail: str, name: str) -> DeadLetter:
    return DeadLetter.of(m, "schema", detail, name)
