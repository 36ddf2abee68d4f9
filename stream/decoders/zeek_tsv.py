r"""Zeek ASCII (TSV) log files, one line per message (re-exported by :mod:`stream.decoders.zeek`).

Headers (``#separator``, ``#fields``, ``#types`` ...) are tracked per origin; data lines
become the same rows as Zeek JSON records (see :class:`stream.decoders.zeek._ZeekRows`).

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
from typing import Any, ClassVar

import msgspec

from stream.decoders._json import classify
from stream.decoders.base import MAX_MESSAGE_BYTES, DeadLetter, Decoder, DecodeResult, Message
from stream.decoders.zeek import _Dotted, _ZeekRows

__all__ = ["ZeekTsvDecoder"]


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
