"""Packet capture → packet summaries (JSON) → Kafka topic or file.

A capture file is read with the raw path (:mod:`stream.decoders.pcap`), a live interface
with scapy (``AsyncSniffer`` with an optional BPF filter); either way frames go through
the same vectorised parser, so both produce identical summaries (format: see
:mod:`stream.decoders.summaries`).

* Files get one JSON object per line.
* Kafka gets JSON arrays of up to ``batch`` packets per message, keyed by the internal
  host (``src`` if only it is inside the home networks, ``dst`` if only that is; the
  smaller address when both or neither are), so one host's packets land on one partition
  and the flow table downstream sees both directions of every conversation.

>>> import io, struct
>>> ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, 0, 0, 64, 17, 0, bytes([10, 0, 0, 1]), bytes([8, 8, 8, 8]))
>>> frame = ip + struct.pack("!HHHH", 1234, 9999, 8, 0)
>>> pcap = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101)
>>> pcap += struct.pack("<IIII", 100, 0, len(frame), len(frame)) + frame
>>> out = []
>>> Sensor(lambda key, pkts: out.append((key, pkts))).from_stream(io.BytesIO(pcap))
1
>>> out[0][0], out[0][1][0]["kind"], out[0][1][0]["dport"], out[0][1][0]["len"]
('10.0.0.1', 'pkt', 9999, 28)
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

from pipelines.packets import PacketColumns, PacketParser, dns_messages
from pipelines.records import HomeNetworks
from stream.decoders.pcap import iter_capture

__all__ = ["KafkaSummarySink", "Sensor", "SummaryFileSink", "summaries"]

log = logging.getLogger(__name__)

#: sink(key, packets) — key is the internal host, packets are summary dicts
SinkFn = Callable[[str, list[dict[str, Any]]], None]


def summaries(
    cols: PacketColumns, buf: Any, cache: Any = None, parser: PacketParser | None = None
) -> list[dict[str, Any]]:
    """Summary dicts (``"kind": "pkt"``) for parsed packet columns, with DNS fields when present.

    ``cache`` is accepted for compatibility and unused; ``parser`` lends its address caches.
    """
    del cache
    names = ("ts", "src", "dst", "sport", "dport", "proto", "len", "flags", "plen")
    lists = [
        cols.ts.tolist(),
        cols.src.tolist(),
        cols.dst.tolist(),
        cols.sport.tolist(),
        cols.dport.tolist(),
        cols.proto.tolist(),
        cols.ip_len.tolist(),
        cols.tcp_flags.tolist(),
        cols.payload_len.tolist(),
    ]
    out = [
        {"kind": "pkt", **dict(zip(names, vals, strict=True))} for vals in zip(*lists, strict=True)
    ]
    rows, dc = dns_messages(cols, buf, parser)
    good = np.flatnonzero(dc.ok)
    fields = [
        c[good].tolist()
        for c in (
            dc.ident,
            dc.response,
            dc.rcode,
            dc.query,
            dc.qtype,
            dc.answers_n,
            dc.answers,
            dc.size,
        )
    ]
    for row, (ident, qr, rcode, query, qtype, an, ans, size) in zip(
        rows[good].tolist(), zip(*fields, strict=True), strict=True
    ):
        out[row]["dns"] = {
            "id": ident,
            "qr": qr,
            "rcode": rcode,
            "query": query,
            "qtype": qtype,
            "ancount": an,
            "answers": ans.split(",") if ans else [],
            "size": size,
        }
    return out


class Sensor:
    """Turn frames into summaries and hand them to ``sink`` grouped by internal host."""

    def __init__(self, sink: SinkFn, home: HomeNetworks | None = None, batch: int = 500) -> None:
        self.sink = sink
        self.home = home or HomeNetworks.default()
        self.batch = batch
        self.parser = PacketParser()
        self.packets = 0
        self.stats: dict[str, int] = {}

    def _publish(self, cols: PacketColumns, buf: Any) -> None:
        if not len(cols):
            return
        rows = summaries(cols, buf, parser=self.parser)
        keys = host_keys(cols.src, cols.dst, self.home)
        order = np.argsort(keys, kind="stable")
        ks = keys[order].tolist()
        idx = order.tolist()
        start = 0
        while start < len(ks):
            end = start
            while end < len(ks) and ks[end] == ks[start] and end - start < self.batch:
                end += 1
            self.sink(ks[start], [rows[i] for i in idx[start:end]])
            start = end
        self.packets += len(rows)

    def from_stream(self, f: IO[bytes], stop: threading.Event | None = None) -> int:
        """Publish every IP packet of a pcap/pcapng stream (until ``stop`` is set); returns the count."""
        for raw in iter_capture(f, 65536, self.stats):
            if stop is not None and stop.is_set():
                break
            cols = self.parser.parse(
                raw.buf, raw.offsets, raw.caplens, raw.linktypes, raw.ts, raw.index
            )
            self._publish(cols, raw.buf)
        return self.packets

    def from_capture(self, path: str | Path, stop: threading.Event | None = None) -> int:
        with open(path, "rb") as f:
            return self.from_stream(f, stop)

    def live(
        self,
        iface: str,
        bpf: str | None = None,
        max_seconds: float | None = None,
        count: int = 0,
        flush_every: float = 1.0,
        stop: threading.Event | None = None,
    ) -> int:
        """Sniff ``iface`` with scapy until ``stop`` is set, ``max_seconds`` or ``count`` packets."""
        from scapy.sendrecv import AsyncSniffer

        pending: list[tuple[bytes, int, float]] = []
        lock = threading.Lock()

        def on_packet(pkt: Any) -> None:
            with lock:
                pending.append((bytes(pkt), _linktype(pkt), float(pkt.time)))

        kw: dict[str, Any] = {"iface": iface, "filter": bpf}
        if iface == "lo" or iface.startswith("lo:"):
            # like libpcap: on loopback each packet is seen outgoing and incoming; keep one copy
            from scapy.config import conf

            kw = {"opened_socket": conf.L2socket(iface=iface, filter=bpf)}
        sniffer = AsyncSniffer(prn=on_packet, store=False, count=count, **kw)
        sniffer.start()
        stop = stop or threading.Event()
        started = time.monotonic()
        try:
            while not stop.is_set() and (sniffer.running or pending):
                if max_seconds is not None and time.monotonic() - started >= max_seconds:
                    break
                stop.wait(flush_every)
                with lock:
                    got, pending[:] = list(pending), []
                self._frames(got)
        finally:
            if sniffer.running:
                sniffer.stop()
            with lock:
                got, pending[:] = list(pending), []
            self._frames(got)
        return self.packets

    def _frames(self, frames: list[tuple[bytes, int, float]]) -> None:
        if not frames:
            return
        buf = b"".join(f[0] for f in frames)
        lens = np.array([len(f[0]) for f in frames], dtype=np.int64)
        offs = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)
        lts = np.array([f[1] for f in frames], dtype=np.int64)
        ts = np.array([f[2] for f in frames], dtype=np.float64)
        cols = self.parser.parse(
            buf, offs, lens, lts, ts, np.arange(self.packets, self.packets + len(frames))
        )
        self._publish(cols, buf)


def host_keys(src: np.ndarray, dst: np.ndarray, home: HomeNetworks) -> np.ndarray:
    """Partition key per packet: the internal end; when both or neither end is internal, the
    smaller address, so that both directions of a conversation share one key.

    >>> host_keys(np.array(["8.8.8.8", "10.0.0.9", "10.0.0.9"], dtype=object),
    ...           np.array(["10.0.0.1", "1.1.1.1", "10.0.0.2"], dtype=object), HomeNetworks.default()).tolist()
    ['10.0.0.1', '10.0.0.9', '10.0.0.2']
    """
    si, di = home.contains(src), home.contains(dst)
    lower = np.where(src < dst, src, dst)
    return np.where(si & ~di, src, np.where(di & ~si, dst, lower))


def _linktype(pkt: Any) -> int:
    name = type(pkt).__name__
    return {
        "Ether": 1,
        "CookedLinux": 113,
        "CookedLinuxV2": 276,
        "IP": 101,
        "IPv6": 101,
        "Loopback": 0,
        "Dot3": 1,
    }.get(name, 1)


class SummaryFileSink:
    """One JSON object per line."""

    def __init__(self, path: str | Path) -> None:
        self._out = open(path, "a", encoding="utf-8")  # noqa: SIM115

    def __call__(self, key: str, packets: list[dict[str, Any]]) -> None:
        for p in packets:
            self._out.write(json.dumps(p, separators=(",", ":")) + "\n")

    def close(self) -> None:
        self._out.close()


class KafkaSummarySink:
    """JSON arrays of summaries, keyed by internal host, with kafka-python."""

    def __init__(self, topic: str, bootstrap_servers: str, **config: Any) -> None:
        from kafka import KafkaProducer

        self.topic = topic
        self.producer = KafkaProducer(
            bootstrap_servers=bootstrap_servers.split(","), linger_ms=20, **config
        )
        self.sent = 0

    def __call__(self, key: str, packets: list[dict[str, Any]]) -> None:
        self.producer.send(
            self.topic, key=key.encode(), value=json.dumps(packets, separators=(",", ":")).encode()
        )
        self.sent += 1

    def close(self) -> None:
        self.producer.flush()
        self.producer.close()
