"""Canonical columnar records: :class:`FlowBatch` and :class:`DnsBatch`.

Decoders in ``stream.decoders`` produce these; everything in ``pipelines`` consumes
them. A batch is a set of equal-length numpy arrays, one per field. Field names are the
contract (DESIGN §3): add fields, never rename them.

Conventions

* ``bytes_*``/``pkts_*`` are IP-layer counts **already scaled** by ``sampling_rate``
  (the decoder multiplies; ``sampling_rate`` records the factor it applied).
* ``*_out`` is src→dst, ``*_in`` is dst→src (0 for unidirectional sources).
* ``src_inside``/``dst_inside`` are derived once, by :func:`annotate_direction`, from the
  configured home networks. Detectors read them and never re-guess direction.
* ``origin``/``offset`` say where a record came from (``"file.jsonl"`` and line number,
  or ``"topic/partition"`` and Kafka offset): the audit trail of every alert.

>>> b = FlowBatch.from_columns({"ts_start": [10.0, 5.0], "ts_end": [11.0, 6.0],
...                             "src": ["10.0.0.1", "10.0.0.2"], "dst": ["8.8.8.8", "10.0.0.1"],
...                             "bytes_out": [100, 200]})
>>> len(b), b.bytes_in.tolist(), b.dst_port.tolist()
(2, [0, 0], [-1, -1])
>>> b = annotate_direction(b, HomeNetworks.default())
>>> b.src_inside.tolist(), b.dst_inside.tolist()
([True, True], [False, True])
>>> b.sorted_by_time().ts_start.tolist()
[5.0, 10.0]
"""

from __future__ import annotations

import ipaddress
import math
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Self

import numpy as np

from pipelines.exceptions import RecordError

__all__ = [
    "DNS_FIELDS",
    "FLOW_FIELDS",
    "DnsBatch",
    "FlowBatch",
    "HomeNetworks",
    "annotate_direction",
    "intern_ip",
]

# name -> (numpy dtype, default for a missing value)
FLOW_FIELDS: dict[str, tuple[Any, Any]] = {
    "ts_start": (np.float64, math.nan),
    "ts_end": (np.float64, math.nan),
    "src": (object, ""),
    "dst": (object, ""),
    "src_port": (np.int32, -1),
    "dst_port": (np.int32, -1),
    "proto": (np.uint8, 0),
    "bytes_out": (np.int64, 0),
    "pkts_out": (np.int64, 0),
    "bytes_in": (np.int64, 0),
    "pkts_in": (np.int64, 0),
    "payload_out": (np.int64, -1),  # -1: the source does not report payload bytes
    "payload_in": (np.int64, -1),
    "tcp_flags": (np.uint16, 0),
    "service": (object, ""),
    "conn_state": (object, ""),
    "sensor": (object, ""),
    "sampling_rate": (np.int64, 1),
    "bidirectional": (np.bool_, False),
    "src_inside": (np.bool_, False),
    "dst_inside": (np.bool_, False),
    "origin": (object, ""),
    "offset": (np.int64, -1),
}

DNS_FIELDS: dict[str, tuple[Any, Any]] = {
    "ts": (np.float64, math.nan),
    "src": (object, ""),
    "dst": (object, ""),
    "src_port": (np.int32, -1),
    "dst_port": (np.int32, -1),
    "proto": (np.uint8, 17),
    "query": (object, ""),
    "qtype": (np.int32, 0),  # IANA RR type: 1 A, 5 CNAME, 10 NULL, 15 MX, 16 TXT, 28 AAAA
    "rcode": (np.int32, -1),  # -1: no response seen; 0 NOERROR, 3 NXDOMAIN
    "answers_n": (np.int32, 0),
    "answers": (object, ""),  # comma-separated answer values (IPs for A/AAAA), may be ""
    "resp_bytes": (np.int64, 0),
    "sensor": (object, ""),
    "src_inside": (np.bool_, False),
    "dst_inside": (np.bool_, False),
    "origin": (object, ""),
    "offset": (np.int64, -1),
}

_INTERN: dict[str, str] = {}


def intern_ip(value: str) -> str:
    """Return the canonical, interned spelling of an IP address string.

    IPv6 is compressed and lower-cased so that one host has one key.

    >>> intern_ip("2001:DB8:0:0::1") == "2001:db8::1"
    True
    >>> intern_ip("10.0.0.1") is intern_ip("10.0.0.1")
    True
    """
    got = _INTERN.get(value)
    if got is not None:
        return got
    text = value
    if ":" in value:
        try:
            text = str(ipaddress.ip_address(value.split("%", 1)[0]))
        except ValueError:
            text = value.lower()
    text = sys.intern(text)
    if len(_INTERN) < 1_000_000:
        _INTERN[value] = text
    return text


def _column(values: Any, dtype: Any, n: int, default: Any) -> np.ndarray:
    if values is None:
        if dtype is object:
            out = np.empty(n, dtype=object)
            out[:] = default
            return out
        return np.full(n, default, dtype=dtype)
    if dtype is object:
        arr = np.empty(len(values), dtype=object)
        arr[:] = list(values) if not isinstance(values, np.ndarray) else values
        return arr
    return np.asarray(values, dtype=dtype)


class _Batch:
    """Shared behaviour of the columnar batch classes."""

    FIELDS: ClassVar[dict[str, tuple[Any, Any]]]
    TIME: ClassVar[str]

    @classmethod
    def from_columns(cls, columns: Mapping[str, Any]) -> Self:
        """Build a batch from a mapping of field name -> sequence; missing fields get defaults."""
        unknown = set(columns) - set(cls.FIELDS)
        if unknown:
            raise RecordError(f"unknown {cls.__name__} field(s): {sorted(unknown)}")
        lengths = {len(v) for v in columns.values() if v is not None}
        if len(lengths) > 1:
            raise RecordError(f"{cls.__name__} columns differ in length: {sorted(lengths)}")
        n = lengths.pop() if lengths else 0
        cols = {
            name: _column(columns.get(name), dtype, n, default)
            for name, (dtype, default) in cls.FIELDS.items()
        }
        return cls(**cols)

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, Any]]) -> Self:
        """Build a batch from row dicts (slow path: tests, small inputs)."""
        rows = list(rows)
        cols: dict[str, list[Any]] = {}
        for name, (_dtype, default) in cls.FIELDS.items():
            cols[name] = [r.get(name, default) for r in rows]
        return cls.from_columns(cols)

    @classmethod
    def empty(cls) -> Self:
        return cls.from_columns({})

    @classmethod
    def concat(cls, batches: Sequence[Self]) -> Self:
        """Concatenate batches field by field."""
        batches = [b for b in batches if len(b)]
        if not batches:
            return cls.empty()
        if len(batches) == 1:
            return batches[0]
        return cls(
            **{name: np.concatenate([getattr(b, name) for b in batches]) for name in cls.FIELDS}
        )

    def __len__(self) -> int:
        return len(getattr(self, self.TIME))

    def take(self, index: np.ndarray | slice) -> Self:
        """Rows selected by a boolean mask, an integer index array or a slice (views)."""
        return type(self)(**{name: getattr(self, name)[index] for name in self.FIELDS})

    def sorted_by_time(self) -> Self:
        t = getattr(self, self.TIME)
        if len(t) < 2 or bool(np.all(t[:-1] <= t[1:])):
            return self
        return self.take(np.argsort(t, kind="stable"))

    def replace(self, **columns: Any) -> Self:
        """A copy with some columns replaced (arrays are shared, not copied)."""
        cols = {name: getattr(self, name) for name in self.FIELDS}
        for name, values in columns.items():
            if name not in self.FIELDS:
                raise RecordError(f"unknown {type(self).__name__} field: {name}")
            dtype, default = self.FIELDS[name]
            cols[name] = _column(values, dtype, len(self), default)
        return type(self)(**cols)

    def validate(self) -> None:
        """Raise :class:`RecordError` if columns differ in length or have the wrong dtype."""
        n = len(self)
        for name, (dtype, _default) in self.FIELDS.items():
            arr = getattr(self, name)
            if not isinstance(arr, np.ndarray) or arr.shape != (n,):
                raise RecordError(f"{type(self).__name__}.{name}: expected shape ({n},)")
            if arr.dtype != np.dtype(dtype):
                raise RecordError(
                    f"{type(self).__name__}.{name}: dtype {arr.dtype} != {np.dtype(dtype)}"
                )

    def rows(self) -> Iterator[dict[str, Any]]:
        """Yield one plain-Python dict per record (for JSON output and debugging)."""
        cols = {name: getattr(self, name).tolist() for name in self.FIELDS}
        for i in range(len(self)):
            yield {name: cols[name][i] for name in self.FIELDS}


@dataclass(frozen=True, eq=False)
class FlowBatch(_Batch):
    """A batch of flow records (see module docstring for conventions)."""

    FIELDS: ClassVar[dict[str, tuple[Any, Any]]] = FLOW_FIELDS
    TIME: ClassVar[str] = "ts_start"

    ts_start: np.ndarray
    ts_end: np.ndarray
    src: np.ndarray
    dst: np.ndarray
    src_port: np.ndarray
    dst_port: np.ndarray
    proto: np.ndarray
    bytes_out: np.ndarray
    pkts_out: np.ndarray
    bytes_in: np.ndarray
    pkts_in: np.ndarray
    payload_out: np.ndarray
    payload_in: np.ndarray
    tcp_flags: np.ndarray
    service: np.ndarray
    conn_state: np.ndarray
    sensor: np.ndarray
    sampling_rate: np.ndarray
    bidirectional: np.ndarray
    src_inside: np.ndarray
    dst_inside: np.ndarray
    origin: np.ndarray
    offset: np.ndarray


@dataclass(frozen=True, eq=False)
class DnsBatch(_Batch):
    """A batch of DNS transactions (one query and, when seen, its response)."""

    FIELDS: ClassVar[dict[str, tuple[Any, Any]]] = DNS_FIELDS
    TIME: ClassVar[str] = "ts"

    ts: np.ndarray
    src: np.ndarray
    dst: np.ndarray
    src_port: np.ndarray
    dst_port: np.ndarray
    proto: np.ndarray
    query: np.ndarray
    qtype: np.ndarray
    rcode: np.ndarray
    answers_n: np.ndarray
    answers: np.ndarray
    resp_bytes: np.ndarray
    sensor: np.ndarray
    src_inside: np.ndarray
    dst_inside: np.ndarray
    origin: np.ndarray
    offset: np.ndarray


assert [f.name for f in fields(FlowBatch)] == list(FLOW_FIELDS)
assert [f.name for f in fields(DnsBatch)] == list(DNS_FIELDS)


DEFAULT_HOME = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")


@dataclass
class HomeNetworks:
    """Which addresses are inside. Lookups are cached per (interned) address string.

    >>> home = HomeNetworks(["10.0.0.0/8"])
    >>> home.contains(np.array(["10.1.2.3", "8.8.8.8", "bogus"], dtype=object)).tolist()
    [True, False, False]
    """

    cidrs: Sequence[str] = DEFAULT_HOME
    _nets: list[Any] = field(default_factory=list, init=False, repr=False)
    _cache: dict[str, bool] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        try:
            self._nets = [ipaddress.ip_network(c, strict=False) for c in self.cidrs]
        except ValueError as exc:
            raise RecordError(f"invalid home network: {exc}") from exc

    @classmethod
    def default(cls) -> HomeNetworks:
        return cls(DEFAULT_HOME)

    def is_inside(self, ip: str) -> bool:
        got = self._cache.get(ip)
        if got is None:
            try:
                addr = ipaddress.ip_address(ip)
            except ValueError:
                got = False
            else:
                got = any(addr.version == n.version and addr in n for n in self._nets)
            if len(self._cache) > 2_000_000:
                self._cache.clear()
            self._cache[ip] = got
        return got

    def contains(self, ips: np.ndarray) -> np.ndarray:
        if len(ips) == 0:
            return np.zeros(0, dtype=bool)
        cache, slow = self._cache, self.is_inside
        return np.fromiter(
            (cache[ip] if ip in cache else slow(str(ip)) for ip in ips.tolist()),
            dtype=bool,
            count=len(ips),
        )

    def __getstate__(self) -> dict[str, Any]:
        return {"cidrs": list(self.cidrs)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.cidrs = state["cidrs"]
        self._cache = {}
        self.__post_init__()


def annotate_direction(batch: Any, home: HomeNetworks) -> Any:
    """Return ``batch`` with ``src_inside``/``dst_inside`` set from ``home`` (FlowBatch or DnsBatch)."""
    if not len(batch):
        return batch
    return batch.replace(src_inside=home.contains(batch.src), dst_inside=home.contains(batch.dst))
