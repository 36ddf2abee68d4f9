"""File sources: decode a file (JSON lines, Zeek TSV, pcap/pcapng; ``.gz`` too) chunk by chunk.

The public API is two functions. :func:`format_for_path` says which decoder a file
needs (magic bytes first, then the first line, then the extension). :func:`iter_file`
yields ``(DecodeResult, n_messages)`` per chunk, ending with the decoder's
:meth:`~stream.decoders.base.Decoder.flush`. Line-based formats make one message per
non-empty line with ``origin=str(path)`` and ``offset`` = the 1-based line number;
captures go to :meth:`stream.decoders.pcap.PcapDecoder.decode_file` and count packets.

>>> import os, tempfile
>>> d = tempfile.mkdtemp()
>>> p = os.path.join(d, "flows.json")
>>> with open(p, "w") as f:
...     _ = f.write('{"type":"IPFIX","src_addr":"10.0.0.1","dst_addr":"8.8.8.8","time_flow_start_ns":1000000000,'
...                 '"bytes":60,"packets":1,"proto":"UDP","src_port":5000,"dst_port":53}\\n\\nnot json\\n')
>>> format_for_path(p)
'auto'
>>> chunks = list(iter_file(p))
>>> sum(len(r.flows) for r, _ in chunks), [x.offset for r, _ in chunks for x in r.dead], sum(n for _, n in chunks)
(1, [3], 2)
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from stream.decoders import get_decoder
from stream.decoders.base import Decoder, DecodeResult, MessageBlock
from stream.exceptions import SourceError

__all__ = ["format_for_path", "iter_file", "iter_messages", "open_text"]

_PCAP_MAGICS = (
    b"\xd4\xc3\xb2\xa1",
    b"\xa1\xb2\xc3\xd4",
    b"\x4d\x3c\xb2\xa1",
    b"\xa1\xb2\x3c\x4d",
    b"\x0a\x0d\x0d\x0a",
)
_GZIP = b"\x1f\x8b"
_CAPTURE_EXT = (".pcap", ".pcapng", ".cap")


def _open(path: str | os.PathLike[str]) -> IO[bytes]:
    try:
        f: IO[bytes] = open(path, "rb")  # noqa: SIM115 - returned to the caller
    except OSError as exc:
        raise SourceError(f"cannot open {path}: {exc}") from exc
    if f.read(2) == _GZIP:
        f.seek(0)
        return gzip.open(f, "rb")  # type: ignore[return-value]
    f.seek(0)
    return f


def open_text(path: str | os.PathLike[str]) -> IO[bytes]:
    """Open a file for reading, transparently decompressing gzip (by magic bytes)."""
    return _open(path)


def format_for_path(path: str | os.PathLike[str]) -> str:
    """The decoder format for a file: ``pcap``, ``zeek-tsv`` or ``auto`` (per-message sniffing)."""
    try:
        with _open(path) as f:
            head = f.read(512)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise SourceError(f"cannot read {path}: {exc}") from exc
    if head[:4] in _PCAP_MAGICS:
        return "pcap"
    if head.startswith((b"#separator", b"#fields")):
        return "zeek-tsv"
    name = os.fspath(path).lower().removesuffix(".gz")
    if name.endswith(_CAPTURE_EXT) and head.lstrip()[:1] != b"{":
        return "pcap"
    return "auto"


_BLOCK = 1 << 22


def _numbered(lines: list[bytes], first: int) -> tuple[list[bytes], list[int] | range]:
    """The non-blank lines of ``lines`` (trailing CRs cut) and their 1-based line numbers."""
    if lines and min(lines)[:1] > b" ":  # no line is empty or starts with whitespace
        return lines, range(first, first + len(lines))
    keep = [(i, v) for i, v in enumerate(lines, first) if v.strip()]
    return [v for _i, v in keep], [i for i, _v in keep]


def iter_messages(path: str | os.PathLike[str], chunk: int = 65536) -> Iterator[MessageBlock]:
    """Non-empty lines of a (possibly gzipped) file as Messages, ``chunk`` at a time.

    The file is read in large blocks and split; each batch is a :class:`MessageBlock`
    (``origin=str(path)``, ``offset`` = the 1-based line number), not one object per line.
    """
    origin = str(path)
    chunk = max(int(chunk), 1)
    values: list[bytes] = []
    offsets: list[int] = []
    lineno = 1  # number of the next line to split off
    carry = b""
    try:
        with _open(path) as f:
            while True:
                block = f.read(_BLOCK)
                if not block:
                    break
                if carry:
                    block = carry + block
                lines = block.split(b"\n")
                carry = lines.pop()
                if b"\r" in block:
                    lines = [v.rstrip(b"\r") for v in lines]
                got, nums = _numbered(lines, lineno)
                lineno += len(lines)
                values += got
                offsets += nums
                while len(values) >= chunk:
                    yield MessageBlock(values[:chunk], origin, offsets[:chunk])
                    del values[:chunk], offsets[:chunk]
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise SourceError(f"error reading {path}: {exc}") from exc
    if carry:
        got, nums = _numbered([carry.rstrip(b"\r")], lineno)
        values += got
        offsets += nums
    for i in range(0, len(values), chunk):
        yield MessageBlock(values[i : i + chunk], origin, offsets[i : i + chunk])


def iter_file(
    path: str | os.PathLike[str],
    fmt: str = "auto",
    chunk: int = 65536,
    decoder: Decoder | None = None,
    **options: Any,
) -> Iterator[tuple[DecodeResult, int]]:
    """Decode a file: yield ``(result, messages consumed)`` per chunk, then the flush.

    ``fmt="auto"`` picks the format with :func:`format_for_path`; pass ``decoder`` to
    reuse a (stateful) decoder across files. ``options`` go to the decoder constructor.
    Captures report packets consumed per chunk.
    """
    if not Path(path).is_file():
        raise SourceError(f"not a file: {path}")
    if fmt == "auto" and decoder is None:
        fmt = format_for_path(path)
    if decoder is None:
        decoder = get_decoder(fmt, **options)
    if hasattr(decoder, "decode_file"):
        stats: dict[str, int] = getattr(decoder, "stats", {})
        before = stats.get("packets", 0)
        with open(path, "rb") as raw:
            gz = raw.read(2) == _GZIP
        if gz and hasattr(decoder, "decode_stream"):
            decoder.chunk = chunk  # type: ignore[attr-defined]
            with _open(path) as f:
                results = list(decoder.decode_stream(f, str(path)))
        else:
            results = decoder.decode_file(path, chunk)
        for result in results:
            now = stats.get("packets", 0)
            yield result, now - before
            before = now
        return
    for batch in iter_messages(path, chunk):
        yield decoder.decode(batch), len(batch)
    yield decoder.flush(), 0
