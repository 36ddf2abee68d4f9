"""Per-partition state checkpoints: the compacted ``slowburn.state`` topic and local files.

The recovery protocol (DESIGN §6). For every input partition the runtime keeps one
:class:`PartitionState` (an engine and a decoder). A checkpoint

1. waits for every alert and dead letter sent so far to be acknowledged,
2. writes the partition's state, chunked under the broker's message limit, to the
   compacted state topic (state partition = input partition number, so the state
   topic has at least as many partitions as the input) and to a local file,
3. waits for those writes to be acknowledged, and
4. commits the input offset with the snapshot id as offset metadata.

State records alternate between two key slots, so a crash half-way through writing a
snapshot never destroys the previous complete one, even after compaction. On
assignment the runtime reads the committed (offset, snapshot id), loads that snapshot
from the local file or the state topic (entries whose snapshot id differs, e.g. newer
than the commit, are skipped) and seeks to the committed offset.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import struct
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.engine import Engine
from pipelines.governance import restore_snapshot, take_snapshot
from stream.decoders.base import Decoder
from stream.exceptions import StreamError
from stream.kafka.base import TP, AdminClient, InRecord, ProducerClient

__all__ = ["Checkpointer", "PartitionState", "pack_state", "unpack_state"]

log = logging.getLogger(__name__)

_MAGIC = b"SBPART1"


@dataclass
class PartitionState:
    tp: TP
    engine: Engine
    decoder: Decoder
    next_offset: int | None = None  # next input offset to consume (None: take what comes)
    committed_offset: int | None = None
    generation: int = 0
    dirty: bool = False
    records_since: int = 0
    expect_offset: int | None = None  # after a restore: the offset the first record must have
    retire: list[bytes] = field(default_factory=list)  # previous owner's state keys
    reseeks: int = 0


def pack_state(ps: PartitionState, writer: str = "", slot: int = 0) -> tuple[str, bytes]:
    """(snapshot id, bytes) of one partition's engine + decoder + source offset."""
    info, engine_blob = take_snapshot(ps.engine, meta={"topic": ps.tp[0], "partition": ps.tp[1]})
    decoder_blob = pickle.dumps(ps.decoder, protocol=pickle.HIGHEST_PROTOCOL)
    header = json.dumps(
        {
            "snapshot_id": info.snapshot_id,
            "model_version": info.model_version,
            "source_offset": ps.next_offset,
            "topic": ps.tp[0],
            "partition": ps.tp[1],
            "generation": ps.generation,
            "writer": writer,
            "slot": slot,
            "engine_bytes": len(engine_blob),
        },
        sort_keys=True,
    ).encode()
    return info.snapshot_id, _MAGIC + struct.pack(
        ">I", len(header)
    ) + header + engine_blob + decoder_blob


def unpack_state(
    blob: bytes, tp: TP, expected_model_version: str | None
) -> tuple[dict[str, Any], Engine, Decoder]:
    if not blob.startswith(_MAGIC):
        raise StreamError("not a partition state (bad magic)")
    (n,) = struct.unpack_from(">I", blob, len(_MAGIC))
    start = len(_MAGIC) + 4
    header = json.loads(blob[start : start + n])
    header["blob_bytes"] = len(blob)
    body = blob[start + n :]
    engine = restore_snapshot(body[: header["engine_bytes"]], expected_model_version)
    decoder = pickle.loads(body[header["engine_bytes"] :])
    return header, engine, decoder


class Checkpointer:
    """Writes and reads partition states (topic + local directory)."""

    def __init__(
        self,
        producer: ProducerClient,
        admin: AdminClient,
        state_topic: str,
        group: str,
        state_dir: str | Path | None,
        state_partitions: int,
        chunk_bytes: int = 512 * 1024,
    ) -> None:
        self.producer = producer
        self.admin = admin
        self.state_topic = state_topic
        self.group = group
        self.state_dir = Path(state_dir) / group if state_dir else None
        self.state_partitions = max(1, state_partitions)
        self.chunk_bytes = chunk_bytes
        self._read_cache: dict[int, list[InRecord]] = {}
        #: this process's token in state keys: a fenced (stale) member that still writes a
        #: snapshot after its partition moved cannot overwrite the new owner's entries
        self.writer = uuid.uuid4().hex[:12]

    def _key(self, tp: TP, slot: int, part: str, writer: str | None = None) -> bytes:
        w = self.writer if writer is None else writer
        return f"{self.group}|{tp[0]}|{tp[1]}|{w}|{slot}|{part}".encode()

    def keys_of(self, tp: TP, header: dict[str, Any]) -> list[bytes]:
        """State keys of a restored snapshot written by another process (to retire)."""
        writer = str(header.get("writer", ""))
        if not writer or writer == self.writer:
            return []
        slot = int(header.get("slot", 0))
        n = max(1, -(-int(header.get("blob_bytes", 0)) // self.chunk_bytes))
        return [self._key(tp, slot, str(i), writer) for i in range(n)] + [
            self._key(tp, slot, "m", writer)
        ]

    def retire(self, ps: PartitionState) -> None:
        """Tombstone the previous owner's entries once this owner committed its own."""
        partition = ps.tp[1] % self.state_partitions
        for key in ps.retire:
            self.producer.send(self.state_topic, None, key=key, partition=partition)
        ps.retire = []

    def _local(self, tp: TP) -> Path | None:
        return self.state_dir / f"{tp[0]}-{tp[1]}.state" if self.state_dir else None

    def save(self, ps: PartitionState) -> tuple[str, int]:
        """Send ``ps``'s state (not yet acknowledged: flush the producer before committing)."""
        slot = ps.generation % 2
        sid, blob = pack_state(ps, self.writer, slot)
        ps.generation += 1
        partition = ps.tp[1] % self.state_partitions
        chunks = [
            blob[i : i + self.chunk_bytes] for i in range(0, len(blob), self.chunk_bytes)
        ] or [b""]
        common = [
            ("snapshot_id", sid.encode()),
            ("source_offset", str(ps.next_offset).encode()),
            ("model_version", ps.engine.model_version.encode()),
        ]
        for i, chunk in enumerate(chunks):
            self.producer.send(
                self.state_topic,
                chunk,
                key=self._key(ps.tp, slot, str(i)),
                headers=[*common, ("chunk", f"{i}/{len(chunks)}".encode())],
                partition=partition,
            )
        manifest = {
            "snapshot_id": sid,
            "chunks": len(chunks),
            "bytes": len(blob),
            "sha256": hashlib.sha256(blob).hexdigest(),
            "source_offset": ps.next_offset,
            "model_version": ps.engine.model_version,
        }
        self.producer.send(
            self.state_topic,
            json.dumps(manifest, sort_keys=True).encode(),
            key=self._key(ps.tp, slot, "m"),
            headers=common,
            partition=partition,
        )
        local = self._local(ps.tp)
        if local is not None:
            local.parent.mkdir(parents=True, exist_ok=True)
            tmp = local.with_suffix(".tmp")
            tmp.write_bytes(blob)
            tmp.replace(local)
        return sid, len(blob)

    def load(
        self, tp: TP, snapshot_id: str, model_version: str
    ) -> tuple[dict[str, Any], Engine, Decoder] | None:
        """The state with ``snapshot_id`` for ``tp`` from the local file or the state topic."""
        if not snapshot_id:
            return None
        local = self._local(tp)
        if local is not None and local.exists():
            try:
                header, engine, decoder = unpack_state(local.read_bytes(), tp, model_version)
                if header["snapshot_id"] == snapshot_id:
                    log.info(
                        "restored %s/%d from %s (snapshot %s)", tp[0], tp[1], local, snapshot_id
                    )
                    return header, engine, decoder
            except Exception as exc:
                log.warning("local state %s unusable: %s", local, exc)
        blob = self._from_topic(tp, snapshot_id)
        if blob is None:
            return None
        header, engine, decoder = unpack_state(blob, tp, model_version)
        log.info(
            "restored %s/%d from topic %s (snapshot %s)",
            tp[0],
            tp[1],
            self.state_topic,
            snapshot_id,
        )
        return header, engine, decoder

    def _from_topic(self, tp: TP, snapshot_id: str) -> bytes | None:
        partition = tp[1] % self.state_partitions
        records = self.admin.read_partition(self.state_topic, partition)
        prefix = f"{self.group}|{tp[0]}|{tp[1]}|".encode()
        manifests: dict[tuple[str, int], dict[str, Any]] = {}
        chunks: dict[tuple[str, int], bytes] = {}
        for r in records:
            if not r.key or not r.key.startswith(prefix):
                continue
            _rest, writer, slot, part = r.key.decode().rsplit("|", 3)
            if not r.value:
                continue  # tombstone
            if part == "m":
                try:
                    manifests[(writer, int(slot))] = json.loads(r.value)
                except ValueError:
                    continue
            else:
                sid = dict(r.headers).get("snapshot_id", b"").decode()
                chunks[(sid, int(part))] = r.value
        for m in manifests.values():
            if m.get("snapshot_id") != snapshot_id:
                continue  # another snapshot (e.g. written after the committed offset): skip
            parts = [chunks.get((snapshot_id, i)) for i in range(int(m["chunks"]))]
            if any(p is None for p in parts):
                log.warning(
                    "state %s for %s/%d is incomplete in %s", snapshot_id, *tp, self.state_topic
                )
                return None
            blob = b"".join(p for p in parts if p is not None)
            if hashlib.sha256(blob).hexdigest() != m.get("sha256"):
                log.warning("state %s for %s/%d fails its hash", snapshot_id, *tp)
                return None
            return blob
        return None
