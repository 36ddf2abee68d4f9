"""The small Kafka client interface the runtime is written against.

Two backends implement it: :mod:`stream.kafka.kafka_python` (the default) and
:mod:`stream.kafka.confluent` (optional, faster). The runtime never touches a client
library directly, so the backend is a configuration choice.

Rebalance callbacks never do work: they queue :class:`RebalanceEvent` objects that
the runtime's own loop drains (kafka-python runs listeners on its network thread).
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import pairwise, repeat
from typing import Any, overload

import numpy as np

from stream.decoders.base import Message, MessageBlock

__all__ = [
    "TP",
    "AdminClient",
    "ClientSettings",
    "ConsumerClient",
    "InRecord",
    "ProducerClient",
    "RebalanceEvent",
    "RebalanceQueue",
    "RecordBlock",
    "messages_of",
    "peer_of",
    "runs",
    "seconds_of",
]

#: (topic, partition)
TP = tuple[str, int]


@dataclass(slots=True)
class InRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    timestamp_ms: int


@dataclass(frozen=True)
class RebalanceEvent:
    change: str  # "assigned" | "revoked" | "lost"
    partitions: frozenset[TP]


def peer_of(headers: Any) -> str:
    """The ``peer`` header (a NetFlow exporter's address) of a record, or "".

    >>> peer_of([("a", b"x"), ("peer", b"192.0.2.1")])
    '192.0.2.1'
    """
    for k, v in headers:
        if k == "peer":
            return bytes(v or b"").decode("utf-8", "replace")
    return ""


def seconds_of(timestamps_ms: Sequence[Any]) -> list[float | None]:
    """Transport timestamps in epoch seconds; ``None`` where the client reports none (<= 0).

    >>> seconds_of([1700000000123, 0, -1]), seconds_of([None, 5])
    ([1700000000.123, None, None], [None, 0.005])
    """
    try:
        ms = np.asarray(timestamps_ms, dtype=np.float64)  # None -> nan
        if bool((ms > 0).all()):
            return (ms / 1000.0).tolist()  # type: ignore[no-any-return]
    except (TypeError, ValueError):
        pass
    return [t / 1000.0 if t and t > 0 else None for t in timestamps_ms]


class RecordBlock(MessageBlock):
    """One partition's polled records as columns: a :class:`MessageBlock` that also keeps
    each record's key, ``peer`` header and transport time.

    Block-aware decoders read :attr:`values` and :attr:`offsets` directly (no
    :class:`Message` object per record); everything else (``block[i]``, slices,
    iteration, pickling) sees complete Messages, so decoders that need a key, a peer or
    a timestamp (NetFlow, pmacct) get them as before.

    >>> b = RecordBlock([b"a", b"b"], "t/0", [7, 8], [None, b"k"], ["", "p"], [1.0, None])
    >>> b[1], [m.key for m in b], b[1:].peers, type(b[:1]).__name__
    (Message(value=b'b', origin='t/0', offset=8, key=b'k', peer='p', timestamp=None), [None, b'k'], ['p'], 'RecordBlock')
    >>> RecordBlock.join([b[:1], b[1:]]).values, len(RecordBlock.join([]))
    ([b'a', b'b'], 0)
    """

    __slots__ = ("keys", "peers", "timestamps")

    def __init__(
        self,
        values: list[bytes],
        origin: str,
        offsets: Sequence[int],
        keys: Sequence[bytes | None],
        peers: Sequence[str],
        timestamps: Sequence[float | None],
    ) -> None:
        super().__init__(values, origin, offsets)
        if not len(keys) == len(peers) == len(timestamps) == len(values):
            raise ValueError("RecordBlock columns differ in length")
        self.keys, self.peers, self.timestamps = keys, peers, timestamps

    @overload
    def __getitem__(self, index: int) -> Message: ...

    @overload
    def __getitem__(self, index: slice) -> RecordBlock: ...

    def __getitem__(self, index: int | slice) -> Message | RecordBlock:
        if isinstance(index, slice):
            return RecordBlock(
                self.values[index],
                self.origin,
                self.offsets[index],
                self.keys[index],
                self.peers[index],
                self.timestamps[index],
            )
        return Message(
            self.values[index],
            self.origin,
            self.offsets[index],
            self.keys[index],
            self.peers[index],
            self.timestamps[index],
        )

    def __iter__(self) -> Iterator[Message]:
        return map(
            Message,
            self.values,
            repeat(self.origin),
            self.offsets,
            self.keys,
            self.peers,
            self.timestamps,
        )

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return RecordBlock, (
            self.values,
            self.origin,
            self.offsets,
            self.keys,
            self.peers,
            self.timestamps,
        )

    def __repr__(self) -> str:
        return f"RecordBlock({len(self)} records from {self.origin!r})"

    @classmethod
    def join(cls, blocks: Sequence[RecordBlock]) -> RecordBlock:
        """One block of several blocks' records (same origin), in order."""
        if len(blocks) == 1:
            return blocks[0]

        def cat(name: str) -> list[Any]:
            return [x for b in blocks for x in getattr(b, name)]

        origin = blocks[0].origin if blocks else ""
        return cls(
            cat("values"), origin, cat("offsets"), cat("keys"), cat("peers"), cat("timestamps")
        )


def messages_of(
    origin: str,
    values: Sequence[bytes | None],
    offsets: Sequence[int],
    keys: Sequence[bytes | None],
    headers: Sequence[Any],
    timestamps_ms: Sequence[Any],
) -> RecordBlock:
    """The decoder messages of one partition's polled records, built column-wise.

    The runtime's hot path: no Python object per record (value ``None`` becomes ``b""``,
    ``peer`` comes from a ``peer`` header, contiguous offsets become a ``range``).

    >>> ms = messages_of("t/0", [b"a", None], [7, 8], [None, b"k"], [None, [("peer", b"p")]], [1000, 0])
    >>> [(m.value, m.origin, m.offset, m.key, m.peer, m.timestamp) for m in ms], ms.offsets
    ([(b'a', 't/0', 7, None, '', 1.0), (b'', 't/0', 8, b'k', 'p', None)], range(7, 9))
    """
    n = len(values)
    vals: list[Any] = values if isinstance(values, list) else list(values)
    if None in vals:
        vals = [v if v is not None else b"" for v in vals]
    peers = [peer_of(h) if h else "" for h in headers] if any(headers) else [""] * n
    offs: Sequence[int] = offsets
    if n and offsets[-1] - offsets[0] == n - 1:  # offsets only increase within a partition
        offs = range(offsets[0], offsets[-1] + 1)
    return RecordBlock(vals, origin, offs, keys, peers, seconds_of(timestamps_ms))


def runs(topics: Sequence[str], partitions: Sequence[int]) -> list[tuple[TP, int, int]]:
    """``(topic, partition), start, end`` of each run of consecutive records of one partition.

    Clients hand out a polled batch as runs of one partition's records (one per fetched
    record set): slicing by run groups a batch without a per-record Python step.

    >>> runs(["t", "t", "t", "u"], [0, 0, 1, 1])
    [(('t', 0), 0, 2), (('t', 1), 2, 3), (('u', 1), 3, 4)]
    """
    n = len(partitions)
    if not n:
        return []
    p = np.asarray(partitions, dtype=np.int64)
    change = p[1:] != p[:-1]
    if topics.count(topics[0]) != n:
        ids = {t: i for i, t in enumerate(dict.fromkeys(topics))}
        t = np.asarray([ids[x] for x in topics], dtype=np.int64)
        change |= t[1:] != t[:-1]
    bounds = [0, *(np.flatnonzero(change) + 1).tolist(), n]
    return [((topics[a], int(partitions[a])), a, b) for a, b in pairwise(bounds)]


class RebalanceQueue:
    """Thread-safe hand-off of rebalance events from the client thread to the loop."""

    def __init__(self) -> None:
        self._events: list[RebalanceEvent] = []
        self._lock = threading.Lock()

    def put(self, change: str, partitions: Iterable[TP]) -> None:
        with self._lock:
            self._events.append(RebalanceEvent(change, frozenset(partitions)))

    def drain(self) -> list[RebalanceEvent]:
        with self._lock:
            out, self._events = self._events, []
        return out


@dataclass
class ClientSettings:
    """Connection settings shared by both backends (secrets already resolved)."""

    bootstrap_servers: str = "127.0.0.1:9092"
    client_id: str = "slowburn"
    security_protocol: str = "PLAINTEXT"  # PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL
    sasl_mechanism: str = ""  # PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512 | OAUTHBEARER
    sasl_username: str = ""
    sasl_password: str = field(default="", repr=False)
    ssl_cafile: str = ""
    ssl_certfile: str = ""
    ssl_keyfile: str = ""
    ssl_password: str = field(default="", repr=False)
    extra: dict[str, Any] = field(default_factory=dict)

    def redacted(self) -> dict[str, Any]:
        """For logs: every secret replaced."""
        out = {k: v for k, v in self.__dict__.items() if k not in ("sasl_password", "ssl_password")}
        out["sasl_password"] = "***" if self.sasl_password else ""
        out["ssl_password"] = "***" if self.ssl_password else ""
        return out


class ConsumerClient(ABC):
    """A group consumer with manual commits."""

    rebalances: RebalanceQueue

    @abstractmethod
    def subscribe(self, topics: Sequence[str]) -> None: ...

    @abstractmethod
    def poll(self, timeout_s: float, max_records: int) -> list[InRecord]: ...

    @abstractmethod
    def poll_batches(self, timeout_s: float, max_records: int) -> dict[TP, Sequence[Message]]:
        """Like :meth:`poll`, grouped by partition as sequences of decoder messages.

        The runtime's hot path: a :class:`RecordBlock` per partition (origin
        ``"topic/partition"``, transport timestamp in seconds, ``peer`` from a ``peer``
        header), in offset order.
        """

    @abstractmethod
    def lag(self, tps: Iterable[TP]) -> dict[TP, int]:
        """Messages behind the log end, from the client's cached high watermarks (cheap)."""

    @abstractmethod
    def assignment(self) -> set[TP]: ...

    @abstractmethod
    def committed(self, tp: TP) -> tuple[int | None, str]:
        """(offset, metadata) last committed for ``tp`` by this group; (None, "") if none."""

    @abstractmethod
    def commit(self, offsets: dict[TP, tuple[int, str]]) -> None:
        """Synchronously commit next-offsets with metadata."""

    @abstractmethod
    def seek(self, tp: TP, offset: int) -> None: ...

    @abstractmethod
    def pause(self, tps: Iterable[TP]) -> None: ...

    @abstractmethod
    def resume(self, tps: Iterable[TP]) -> None: ...

    @abstractmethod
    def end_offsets(self, tps: Iterable[TP]) -> dict[TP, int]: ...

    @abstractmethod
    def position(self, tp: TP) -> int: ...

    @abstractmethod
    def close(self) -> None: ...


class ProducerClient(ABC):
    """An idempotent, acks=all producer whose sends are confirmed by :meth:`flush`."""

    @abstractmethod
    def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        partition: int | None = None,
    ) -> None: ...

    @abstractmethod
    def flush(self, timeout_s: float = 60.0) -> None:
        """Wait for every send; raise :class:`~stream.exceptions.StreamError` if any failed."""

    @abstractmethod
    def in_flight(self) -> int:
        """Sends not yet acknowledged."""

    @abstractmethod
    def close(self) -> None: ...


class AdminClient(ABC):
    @abstractmethod
    def ensure_topic(self, name: str, partitions: int, config: dict[str, str] | None = None) -> int:
        """Create ``name`` if missing; return its partition count."""

    @abstractmethod
    def partitions(self, name: str) -> int:
        """Partition count of ``name`` (0 if it does not exist)."""

    @abstractmethod
    def read_partition(self, topic: str, partition: int, timeout_s: float = 30.0) -> list[InRecord]:
        """Every record of one partition from the beginning to the current end."""

    @abstractmethod
    def close(self) -> None: ...
