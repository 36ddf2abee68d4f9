"""pcap / pcapng captures → flows (via :class:`pipelines.flowtable.FlowTable`) and DNS rows.

The raw path: the capture is read in blocks, records are located with ``struct`` (pcap
in both byte orders with µs or ns timestamps; pcapng SHB/IDB/EPB/SPB/obsolete PB with
per-interface link type, ``if_tsresol`` and ``if_tsoffset``), and all headers of a chunk
of records are parsed at once by :class:`pipelines.packets.PacketParser`. A truncated
last record (common in shared captures) ends the file cleanly and is counted in
``stats["truncated"]``.

>>> import io, struct
>>> ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, 0, 0, 64, 17, 0, bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
>>> frame = ip + struct.pack("!HHHH", 1234, 9999, 8, 0)
>>> pcap = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101)
>>> pcap += struct.pack("<IIII", 100, 0, len(frame), len(frame)) + frame
>>> d = PcapDecoder()
>>> flows = [r.flows for r in d.decode_stream(io.BytesIO(pcap), "t.pcap")]
>>> [(f["src"], f["dst_port"], f["bytes_out"], f["conn_state"]) for b in flows for f in b.rows()]
[('10.0.0.1', 9999, 28, 'S0')]
"""

from __future__ import annotations

import io
import logging
import os
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any, ClassVar

import numpy as np

from pipelines.flowtable import DnsPairer, FlowTable
from pipelines.packets import PacketColumns, PacketParser, dns_messages
from stream.decoders.base import DeadLetter, Decoder, DecodeResult, Message

__all__ = ["CaptureFormatError", "PcapDecoder", "RawChunk", "iter_capture"]

log = logging.getLogger(__name__)

#: a capture block as read (``bytearray`` when read with ``readinto``; never mutated)
Buffer = bytes | bytearray
BLOCK = 8 << 20
MAX_RECORD = 1 << 18
_PCAP_MAGIC = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}
_PCAPNG = b"\x0a\x0d\x0d\x0a"


@dataclass
class RawChunk:
    """Records located in ``buf``: offsets, captured lengths, link types, times, numbers."""

    buf: Buffer
    offsets: np.ndarray
    caplens: np.ndarray
    linktypes: np.ndarray | int
    ts: np.ndarray
    index: np.ndarray


class CaptureFormatError(ValueError):
    """The bytes are not a pcap/pcapng capture."""


def _walk_pcap(data: Buffer, pos: int, endian: str, limit: int) -> tuple[list[int], int, bool]:
    """Record header positions from ``pos`` (at most ``limit``); the fields are read later, vectorised."""
    u32 = struct.Struct(endian + "I").unpack_from
    heads: list[int] = []
    add = heads.append
    n = len(data)
    try:
        for _ in range(limit):
            (incl,) = u32(data, pos + 8)  # struct.error: header cut short, wait for more
            nxt = pos + 16 + incl
            if nxt > n:
                if incl > MAX_RECORD and pos + 16 <= n:
                    return heads, pos, True
                break
            add(pos)
            pos = nxt
    except struct.error:
        pass
    return heads, pos, False


def _pcap_headers(
    data: Buffer, heads: list[int], endian: str, scale: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frame offsets, captured lengths, times) from record header positions."""
    pos = np.asarray(heads, dtype=np.int64)
    raw = np.frombuffer(data, dtype=np.uint8)[pos[:, None] + np.arange(12)]
    fields = raw.view(np.dtype(endian + "u4")).reshape(-1, 3).astype(np.int64)
    ts = fields[:, 0].astype(np.float64) + fields[:, 1].astype(np.float64) * scale
    return pos + 16, fields[:, 2], ts


class _Pcapng:
    """Block walker state for pcapng (interfaces survive across chunks)."""

    def __init__(self) -> None:
        self.endian = "<"
        self.ifaces: list[
            tuple[int, int, float, float]
        ] = []  # linktype, snaplen, resolution, offset
        self.last_ts = 0.0

    def _idb(self, data: Buffer, pos: int, blen: int) -> None:
        e = self.endian
        linktype, _r, snaplen = struct.unpack_from(e + "HHI", data, pos + 8)
        res, tsoff = 1e-6, 0.0
        p, stop = pos + 16, pos + blen - 4
        while p + 4 <= stop:
            code, length = struct.unpack_from(e + "HH", data, p)
            if code == 0:
                break
            val = data[p + 4 : p + 4 + length]
            if code == 9 and length >= 1:
                v = val[0]
                res = 2.0 ** -(v & 0x7F) if v & 0x80 else 10.0**-v
            elif code == 14 and length >= 8:
                tsoff = float(struct.unpack(e + "q", val[:8])[0])
            p += 4 + ((length + 3) & ~3)
        self.ifaces.append((linktype, snaplen, res, tsoff))

    def walk(
        self, data: Buffer, pos: int, limit: int
    ) -> tuple[list[int], list[int], list[int], list[float], int, bool]:
        offs: list[int] = []
        caps: list[int] = []
        lts: list[int] = []
        tss: list[float] = []
        n = len(data)
        count = 0
        while pos + 12 <= n and count < limit:
            btype = data[pos : pos + 4]
            if btype == _PCAPNG:
                if pos + 12 > n:
                    break
                bom = data[pos + 8 : pos + 12]
                if bom == b"\x4d\x3c\x2b\x1a":
                    self.endian = "<"
                elif bom == b"\x1a\x2b\x3c\x4d":
                    self.endian = ">"
                else:
                    return offs, caps, lts, tss, pos, True
                self.ifaces = []
            e = self.endian
            bt, blen = struct.unpack_from(e + "II", data, pos)
            if blen < 12 or blen % 4 or blen > MAX_RECORD + 64:
                return offs, caps, lts, tss, pos, True
            if pos + blen > n:
                break
            if bt == 6 and blen >= 32:
                iface, hi, lo, cap, _orig = struct.unpack_from(e + "IIIII", data, pos + 8)
                if iface < len(self.ifaces):
                    lt, _snap, res, tsoff = self.ifaces[iface]
                    offs.append(pos + 28)
                    caps.append(min(cap, blen - 32))
                    lts.append(lt)
                    self.last_ts = ((hi << 32) | lo) * res + tsoff
                    tss.append(self.last_ts)
                    count += 1
            elif bt == 3 and blen >= 16 and self.ifaces:
                (orig,) = struct.unpack_from(e + "I", data, pos + 8)
                lt, snap, _res, _off = self.ifaces[0]
                offs.append(pos + 12)
                caps.append(min(orig, blen - 16, snap or orig))
                lts.append(lt)
                tss.append(self.last_ts)
                count += 1
            elif bt == 2 and blen >= 32:
                iface, _drops, hi, lo, cap, _orig = struct.unpack_from(e + "HHIIII", data, pos + 8)
                if iface < len(self.ifaces):
                    lt, _snap, res, tsoff = self.ifaces[iface]
                    offs.append(pos + 28)
                    caps.append(min(cap, blen - 32))
                    lts.append(lt)
                    self.last_ts = ((hi << 32) | lo) * res + tsoff
                    tss.append(self.last_ts)
                    count += 1
            elif bt == 1 and blen >= 20:
                self._idb(data, pos, blen)
            pos += blen
        return offs, caps, lts, tss, pos, False


def _refill(f: IO[bytes], data: Buffer, pos: int) -> tuple[Buffer, int]:
    """(the unread rest of ``data`` followed by the next block of ``f``, bytes read).

    Reads straight into a fresh buffer after the rest (one copy of the block, not two);
    each block gets its own buffer, so earlier chunks stay valid.
    """
    rest = len(data) - pos
    readinto = getattr(f, "readinto", None)
    if readinto is None:
        more = f.read(BLOCK)
        return (data[pos:] + more if rest else more), len(more)
    buf = bytearray(rest + BLOCK)
    view = memoryview(buf)
    view[:rest] = memoryview(data)[pos:]
    got = 0
    while got < BLOCK:
        k = readinto(view[rest + got :])
        if not k:
            break
        got += k
    view.release()
    if got < BLOCK:
        del buf[rest + got :]
    return buf, got


def iter_capture(
    f: IO[bytes], chunk: int = 65536, stats: dict[str, int] | None = None
) -> Iterator[RawChunk]:
    """Yield chunks of at most ``chunk`` records from a pcap or pcapng stream.

    Raises :class:`CaptureFormatError` before yielding anything if the magic is unknown.
    """
    stats = stats if stats is not None else {}
    head = f.read(24)
    if len(head) < 12:
        raise CaptureFormatError("too short for a capture header")
    magic = head[:4]
    ng: _Pcapng | None = None
    data: Buffer
    if magic in _PCAP_MAGIC:
        if len(head) < 24:
            raise CaptureFormatError("truncated pcap header")
        endian, scale = _PCAP_MAGIC[magic]
        linktype = struct.unpack_from(endian + "I", head, 20)[0] & 0x0FFFFFFF
        data = b""
    elif magic == _PCAPNG:
        ng = _Pcapng()
        endian, scale, linktype = "<", 1.0, 0
        data = head
    else:
        raise CaptureFormatError(f"unknown capture magic {magic.hex()}")
    pos, eof, index = 0, False, 0
    while True:
        if ng is None:
            heads, pos, bad = _walk_pcap(data, pos, endian, chunk)
            lts: Any = linktype
            if heads:
                offs, caps, ts = _pcap_headers(data, heads, endian, scale)
            else:
                offs = caps = ts = np.zeros(0, dtype=np.int64)
        else:
            off_list, cap_list, lt_list, ts_list, pos, bad = ng.walk(data, pos, chunk)
            offs, caps = np.asarray(off_list, dtype=np.int64), np.asarray(cap_list, dtype=np.int64)
            lts = np.asarray(lt_list, dtype=np.int64)
            ts = np.asarray(ts_list, dtype=np.float64)
        if len(offs):
            k = len(offs)
            yield RawChunk(
                data,
                offs,
                caps,
                lts,
                ts,
                np.arange(index, index + k, dtype=np.int64),
            )
            index += k
        if bad:
            stats["corrupt"] = stats.get("corrupt", 0) + 1
            log.warning("corrupt capture record at byte %d of the current block; stopping", pos)
            return
        if len(offs) >= chunk:
            continue
        if eof:
            if pos < len(data):
                stats["truncated"] = stats.get("truncated", 0) + 1
            return
        data, got = _refill(f, data, pos)
        pos = 0
        if not got:
            eof = True


class PcapDecoder(Decoder):
    """Decode captures into flows and DNS rows (stateful per file; see module docstring).

    ``decode(messages)`` treats each message value as a whole capture file.
    """

    name: ClassVar[str] = "pcap"

    def __init__(
        self,
        chunk: int = 65536,
        sensor: str = "",
        active_timeout: float = 1800.0,
        idle_timeout: float = 60.0,
        tcp_idle_timeout: float = 300.0,
        close_linger: float = 5.0,
        max_flows: int = 200_000,
        dns: bool = True,
    ) -> None:
        self.chunk = chunk
        self.sensor = sensor
        self.dns = dns
        self.table = FlowTable(
            active_timeout=active_timeout,
            idle_timeout=idle_timeout,
            tcp_idle_timeout=tcp_idle_timeout,
            close_linger=close_linger,
            max_flows=max_flows,
            sensor=sensor,
        )
        self.pairer = DnsPairer(sensor=sensor)
        self.parser = PacketParser()
        self.stats: dict[str, int] = {}

    @classmethod
    def sniff(cls, value: bytes) -> bool:
        return value[:4] in _PCAP_MAGIC or value[:4] == _PCAPNG

    def _count(self, more: dict[str, int]) -> None:
        for k, v in more.items():
            self.stats[k] = self.stats.get(k, 0) + v

    def packets(self, f: IO[bytes]) -> Iterator[tuple[PacketColumns, RawChunk]]:
        """Parsed packet columns per chunk (the raw path, without flow aggregation)."""
        for raw in iter_capture(f, self.chunk, self.stats):
            cols = self.parser.parse(
                raw.buf, raw.offsets, raw.caplens, raw.linktypes, raw.ts, raw.index
            )
            self._count(cols.stats)
            yield cols, raw

    def _dns(self, cols: PacketColumns, buf: Buffer, origin: str) -> None:
        rows, dc = dns_messages(cols, buf, self.parser)
        if not len(rows):
            return
        good = np.flatnonzero(dc.ok)
        bad = len(rows) - len(good)
        if bad:
            self.stats["dns_malformed"] = self.stats.get("dns_malformed", 0) + bad
        r = rows[good]
        self.pairer.add_many(
            ts=cols.ts[r],
            src=cols.src[r],
            dst=cols.dst[r],
            sport=cols.sport[r],
            dport=cols.dport[r],
            proto=cols.proto[r],
            ident=dc.ident[good],
            response=dc.response[good],
            rcode=dc.rcode[good],
            query=dc.query[good],
            qtype=dc.qtype[good],
            answers_n=dc.answers_n[good],
            answers=dc.answers[good],
            size=dc.size[good],
            origin=origin,
            offset=cols.index[r],
            addrs=cols.addrs,
            src_code=None if cols.src_code is None else cols.src_code[r],
            dst_code=None if cols.dst_code is None else cols.dst_code[r],
        )

    def decode_stream(self, f: IO[bytes], origin: str) -> Iterator[DecodeResult]:
        """Decode one capture stream; the last result holds the flows still open at its end."""
        self.table.sensor = self.pairer.sensor = self.sensor or os.path.basename(origin)
        try:
            for cols, raw in self.packets(f):
                if self.dns:
                    self._dns(cols, raw.buf, origin)
                flows = self.table.add(
                    {
                        "ts": cols.ts,
                        "src": cols.src,
                        "dst": cols.dst,
                        "sport": cols.sport,
                        "dport": cols.dport,
                        "proto": cols.proto,
                        "ip_len": cols.ip_len,
                        "tcp_flags": cols.tcp_flags,
                        "payload_len": cols.payload_len,
                        "addrs": cols.addrs,
                        "src_code": cols.src_code,
                        "dst_code": cols.dst_code,
                    },
                    origin=origin,
                    offset=cols.index,
                )
                yield DecodeResult(flows=flows, dns=self.pairer.take())
        except CaptureFormatError as exc:
            yield DecodeResult(dead=[DeadLetter(b"", "bad_value", str(exc), self.name, origin, 0)])
        yield DecodeResult(flows=self.table.flush(), dns=self.pairer.take(final=True))

    def decode_file(
        self, path: str | os.PathLike[str], chunk: int | None = None
    ) -> Iterator[DecodeResult]:
        """Decode a capture file chunk by chunk (used by file replay)."""
        if chunk is not None:
            self.chunk = chunk
        with open(path, "rb") as f:
            yield from self.decode_stream(f, os.fspath(path))

    def decode(self, messages: Sequence[Message]) -> DecodeResult:
        out = DecodeResult()
        for m in messages:
            if not self.sniff(m.value):
                out.dead.append(
                    DeadLetter.of(m, "bad_value", "not a pcap/pcapng capture", self.name)
                )
                continue
            for r in self.decode_stream(io.BytesIO(m.value), m.origin or "message"):
                out.extend(r)
        return out
