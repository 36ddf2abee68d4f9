"""Canonical batches → the JSON lines real sensors emit (goflow2 v2 JSON, Zeek conn/dns JSON).

Used by ``slowburn simulate`` to feed the simulator through the same decoders as real
traffic. Each function returns one ``bytes`` object per record (no trailing newline).

* :func:`encode_goflow2_json` — goflow2 v2 ``-format=json`` field names. goflow2 is
  **unidirectional**: a bidirectional flow becomes two records, the forward one
  (src→dst, ``bytes_out``/``pkts_out``) and, when the responder sent anything, the
  reverse one (dst→src, ``bytes_in``/``pkts_in``, ports swapped). Counts are divided
  by ``sampling_rate`` (goflow2 reports sampled counts; decoders multiply back).
* :func:`encode_zeek_conn_json` / :func:`encode_zeek_dns_json` — Zeek JSON logs
  (``LogAscii::use_json``) with dotted ``id.*`` keys; ``tagged=True`` wraps each
  record as ``{"conn": {...}}`` / ``{"dns": {...}}`` like zeek-kafka ``tag_json=T``.
  Unset fields are omitted, as Zeek does.

>>> from pipelines.records import FlowBatch
>>> f = FlowBatch.from_columns({"ts_start": [1.5], "ts_end": [2.0], "src": ["10.0.0.1"],
...     "dst": ["203.0.113.9"], "src_port": [50000], "dst_port": [443], "proto": [6],
...     "bytes_out": [400], "pkts_out": [5], "bytes_in": [3000], "pkts_in": [4],
...     "conn_state": ["SF"], "service": ["ssl"], "bidirectional": [True], "offset": [0]})
>>> import json
>>> fwd, rev = (json.loads(b) for b in encode_goflow2_json(f))
>>> fwd["src_addr"], fwd["bytes"], fwd["proto"], rev["src_addr"], rev["dst_port"], rev["bytes"]
('10.0.0.1', 400, 'TCP', '203.0.113.9', 50000, 3000)
>>> c = json.loads(encode_zeek_conn_json(f, tagged=True)[0])["conn"]
>>> c["id.orig_h"], c["id.resp_p"], c["proto"], c["orig_ip_bytes"], c["history"]
('10.0.0.1', 443, 'tcp', 400, 'ShADadFf')
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import orjson

from pipelines.records import DnsBatch, FlowBatch

__all__ = ["encode_goflow2_json", "encode_zeek_conn_json", "encode_zeek_dns_json", "zeek_uids"]

_PROTO = {1: "ICMP", 6: "TCP", 17: "UDP", 58: "IPv6-ICMP", 47: "GRE", 50: "ESP", 132: "SCTP"}
_ZPROTO = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmp"}
_HISTORY_TCP = {"SF": "ShADadFf", "S0": "S", "REJ": "Sr", "S1": "ShAD", "RSTO": "ShADR", "OTH": "D"}
_QTYPES = {
    1: "A",
    2: "NS",
    5: "CNAME",
    6: "SOA",
    10: "NULL",
    12: "PTR",
    15: "MX",
    16: "TXT",
    28: "AAAA",
    33: "SRV",
    65: "HTTPS",
    255: "*",
}
_RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}
_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_B62_TABLE = np.frombuffer(_B62.encode(), dtype=np.uint8)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, vectorised (uint64 wrap-around arithmetic)."""
    z = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def zeek_uids(ts: np.ndarray, offset: np.ndarray, prefix: str = "C") -> list[str]:
    """Deterministic Zeek-style uids (``C`` + 17 base62 chars) from time and record number.

    >>> zeek_uids(np.array([1.0]), np.array([7]))[0][:1], len(zeek_uids(np.array([1.0]), np.array([7]))[0])
    ('C', 18)
    """
    with np.errstate(over="ignore"):
        k1 = _mix(
            _mix(offset.astype(np.int64).view(np.uint64))
            ^ (ts * 1e6).astype(np.int64).view(np.uint64)
        )
        k2 = _mix(k1)
    digits = np.empty((len(k1), 17), dtype=np.uint8)
    for i in range(17):
        key = k1 if i < 9 else k2
        digits[:, i] = (key % np.uint64(62)).astype(np.uint8)
        key //= np.uint64(62)
    chars = np.ascontiguousarray(_B62_TABLE[digits]).view("S17").ravel()
    return [prefix + c for c in chars.astype("U17").tolist()]


_BOOL = {True: "true", False: "false"}
_SAFE: dict[str, str] = {}


def _json_str(value: str) -> str:
    """JSON string literal (cached: services and states come from a small vocabulary)."""
    got = _SAFE.get(value)
    if got is None:
        got = orjson.dumps(value).decode()
        if len(_SAFE) < 10_000:
            _SAFE[value] = got
    return got


_PLAIN = re.compile(r"[^\"\\\x00-\x1f]*")


def _escaped(values: list[Any]) -> list[Any]:
    """Values safe to place between JSON quotes (escapes only when a batch needs it)."""
    bad = {v for v in set(values) if not isinstance(v, str) or not _PLAIN.fullmatch(v)}
    if not bad:
        return values
    fix = {v: orjson.dumps(str(v)).decode()[1:-1] for v in bad}
    return [fix.get(v, v) for v in values]


def _ns(t: np.ndarray) -> list[int]:
    return (np.round(t * 1e6).astype(np.int64) * 1000).tolist()


def encode_goflow2_json(
    flows: FlowBatch,
    *,
    sampler_address: str = "10.255.0.1",
    type_: str = "IPFIX",
    export_delay: float = 1.0,
) -> list[bytes]:
    """goflow2 v2 JSON messages, two per bidirectional flow with a reply (forward, reverse).

    ``time_received_ns`` is the flow end plus ``export_delay`` seconds; ``sequence_num``
    counts records in this call.
    """
    n = len(flows)
    if n == 0:
        return []
    rate = np.maximum(flows.sampling_rate, 1)
    start, end = _ns(flows.ts_start), _ns(flows.ts_end)
    recv = _ns(flows.ts_end + export_delay)
    cols = zip(
        start, end, recv,
        _escaped(flows.src.tolist()), _escaped(flows.dst.tolist()),
        flows.src_port.tolist(), flows.dst_port.tolist(), flows.proto.tolist(),
        (flows.bytes_out // rate).tolist(), (flows.pkts_out // rate).tolist(),
        (flows.bytes_in // rate).tolist(), (flows.pkts_in // rate).tolist(),
        flows.tcp_flags.tolist(), rate.tolist(), (flows.bidirectional & (flows.pkts_in > 0)).tolist(),
        strict=True,
    )  # fmt: skip
    head = f'{{"type":"{type_}","time_received_ns":'
    mid = f',"sampler_address":"{sampler_address}","time_flow_start_ns":'
    tail = ',"ip_tos":0,"forwarding_status":0,"icmp_type":0,"icmp_code":0,"src_as":0,"dst_as":0,"next_hop":"","observation_domain_id":0}'
    out: list[bytes] = []
    seq = 0
    for s, e, r, src, dst, sp, dp, pr, bo, po, bi, pi, fl, sr, rev in cols:
        etype = "IPv6" if ":" in src else "IPv4"
        proto = _PROTO.get(pr, str(pr))
        sp = sp if sp > 0 else 0
        dp = dp if dp > 0 else 0
        seq += 1
        out.append(
            f'{head}{r},"sequence_num":{seq},"sampling_rate":{sr}{mid}{s},"time_flow_end_ns":{e},'
            f'"bytes":{bo},"packets":{po},"src_addr":"{src}","dst_addr":"{dst}","etype":"{etype}",'
            f'"proto":"{proto}","src_port":{sp},"dst_port":{dp},"in_if":1,"out_if":2,"tcp_flags":{fl}{tail}'.encode()
        )
        if rev:
            seq += 1
            rfl = 0x14 if fl == 0x16 else fl
            out.append(
                f'{head}{r},"sequence_num":{seq},"sampling_rate":{sr}{mid}{s},"time_flow_end_ns":{e},'
                f'"bytes":{bi},"packets":{pi},"src_addr":"{dst}","dst_addr":"{src}","etype":"{etype}",'
                f'"proto":"{proto}","src_port":{dp},"dst_port":{sp},"in_if":2,"out_if":1,"tcp_flags":{rfl}{tail}'.encode()
            )
    return out


def encode_zeek_conn_json(flows: FlowBatch, *, tagged: bool = False) -> list[bytes]:
    """Zeek conn.log JSON records; ``orig_ip_bytes`` = ``bytes_out``, ``orig_bytes`` = payload."""
    n = len(flows)
    if n == 0:
        return []
    uids = zeek_uids(flows.ts_start, flows.offset)
    pay_out = np.where(
        flows.payload_out >= 0,
        flows.payload_out,
        np.maximum(flows.bytes_out - 40 * flows.pkts_out, 0),
    )
    pay_in = np.where(
        flows.payload_in >= 0, flows.payload_in, np.maximum(flows.bytes_in - 40 * flows.pkts_in, 0)
    )
    cols = zip(
        flows.ts_start.tolist(), uids, _escaped(flows.src.tolist()), flows.src_port.tolist(),
        _escaped(flows.dst.tolist()), flows.dst_port.tolist(), flows.proto.tolist(), flows.service.tolist(),
        (flows.ts_end - flows.ts_start).tolist(), pay_out.tolist(), pay_in.tolist(),
        flows.conn_state.tolist(), flows.pkts_out.tolist(), flows.bytes_out.tolist(),
        flows.pkts_in.tolist(), flows.bytes_in.tolist(), flows.src_inside.tolist(), flows.dst_inside.tolist(),
        strict=True,
    )  # fmt: skip
    pre, post = ('{"conn":', "}") if tagged else ("", "")
    out: list[bytes] = []
    for ts, uid, sh, sp, dh, dp, pr, svc, dur, ob, rb, st, op, oib, rp, rib, li, lr in cols:
        proto = _ZPROTO.get(pr, "unknown_transport")
        st = st or "OTH"
        hist = _HISTORY_TCP.get(st, "D") if proto == "tcp" else ("Dd" if rp else "D")
        service = f'"service":{_json_str(svc)},' if svc else ""
        out.append(
            f'{pre}{{"ts":{ts!r},"uid":"{uid}","id.orig_h":"{sh}","id.orig_p":{sp if sp > 0 else 0},'
            f'"id.resp_h":"{dh}","id.resp_p":{dp if dp > 0 else 0},"proto":"{proto}",{service}'
            f'"duration":{round(dur, 6)!r},"orig_bytes":{ob},"resp_bytes":{rb},"conn_state":{_json_str(st)},'
            f'"local_orig":{_BOOL[li]},"local_resp":{_BOOL[lr]},"missed_bytes":0,"history":"{hist}",'
            f'"orig_pkts":{op},"orig_ip_bytes":{oib},"resp_pkts":{rp},"resp_ip_bytes":{rib}}}{post}'.encode()
        )
    return out


def encode_zeek_dns_json(dns: DnsBatch, *, tagged: bool = False) -> list[bytes]:
    """Zeek dns.log JSON records (``answers`` as a list, one TTL per answer)."""
    n = len(dns)
    if n == 0:
        return []
    uids = zeek_uids(dns.ts, dns.offset, prefix="D")
    trans = (
        (_mix(dns.offset.astype(np.int64).view(np.uint64)) & np.uint64(0xFFFF))
        .astype(np.int64)
        .tolist()
    )
    cols = zip(
        dns.ts.tolist(), uids, _escaped(dns.src.tolist()), dns.src_port.tolist(),
        _escaped(dns.dst.tolist()), dns.dst_port.tolist(), dns.proto.tolist(), trans,
        _escaped(dns.query.tolist()), dns.qtype.tolist(), dns.rcode.tolist(), _escaped(dns.answers.tolist()),
        strict=True,
    )  # fmt: skip
    pre, post = ('{"dns":', "}") if tagged else ("", "")
    out: list[bytes] = []
    for ts, uid, sh, sp, dh, dp, pr, tid, q, qt, rc, ans in cols:
        qname = _QTYPES.get(qt) or f"unknown-{qt}"
        if rc >= 0:
            rname = _RCODES.get(rc) or f"unknown-{rc}"
            resp = '"rtt":0.0125,'
            code = f',"rcode":{rc},"rcode_name":"{rname}"'
            ra = "true"
        else:
            resp = code = ""
            ra = "false"
        if ans:
            values = ans.split(",")
            joined = '","'.join(values)
            ttls = ",".join(["300.0"] * len(values))
            answers = f',"answers":["{joined}"],"TTLs":[{ttls}]'
        else:
            answers = ""
        out.append(
            f'{pre}{{"ts":{ts!r},"uid":"{uid}","id.orig_h":"{sh}","id.orig_p":{sp if sp > 0 else 0},'
            f'"id.resp_h":"{dh}","id.resp_p":{dp if dp > 0 else 0},"proto":"{_ZPROTO.get(pr, "udp")}",'
            f'"trans_id":{tid},{resp}"query":"{q}","qclass":1,"qclass_name":"C_INTERNET","qtype":{qt},'
            f'"qtype_name":"{qname}"{code},"AA":false,"TC":false,"RD":true,"RA":{ra},"Z":0{answers},'
            f'"rejected":false}}{post}'.encode()
        )
    return out
