"""Packet summaries → bidirectional flows, vectorised per batch; DNS query/response pairing.

:class:`FlowTable` keeps open flows as columnar arrays. Each :meth:`FlowTable.add` call
concatenates the open flows (as pre-aggregated rows) with the new packets, groups rows by
conversation (canonical 5-tuple, both directions together), sorts each group by time and
splits it into flows where

* the gap between consecutive packets exceeds the idle timeout (``tcp_idle_timeout`` for
  TCP, ``idle_timeout`` for UDP/ICMP/other),
* a TCP flow is closed (FIN seen in both directions, or any RST) and the next packet
  comes after ``close_linger`` seconds or is a new SYN,
* a flow would last longer than ``active_timeout`` (a long flow is cut into pieces).

Defaults follow Zeek (``tcp_inactivity_timeout`` 5 min, ``udp/icmp_inactivity_timeout``
1 min, ``tcp_close_delay`` / ``tcp_reset_delay`` 5 s) plus a 30 min active timeout so
that long sessions report while they run, as NetFlow exporters do. Time comes only from
the packets; :meth:`FlowTable.flush` emits everything still open.

The originator is the first packet's source, except that a SYN-ACK first packet makes
its destination the originator, and a first non-SYN packet from a port < 1024 to a port
>= 1024 is taken as a reply (the capture started mid-conversation).

>>> ft = FlowTable()
>>> cols = dict(ts=[0.0, 0.1, 0.2, 0.3], src=["10.0.0.1", "1.2.3.4", "10.0.0.1", "1.2.3.4"],
...             dst=["1.2.3.4", "10.0.0.1", "1.2.3.4", "10.0.0.1"], sport=[5000, 80, 5000, 80],
...             dport=[80, 5000, 80, 5000], proto=[6] * 4, ip_len=[60, 60, 40, 500],
...             tcp_flags=[0x02, 0x12, 0x10, 0x11], payload_len=[0, 0, 0, 460])
>>> len(ft.add(cols))
0
>>> f = next(ft.flush().rows())
>>> f["src"], f["dst_port"], f["bytes_out"], f["pkts_in"], f["service"], f["conn_state"]
('10.0.0.1', 80, 100, 2, 'http', 'S3')
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from pipelines.dns_pairing import DnsPairer
from pipelines.records import FlowBatch

__all__ = ["DnsPairer", "FlowTable", "conn_state", "service_names"]

FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10

#: responder port -> service name, per IP protocol (Zeek-style names)
_SERVICE_SPEC = {
    6: "53 dns 80 http 8080 http 8000 http 443 ssl 8443 ssl 445 smb 139 smb 135 dce_rpc 3389 rdp "
    "22 ssh 389 ldap 636 ldap 3268 ldap 3269 ldap 88 kerberos 5985 winrm 5986 winrm 25 smtp 21 ftp 23 telnet",
    17: "53 dns 123 ntp 88 kerberos 389 ldap 137 netbios 138 netbios 3389 rdp 67 dhcp 68 dhcp 443 quic "
    "5353 dns 161 snmp",
}
_SERVICES: dict[tuple[int, int], str] = {}
for _p, _spec in _SERVICE_SPEC.items():
    _words = _spec.split()
    for _num, _name in zip(_words[::2], _words[1::2], strict=True):
        _SERVICES[(_p, int(_num))] = _name

# per-proto lookup tables: port -> service name
_SERVICE_TABLE = {p: np.full(65536, "", dtype=object) for p in (6, 17)}
for (_p, _port), _name in _SERVICES.items():
    _SERVICE_TABLE[_p][_port] = _name

_COLS = (
    "lo",
    "lo_port",
    "hi",
    "hi_port",
    "proto",
    "t0",
    "t1",
    "b_lo",
    "p_lo",
    "b_hi",
    "p_hi",
    "pl_lo",
    "pl_hi",
    "f_lo",
    "f_hi",
    "orig_lo",
    "origin",
    "offset",
)
_DTYPES: dict[str, Any] = {
    "lo": np.int64,
    "lo_port": np.int64,
    "hi": np.int64,
    "hi_port": np.int64,
    "proto": np.int64,
    "t0": np.float64,
    "t1": np.float64,
    "b_lo": np.int64,
    "p_lo": np.int64,
    "b_hi": np.int64,
    "p_hi": np.int64,
    "pl_lo": np.int64,
    "pl_hi": np.int64,
    "f_lo": np.int64,
    "f_hi": np.int64,
    "orig_lo": np.bool_,
    "origin": object,
    "offset": np.int64,
}


def service_names(proto: np.ndarray, port: np.ndarray) -> np.ndarray:
    """Service guessed from the responder's well-known port.

    >>> service_names(np.array([6, 17, 6]), np.array([445, 53, 12345])).tolist()
    ['smb', 'dns', '']
    """
    out = np.full(len(port), "", dtype=object)
    ok = (port >= 0) & (port < 65536)
    for p, table in _SERVICE_TABLE.items():
        m = ok & (proto == p)
        out[m] = table[port[m]]
    return out


def conn_state(
    proto: np.ndarray, f_out: np.ndarray, f_in: np.ndarray, pkts_in: np.ndarray
) -> np.ndarray:
    """Zeek-like connection state from the OR-ed flags of each direction (best effort).

    >>> conn_state(np.array([6, 6, 6, 17]), np.array([2, 2, 0x13, 0]), np.array([0, 0x14, 0x13, 0]),
    ...            np.array([0, 1, 3, 0])).tolist()
    ['S0', 'REJ', 'SF', 'S0']
    """
    f_out, f_in = f_out.astype(np.int64), f_in.astype(np.int64)
    syn_o, syn_i = (f_out & SYN) > 0, (f_in & SYN) > 0
    fin_o, fin_i = (f_out & FIN) > 0, (f_in & FIN) > 0
    rst_o, rst_i = (f_out & RST) > 0, (f_in & RST) > 0
    none_in = pkts_in == 0
    est = syn_o & syn_i
    tcp = np.select(
        [
            syn_o & none_in & fin_o,
            syn_o & none_in & ~rst_o,
            syn_o & ~syn_i & rst_i,
            est & rst_o,
            est & rst_i,
            est & fin_o & fin_i,
            est & fin_o,
            est & fin_i,
            est,
        ],
        ["SH", "S0", "REJ", "RSTO", "RSTR", "SF", "S2", "S3", "S1"],
        default="OTH",
    )
    other = np.where(none_in, "S0", "SF")
    out = np.where(proto == 6, tcp, np.where(np.isin(proto, (1, 58)), "OTH", other))
    return out.astype(object)


class FlowTable:
    """Aggregate packet summaries into bidirectional flows (see module docstring)."""

    def __init__(
        self,
        active_timeout: float = 1800.0,
        idle_timeout: float = 60.0,
        tcp_idle_timeout: float = 300.0,
        close_linger: float = 5.0,
        max_flows: int = 200_000,
        sensor: str = "",
    ) -> None:
        self.active_timeout = active_timeout
        self.idle_timeout = idle_timeout
        self.tcp_idle_timeout = tcp_idle_timeout
        self.close_linger = close_linger
        self.max_flows = max_flows
        self.sensor = sensor
        self.addr_ids: dict[str, int] = {}
        self.addrs: list[str] = []
        self.open: dict[str, np.ndarray] = {c: np.empty(0, dtype=_DTYPES[c]) for c in _COLS}
        self.evicted = 0
        self.now = float("-inf")

    def __len__(self) -> int:
        return len(self.open["t0"])

    # -- helpers --------------------------------------------------------------------
    def _encode(self, values: Any) -> np.ndarray:
        ids, get = self.addr_ids, self.addr_ids.get
        lst = values.tolist() if isinstance(values, np.ndarray) else list(values)
        out = [get(a, -1) for a in lst]
        if -1 in out:
            for i, a in enumerate(lst):
                if out[i] < 0:
                    got = ids.get(a)
                    if got is None:
                        got = ids[a] = len(self.addrs)
                        self.addrs.append(a)
                    out[i] = got
        return np.asarray(out, dtype=np.int64)

    def _compact(self) -> None:
        """Drop address ids no open flow uses (keeps the table bounded)."""
        used = np.unique(np.concatenate([self.open["lo"], self.open["hi"]]))
        names = [self.addrs[i] for i in used.tolist()]
        remap = np.full(len(self.addrs), -1, dtype=np.int64)
        remap[used] = np.arange(len(used))
        self.open["lo"] = remap[self.open["lo"]]
        self.open["hi"] = remap[self.open["hi"]]
        self.addrs = names
        self.addr_ids = {a: i for i, a in enumerate(names)}

    # -- main entry -----------------------------------------------------------------
    def add(self, cols: Mapping[str, Any], origin: Any = "", offset: Any = None) -> FlowBatch:
        """Add packets (columns ts, src, dst, sport, dport, proto, ip_len, tcp_flags,
        payload_len; optional ``origin``/``offset`` per packet; optional ``addrs`` with
        ``src_code``/``dst_code``, the addresses as indexes into ``addrs``) and return ended flows."""
        ts = np.asarray(cols["ts"], dtype=np.float64)
        n = len(ts)
        if n == 0:
            return FlowBatch.empty()
        if cols.get("addrs") is not None and cols.get("src_code") is not None:
            ids = self._encode(cols["addrs"])  # one lookup per distinct address
            src = ids[np.asarray(cols["src_code"], dtype=np.int64)]
            dst = ids[np.asarray(cols["dst_code"], dtype=np.int64)]
        else:
            src = self._encode(cols["src"])
            dst = self._encode(cols["dst"])
        sport = np.asarray(cols["sport"], dtype=np.int64)
        dport = np.asarray(cols["dport"], dtype=np.int64)
        proto = np.asarray(cols["proto"], dtype=np.int64)
        ip_len = np.asarray(cols["ip_len"], dtype=np.int64)
        flags = np.asarray(cols["tcp_flags"], dtype=np.int64)
        plen = np.asarray(cols.get("payload_len", np.zeros(n)), dtype=np.int64)
        org = cols.get("origin", origin)
        origins = (
            np.asarray(org, dtype=object)
            if not isinstance(org, str)
            else np.full(n, org, dtype=object)
        )
        offs = np.asarray(
            cols.get("offset", offset) if cols.get("offset", offset) is not None else np.arange(n),
            dtype=np.int64,
        )

        src_lo = (src < dst) | ((src == dst) & (sport <= dport))
        tcp = proto == 6
        synack = tcp & ((flags & (SYN | ACK)) == (SYN | ACK))
        pure_syn = tcp & ((flags & (SYN | ACK)) == SYN)
        reply_port = ~tcp | ((flags & SYN) == 0)
        flip = synack | (reply_port & (sport >= 0) & (sport < 1024) & (dport >= 1024))
        z = np.zeros(n, dtype=np.int64)
        rows = {
            "lo": np.where(src_lo, src, dst),
            "lo_port": np.where(src_lo, sport, dport),
            "hi": np.where(src_lo, dst, src),
            "hi_port": np.where(src_lo, dport, sport),
            "proto": proto,
            "t0": ts,
            "t1": ts,
            "b_lo": np.where(src_lo, ip_len, z),
            "p_lo": src_lo.astype(np.int64),
            "b_hi": np.where(src_lo, z, ip_len),
            "p_hi": (~src_lo).astype(np.int64),
            "pl_lo": np.where(src_lo, plen, z),
            "pl_hi": np.where(src_lo, z, plen),
            "f_lo": np.where(src_lo, flags, z),
            "f_hi": np.where(src_lo, z, flags),
            "orig_lo": src_lo ^ flip,
            "origin": origins,
            "offset": offs,
        }
        self.now = max(self.now, float(np.max(ts)))
        m = len(self)
        allr = {c: np.concatenate([self.open[c], rows[c]]) for c in _COLS}
        rank = np.concatenate([np.zeros(m, dtype=np.int8), np.ones(n, dtype=np.int8)])
        syn = np.concatenate([np.zeros(m, dtype=bool), pure_syn])
        return self._segment(allr, rank, syn, final=False)

    def flush(self) -> FlowBatch:
        """Emit every open flow."""
        allr = self.open
        self.open = {c: np.empty(0, dtype=_DTYPES[c]) for c in _COLS}
        return self._emit(allr)

    # -- segmentation -----------------------------------------------------------------
    def _segment(
        self, r: dict[str, np.ndarray], rank: np.ndarray, syn: np.ndarray, final: bool
    ) -> FlowBatch:
        order = np.lexsort(
            (r["t0"], rank, r["proto"], r["hi_port"], r["hi"], r["lo_port"], r["lo"])
        )
        r = {c: v[order] for c, v in r.items()}
        syn = syn[order]
        n = len(order)
        idx = np.arange(n)
        newgroup = np.zeros(n, dtype=bool)
        newgroup[:1] = True
        for c in ("lo", "lo_port", "hi", "hi_port", "proto"):
            newgroup[1:] |= r[c][1:] != r[c][:-1]
        idle = np.where(r["proto"] == 6, self.tcp_idle_timeout, self.idle_timeout)
        gap = np.zeros(n)
        gap[1:] = r["t0"][1:] - r["t1"][:-1]
        bound = newgroup | (gap > idle)
        fin_lo = (r["f_lo"] & FIN) > 0
        fin_hi = (r["f_hi"] & FIN) > 0
        rst = ((r["f_lo"] | r["f_hi"]) & RST) > 0
        start = np.maximum.accumulate(np.where(bound, idx, 0))

        def seen(mask: np.ndarray) -> np.ndarray:
            return np.maximum.accumulate(np.where(mask, idx, -1)) >= start

        closed = seen(rst) | (seen(fin_lo) & seen(fin_hi))
        cand = np.zeros(n, dtype=bool)
        cand[1:] = closed[:-1] & ((gap[1:] > self.close_linger) | syn[1:])
        cand |= (r["t1"] - r["t0"][start]) > self.active_timeout
        cand &= ~bound
        if cand.any():
            # A segment with one candidate is final once split there (state only resets).
            # Segments with several are rescanned row by row: each split resets the state.
            segs, counts = np.unique(start[cand], return_counts=True)
            single = np.isin(start, segs[counts == 1]) & cand
            bound |= single
            for seg in segs[counts > 1].tolist():
                stop = int(np.searchsorted(start, seg, side="right"))
                self._rescan(seg, stop, bound, r, gap, syn, fin_lo, fin_hi, rst)
        starts = np.flatnonzero(bound)
        agg: dict[str, np.ndarray] = {}
        for c in ("lo", "lo_port", "hi", "hi_port", "proto", "orig_lo", "origin", "offset"):
            agg[c] = r[c][starts]
        for c in ("b_lo", "p_lo", "b_hi", "p_hi", "pl_lo", "pl_hi"):
            agg[c] = np.add.reduceat(r[c], starts)
        for c in ("f_lo", "f_hi"):
            agg[c] = np.bitwise_or.reduceat(r[c], starts)
        agg["t0"] = np.minimum.reduceat(r["t0"], starts)
        agg["t1"] = np.maximum.reduceat(r["t1"], starts)
        is_last = np.ones(len(starts), dtype=bool)
        is_last[:-1] = newgroup[starts[1:]]
        now = self.now
        idle_s = np.where(agg["proto"] == 6, self.tcp_idle_timeout, self.idle_timeout)
        f_all = agg["f_lo"] | agg["f_hi"]
        closed_s = ((f_all & RST) > 0) | (((agg["f_lo"] & FIN) > 0) & ((agg["f_hi"] & FIN) > 0))
        expired = ((now - agg["t1"]) > idle_s) | (
            closed_s & ((now - agg["t1"]) > self.close_linger)
        )
        expired |= (now - agg["t0"]) > self.active_timeout
        keep = is_last & ~expired & (not final)
        if np.count_nonzero(keep) > self.max_flows:
            kept = np.flatnonzero(keep)
            oldest = kept[np.argsort(agg["t1"][kept], kind="stable")[: len(kept) - self.max_flows]]
            keep[oldest] = False
            self.evicted += len(oldest)
        self.open = {c: agg[c][keep] for c in _COLS}
        out = self._emit({c: agg[c][~keep] for c in _COLS})
        if len(self.addrs) > max(4 * self.max_flows, 1 << 20):
            self._compact()
        return out

    def _rescan(
        self,
        lo: int,
        hi: int,
        bound: np.ndarray,
        r: dict[str, np.ndarray],
        gap: np.ndarray,
        syn: np.ndarray,
        fin_lo: np.ndarray,
        fin_hi: np.ndarray,
        rst: np.ndarray,
    ) -> None:
        """Exact sequential splitting of rows ``lo:hi`` (one pre-split segment)."""
        t0, t1 = r["t0"][lo:hi].tolist(), r["t1"][lo:hi].tolist()
        g, sy = gap[lo:hi].tolist(), syn[lo:hi].tolist()
        fl, fh, rs = fin_lo[lo:hi].tolist(), fin_hi[lo:hi].tolist(), rst[lo:hi].tolist()
        first, a, b, c = t0[0], fl[0], fh[0], rs[0]
        for i in range(1, hi - lo):
            if ((c or (a and b)) and (g[i] > self.close_linger or sy[i])) or t1[
                i
            ] - first > self.active_timeout:
                bound[lo + i] = True
                first, a, b, c = t0[i], fl[i], fh[i], rs[i]
            else:
                a, b, c = a or fl[i], b or fh[i], c or rs[i]

    def _emit(self, a: dict[str, np.ndarray]) -> FlowBatch:
        if len(a["t0"]) == 0:
            return FlowBatch.empty()
        names = np.asarray(self.addrs, dtype=object)
        o = a["orig_lo"]
        proto = a["proto"]
        dport = np.where(o, a["hi_port"], a["lo_port"])
        f_out = np.where(o, a["f_lo"], a["f_hi"])
        f_in = np.where(o, a["f_hi"], a["f_lo"])
        pkts_in = np.where(o, a["p_hi"], a["p_lo"])
        batch = FlowBatch.from_columns(
            {
                "ts_start": a["t0"],
                "ts_end": a["t1"],
                "src": names[np.where(o, a["lo"], a["hi"])],
                "dst": names[np.where(o, a["hi"], a["lo"])],
                "src_port": np.where(o, a["lo_port"], a["hi_port"]),
                "dst_port": dport,
                "proto": proto,
                "bytes_out": np.where(o, a["b_lo"], a["b_hi"]),
                "pkts_out": np.where(o, a["p_lo"], a["p_hi"]),
                "bytes_in": np.where(o, a["b_hi"], a["b_lo"]),
                "pkts_in": pkts_in,
                "payload_out": np.where(o, a["pl_lo"], a["pl_hi"]),
                "payload_in": np.where(o, a["pl_hi"], a["pl_lo"]),
                "tcp_flags": f_out | f_in,
                "service": service_names(proto, dport),
                "conn_state": conn_state(proto, f_out, f_in, pkts_in),
                "sensor": np.full(len(o), self.sensor, dtype=object),
                "sampling_rate": None,
                "bidirectional": np.ones(len(o), dtype=bool),
                "origin": a["origin"],
                "offset": a["offset"],
            }
        )
        return batch.sorted_by_time()
