"""Model governance: versioned state snapshots, verification, rollback and audit records.

A snapshot is the whole engine (detectors, baselines, open incidents, buffered
windows) pickled behind a small JSON header. Its id is the hash of its bytes, so an
alert that names a snapshot id names exactly one model state. Snapshots are verified
on restore (magic, format version, hash, optional expected model version).

>>> from pipelines.engine import Engine, EngineConfig
>>> eng = Engine(EngineConfig(), detectors=[])
>>> info, blob = take_snapshot(eng)
>>> info.snapshot_id == eng.snapshot_id, len(info.snapshot_id)
(True, 16)
>>> restore_snapshot(blob).model_version == eng.model_version
True
>>> reg = ModelRegistry(keep=2)
>>> reg.record(info, blob).action
'snapshot'
>>> reg.rollback(info.snapshot_id).snapshot_id == info.snapshot_id
True
>>> [a.action for a in reg.audit]
['snapshot', 'rollback']
"""

from __future__ import annotations

import hashlib
import json
import pickle
import struct
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Any

from pipelines.engine import Engine
from pipelines.exceptions import StateError

__all__ = ["AuditRecord", "ModelRegistry", "SnapshotInfo", "restore_snapshot", "take_snapshot"]

MAGIC = b"SLOWBURN-STATE"
FORMAT = 1


@dataclass(frozen=True)
class SnapshotInfo:
    """What a snapshot holds, for audit and for checkpoint headers."""

    snapshot_id: str
    model_version: str
    watermark: float
    entities: dict[str, int]
    nbytes: int
    parent: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AuditRecord:
    """One governance action: ``snapshot``, ``restore``, ``rollback``, ``refreeze``."""

    action: str
    snapshot_id: str
    model_version: str
    watermark: float
    detail: str = ""


def take_snapshot(engine: Engine, meta: dict[str, Any] | None = None) -> tuple[SnapshotInfo, bytes]:
    """Serialise ``engine``; sets ``engine.snapshot_id`` to the new id (used in alerts)."""
    parent = engine.snapshot_id
    payload = pickle.dumps(engine, protocol=pickle.HIGHEST_PROTOCOL)
    sid = hashlib.sha256(payload).hexdigest()[:16]
    watermark = engine.watermark if engine.max_ts > float("-inf") else 0.0
    info = SnapshotInfo(
        snapshot_id=sid,
        model_version=engine.model_version,
        watermark=watermark,
        entities=engine.entities(),
        nbytes=len(payload),
        parent=parent,
        meta=dict(meta or {}),
    )
    header = json.dumps({"format": FORMAT, **asdict(info)}, sort_keys=True).encode()
    blob = MAGIC + struct.pack(">I", len(header)) + header + payload
    engine.snapshot_id = sid
    return info, blob


def read_header(blob: bytes) -> dict[str, Any]:
    if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + 4:
        raise StateError("not a slowburn state snapshot (bad magic)")
    (n,) = struct.unpack_from(">I", blob, len(MAGIC))
    start = len(MAGIC) + 4
    try:
        header = json.loads(blob[start : start + n])
    except ValueError as exc:
        raise StateError(f"snapshot header is corrupt: {exc}") from exc
    if header.get("format") != FORMAT:
        raise StateError(
            f"snapshot format {header.get('format')} is not supported (expected {FORMAT})"
        )
    header["_payload_at"] = start + n
    return dict(header)


def restore_snapshot(blob: bytes, expected_model_version: str | None = None) -> Engine:
    """Verify and load a snapshot. A different model version is refused when given."""
    header = read_header(blob)
    payload = blob[header["_payload_at"] :]
    if hashlib.sha256(payload).hexdigest()[:16] != header["snapshot_id"]:
        raise StateError(
            f"snapshot {header['snapshot_id']} fails its hash check (corrupt or truncated)"
        )
    if expected_model_version is not None and header["model_version"] != expected_model_version:
        raise StateError(
            f"snapshot {header['snapshot_id']} is model {header['model_version']}, "
            f"configured model is {expected_model_version}"
        )
    engine = pickle.loads(payload)
    if not isinstance(engine, Engine):
        raise StateError("snapshot does not hold an engine")
    engine.snapshot_id = header["snapshot_id"]
    return engine


class ModelRegistry:
    """The last ``keep`` snapshots in memory, with rollback and an audit trail."""

    def __init__(self, keep: int = 10) -> None:
        self.keep = keep
        self.snapshots: OrderedDict[str, tuple[SnapshotInfo, bytes]] = OrderedDict()
        self.audit: list[AuditRecord] = []

    def record(self, info: SnapshotInfo, blob: bytes) -> AuditRecord:
        self.snapshots[info.snapshot_id] = (info, blob)
        while len(self.snapshots) > self.keep:
            self.snapshots.popitem(last=False)
        rec = AuditRecord("snapshot", info.snapshot_id, info.model_version, info.watermark)
        self.audit.append(rec)
        return rec

    def rollback(self, snapshot_id: str) -> Engine:
        """The engine as it was at ``snapshot_id`` (e.g. before a poisoned period)."""
        try:
            info, blob = self.snapshots[snapshot_id]
        except KeyError:
            raise StateError(
                f"no snapshot {snapshot_id} kept (have: {', '.join(self.snapshots)})"
            ) from None
        engine = restore_snapshot(blob)
        self.audit.append(AuditRecord("rollback", snapshot_id, info.model_version, info.watermark))
        return engine
