"""DNS messages on the wire: a scalar parser and a vectorised one for many messages at once.

:func:`parse_dns` reads one message (the reference). :func:`dns_columns` reads every
message of a chunk from one buffer with numpy gathers: the header, the question name
(label walking by offsets, all messages in step), the question type and, for
responses to A/AAAA questions, the A/AAAA addresses of the answer section. Messages
with a compressed question name or several questions (rare) go through
:func:`parse_dns`. Both give the same fields; answers are read only for responses to
A/AAAA questions (``a_only``), which is what the packet path uses.

>>> q = bytes.fromhex("abcd01000001000000000000") + b"\\x03www\\x07example\\x03com\\x00\\x00\\x01\\x00\\x01"
>>> r = bytearray(q); r[2:4] = b"\\x81\\x80"; r[6:8] = b"\\x00\\x01"
>>> r += b"\\xc0\\x0c\\x00\\x01\\x00\\x01\\x00\\x00\\x00\\x3c\\x00\\x04" + bytes([93, 184, 216, 34])
>>> buf = q + bytes(r) + b"\\x00\\x01"
>>> c = dns_columns(buf, np.array([0, len(q), len(q) + len(r)]), np.array([len(q), len(q) + len(r), len(buf)]))
>>> c.ok.tolist(), c.query.tolist(), c.response.tolist(), c.answers.tolist()
([True, True, False], ['www.example.com', 'www.example.com', ''], [False, True, False], ['', '93.184.216.34', ''])
"""

from __future__ import annotations

import itertools
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

__all__ = ["DnsColumns", "DnsMessage", "dns_columns", "parse_dns"]

MAX_ANSWERS = 32
_A, _AAAA = 1, 28


class DnsMessage(NamedTuple):
    """The parts of a DNS message slowburn uses."""

    id: int
    response: bool
    rcode: int
    query: str
    qtype: int
    answers_n: int
    answers: tuple[str, ...]


_HDR = struct.Struct("!HHHHHH")
_RR = struct.Struct("!HHIH")


def _name(data: bytes, pos: int) -> tuple[str, int]:
    """Read a (possibly compressed) name at ``pos``; returns (name, position after it)."""
    parts: list[bytes] = []
    jumps = 0
    after = -1
    total = 0
    n = len(data)
    while True:
        if pos >= n:
            raise ValueError("name runs past the message")
        length = data[pos]
        if length == 0:
            pos += 1
            break
        if length >= 0xC0:
            if pos + 1 >= n:
                raise ValueError("truncated pointer")
            if after < 0:
                after = pos + 2
            pos = ((length & 0x3F) << 8) | data[pos + 1]
            jumps += 1
            if jumps > 32:
                raise ValueError("pointer loop")
            continue
        if length > 63:
            raise ValueError("bad label type")
        nxt = pos + 1 + length
        if nxt > n:
            raise ValueError("label runs past the message")
        total += length + 1
        if total > 255:
            raise ValueError("name too long")
        parts.append(data[pos + 1 : nxt])
        pos = nxt
    # case and raw bytes kept: tunnels encode data in both
    name = b".".join(parts).decode("latin-1")
    return name, (after if after >= 0 else pos)


def _skip_name(data: bytes, pos: int) -> int:
    n = len(data)
    for _ in range(128):
        if pos >= n:
            raise ValueError("name runs past the message")
        length = data[pos]
        if length == 0:
            return pos + 1
        if length >= 0xC0:
            return pos + 2
        pos += 1 + length
    raise ValueError("too many labels")


def parse_dns(
    data: bytes,
    max_answers: int = MAX_ANSWERS,
    cache: dict[bytes, tuple[str, int]] | None = None,
    a_only: bool = False,
) -> DnsMessage | None:
    """Parse a DNS message (UDP payload, no TCP length prefix); ``None`` if malformed.

    ``a_only``: read the answer section only for responses to A/AAAA questions (else
    ``answers`` is empty and the section is not looked at). ``cache`` is accepted for
    compatibility and not used.

    >>> q = bytes.fromhex("abcd01000001000000000000") + b"\\x03www\\x07example\\x03com\\x00" + b"\\x00\\x01\\x00\\x01"
    >>> parse_dns(q)
    DnsMessage(id=43981, response=False, rcode=0, query='www.example.com', qtype=1, answers_n=0, answers=())
    >>> r = bytearray(q); r[2:4] = b"\\x81\\x80"; r[6:8] = b"\\x00\\x01"
    >>> r += b"\\xc0\\x0c\\x00\\x01\\x00\\x01\\x00\\x00\\x00\\x3c\\x00\\x04" + bytes([93, 184, 216, 34])
    >>> parse_dns(bytes(r)).answers
    ('93.184.216.34',)
    >>> parse_dns(b"\\x00\\x01") is None
    True
    """
    del cache
    try:
        if len(data) < 12:
            return None
        ident, fl, qd, an, _ns, _ar = _HDR.unpack_from(data, 0)
        pos = 12
        query, qtype = "", 0
        if qd:
            query, pos = _name(data, pos)
            if pos + 4 > len(data):
                return None
            qtype = (data[pos] << 8) | data[pos + 1]
            pos += 4
            for _ in range(min(qd, 8) - 1):
                pos = _skip_name(data, pos) + 4
        answers: list[str] = []
        if a_only and not (fl & 0x8000 and qtype in (_A, _AAAA)):
            an_read = 0
        else:
            an_read = min(an, max_answers)
        for _ in range(an_read):
            pos = _skip_name(data, pos)
            if pos + 10 > len(data):
                break
            rtype, _cls, _ttl, rdlen = _RR.unpack_from(data, pos)
            pos += 10
            rdata = data[pos : pos + rdlen]
            if len(rdata) < rdlen:
                break
            pos += rdlen
            if rtype == _A and rdlen == 4:
                answers.append(socket.inet_ntoa(rdata))
            elif rtype == _AAAA and rdlen == 16:
                answers.append(socket.inet_ntop(socket.AF_INET6, rdata))
        return DnsMessage(ident, bool(fl & 0x8000), fl & 0xF, query, qtype, an, tuple(answers))
    except (ValueError, IndexError, struct.error, OSError):
        return None


@dataclass
class DnsColumns:
    """Fields of ``n`` messages; rows with ``ok`` False were malformed (other fields unset).

    ``answers`` holds the A/AAAA addresses joined by ``","`` ("" for none).
    """

    ok: np.ndarray
    ident: np.ndarray
    response: np.ndarray
    rcode: np.ndarray
    query: np.ndarray
    qtype: np.ndarray
    answers_n: np.ndarray
    answers: np.ndarray
    size: np.ndarray

    def __len__(self) -> int:
        return len(self.ok)

    def message(self, i: int) -> DnsMessage | None:
        """Row ``i`` as a :class:`DnsMessage` (``None`` if malformed)."""
        if not self.ok[i]:
            return None
        ans = self.answers[i]
        return DnsMessage(
            int(self.ident[i]),
            bool(self.response[i]),
            int(self.rcode[i]),
            self.query[i],
            int(self.qtype[i]),
            int(self.answers_n[i]),
            tuple(ans.split(",")) if ans else (),
        )


def _v4(values: np.ndarray) -> np.ndarray:
    return np.array([socket.inet_ntoa(v.to_bytes(4, "big")) for v in values.tolist()], dtype=object)


def _v6(raw: np.ndarray) -> np.ndarray:
    return np.array(
        [socket.inet_ntop(socket.AF_INET6, r.tobytes()) for r in raw], dtype=object
    ).reshape(-1)


def dns_columns(
    buf: bytes | bytearray | memoryview,
    starts: np.ndarray,
    ends: np.ndarray,
    v4: Callable[[np.ndarray], np.ndarray] = _v4,
    v6: Callable[[np.ndarray], np.ndarray] = _v6,
    max_answers: int = MAX_ANSWERS,
) -> DnsColumns:
    """Parse the messages ``buf[starts[i]:ends[i]]`` together (``a_only`` rules, see module).

    ``v4``/``v6`` turn uint32 addresses / ``(k, 16)`` uint8 rows into strings (the packet
    parser passes its cached converters). Never raises on hostile bytes.
    """
    s = np.asarray(starts, dtype=np.int64)
    e = np.asarray(ends, dtype=np.int64)
    n = len(s)
    b = np.frombuffer(buf, dtype=np.uint8)
    if len(b) == 0:
        b = np.zeros(1, dtype=np.uint8)
    last = len(b) - 1
    e = np.minimum(e, len(b))

    def u8(p: np.ndarray) -> np.ndarray:
        return b[np.clip(p, 0, last)].astype(np.int64)

    def u16(p: np.ndarray) -> np.ndarray:
        return (u8(p) << 8) | u8(p + 1)

    ok = (e - s) >= 12
    ident, fl, qd, an = u16(s), u16(s + 2), u16(s + 4), u16(s + 6)
    response = (fl & 0x8000) != 0
    fallback = ok & (qd > 1)
    qtype = np.zeros(n, dtype=np.int64)
    pos = s + 12
    qend = np.full(n, -1, dtype=np.int64)

    # -- question name: every message walks its labels in step -----------------------
    act = np.flatnonzero(ok & (qd == 1))
    p, ee, tot = pos[act], e[act], np.zeros(len(act), dtype=np.int64)
    dot_rows: list[np.ndarray] = []
    dot_pos: list[np.ndarray] = []
    while len(act):
        past = p >= ee
        ln = u8(p)
        zero = ~past & (ln == 0)
        qend[act[zero]] = p[zero]
        comp = ~past & (ln >= 0xC0)
        fallback[act[comp]] = True
        nxt = p + 1 + ln
        tot = tot + ln + 1
        bad = past | (~comp & (ln > 63)) | (nxt > ee) | (tot > 255)
        ok[act[bad & ~zero & ~comp]] = False
        go = ~(bad | zero | comp)
        act, p, ee, tot = act[go], nxt[go], ee[go], tot[go]
        if len(act):
            dot_rows.append(act)
            dot_pos.append(p)
    named = np.flatnonzero(ok & ~fallback & (qd == 1))
    after = qend[named] + 1
    short = after + 4 > e[named]
    ok[named[short]] = False
    named, after = named[~short], after[~short]
    qtype[named] = u16(after)
    pos[named] = after + 4

    query = np.empty(n, dtype=object)
    query[:] = ""
    if len(named):
        first = s[named] + 12
        lens = qend[named] - first  # bytes of the name before its zero, length octets included
        stop = qend[named]
        lo, hi = int(first.min()), int(stop.max())
        total = int((stop - first).sum())
        if hi - lo <= 4 * total + 4096:
            # one copy of the span holding the names (cheaper than a gather when dense)
            text = b[lo:hi].copy()
            begin, shift = first, lo
        else:
            lens = stop - first
            outoff = np.zeros(len(named) + 1, dtype=np.int64)
            np.cumsum(lens, out=outoff[1:])
            text = b[np.arange(total, dtype=np.int64) + np.repeat(first - outoff[:-1], lens)]
            begin, shift = outoff[:-1], 0
        if dot_rows:
            slot = np.zeros(n, dtype=np.int64)
            slot[named] = begin - first - shift
            has = np.zeros(n, dtype=bool)
            has[named] = True
            rr, pp = np.concatenate(dot_rows), np.concatenate(dot_pos)
            # a later label's length octet inside the name becomes its dot
            keep = has[rr] & (pp < qend[rr])
            text[pp[keep] + slot[rr[keep]]] = 0x2E
        decoded = text.tobytes().decode("latin-1")
        o1 = (begin - shift + 1).tolist()
        o2 = (begin - shift + stop - first).tolist()
        query[named] = [decoded[x:y] for x, y in zip(o1, o2, strict=True)]

    # -- answers: A/AAAA addresses of responses to A/AAAA questions ------------------
    answers = np.empty(n, dtype=object)
    answers[:] = ""
    want = ok & ~fallback & response & (an > 0) & ((qtype == _A) | (qtype == _AAAA))
    act = np.flatnonzero(want)
    p, ee = pos[act], e[act]
    left = np.minimum(an[act], max_answers)
    found_row: list[np.ndarray] = []
    found_j: list[np.ndarray] = []
    found_pos: list[np.ndarray] = []
    found_v6: list[np.ndarray] = []
    j = 0
    while len(act):
        # skip the owner name (a pointer or labels), as _skip_name does
        q = p.copy()
        done = np.zeros(len(act), dtype=bool)
        fail = np.zeros(len(act), dtype=bool)
        for _ in range(128):
            w = np.flatnonzero(~done & ~fail)
            if not len(w):
                break
            qw = q[w]
            past = qw >= ee[w]
            ln = u8(qw)
            fail[w[past]] = True
            end0 = ~past & (ln == 0)
            ptr = ~past & (ln >= 0xC0)
            q[w] = np.where(end0, qw + 1, np.where(ptr, qw + 2, qw + 1 + ln))
            done[w[end0 | ptr]] = True
        fail |= ~done
        ok[act[fail]] = False
        cut = ~fail & (q + 10 > ee)
        rtype, rdlen = u16(q), u16(q + 8)
        data = q + 10
        cut |= ~fail & (data + rdlen > ee)
        good = ~fail & ~cut
        hit = good & (((rtype == _A) & (rdlen == 4)) | ((rtype == _AAAA) & (rdlen == 16)))
        if hit.any():
            found_row.append(act[hit])
            found_j.append(np.full(int(np.count_nonzero(hit)), j, dtype=np.int64))
            found_pos.append(data[hit])
            found_v6.append(rtype[hit] == _AAAA)
        j += 1
        go = good & (left > j)
        act, p, ee, left = act[go], (data + rdlen)[go], ee[go], left[go]
    if found_row:
        rows = np.concatenate(found_row)
        jj = np.concatenate(found_j)
        at = np.concatenate(found_pos)
        is6 = np.concatenate(found_v6)
        text_ans = np.empty(len(rows), dtype=object)
        if (~is6).any():
            a4 = at[~is6]
            val = (u16(a4) << 16) | u16(a4 + 2)
            text_ans[~is6] = v4(val.astype(np.uint32))
        if is6.any():
            text_ans[is6] = v6(b[np.minimum(at[is6][:, None] + np.arange(16), last)])
        live = ok[rows]
        order = np.lexsort((jj[live], rows[live]))
        rows, text_ans = rows[live][order], text_ans[live][order]
        bounds = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1], True])
        ta = text_ans.tolist()
        bl = bounds.tolist()
        answers[rows[bounds[:-1]]] = [",".join(ta[x:y]) for x, y in itertools.pairwise(bl)]

    # -- rare shapes through the scalar parser ---------------------------------------
    slow = np.flatnonzero(fallback & ok)
    if len(slow):
        for i in slow.tolist():
            msg = parse_dns(bytes(buf[s[i] : e[i]]), max_answers, a_only=True)
            if msg is None:
                ok[i] = False
                continue
            qtype[i], query[i], answers[i] = msg.qtype, msg.query, ",".join(msg.answers)
    return DnsColumns(
        ok=ok,
        ident=ident,
        response=response,
        rcode=fl & 0xF,
        query=query,
        qtype=qtype,
        answers_n=an,
        answers=answers,
        size=e - s,
    )
