"""NetFlow v5, v9 (RFC 3954) and IPFIX (RFC 7011) datagrams → unidirectional flows.

One :class:`~stream.decoders.base.Message` is one datagram; ``Message.peer`` is the
exporter address (falls back to the message key, then the origin). Templates are cached
per **(exporter, source id / observation domain, template id)** and decoded with one
precompiled ``struct`` format per template (``iter_unpack`` over a whole data set; only
templates with variable-length elements take a per-record path). Elements are declared as
data in :mod:`.netflow_fields`.

* Data sets that arrive before their template are held (at most ``max_pending`` sets, for
  at most ``pending_timeout`` seconds of *export time*) and decoded when the template
  arrives; otherwise they are dead-lettered ``template_timeout`` (expired) or
  ``unknown_template`` (bound exceeded, or still waiting at :meth:`flush`).
* Sampling: the v5 header interval; v9/IPFIX options data with samplingInterval (34),
  samplerRandomInterval (50) or samplingPacketInterval/Space (305/306), per exporter and
  domain, and per samplerId/selectorId when flow records carry one; an interval inside a
  flow record wins. ``bytes``/``pkts`` are multiplied, ``sampling_rate`` says by what.
* Biflows (RFC 5103, enterprise 29305 reverse elements) fill ``bytes_in``/``pkts_in`` and
  set ``bidirectional``.
* Truncated or malformed datagrams become ``truncated``/``bad_value`` dead letters; the
  decoder never raises. Records decoded before the damage are kept.

>>> import struct
>>> hdr = struct.pack("!HHIIIIBBH", 5, 1, 10_000, 1_700_000_000, 0, 1, 0, 0, 0)
>>> rec = struct.pack("!IIIHHIIIIHHBBBBHHBBH", 0x0A000001, 0x08080808, 0, 0, 0, 3, 180,
...                   4_000, 9_000, 40000, 53, 0, 0, 17, 0, 0, 0, 0, 0, 0)
>>> r = NetflowDecoder().decode([Message(hdr + rec, "udp", 0, peer="192.0.2.1")])
>>> f = next(r.flows.rows())
>>> f["src"], f["dst_port"], f["bytes_out"], f["ts_start"], f["ts_end"], f["sensor"]
('10.0.0.1', 53, 180, 1699999994.0, 1699999999.0, '192.0.2.1')
"""

from __future__ import annotations

import logging
import socket
import struct
import sys
from collections.abc import Sequence
from typing import Any, ClassVar

from pipelines.records import FlowBatch
from stream.decoders.base import MAX_MESSAGE_BYTES, DeadLetter, Decoder, DecodeResult, Message
from stream.decoders.netflow_fields import (
    V5_RECORD,
    VARIABLE,
    Template,
    TemplateError,
    flow_times,
    inline_rates,
)

__all__ = ["NetflowDecoder", "Template"]

log = logging.getLogger(__name__)

COUNTER_MAX = 1 << 46
_V5 = struct.Struct(V5_RECORD[0])
_V5_HDR = struct.Struct("!HHIIIIBBH")
_V5_ROLES = {name: i for i, name in enumerate(V5_RECORD[1])}
_V9_HDR = struct.Struct("!HHIIII")
_IPFIX_HDR = struct.Struct("!HHIII")
_SET = struct.Struct("!HH")
_OUT = (
    "ts_start",
    "ts_end",
    "src",
    "dst",
    "src_port",
    "dst_port",
    "proto",
    "bytes_out",
    "pkts_out",
    "bytes_in",
    "pkts_in",
    "tcp_flags",
    "sampling_rate",
    "bidirectional",
    "sensor",
    "origin",
    "offset",
)


class NetflowDecoder(Decoder):
    """Stateful NetFlow v5/v9/IPFIX decoder (see module docstring)."""

    name: ClassVar[str] = "netflow"

    def __init__(
        self, max_pending: int = 256, pending_timeout: float = 60.0, max_templates: int = 65536
    ) -> None:
        self.max_pending = max_pending
        self.pending_timeout = pending_timeout
        self.max_templates = max_templates
        self.templates: dict[tuple[str, int, int], Template] = {}
        self.samplers: dict[tuple[str, int, int | None], int] = {}
        self.init_ms: dict[tuple[str, int], int] = {}
        self.pending: list[tuple[tuple[str, int, int], bytes, tuple[Any, ...]]] = []
        self.stats: dict[str, int] = {}
        self._v4: dict[int, str] = {}
        self._v6: dict[bytes, str] = {}

    @classmethod
    def sniff(cls, value: bytes) -> bool:
        if len(value) < 16:
            return False
        version = (value[0] << 8) | value[1]
        if version == 10:
            return ((value[2] << 8) | value[3]) <= len(value)
        if version == 9:
            return len(value) >= 20
        return version == 5 and len(value) >= 24 + 48

    # -- driver ---------------------------------------------------------------------
    def decode(self, messages: Sequence[Message]) -> DecodeResult:
        out: dict[str, list[Any]] = {c: [] for c in _OUT}
        result = DecodeResult()
        for msg in messages:
            if len(msg.value) > MAX_MESSAGE_BYTES:
                result.dead.append(
                    DeadLetter.of(msg, "oversized", f"{len(msg.value)} bytes", self.name)
                )
                continue
            try:
                self._datagram(msg, out, result)
            except TemplateError as exc:
                result.dead.append(DeadLetter.of(msg, exc.reason, exc.detail, self.name))
            except (struct.error, ValueError, IndexError, OverflowError, TypeError) as exc:
                result.dead.append(
                    DeadLetter.of(msg, "bad_value", f"malformed datagram: {exc}", self.name)
                )
        result.flows = FlowBatch.from_columns(out) if out["ts_start"] else FlowBatch.empty()
        return result

    def flush(self) -> DecodeResult:
        result = DecodeResult()
        for key, _body, ctx in self.pending:
            result.dead.append(
                DeadLetter.of(
                    ctx[-1], "unknown_template", self._what(key, "no template for"), self.name
                )
            )
        self.pending = []
        return result

    @staticmethod
    def _what(key: tuple[str, int, int], prefix: str) -> str:
        return f"{prefix} exporter {key[0]} domain {key[1]} template {key[2]}"

    def _exporter(self, msg: Message) -> str:
        if msg.peer:
            return msg.peer
        if msg.key:
            return msg.key.decode("utf-8", "replace")
        return msg.origin

    def _datagram(self, msg: Message, out: dict[str, list[Any]], result: DecodeResult) -> None:
        data = msg.value
        if len(data) < 4:
            raise TemplateError("truncated", f"{len(data)}-byte datagram")
        version = (data[0] << 8) | data[1]
        exporter = self._exporter(msg)
        if version == 5:
            self._v5(data, msg, exporter, out)
            return
        if version == 9:
            if len(data) < 20:
                raise TemplateError("truncated", "v9 header")
            _v, _count, uptime, secs, _seq, domain = _V9_HDR.unpack_from(data, 0)
            ctx: tuple[Any, ...] = (9, float(secs), uptime, exporter, domain, msg)
            pos, end = 20, len(data)
        elif version == 10:
            if len(data) < 16:
                raise TemplateError("truncated", "IPFIX header")
            _v, length, secs, _seq, domain = _IPFIX_HDR.unpack_from(data, 0)
            if length > len(data):
                raise TemplateError(
                    "truncated", f"IPFIX message length {length} > datagram {len(data)}"
                )
            if length < 16:
                raise TemplateError("bad_value", f"IPFIX message length {length}")
            ctx = (10, float(secs), None, exporter, domain, msg)
            pos, end = 16, length
        else:
            raise TemplateError("bad_value", f"not NetFlow v5/v9/IPFIX (version {version})")
        self._expire(exporter, ctx[1], msg, result)
        decoded_any = False
        while pos + 4 <= end:
            set_id, set_len = _SET.unpack_from(data, pos)
            if set_len < 4:
                raise TemplateError("bad_value", f"set {set_id} length {set_len} at byte {pos}")
            if pos + set_len > end:
                raise TemplateError(
                    "truncated",
                    f"set {set_id} length {set_len} runs past the datagram at byte {pos}",
                )
            body = data[pos + 4 : pos + set_len]
            pos += set_len
            if set_id in (0, 1) and version == 9:
                self._templates(body, ctx, options=set_id == 1, out=out)
            elif set_id in (2, 3) and version == 10:
                self._templates(body, ctx, options=set_id == 3, out=out)
            elif set_id >= 256:
                key = (exporter, domain, set_id)
                t = self.templates.get(key)
                if t is None:
                    self._hold(key, body, ctx, result)
                else:
                    self._data(t, body, ctx, out)
                    decoded_any = True
        if end - pos not in (0, 1, 2, 3) and version == 10:
            raise TemplateError("truncated", f"{end - pos} stray bytes at the end")
        if not decoded_any:
            result.ignored += 1

    # -- templates ------------------------------------------------------------------
    def _templates(
        self, body: bytes, ctx: tuple[Any, ...], options: bool, out: dict[str, list[Any]]
    ) -> None:
        version, _secs, _up, exporter, domain, _msg = ctx
        pos, n = 0, len(body)
        while pos + 4 <= n:
            if version == 9 and options:
                if pos + 6 > n:
                    break
                tid, scope_len, opt_len = struct.unpack_from("!HHH", body, pos)
                pos += 6
                if scope_len % 4 or opt_len % 4:
                    raise TemplateError(
                        "bad_value", f"v9 options template {tid} lengths {scope_len}/{opt_len}"
                    )
                count, scope = (scope_len + opt_len) // 4, scope_len // 4
                if tid == 0 and count == 0:
                    break  # padding
            else:
                tid, count = _SET.unpack_from(body, pos)
                pos += 4
                scope = 0
                if options and version == 10:
                    if count == 0:
                        self._withdraw(exporter, domain, tid)
                        continue
                    if pos + 2 > n:
                        raise TemplateError("truncated", f"options template {tid} header")
                    (scope,) = struct.unpack_from("!H", body, pos)
                    pos += 2
                elif count == 0:
                    if version == 10:
                        self._withdraw(exporter, domain, tid)
                        continue
                    if tid == 0:
                        break  # v9 padding
            if tid < 256:
                raise TemplateError(
                    "bad_value", f"template id {tid} < 256 from exporter {exporter}"
                )
            fields: list[tuple[int, int, int]] = []
            for _ in range(count):
                if pos + 4 > n:
                    raise TemplateError("truncated", f"template {tid} field list")
                ie, length = _SET.unpack_from(body, pos)
                pos += 4
                pen = 0
                if version == 10 and ie & 0x8000:
                    if pos + 4 > n:
                        raise TemplateError("truncated", f"template {tid} enterprise number")
                    (pen,) = struct.unpack_from("!I", body, pos)
                    pos += 4
                    ie &= 0x7FFF
                if version == 9 and length == VARIABLE:
                    raise TemplateError(
                        "bad_value", f"v9 template {tid} with variable-length field {ie}"
                    )
                fields.append((pen, ie, length))
            key = (exporter, domain, tid)
            self.templates.pop(key, None)
            self.templates[key] = Template.build(fields, scope)
            if len(self.templates) > self.max_templates:
                self.templates.pop(next(iter(self.templates)))
            self._release(key, out)

    def _withdraw(self, exporter: str, domain: int, tid: int) -> None:
        if tid in (2, 3):
            for k in [k for k in self.templates if k[0] == exporter and k[1] == domain]:
                del self.templates[k]
        else:
            self.templates.pop((exporter, domain, tid), None)

    # -- held data sets -------------------------------------------------------------
    def _hold(
        self, key: tuple[str, int, int], body: bytes, ctx: tuple[Any, ...], result: DecodeResult
    ) -> None:
        self.pending.append((key, body, ctx))
        while len(self.pending) > self.max_pending:
            okey, _b, octx = self.pending.pop(0)
            result.dead.append(
                DeadLetter.of(
                    octx[-1],
                    "unknown_template",
                    self._what(okey, "no template (hold queue full) for"),
                    self.name,
                )
            )

    def _release(self, key: tuple[str, int, int], out: dict[str, list[Any]]) -> None:
        if not self.pending:
            return
        keep = []
        for item in self.pending:
            if item[0] == key:
                self._data(self.templates[key], item[1], item[2], out)
            else:
                keep.append(item)
        self.pending = keep

    def _expire(self, exporter: str, now: float, msg: Message, result: DecodeResult) -> None:
        if not self.pending:
            return
        keep = []
        for item in self.pending:
            key, _b, ctx = item
            if key[0] == exporter and now - ctx[1] > self.pending_timeout:
                result.dead.append(
                    DeadLetter.of(
                        ctx[-1],
                        "template_timeout",
                        self._what(key, "template never arrived for"),
                        self.name,
                    )
                )
            else:
                keep.append(item)
        self.pending = keep

    # -- records --------------------------------------------------------------------
    def _v4s(self, values: Sequence[int]) -> list[str]:
        cache = self._v4
        if len(cache) > 1_000_000:
            cache.clear()
        get = cache.get
        out = [get(v, "") for v in values]
        if "" in out:
            for i, v in enumerate(values):
                if not out[i]:
                    s = (
                        sys.intern(socket.inet_ntoa(v.to_bytes(4, "big")))
                        if 0 <= v < 1 << 32
                        else ""
                    )
                    out[i] = cache[v] = s
        return out

    def _v6s(self, values: Sequence[bytes]) -> list[str]:
        cache = self._v6
        if len(cache) > 1_000_000:
            cache.clear()
        get = cache.get
        out = [get(v, "") for v in values]
        if "" in out:
            for i, v in enumerate(values):
                if not out[i]:
                    s = sys.intern(socket.inet_ntop(socket.AF_INET6, v)) if len(v) == 16 else ""
                    out[i] = cache[v] = s
        return out

    def _v5(self, data: bytes, msg: Message, exporter: str, out: dict[str, list[Any]]) -> None:
        if len(data) < 24:
            raise TemplateError("truncated", "v5 header")
        _v, count, uptime, secs, nsecs, _seq, _etype, _eid, sampling = _V5_HDR.unpack_from(data, 0)
        if count == 0 or count > 30:
            raise TemplateError("bad_value", f"v5 record count {count}")
        need = 24 + 48 * count
        if len(data) < need:
            raise TemplateError(
                "truncated", f"v5 datagram {len(data)} bytes < {need} for {count} records"
            )
        rate = (sampling & 0x3FFF) or 1
        rows = list(_V5.iter_unpack(data[24:need]))
        ctx = (5, secs + nsecs / 1e9, uptime, exporter, 0, msg)
        self._emit(_V5_ROLES, list(zip(*rows, strict=True)), ctx, out, fixed_rate=rate)

    def _data(
        self, t: Template, body: bytes, ctx: tuple[Any, ...], out: dict[str, list[Any]]
    ) -> None:
        rows = t.rows(body)
        if not rows:
            return
        cols = list(zip(*rows, strict=True))
        if t.scope or not any(
            r in t.roles for r in ("src4", "src6", "bytes", "pkts", "bytes_total")
        ):
            self._options(t, cols, ctx)
            return
        self._emit(t.roles, cols, ctx, out)

    def _options(self, t: Template, cols: list[Any], ctx: tuple[Any, ...]) -> None:
        exporter, domain = ctx[3], ctx[4]
        r = t.roles
        n = len(cols[0]) if cols else 0
        self.stats["options_records"] = self.stats.get("options_records", 0) + n
        if "init_ms" in r:
            self.init_ms[(exporter, domain)] = cols[r["init_ms"]][-1]
        rates = inline_rates(r, cols, n)
        if rates is None:
            return
        sid_col = (
            cols[r["sampler_id"]]
            if "sampler_id" in r
            else cols[r["selector_id"]]
            if "selector_id" in r
            else None
        )
        for i, rate in enumerate(rates):
            sid = sid_col[i] if sid_col is not None else None
            self.samplers[(exporter, domain, sid)] = rate
            self.samplers[(exporter, domain, None)] = rate

    def _emit(
        self,
        r: dict[str, int],
        cols: list[Any],
        ctx: tuple[Any, ...],
        out: dict[str, list[Any]],
        fixed_rate: int | None = None,
    ) -> None:
        n = len(cols[0])
        exporter, domain, msg = ctx[3], ctx[4], ctx[5]
        if "src4" in r and "dst4" in r:
            src, dst = self._v4s(cols[r["src4"]]), self._v4s(cols[r["dst4"]])
        elif "src6" in r and "dst6" in r:
            src, dst = self._v6s(cols[r["src6"]]), self._v6s(cols[r["dst6"]])
        else:
            self.stats["no_address"] = self.stats.get("no_address", 0) + n
            return
        zeros = [0] * n

        def col(*roles: str) -> list[Any] | None:
            for role in roles:
                if role in r:
                    return list(cols[r[role]])
            return None

        nbytes = col("bytes", "bytes_total", "bytes_post") or zeros
        npkts = col("pkts", "pkts_total", "pkts_post") or zeros
        rbytes, rpkts = col("rbytes", "rbytes_total"), col("rpkts", "rpkts_total")
        bidir = rbytes is not None or rpkts is not None
        if fixed_rate is not None:
            rates = [fixed_rate] * n
        else:
            inline = inline_rates(r, cols, n)
            if inline is not None:
                rates = inline
            elif "sampler_id" in r or "selector_id" in r:
                sids = col("sampler_id", "selector_id") or zeros
                default = self.samplers.get((exporter, domain, None), 1)
                rates = [self.samplers.get((exporter, domain, s), default) for s in sids]
            else:
                rates = [self.samplers.get((exporter, domain, None), 1)] * n
        base = self.init_ms.get((exporter, domain))
        t0 = flow_times(r, cols, ctx[1], ctx[2], base, "start")
        t1 = flow_times(r, cols, ctx[1], ctx[2], base, "end")
        if t1 is None:
            t1 = t0 if t0 is not None else [ctx[1]] * n
        if t0 is None:
            t0 = t1
        flags = col("flags") or zeros
        rflags = col("rflags")
        if rflags is not None:
            flags = [a | b for a, b in zip(flags, rflags, strict=True)]

        def scaled(values: list[int] | None) -> list[int]:
            if values is None:
                return zeros
            if unsampled:
                return values
            return [a * k for a, k in zip(values, rates, strict=True)]

        unsampled = rates.count(1) == n
        out_b, out_p, in_b, in_p = scaled(nbytes), scaled(npkts), scaled(rbytes), scaled(rpkts)
        if max(max(out_b), max(out_p), max(in_b), max(in_p)) > COUNTER_MAX:
            raise TemplateError(
                "bad_value", f"counter above {COUNTER_MAX} from exporter {exporter}"
            )
        sport = col("sport") or [-1] * n
        dport = col("dport") or [-1] * n
        ext: dict[str, list[Any]] = {
            "ts_start": t0,
            "ts_end": t1,
            "src": src,
            "dst": dst,
            "src_port": sport,
            "dst_port": dport,
            "proto": col("proto") or zeros,
            "bytes_out": out_b,
            "pkts_out": out_p,
            "bytes_in": in_b,
            "pkts_in": in_p,
            "tcp_flags": [f & 0xFFFF for f in flags],
            "sampling_rate": rates,
            "bidirectional": [bidir] * n,
            "sensor": [exporter] * n,
            "origin": [msg.origin] * n,
            "offset": [msg.offset] * n,
        }
        for c, values in ext.items():
            out[c].extend(values)
