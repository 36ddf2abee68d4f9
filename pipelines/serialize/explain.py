"""The explanation every alert carries, as one plain JSON-able dict.

It holds everything an analyst (or an auditor) needs to see *why* slowburn raised the
alert without access to slowburn: the plain sentence, every feature that made it
(observed vs baseline, robust z-score, unit, what the baseline is), the detector's
facts, the model version and state snapshot id, the host_behaviour score when known,
and the input positions (origin + offset of sample records: the audit trail).

>>> from pipelines.incidents import Incident
>>> from pipelines.detectors.base import Evidence
>>> inc = Incident("u", "exfil", "exfiltration", "10.0.0.5", "203.0.113.9", 0.0, 0.0, 300.0,
...                sentence="10.0.0.5 uploaded 48.1 MB.", model_version="m1",
...                evidence=[Evidence("bytes_out_24h", 4.8e7, 1.2e6, 7.5, "B", "host 14-day median")],
...                positions=(("flows-0", 17),))
>>> e = explanation(inc)
>>> e["evidence"][0]["z"], e["positions"][0]
(7.5, {'origin': 'flows-0', 'offset': 17})
"""

from __future__ import annotations

import math
from typing import Any

from pipelines.incidents import Incident

__all__ = ["explanation", "jsonable"]


def jsonable(v: Any) -> Any:
    """``v`` as plain JSON types: numpy scalars/arrays unwrapped, tuples/sets → lists,
    non-finite floats → ``None`` (JSON has no NaN), unknown objects → ``str``.

    >>> import numpy as np
    >>> jsonable({"a": np.int64(3), "b": (1.5, float("nan")), 4: {np.float32(2.0)}})
    {'a': 3, 'b': [1.5, None], '4': [2.0]}
    """
    if v is None or isinstance(v, bool | str):
        return v
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):  # also numpy.float64, a float subclass
        return float(v) if math.isfinite(v) else None
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [jsonable(x) for x in v]
    if isinstance(v, set | frozenset):
        items = [jsonable(x) for x in v]
        try:
            return sorted(items)
        except TypeError:
            return sorted(items, key=repr)
    if hasattr(v, "tolist"):  # numpy scalar or array
        return jsonable(v.tolist())
    return str(v)


def explanation(inc: Incident, snapshot: bool = True) -> dict[str, Any]:
    """The explanation of ``inc`` (see module docstring).

    ``snapshot=False`` leaves out ``snapshot_id`` (the streaming runtime sends it as a
    Kafka header instead, so that a redelivered alert's body is byte-identical).

    >>> from pipelines.incidents import Incident
    >>> inc = Incident("u", "exfil", "exfiltration", "h", "", 0.0, 0.0, 1.0, snapshot_id="s-1")
    >>> explanation(inc)["snapshot_id"], "snapshot_id" in explanation(inc, snapshot=False)
    ('s-1', False)
    """
    out = _explanation(inc)
    if not snapshot:
        del out["snapshot_id"]
    return out


def _explanation(inc: Incident) -> dict[str, Any]:
    return {
        "sentence": inc.sentence,
        "detector": inc.detector,
        "kind": inc.kind,
        "entity": inc.entity,
        "episode": inc.episode,
        "evidence": [
            {
                "name": e.name,
                "observed": jsonable(float(e.observed)),
                "baseline": jsonable(float(e.baseline)),
                "z": jsonable(float(e.z)),
                "unit": e.unit,
                "reference": e.reference,
            }
            for e in inc.evidence
        ],
        "facts": jsonable(inc.facts),
        "model_version": inc.model_version,
        "snapshot_id": inc.snapshot_id,
        "host_behaviour_score": jsonable(inc.host_score),
        "positions": [{"origin": str(o), "offset": int(off)} for o, off in inc.positions],
        "incident": {
            "uid": inc.uid,
            "revision": inc.revision,
            "status": inc.status,
            "findings": inc.findings_n,
            "first_window": jsonable(inc.first_window),
            "score": jsonable(round(float(inc.score), 4)),
            "max_z": jsonable(round(float(inc.max_z), 3)),
            "risk_score": inc.risk_score,
            "severity_id": inc.severity_id,
            "confidence": inc.confidence,
        },
    }
