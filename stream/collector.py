"""UDP NetFlow/IPFIX collector: datagrams → canonical flow JSON lines, or raw to Kafka.

``jsonl`` mode decodes every datagram with :class:`~stream.decoders.netflow.NetflowDecoder`
(``Message.peer`` = sender address, ``origin`` = ``udp:HOST:PORT`` of the listener,
``offset`` = datagram counter) and hands flows and dead letters to a sink. ``raw`` mode
forwards each datagram untouched (key = exporter address, header ``peer``) so that the
runtime decodes it, with templates cached per exporter there.

Sinks: :class:`FileSink` (``{"kind": "flow", ...}`` lines, the shape ``slowburn decode``
writes; dead letters to ``<out>.deadletter.jsonl``) and :class:`KafkaSink`.

>>> import socket, struct, tempfile, os, json
>>> d = tempfile.mkdtemp(); out = os.path.join(d, "flows.jsonl")
>>> c = Collector(("127.0.0.1", 0), FileSink(out), idle_exit=0.3)
>>> port = c.bind()
>>> hdr = struct.pack("!HHIIIIBBH", 5, 1, 1000, 1_700_000_000, 0, 1, 0, 0, 0)
>>> rec = struct.pack("!IIIHHIIIIHHBBBBHHBBH", 0x0A000001, 0x08080808, 0, 0, 0, 1, 60, 0, 0,
...                   1, 2, 0, 0, 17, 0, 0, 0, 0, 0, 0)
>>> s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); _ = s.sendto(hdr + rec, ("127.0.0.1", port))
>>> c.serve()
>>> c.close()
>>> row = json.loads(open(out).readline()); row["kind"], row["src"], row["bytes_out"], row["sensor"]
('flow', '10.0.0.1', 60, '127.0.0.1')
"""

from __future__ import annotations

import json
import logging
import math
import select
import socket
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

from stream.decoders.base import DeadLetter, DecodeResult, Message
from stream.decoders.netflow import NetflowDecoder

__all__ = ["Collector", "FileSink", "KafkaSink", "Sink", "flow_lines"]

log = logging.getLogger(__name__)


class Sink(Protocol):
    def flows(self, result: DecodeResult) -> None: ...
    def raw(self, datagram: bytes, exporter: str) -> None: ...
    def close(self) -> None: ...


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def flow_lines(result: DecodeResult) -> Iterable[str]:
    """JSON lines of a decode result: flows as ``{"kind": "flow", ...}``."""
    for row in result.flows.rows():
        yield json.dumps(
            {"kind": "flow", **{k: _clean(v) for k, v in row.items()}}, separators=(",", ":")
        )


def dead_line(d: DeadLetter) -> str:
    return json.dumps(
        {
            "kind": "dead_letter",
            "reason": d.reason,
            "detail": d.detail,
            "decoder": d.decoder,
            "origin": d.origin,
            "offset": d.offset,
            "bytes": len(d.value),
            "value_hex": d.value[:2048].hex(),
        }
    )


class FileSink:
    """Append flow JSON lines to ``path`` and dead letters to ``<path>.deadletter.jsonl``.

    Raw datagrams (``raw`` mode) are written as ``{"kind": "datagram", "peer", "hex"}`` lines.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.dead_path = self.path.with_name(self.path.name + ".deadletter.jsonl")
        self._out = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        self._dead: Any = None
        self.written = 0

    def flows(self, result: DecodeResult) -> None:
        for line in flow_lines(result):
            self._out.write(line + "\n")
            self.written += 1
        if result.dead:
            if self._dead is None:
                self._dead = open(self.dead_path, "a", encoding="utf-8")  # noqa: SIM115
            for d in result.dead:
                self._dead.write(dead_line(d) + "\n")
        self._out.flush()

    def raw(self, datagram: bytes, exporter: str) -> None:
        self._out.write(
            json.dumps({"kind": "datagram", "peer": exporter, "hex": datagram.hex()}) + "\n"
        )
        self.written += 1

    def close(self) -> None:
        self._out.close()
        if self._dead is not None:
            self._dead.close()


class KafkaSink:
    """Publish with kafka-python: flows (JSON, key = src) or raw datagrams (key = exporter).

    Dead letters go to ``dead_topic`` with the headers of :meth:`DeadLetter.headers`.
    """

    def __init__(
        self,
        topic: str,
        bootstrap_servers: str,
        dead_topic: str = "slowburn.deadletter",
        **config: Any,
    ) -> None:
        from kafka import KafkaProducer

        self.topic = topic
        self.dead_topic = dead_topic
        self.producer = KafkaProducer(
            bootstrap_servers=bootstrap_servers.split(","), linger_ms=20, **config
        )
        self.written = 0

    def flows(self, result: DecodeResult) -> None:
        for line, row in zip(flow_lines(result), result.flows.rows(), strict=True):
            self.producer.send(self.topic, value=line.encode(), key=str(row["src"]).encode())
            self.written += 1
        for d in result.dead:
            self.producer.send(self.dead_topic, value=d.value, headers=d.headers())

    def raw(self, datagram: bytes, exporter: str) -> None:
        self.producer.send(
            self.topic, value=datagram, key=exporter.encode(), headers=[("peer", exporter.encode())]
        )
        self.written += 1

    def close(self) -> None:
        self.producer.flush()
        self.producer.close()


class Collector:
    """Receive datagrams on ``listen`` and pass them to ``sink`` (see module docstring).

    ``max_seconds`` / ``idle_exit`` end :meth:`serve` after a total time or a quiet period
    (wall clock: this is the shell, not the pipeline). :meth:`stop` may be called from a
    signal handler or another thread.
    """

    def __init__(
        self,
        listen: tuple[str, int],
        sink: Sink,
        mode: str = "jsonl",
        decoder: NetflowDecoder | None = None,
        max_seconds: float | None = None,
        idle_exit: float | None = None,
        batch: int = 256,
        rcvbuf: int = 4 << 20,
    ) -> None:
        self.listen = listen
        self.sink = sink
        self.mode = mode
        self.decoder = decoder or NetflowDecoder()
        self.max_seconds = max_seconds
        self.idle_exit = idle_exit
        self.batch = batch
        self.rcvbuf = rcvbuf
        self.sock: socket.socket | None = None
        self.received = 0
        self.flows = 0
        self.dead = 0
        self._stop = False

    def bind(self) -> int:
        """Open the socket; returns the bound port (useful with port 0)."""
        host, port = self.listen
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        except OSError:
            log.debug("could not set SO_RCVBUF")
        sock.bind((host, port))
        sock.setblocking(False)
        self.sock = sock
        return int(sock.getsockname()[1])

    def stop(self) -> None:
        self._stop = True

    def serve(self) -> None:
        """Receive until stopped, ``max_seconds`` elapsed or ``idle_exit`` seconds of silence."""
        if self.sock is None:
            self.bind()
        assert self.sock is not None
        origin = f"udp:{self.listen[0]}:{self.sock.getsockname()[1]}"
        started = last = time.monotonic()
        while not self._stop:
            now = time.monotonic()
            if self.max_seconds is not None and now - started >= self.max_seconds:
                break
            if self.idle_exit is not None and now - last >= self.idle_exit:
                break
            ready, _, _ = select.select([self.sock], [], [], 0.1)
            if not ready:
                continue
            msgs: list[Message] = []
            while len(msgs) < self.batch:
                try:
                    data, addr = self.sock.recvfrom(65535)
                except (BlockingIOError, InterruptedError):
                    break
                msgs.append(
                    Message(
                        data,
                        origin,
                        self.received,
                        key=addr[0].encode(),
                        peer=addr[0],
                        timestamp=time.time(),
                    )
                )
                self.received += 1
            if msgs:
                last = time.monotonic()
                self._handle(msgs)
        self._drain(origin)
        self._handle([])

    def _drain(self, origin: str) -> None:
        """Decode what is already queued in the socket buffer when stopping."""
        assert self.sock is not None
        while True:
            msgs: list[Message] = []
            while len(msgs) < self.batch:
                try:
                    data, addr = self.sock.recvfrom(65535)
                except (BlockingIOError, InterruptedError):
                    break
                msgs.append(
                    Message(data, origin, self.received, key=addr[0].encode(), peer=addr[0])
                )
                self.received += 1
            if not msgs:
                return
            self._handle(msgs)

    def _handle(self, msgs: list[Message]) -> None:
        if self.mode == "raw":
            for m in msgs:
                self.sink.raw(m.value, m.peer)
            return
        result = self.decoder.decode(msgs) if msgs else self.decoder.flush()
        self.flows += len(result.flows)
        self.dead += len(result.dead)
        if len(result.flows) or result.dead:
            self.sink.flows(result)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.sink.close()
