"""Auto-detection: sniff every message and dispatch it to a per-format decoder.

Sniffing is cheap (first bytes and key presence) and cheaper still for a run of
messages of one JSON format from one origin: the previous message's format is checked
first, with a test that is exact (it never claims a message :func:`sniff_format` would
give to another format) and falls back to the full sniff otherwise. Each format's decoder is created
lazily, once, and kept (stateful decoders keep their state: NetFlow templates, Zeek TSV
headers, Suricata pending DNS requests). Within a batch the relative order of each
format's messages is kept. A message no format claims, or whose format's module is not
installed, is an ``unknown_format`` dead letter.

>>> auto = AutoDecoder()
>>> r = auto.decode([
...     Message(b'{"ts":1707834880.5,"id.orig_h":"10.0.0.5","id.orig_p":1,"id.resp_h":"10.0.0.6",'
...             b'"id.resp_p":445,"proto":"tcp","conn_state":"S0"}', "zeek/0", 1),
...     Message(b'{"event_type":"alert","src_ip":"10.0.0.5"}', "eve/0", 2),
...     Message(b"\\x01\\x02 garbage", "x/0", 3)])
>>> len(r.flows), r.ignored, [d.reason for d in r.dead], sorted(auto.decoders)
(1, 1, ['unknown_format'], ['suricata', 'zeek-json'])
>>> sniff_format(b'{"type":"IPFIX","src_addr":"10.0.0.1","time_flow_start_ns":1}')
'goflow2-json'
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from itertools import repeat
from typing import Any, ClassVar

from stream.decoders import get_decoder
from stream.decoders._json import classify, values_of
from stream.decoders.base import MAX_MESSAGE_BYTES, DeadLetter, Decoder, DecodeResult, Message
from stream.decoders.goflow2_json import Goflow2JsonDecoder
from stream.decoders.pmacct import PmacctDecoder
from stream.decoders.suricata import SuricataDecoder
from stream.decoders.zeek import ZeekJsonDecoder, ZeekTsvDecoder

__all__ = ["AutoDecoder", "sniff_format"]

log = logging.getLogger(__name__)

_WS = b" \t\r\n"
#: A Zeek record tagged the way zeek-kafka writes it (``tag_json=T``, ``ts`` first). Checked
#: before every other format, so that a whole batch of them is recognised by one prefix test.
_ZEEK_TAGGED = (b'{"conn":{"ts":', b'{"dns":{"ts":')


def _looks_like_pb(value: bytes) -> bool:
    """True if ``value`` is exactly a sequence of varint length-prefixed protobuf messages."""
    pos, end = 0, len(value)
    count = 0
    while pos < end:
        size = shift = 0
        while True:
            if pos >= end or shift > 28:
                return False
            b = value[pos]
            pos += 1
            size |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        if size == 0 or pos + size > end:
            return False
        key = value[pos]
        if key & 7 not in (0, 1, 2, 5) or (key < 0x80 and key >> 3 == 0):
            return False
        pos += size
        count += 1
    return count > 0


def sniff_format(value: bytes) -> str | None:
    """The format name a message looks like, or None.

    >>> sniff_format(b'{"kind":"pkt","ts":1}'), sniff_format(b"\\x00\\x09\\x00\\x01"), sniff_format(b"#fields\\tts")
    ('summary', 'netflow', 'zeek-tsv')
    >>> sniff_format(b'[{"kind": "pkt"}]'), sniff_format(b'{"kind": "flow", "ts_start": 1.0}')
    ('summary', 'canonical')
    """
    if not value:
        return None
    if value.startswith(_ZEEK_TAGGED):  # zeek-kafka tag_json layout: no other format has it
        return "zeek-json"
    first = value[:1]
    if first == b"[" and value[:80].replace(b" ", b"")[:2] == b"[{":
        return "summary" if b'"kind":"pkt"' in value[:80].replace(b" ", b"") else None
    if first in b"{ \t\r\n" and value.lstrip(_WS)[:1] == b"{":
        head = value[:80].replace(b" ", b"")
        if b'"kind":"pkt"' in head:
            return "summary"
        if b'"kind":"flow"' in head or b'"kind":"dns"' in head:
            return "canonical"
        if PmacctDecoder.sniff(value):
            return "pmacct"
        if Goflow2JsonDecoder.sniff(value):
            return "goflow2-json"
        if SuricataDecoder.sniff(value):
            return "suricata"
        if ZeekJsonDecoder.sniff(value.lstrip(_WS)):
            return "zeek-json"
        return None
    if first == b"#":
        return "zeek-tsv" if ZeekTsvDecoder.sniff(value) or value.startswith(b"#") else None
    if len(value) >= 4 and value[0] == 0 and value[1] in (5, 9, 10):
        return "netflow"
    if _looks_like_pb(value):
        return "goflow2-pb"
    return None


#: JSON formats that may be re-checked first (the last format seen from an origin):
#: (substrings whose presence means an earlier format in :func:`sniff_format` might claim
#: the message, the format's own sniff). A message passing the fast check is exactly what
#: :func:`sniff_format` would say; anything else goes through the full sniff.
_FAST: dict[str, tuple[tuple[bytes, ...], Any]] = {
    "pmacct": ((), PmacctDecoder.sniff),
    "goflow2-json": ((b'"ip_src"', b'"event_type"'), Goflow2JsonDecoder.sniff),
    "suricata": (
        (b'"ip_src"', b'"src_addr"', b'"SrcAddr"', b'"event_type": "purge', b'"event_type":"purge'),
        SuricataDecoder.sniff,
    ),
    "zeek-json": (
        (b'"ip_src"', b'"event_type"', b'"src_addr"', b'"SrcAddr"'),
        ZeekJsonDecoder.sniff,
    ),
}

_BLOCKERS = sorted({b for blockers, _sniff in _FAST.values() for b in blockers})


def _clean_formats(values: Sequence[bytes]) -> frozenset[str]:
    """Formats of :data:`_FAST` none of whose blockers (nor a ``"kind"`` key) occur in ``values``.

    One scan of the joined batch per substring instead of several per message; joining
    can only add matches, so a format listed here is safe for every message.
    """
    joined = b"\n".join(values)
    if b'"kind"' in joined.replace(b" ", b""):
        return frozenset()
    present = {b for b in _BLOCKERS if b in joined}
    return frozenset(
        fmt for fmt, (blockers, _sniff) in _FAST.items() if present.isdisjoint(blockers)
    )


def _fast_check(fmt: str, value: bytes, clean: frozenset[str]) -> bool:
    """True if ``sniff_format(value) == fmt`` for sure (False: ask :func:`sniff_format`).

    ``clean`` comes from :func:`_clean_formats` over a batch holding ``value``.

    >>> v = b'{"ts":1.5,"id.orig_h":"10.0.0.1","id.resp_h":"10.0.0.2","conn_state":"S0"}'
    >>> _fast_check("zeek-json", v, _clean_formats([v])), sniff_format(v)
    (True, 'zeek-json')
    >>> w = b'{"event_type":"flow","id.orig_h":"x"}'
    >>> _fast_check("zeek-json", w, _clean_formats([v, w])), sniff_format(w)
    (False, 'suricata')
    """
    if value.startswith(_ZEEK_TAGGED):
        return fmt == "zeek-json"
    if fmt not in clean or value[:1] != b"{":
        return False
    return bool(_FAST[fmt][1](value))


class AutoDecoder(Decoder):
    """Dispatch each message to the decoder of the format it looks like.

    ``formats`` optionally restricts which formats may be chosen. Zeek TSV data lines
    are recognised by their origin, once a ``#`` header line was seen from it.
    """

    name: ClassVar[str] = "auto"

    def __init__(self, formats: Sequence[str] | None = None, max_origins: int = 10_000) -> None:
        self.formats = list(formats) if formats is not None else None
        self.max_origins = max_origins
        self.decoders: dict[str, Decoder] = {}
        self.missing: set[str] = set()
        self.tsv_origins: dict[str, None] = {}

    def _decoder(self, fmt: str) -> Decoder | None:
        dec = self.decoders.get(fmt)
        if dec is None and fmt not in self.missing:
            try:
                dec = self.decoders[fmt] = get_decoder(fmt)
            except ImportError as exc:
                log.warning("format %s detected but its decoder is not available: %s", fmt, exc)
                self.missing.add(fmt)
        return dec

    def _format(
        self, m: Message, last: str | None = None, clean: frozenset[str] = frozenset()
    ) -> str | None:
        v = m.value
        if m.origin in self.tsv_origins and v[:1] not in (b"{", b"#"):
            return "zeek-tsv"
        if last is not None and _fast_check(last, v, clean):
            return last
        fmt = sniff_format(v)
        if fmt == "zeek-tsv" and m.origin not in self.tsv_origins:
            if len(self.tsv_origins) >= self.max_origins:
                self.tsv_origins.pop(next(iter(self.tsv_origins)))
            self.tsv_origins[m.origin] = None
        return fmt

    def _unknown(self, m: Message) -> DeadLetter:
        """``not_json``/``nan`` for broken JSON objects, else ``unknown_format``."""
        if m.value.lstrip(_WS)[:1] == b"{":
            reason, detail = classify(m.value, None)
            if reason in ("not_json", "nan"):
                return DeadLetter.of(m, reason, detail, self.name)
        return DeadLetter.of(
            m, "unknown_format", "no input format recognises this message", self.name
        )

    def _whole(self, messages: Sequence[Message]) -> str | None:
        """The format of every message, when one cheap test proves them all of one format.

        Exactly what :func:`sniff_format` would say for each: a batch of zeek-kafka tagged
        records (the ``slowburn simulate`` output) is recognised by its prefix alone.
        """
        values = values_of(messages)
        if not values or max(map(len, values)) > MAX_MESSAGE_BYTES:
            return None
        try:
            tagged = sum(map(bytes.startswith, values, repeat(_ZEEK_TAGGED)))
        except TypeError:  # a value that is not bytes
            return None
        if tagged != len(values) or (self.formats is not None and "zeek-json" not in self.formats):
            return None
        return "zeek-json"

    def decode(self, messages: Sequence[Message]) -> DecodeResult:
        out = DecodeResult()
        whole = self._whole(messages)
        if whole is not None:
            self._dispatch(whole, messages, out, tagged=True)
            return out
        groups: dict[str, list[Message]] = {}
        last: dict[str, str | None] = {}  # origin -> format of its previous message
        clean = _clean_formats([m.value for m in messages]) if len(messages) > 1 else frozenset()
        for m in messages:
            if len(m.value) > MAX_MESSAGE_BYTES:
                out.dead.append(
                    DeadLetter.of(
                        m, "oversized", f"{len(m.value)} bytes > {MAX_MESSAGE_BYTES}", self.name
                    )
                )
                continue
            fmt = last[m.origin] = self._format(m, last.get(m.origin), clean)
            if fmt is None or (self.formats is not None and fmt not in self.formats):
                out.dead.append(self._unknown(m))
                continue
            groups.setdefault(fmt, []).append(m)
        for fmt, msgs in groups.items():
            self._dispatch(fmt, msgs, out)
        return out

    def _dispatch(
        self, fmt: str, msgs: Sequence[Message], out: DecodeResult, tagged: bool = False
    ) -> None:
        """Decode ``msgs`` with ``fmt``'s decoder into ``out``; ``tagged``: all are zeek-kafka
        tagged records (checked by :meth:`_whole`)."""
        dec = self._decoder(fmt)
        if dec is None:
            out.dead.extend(
                DeadLetter.of(m, "unknown_format", f"decoder for {fmt} is not installed", self.name)
                for m in msgs
            )
            return
        try:
            if tagged and isinstance(dec, ZeekJsonDecoder):
                got = dec.decode(msgs, assume_tagged=True)
            else:
                got = dec.decode(msgs)
        except Exception as exc:  # a decoder bug must not stop the stream
            log.exception("decoder %s raised on a batch of %d messages", fmt, len(msgs))
            out.dead.extend(
                DeadLetter.of(m, "bad_value", f"{fmt} decoder error: {exc!r}", self.name)
                for m in msgs
            )
            return
        if not (len(out.flows) or len(out.dns) or out.dead or out.ignored):
            out.flows, out.dns, out.dead, out.ignored = got.flows, got.dns, got.dead, got.ignored
        else:
            out.extend(got)

    def flush(self) -> DecodeResult:
        out = DecodeResult()
        for dec in self.decoders.values():
            out.extend(dec.flush())
        return out

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__)
