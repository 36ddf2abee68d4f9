"""Vectorised wire walk for goflow2 ``FlowMessage`` batches (used by ``goflow2_pb``).

All messages of a batch are joined into one buffer; the length prefixes and then the
fields of every FlowMessage are read in step with numpy (one field of every record
per round: key varint, then a varint value, a length-delimited span or a fixed
width). Messages in which anything is unusual - a bad wire type, a varint running
past its end or wider than 64 bits, a missing or odd-sized address, a counter out
of range, an oversized or empty message - are flagged ``slow`` and left to the exact
scalar parser, which also writes their dead letters. So the fast path only ever
handles records the scalar path would accept, and gives the same values.

>>> one = bytes([8, 8, 0x32, 4, 10, 0, 0, 1, 0x3A, 4, 8, 8, 8, 8, 0x48, 100])
>>> f = fast_parse([bytes([len(one)]) + one, b"\\x05\\x08"], True, lambda raw: ".".join(map(str, raw)))
>>> f.slow.tolist(), f.msg.tolist()
([False, True], [0])
>>> c = f.columns(); c["src"].tolist(), c["bytes_out"].tolist()
(['10.0.0.1'], [100])
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from stream.decoders._json import COUNTER_MAX
from stream.decoders.base import MAX_MESSAGE_BYTES

__all__ = ["FastFlows", "fast_parse"]

#: varint fields kept, in table column order
VARINT_FIELDS = (2, 3, 5, 9, 10, 20, 21, 22, 26, 38, 110, 111, 112)
ADDR_FIELDS = (6, 7, 11)
_SLOT = np.full(128, -1, dtype=np.int64)
for _i, _num in enumerate(VARINT_FIELDS):
    _SLOT[_num] = _i
_ASLOT = np.full(128, -1, dtype=np.int64)
for _i, _num in enumerate(ADDR_FIELDS):
    _ASLOT[_num] = _i
_V4: dict[int, str] = {}  # uint32 -> dotted quad (as goflow2_pb._addr spells it)
_SHIFTS = (7 * np.arange(10)).astype(np.uint64)
_LIMITS = {3: 1 << 16, 9: COUNTER_MAX, 10: COUNTER_MAX, 20: 255, 21: 65535, 22: 65535, 26: 65535}


def _varints_wide(
    b: np.ndarray, pos: np.ndarray, stop: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    win = b[pos[:, None] + np.arange(10)]
    term = win < 0x80
    ln = np.argmax(term, axis=1) + 1
    bad = ~term.any(axis=1) | (pos + ln > stop) | ((ln == 10) & (win[:, 9] > 1))
    bits = (win & 0x7F).astype(np.uint64) << _SHIFTS
    bits[np.arange(10) >= ln[:, None]] = 0
    return bits.sum(axis=1, dtype=np.uint64), ln, bad


def _varints(
    b: np.ndarray, pos: np.ndarray, stop: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(value as uint64, byte length, bad) of the varints at ``pos`` (each ending by ``stop``).

    One- and two-byte varints (most keys and small values) skip the 10-byte window.
    """
    b0 = b[pos]
    val = b0.astype(np.uint64)
    ln = np.ones(len(pos), dtype=np.int64)
    more = np.flatnonzero(b0 >= 0x80)
    if len(more):
        pm = pos[more]
        b1 = b[pm + 1]
        two = b1 < 0x80
        t = more[two]
        val[t] = (b0[t] & 0x7F).astype(np.uint64) | (b1[two].astype(np.uint64) << np.uint64(7))
        ln[t] = 2
        w = more[~two]
        if len(w):
            val[w], ln[w], bad_w = _varints_wide(b, pos[w], stop[w])
            bad = pos + ln > stop
            bad[w] |= bad_w
            return val, ln, bad
    return val, ln, pos + ln > stop


@dataclass
class FastFlows:
    """Fields of the records the fast path took (``msg``: their message index, in order)."""

    slow: np.ndarray
    msg: np.ndarray
    values: np.ndarray
    present: np.ndarray
    addr_pos: np.ndarray
    addr_len: np.ndarray
    buf: np.ndarray
    addr: Callable[[bytes], str]

    def _col(self, num: int) -> np.ndarray:
        j = VARINT_FIELDS.index(num)
        return np.where(self.present[:, j], self.values[:, j], np.uint64(0))

    def _addresses(self, k: int) -> np.ndarray:
        pos, ln = self.addr_pos[:, k], self.addr_len[:, k]
        out = np.empty(len(pos), dtype=object)
        out[:] = ""
        rows = np.flatnonzero(ln == 4)
        if len(rows):
            p = pos[rows]
            b = self.buf.astype(np.uint32)
            v = (b[p] << 24) | (b[p + 1] << 16) | (b[p + 2] << 8) | b[p + 3]
            uniq, inv = np.unique(v, return_inverse=True)
            if len(_V4) > 1_000_000:
                _V4.clear()
            get = _V4.get
            names = np.empty(len(uniq), dtype=object)
            for i, x in enumerate(uniq.tolist()):
                got = get(x)
                if got is None:
                    got = _V4[x] = sys.intern(
                        f"{x >> 24}.{(x >> 16) & 255}.{(x >> 8) & 255}.{x & 255}"
                    )
                names[i] = got
            out[rows] = names[inv.reshape(-1)]
        rows = np.flatnonzero(ln == 16)
        if len(rows):
            raw = np.ascontiguousarray(self.buf[pos[rows][:, None] + np.arange(16)])
            uniq, inv = np.unique(raw.view("V16").reshape(-1), return_inverse=True)
            names = np.array([self.addr(bytes(u)) for u in uniq.tolist()], dtype=object)
            out[rows] = names[inv.reshape(-1)]
        return out

    def columns(self) -> dict[str, np.ndarray]:
        """The decoder's columns (as ``Goflow2ProtobufDecoder._columns`` builds them)."""
        f = lambda num: self._col(num).astype(np.float64)  # noqa: E731
        start_ns, end_ns, recv_ns = f(111), f(112), f(110)
        v1_start = f(38)
        v1_start = np.where(v1_start > 1e8, v1_start, 0.0)
        v1_end, v1_recv = f(5), f(2)
        start = np.where(start_ns > 0, start_ns * 1e-9, v1_start)
        recv = np.where(recv_ns > 0, recv_ns * 1e-9, v1_recv)
        end = np.where(end_ns > 0, end_ns * 1e-9, v1_end)
        start = np.where(start > 0, start, np.where(end > 0, end, recv))
        end = np.where(end > 0, end, start)
        i = lambda num: self._col(num).astype(np.int64)  # noqa: E731
        rate = np.maximum(i(3), 1)
        return {
            "ts_start": start,
            "ts_end": end,
            "src": self._addresses(0),
            "dst": self._addresses(1),
            "src_port": i(21),
            "dst_port": i(22),
            "proto": i(20),
            "bytes_out": i(9) * rate,
            "pkts_out": i(10) * rate,
            "tcp_flags": i(26),
            "sensor": self._addresses(2),
            "sampling_rate": rate,
        }


def _records(
    b: np.ndarray, starts: np.ndarray, ends: np.ndarray, slow: np.ndarray, prefixed: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(message index, start, stop) of each FlowMessage; flags messages with a bad prefix."""
    live = np.flatnonzero(~slow)
    if not prefixed:
        return live, starts[live], ends[live]
    none = np.zeros(0, dtype=np.int64)
    msgs, lo, hi = [none], [none], [none]
    pos = starts[live]
    while len(live):
        size, ln, bad = _varints(b, pos, ends[live])
        body = pos + ln
        stop = body + size.astype(np.int64)
        bad |= (size > np.uint64(MAX_MESSAGE_BYTES)) | (stop > ends[live])
        slow[live[bad]] = True
        good = ~bad
        msgs.append(live[good])
        lo.append(body[good])
        hi.append(stop[good])
        more = good & (stop < ends[live])
        live, pos = live[more], stop[more]
    m, lo_a, hi_a = np.concatenate(msgs), np.concatenate(lo), np.concatenate(hi)
    order = np.lexsort((lo_a, m))  # by message, then by place in it
    return m[order], lo_a[order], hi_a[order]


def fast_parse(values: Sequence[bytes], prefixed: bool, addr: Callable[[bytes], str]) -> FastFlows:
    """Walk every FlowMessage of ``values`` together (see module docstring)."""
    n = len(values)
    lens = np.fromiter(map(len, values), dtype=np.int64, count=n)
    ends = np.cumsum(lens)
    starts = ends - lens
    slow = (lens == 0) | (lens > MAX_MESSAGE_BYTES)
    b = np.frombuffer(b"".join(values) + bytes(32), dtype=np.uint8)
    msg, pos, stop = _records(b, starts, ends, slow, prefixed)
    r = len(msg)
    values_t = np.zeros((r, len(VARINT_FIELDS)), dtype=np.uint64)
    present = np.zeros((r, len(VARINT_FIELDS)), dtype=bool)
    addr_pos = np.zeros((r, 3), dtype=np.int64)
    addr_len = np.full((r, 3), -1, dtype=np.int64)
    bad_rec = np.zeros(r, dtype=bool)
    act = np.flatnonzero(pos < stop)
    p, e = pos[act], stop[act]
    while len(act):
        key, kl, bad = _varints(b, p, e)
        num = (key >> np.uint64(3)).astype(np.int64)
        num[key >= np.uint64(1 << 40)] = 1 << 40
        wire = (key & np.uint64(7)).astype(np.int64)
        q = p + kl
        small = num < 128
        slot = np.where(small, _SLOT[np.where(small, num, 0)], -1)
        aslot = np.where(small, _ASLOT[np.where(small, num, 0)], -1)
        bad |= num == 0
        val, vl, vbad = _varints(b, q, e)
        w0, w2 = wire == 0, wire == 2
        fixed = (wire == 1) | (wire == 5)
        bad |= ~(w0 | w2 | fixed)
        bad |= (w0 | fixed) & (aslot >= 0)
        bad |= (w0 | w2) & vbad
        size = val.astype(np.int64)
        big = val > np.uint64(MAX_MESSAGE_BYTES)
        nxt = np.where(w0, q + vl, np.where(w2, q + vl + np.where(big, 0, size), q))
        nxt = np.where(fixed, q + np.where(wire == 1, 8, 4), nxt)
        bad |= w2 & (big | (nxt > e))
        bad |= fixed & (nxt > e)
        bad_rec[act[bad]] = True
        ok = ~bad
        sv = np.flatnonzero(ok & w0 & (slot >= 0))
        values_t[act[sv], slot[sv]] = val[sv]
        present[act[sv], slot[sv]] = True
        sa = np.flatnonzero(ok & w2 & (aslot >= 0))
        addr_pos[act[sa], aslot[sa]] = (q + vl)[sa]
        addr_len[act[sa], aslot[sa]] = size[sa]
        go = ok & (nxt < e)
        act, p, e = act[go], nxt[go], e[go]
    # what the scalar path rejects: missing or odd-sized addresses, values out of range
    bad_rec |= ~np.isin(addr_len[:, 0], (4, 16)) | ~np.isin(addr_len[:, 1], (4, 16))
    for field, limit in _LIMITS.items():
        k = VARINT_FIELDS.index(field)
        bad_rec |= present[:, k] & (values_t[:, k] > np.uint64(limit))
    slow[msg[bad_rec]] = True
    keep = ~slow[msg]
    return FastFlows(
        slow=slow,
        msg=msg[keep],
        values=values_t[keep],
        present=present[keep],
        addr_pos=addr_pos[keep],
        addr_len=addr_len[keep],
        buf=b,
        addr=addr,
    )
