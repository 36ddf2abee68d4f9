"""Raw record accumulation and the conversion to canonical :class:`FlowBatch`/:class:`DnsBatch`.

Generators describe a connection by a few integers and floats (address indices, ports,
payload sizes, a service code and a connection-state code). :meth:`Parts.build` turns the
accumulated rows into canonical batches in one vectorised pass: it derives packets and
IP-layer bytes from payload sizes, TCP flags from the state, turns every DNS transaction
into its udp/53 flow (and the resolver's upstream forward on a cache miss), and sorts.

>>> from pipelines.simulate.network import Network
>>> net = Network(hosts=20, seed=0)
>>> p = Parts(net, np.random.default_rng(0))
>>> p.flow(np.array([5.0, 1.0]), 0.5, np.array([10, 11]), 0, 443, TCP, 800, 20000, SSL)
>>> flows, dns = p.build(offset=0)
>>> flows.ts_start.tolist(), flows.dst_port.tolist(), flows.conn_state.tolist()
([1.0, 5.0], [443, 443], ['SF', 'SF'])
>>> bool((flows.bytes_out > 800).all()), len(dns)
(True, 0)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipelines.records import DnsBatch, FlowBatch
from pipelines.simulate.network import Network

__all__ = ["Parts"]

TCP, UDP = 6, 17
SERVICES = (
    "",
    "ssl",
    "http",
    "dns",
    "ntp",
    "krb",
    "krb_tcp",
    "ldap_tcp",
    "smb",
    "dce_rpc",
    "rdp",
    "ssh",
    "smtp",
    "snmp",
    "ipp",
    "ldap_udp",
)
(
    NONE,
    SSL,
    HTTP,
    DNS,
    NTP,
    KRB,
    KRB_TCP,
    LDAP,
    SMB,
    DCE_RPC,
    RDP,
    SSH,
    SMTP,
    SNMP,
    IPP,
    LDAP_UDP,
) = range(len(SERVICES))
STATES = ("SF", "S0", "REJ")
SF, S0, REJ = 0, 1, 2
_FLAGS = np.array([0x1B, 0x02, 0x16], dtype=np.uint16)  # FIN|SYN|PSH|ACK, SYN, SYN|RST|ACK
_SVC = np.array(SERVICES, dtype=object)
_STATE = np.array(STATES, dtype=object)
HDR = 60  # IP + TCP header bytes per packet (options included)
MSS = 1400

_FLOW_KEYS = ("ts", "dur", "src", "dst", "sport", "dport", "proto", "pout", "pin", "svc", "state")
_DNS_KEYS = ("ts", "src", "dst", "q", "qtype", "rcode", "ans", "ans_n", "fwd")


def _arr(value: Any, n: int, dtype: Any) -> np.ndarray:
    a = np.asarray(value, dtype=dtype)
    return np.full(n, a, dtype=dtype) if a.ndim == 0 else a


class Parts:
    """Accumulates raw flow and DNS rows for one time slot; :meth:`build` makes batches."""

    def __init__(self, net: Network, rng: np.random.Generator) -> None:
        self.net = net
        self.rng = rng
        self.flows: list[dict[str, np.ndarray]] = []
        self.dns_rows: list[dict[str, np.ndarray]] = []

    def flow(
        self,
        ts: np.ndarray,
        dur: Any,
        src: Any,
        dst: Any,
        dport: Any,
        proto: Any,
        pout: Any,
        pin: Any,
        svc: Any,
        state: Any = SF,
        sport: Any = None,
    ) -> None:
        """Add connections (arrays or scalars broadcast to ``len(ts)``); sizes are payload bytes."""
        n = len(ts)
        if n == 0:
            return
        if sport is None:
            sport = self.rng.integers(49152, 65536, n)
        row = {
            "ts": np.asarray(ts, dtype=np.float64),
            "dur": _arr(dur, n, np.float64),
            "src": _arr(src, n, np.int32),
            "dst": _arr(dst, n, np.int32),
            "sport": _arr(sport, n, np.int32),
            "dport": _arr(dport, n, np.int32),
            "proto": _arr(proto, n, np.uint8),
            "pout": _arr(pout, n, np.int64),
            "pin": _arr(pin, n, np.int64),
            "svc": _arr(svc, n, np.int8),
            "state": _arr(state, n, np.int8),
        }
        self.flows.append(row)

    def dns(
        self,
        ts: np.ndarray,
        src: Any,
        dst: Any,
        q: np.ndarray,
        qtype: Any = 1,
        rcode: Any = 0,
        ans: Any = "",
        ans_n: Any = 0,
        fwd: Any = False,
    ) -> None:
        """Add DNS transactions from ``src`` to resolver ``dst``; ``fwd`` marks a cache miss."""
        n = len(ts)
        if n == 0:
            return
        ans_arr = np.empty(n, dtype=object)
        ans_arr[:] = ans
        self.dns_rows.append(
            {
                "ts": np.asarray(ts, dtype=np.float64),
                "src": _arr(src, n, np.int32),
                "dst": _arr(dst, n, np.int32),
                "q": np.asarray(q, dtype=object),
                "qtype": _arr(qtype, n, np.int32),
                "rcode": _arr(rcode, n, np.int32),
                "ans": ans_arr,
                "ans_n": _arr(ans_n, n, np.int32),
                "fwd": _arr(fwd, n, np.bool_),
            }
        )

    # -- build ---------------------------------------------------------------------------
    def _cat(
        self, rows: list[dict[str, np.ndarray]], keys: tuple[str, ...]
    ) -> dict[str, np.ndarray]:
        return {k: np.concatenate([r[k] for r in rows]) for k in keys}

    def _dns_table(self) -> dict[str, np.ndarray] | None:
        if not self.dns_rows:
            return None
        d = self._cat(self.dns_rows, _DNS_KEYS)
        fwd = np.flatnonzero(d["fwd"])
        if len(fwd):  # the resolver (a DC) asks upstream on a cache miss
            up = self.net.forwarders[self.rng.integers(0, len(self.net.forwarders), len(fwd))]
            extra = {k: d[k][fwd] for k in _DNS_KEYS}
            extra["ts"] = extra["ts"] + self.rng.uniform(0.0005, 0.003, len(fwd))
            extra["src"] = d["dst"][fwd]
            extra["dst"] = up.astype(np.int32)
            extra["fwd"] = np.zeros(len(fwd), dtype=np.bool_)
            d = {k: np.concatenate([d[k], extra[k]]) for k in _DNS_KEYS}
        qlen = np.fromiter(map(len, d["q"].tolist()), dtype=np.int64, count=len(d["q"]))
        ans_len = np.fromiter(map(len, d["ans"].tolist()), dtype=np.int64, count=len(d["q"]))
        d["qbytes"] = 12 + qlen + 6 + 11  # header + qname + qtype/class + EDNS OPT
        rr = np.where(d["qtype"] == 16, ans_len + 12, np.where(d["qtype"] == 28, 28, 16))
        d["rbytes"] = np.where(d["rcode"] >= 0, d["qbytes"] + d["ans_n"] * rr, 0)
        d["sport"] = self.rng.integers(49152, 65536, len(qlen)).astype(np.int32)
        return d

    def build(
        self, offset: int = 0, dns_offset: int = 0, lo: float = -np.inf, hi: float = np.inf
    ) -> tuple[FlowBatch, DnsBatch]:
        """Canonical, time-sorted batches; ``offset``/``dns_offset`` number the records.

        Start times are clipped into ``[lo, hi)`` so that consecutive slots stay globally sorted
        (a lookup a few ms before a connection at the top of the hour stays in its slot).
        """
        d = self._dns_table()
        if d is not None and (np.isfinite(lo) or np.isfinite(hi)):
            d["ts"] = d["ts"].clip(lo, np.nextafter(hi, -np.inf))
        rows = list(self.flows)
        if d is not None:
            n = len(d["ts"])
            rows.append(
                {
                    "ts": d["ts"],
                    "dur": self.rng.uniform(0.0004, 0.03, n),
                    "src": d["src"],
                    "dst": d["dst"],
                    "sport": d["sport"],
                    "dport": np.full(n, 53, np.int32),
                    "proto": np.full(n, UDP, np.uint8),
                    "pout": d["qbytes"],
                    "pin": d["rbytes"],
                    "svc": np.full(n, DNS, np.int8),
                    "state": np.where(d["rcode"] >= 0, SF, S0).astype(np.int8),
                }
            )
        flows = self._flows(rows, offset, lo, hi) if rows else FlowBatch.empty()
        dns = self._dns(d, dns_offset) if d is not None else DnsBatch.empty()
        return flows, dns

    def _flows(
        self, rows: list[dict[str, np.ndarray]], offset: int, lo: float, hi: float
    ) -> FlowBatch:
        f = self._cat(rows, _FLOW_KEYS)
        if np.isfinite(lo) or np.isfinite(hi):
            f["ts"] = f["ts"].clip(lo, np.nextafter(hi, -np.inf))
        order = np.argsort(f["ts"], kind="stable")
        f = {k: v[order] for k, v in f.items()}
        n = len(order)
        tcp = f["proto"] == TCP
        st = f["state"]
        pout = np.where(st == SF, f["pout"], 0)
        pin = np.where(st == SF, f["pin"], 0)
        data_out = -(-pout // MSS)
        data_in = -(-pin // MSS)
        pk_out = np.where(tcp, 3 + data_out + data_in // 2, np.maximum(1, -(-pout // 1472)))
        pk_in = np.where(
            tcp, 2 + data_in + data_out // 2, np.where(pin > 0, np.maximum(1, -(-pin // 1472)), 0)
        )
        pk_out = np.where(
            st == S0, np.where(tcp, 1 + (f["sport"] % 3), 1), np.where(st == REJ, 1, pk_out)
        )
        pk_in = np.where(st == S0, 0, np.where(st == REJ, 1, pk_in))
        hdr = np.where(tcp, HDR, 28)
        addrs = self.net.addr_arr()
        inside = np.zeros(len(addrs), dtype=np.bool_)
        inside[: self.net.n_internal] = True
        dur = np.where(st == SF, f["dur"], np.where(st == S0, 3.0 * (pk_out - 1), 0.0005))
        const = {"sensor": "sim", "origin": "sim"}
        cols: dict[str, Any] = {
            "ts_start": f["ts"],
            "ts_end": f["ts"] + dur,
            "src": addrs[f["src"]],
            "dst": addrs[f["dst"]],
            "src_port": f["sport"],
            "dst_port": f["dport"],
            "proto": f["proto"],
            "bytes_out": pout + hdr * pk_out,
            "pkts_out": pk_out,
            "bytes_in": pin + hdr * pk_in,
            "pkts_in": pk_in,
            "payload_out": pout,
            "payload_in": pin,
            "tcp_flags": np.where(tcp, _FLAGS[st], 0).astype(np.uint16),
            "service": _SVC[f["svc"]],
            "conn_state": _STATE[st],
            "sampling_rate": np.ones(n, np.int64),
            "bidirectional": np.ones(n, np.bool_),
            "src_inside": inside[f["src"]],
            "dst_inside": inside[f["dst"]],
            "offset": np.arange(offset, offset + n, dtype=np.int64),
        }
        for k, v in const.items():
            col = np.empty(n, dtype=object)
            col[:] = v
            cols[k] = col
        return FlowBatch(**cols)

    def _dns(self, d: dict[str, np.ndarray], offset: int) -> DnsBatch:
        order = np.argsort(d["ts"], kind="stable")
        d = {k: v[order] for k, v in d.items()}
        n = len(order)
        addrs = self.net.addr_arr()
        inside = np.zeros(len(addrs), dtype=np.bool_)
        inside[: self.net.n_internal] = True
        sensor = np.empty(n, dtype=object)
        sensor[:] = "sim"
        return DnsBatch(
            ts=d["ts"],
            src=addrs[d["src"]],
            dst=addrs[d["dst"]],
            src_port=d["sport"],
            dst_port=np.full(n, 53, np.int32),
            proto=np.full(n, UDP, np.uint8),
            query=d["q"],
            qtype=d["qtype"],
            rcode=d["rcode"],
            answers_n=d["ans_n"],
            answers=d["ans"],
            resp_bytes=d["rbytes"].astype(np.int64),
            sensor=sensor,
            src_inside=inside[d["src"]],
            dst_inside=inside[d["dst"]],
            origin=sensor.copy(),
            offset=np.arange(offset, offset + n, dtype=np.int64),
        )
