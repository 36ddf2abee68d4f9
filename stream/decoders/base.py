"""The decoder protocol shared by every input format.

A decoder turns raw messages (bytes, as they come off Kafka, a UDP socket or a file
line) into canonical columnar batches plus dead letters. It never raises on bad input:
every message it cannot decode becomes a :class:`DeadLetter` with a bounded ``reason``
(safe as a metric label) and a human ``detail``.

>>> class Upper(Decoder):
...     name = "upper"
...     def decode(self, messages):
...         out = DecodeResult()
...         for m in messages:
...             if not m.value:
...                 out.dead.append(DeadLetter.of(m, "empty", "no bytes", self.name))
...         return out
>>> r = Upper().decode([Message(b"", "t/0", 7)])
>>> r.dead[0].reason, r.dead[0].offset, len(r.flows)
('empty', 7, 0)
"""

from __future__ import annotations

import copyreg
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import ClassVar, overload

import msgspec

from pipelines.records import DnsBatch, FlowBatch

__all__ = ["MAX_MESSAGE_BYTES", "DeadLetter", "DecodeResult", "Decoder", "Message", "MessageBlock"]


def _reduce_json_decoder(d: msgspec.json.Decoder) -> tuple[object, tuple[object, ...]]:  # type: ignore[type-arg]
    return msgspec.json.Decoder, (d.type,)


# Decoders are checkpointed with the engine state (NetFlow templates, held data, open
# flows): make the typed msgspec decoders they hold picklable, rebuilt from their type.
copyreg.pickle(msgspec.json.Decoder, _reduce_json_decoder)  # type: ignore[arg-type]

#: Messages larger than this are dead-lettered as ``oversized`` before any parsing.
MAX_MESSAGE_BYTES = 1 << 20


@dataclass(slots=True)
class Message:
    """One raw input message and where it came from.

    ``origin`` is ``"topic/partition"`` for Kafka, a file path for replay, or
    ``"udp:ADDR:PORT"`` for the NetFlow collector. ``offset`` is the Kafka offset, the
    line/record number in the file, or a datagram counter. ``peer`` is the exporter
    address for NetFlow datagrams (templates are cached per exporter + domain).
    ``timestamp`` is the transport's own time in epoch seconds, when it has one.
    """

    value: bytes
    origin: str = ""
    offset: int = -1
    key: bytes | None = None
    peer: str = ""
    timestamp: float | None = None


class MessageBlock(Sequence[Message]):
    """Messages from one origin held as two parallel sequences, values and offsets.

    A file read line by line makes one block per chunk instead of one :class:`Message`
    object per line; decoders that know blocks read :attr:`values` and :attr:`offsets`
    directly, any other code sees an ordinary sequence of Messages (made on access).

    >>> b = MessageBlock([b"a", b"b", b"c"], "f.json", range(3, 6))
    >>> len(b), b[1], [m.offset for m in b[1:]]
    (3, Message(value=b'b', origin='f.json', offset=4, key=None, peer='', timestamp=None), [4, 5])
    """

    __slots__ = ("offsets", "origin", "values")

    def __init__(
        self, values: list[bytes], origin: str = "", offsets: Sequence[int] | None = None
    ) -> None:
        self.values = values
        self.origin = origin
        self.offsets: Sequence[int] = range(len(values)) if offsets is None else offsets
        if len(self.offsets) != len(values):
            raise ValueError("MessageBlock values and offsets differ in length")

    def __len__(self) -> int:
        return len(self.values)

    @overload
    def __getitem__(self, index: int) -> Message: ...

    @overload
    def __getitem__(self, index: slice) -> MessageBlock: ...

    def __getitem__(self, index: int | slice) -> Message | MessageBlock:
        if isinstance(index, slice):
            return MessageBlock(self.values[index], self.origin, self.offsets[index])
        return Message(self.values[index], self.origin, self.offsets[index])

    def __iter__(self) -> Iterator[Message]:
        return map(Message, self.values, repeat(self.origin), self.offsets)

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return MessageBlock, (self.values, self.origin, self.offsets)

    def __repr__(self) -> str:
        return f"MessageBlock({len(self)} messages from {self.origin!r})"


@dataclass(slots=True)
class DeadLetter:
    """A message that could not be decoded, with the reason.

    ``reason`` is a short snake_case label from a small fixed vocabulary (``not_json``,
    ``schema``, ``nan``, ``negative``, ``oversized``, ``truncated``, ``unknown_template``,
    ``template_timeout``, ``unknown_format``, ``bad_value``); ``detail`` says what exactly.
    """

    value: bytes
    reason: str
    detail: str
    decoder: str
    origin: str = ""
    offset: int = -1

    @classmethod
    def of(cls, msg: Message, reason: str, detail: str, decoder: str) -> DeadLetter:
        return cls(msg.value, reason, detail[:500], decoder, msg.origin, msg.offset)

    def headers(self) -> list[tuple[str, bytes]]:
        """Kafka headers for the dead-letter topic (DESIGN §4)."""
        topic, _, partition = self.origin.rpartition("/")
        if not topic:
            topic, partition = self.origin, ""
        return [
            ("error", f"{self.reason}: {self.detail}".encode()),
            ("reason", self.reason.encode()),
            ("decoder", self.decoder.encode()),
            ("source", self.origin.encode()),
            ("source_topic", topic.encode()),
            ("partition", partition.encode()),
            ("offset", str(self.offset).encode()),
        ]


@dataclass
class DecodeResult:
    """What a decoder returns: flows, DNS transactions, dead letters."""

    flows: FlowBatch = field(default_factory=FlowBatch.empty)
    dns: DnsBatch = field(default_factory=DnsBatch.empty)
    dead: list[DeadLetter] = field(default_factory=list)
    #: messages that decoded into nothing on purpose (e.g. a Zeek http.log line, a template-only datagram)
    ignored: int = 0

    def extend(self, other: DecodeResult) -> None:
        self.flows = FlowBatch.concat([self.flows, other.flows])
        self.dns = DnsBatch.concat([self.dns, other.dns])
        self.dead.extend(other.dead)
        self.ignored += other.ignored


class Decoder(ABC):
    """One input format. Instances may hold state (NetFlow templates, a flow table)."""

    name: ClassVar[str]

    @abstractmethod
    def decode(self, messages: Sequence[Message]) -> DecodeResult:
        """Decode a batch of messages. Never raises on bad input."""

    def flush(self) -> DecodeResult:
        """Emit whatever is held back (open flows, data waiting for a template)."""
        return DecodeResult()

    @classmethod
    def sniff(cls, value: bytes) -> bool:
        """True if ``value`` looks like this format (used by auto-detection)."""
        return False
