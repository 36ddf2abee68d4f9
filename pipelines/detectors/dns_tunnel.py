"""DNS tunnelling and slow DNS exfiltration per (querying host, registered domain).

The entity is the host that sends the query (``DnsBatch.src``), whether it is a client
or a forwarding resolver, and whatever the resolver's address: DNS rows are used
regardless of ``dst_inside``. Names are split with the Public Suffix List snapshot
(:mod:`pipelines.domains`, no network); address lookups (DNSBL ``4.3.2.1.zen...``, PTR)
are never counted as encoded data.

Per window and pair: queries, unique sub-domains (exact, capped set of hashes),
unique *encoded-looking* names (long, high-entropy labels), unique names of unusual
record types (TXT, NULL, CNAME, MX, KEY, ANY, private ≥ 256), NXDOMAIN ratio, mean name
length / entropy, bytes encoded in names, and A/AAAA answers not followed by a
connection from the same host to the answer within ``follow_seconds``. Per tracked
pair: a HyperLogLog of encoded names in the current clock hour and a 48-hour ring of
hourly encoded-name counts.

Triggers (any one fires; ``ratio`` = observed / threshold):

* burst tunnel: ``burst_encoded`` unique encoded names in one window, or
  ``burst_unusual`` unique unusual-type names forming ≥ half of the pair's queries;
* hourly volume: ``hour_encoded`` unique encoded names in the current clock hour;
* slow exfiltration: ``slow_hours`` of the last 48 hours with ≥ ``slow_hour_min`` unique
  encoded names each (a few hundred queries an hour for days).

``score = min(1, 0.55 + 0.15·log2(max ratio) + 0.3·shape)`` with ``shape`` the larger of
the encoded and unusual-type shares of unique names.

>>> import numpy as np
>>> from pipelines.records import DnsBatch
>>> names = [f"{i:04d}{'k7q2xz9w4m' * 3}.t.example.org" for i in range(40)]
>>> d = DnsBatch.from_columns({"ts": np.arange(40.0), "src": ["10.0.0.9"] * 40, "dst": ["10.0.0.53"] * 40,
...                            "query": names, "qtype": [16] * 40, "rcode": [0] * 40})
>>> det = DnsTunnelDetector(warmup_seconds=0)
>>> det.ingest(FlowBatch.empty(), d, Window(0, 0.0, 300.0))
>>> [(f.kind, f.entity, f.domain) for f in det.process_window(Window(0, 0.0, 300.0))]
[('dns_tunnel', '10.0.0.9', 'example.org')]
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from pipelines.detectors._dns_finding import tunnel_finding
from pipelines.detectors._dnsfeatures import UNUSUAL_QTYPES, query_features
from pipelines.detectors._sketch import hash64, hll_estimate, hll_update
from pipelines.detectors._warmup import HostWarmup
from pipelines.detectors.base import Detector, Finding, Window
from pipelines.domains import DomainSplitter
from pipelines.records import DnsBatch, FlowBatch
from pipelines.sketches import factorize

__all__ = ["DnsTunnelDetector"]

_HLL_P = 7
_RING = 48


def _new_acc() -> dict[str, Any]:
    return {
        "q": 0,
        "uniq": set(),
        "enc": set(),
        "unusual": set(),
        "nx": 0,
        "len": 0.0,
        "ent": 0.0,
        "enc_bytes": 0,
        "answered": 0,
        "first": math.inf,
        "last": -math.inf,
        "examples": [],
        "positions": [],
        "qtypes": {},
    }


def _new_state(hour: int) -> dict[str, Any]:
    return {
        "hour": hour,
        "hll": np.zeros((1, 1 << _HLL_P), dtype=np.uint8),
        "hour_bytes": 0,
        "stamp": np.full(_RING, -1, dtype=np.int64),
        "enc_h": np.zeros(_RING, dtype=np.int32),
        "last": -math.inf,
        "first": math.inf,
        "emitted": -math.inf,
        "emitted_ratio": 0.0,
    }


class DnsTunnelDetector(HostWarmup, Detector):
    """Tunnels and slow exfiltration over DNS names; see module docstring."""

    name: ClassVar[str] = "dns_tunnel"
    kind: ClassVar[str] = "dns_tunnel"

    def __init__(
        self,
        burst_encoded: int = 20,
        burst_unusual: int = 20,
        hour_encoded: int = 100,
        slow_hour_min: int = 20,
        slow_hours: int = 6,
        min_len: int = 24,
        min_label: int = 20,
        min_entropy: float = 3.2,
        follow_seconds: float = 60.0,
        max_pairs: int = 50_000,
        max_window_pairs: int = 100_000,
        set_cap: int = 4096,
        idle_evict: float = 2 * 86_400.0,
        reemit_seconds: float = 3600.0,
        max_pending: int = 100_000,
        include_private_suffixes: bool = True,
        warmup_seconds: float = 1800.0,
        max_hosts: int = 200_000,
        allow_hosts: tuple[str, ...] = (),
        allow_domains: tuple[str, ...] = (),
    ) -> None:
        self.burst_encoded = burst_encoded
        self.burst_unusual = burst_unusual
        self.hour_encoded = hour_encoded
        self.slow_hour_min = slow_hour_min
        self.slow_hours = slow_hours
        self.min_len = min_len
        self.min_label = min_label
        self.min_entropy = min_entropy
        self.follow_seconds = follow_seconds
        self.max_pairs = max_pairs
        self.max_window_pairs = max_window_pairs
        self.set_cap = set_cap
        self.idle_evict = idle_evict
        self.reemit_seconds = reemit_seconds
        self.max_pending = max_pending
        self.include_private_suffixes = include_private_suffixes
        self.warmup_seconds = warmup_seconds
        self.max_hosts = max_hosts
        self.hosts: dict[str, float] = {}  # internal host -> first time seen (warm-up)
        self.allow_hosts = tuple(allow_hosts)
        self.allow_domains = tuple(d.lower().strip(".") for d in allow_domains)
        self.splitter = DomainSplitter(include_private=include_private_suffixes)
        self.acc: dict[tuple[str, str], dict[str, Any]] = {}
        self.state: dict[tuple[str, str], dict[str, Any]] = {}
        self.pending: dict[tuple[str, str], tuple[float, str]] = {}
        self.resolvers: dict[
            str, None
        ] = {}  # internal hosts other internal hosts query (ordered set)
        self.dropped = 0
        self.last_evict = -math.inf

    # ------------------------------------------------------------------ ingest
    def ingest(self, flows: FlowBatch, dns: DnsBatch, window: Window) -> None:
        self._see_hosts(flows, dns)
        if len(dns):
            fwd = dns.src_inside & dns.dst_inside & (dns.src != dns.dst)
            if fwd.any():
                res = self.resolvers
                for ip in set(dns.dst[fwd].tolist()):
                    res.pop(ip, None)
                    res[ip] = None
                while len(res) > 4096:
                    res.pop(next(iter(res)))
            self._ingest_dns(dns)
        if (
            len(flows) and self.pending
        ):  # after the lookups of this call: same-window connections count
            pend = self.pending
            for key in set(zip(flows.src.tolist(), flows.dst.tolist(), strict=True)):
                pend.pop(key, None)

    def _ingest_dns(self, dns: DnsBatch) -> None:
        f = query_features(dns.query, self.splitter, self.min_len, self.min_label, self.min_entropy)
        ok = (
            (f["reg"] != "") & (f["sub_len"] > 0) & ~np.isin(f["reg"], ("in-addr.arpa", "ip6.arpa"))
        )
        self._pending_lookups(dns, f["reg"])
        if not ok.any():
            return
        idx = np.flatnonzero(ok)
        src, reg = dns.src[idx], f["reg"][idx]
        keys = list(zip(src.tolist(), reg.tolist(), strict=True))
        codes, uniq = factorize(np.array([f"{s}|{r}" for s, r in keys], dtype=object))
        unusual = np.isin(dns.qtype[idx], UNUSUAL_QTYPES) | (dns.qtype[idx] >= 256)
        enc = f["encoded"][idx]
        nx = dns.rcode[idx] == 3
        # only pairs with a signal in this batch, or already open in this window, are accumulated
        sig = np.bincount(codes, weights=(enc | unusual | nx), minlength=len(uniq)) > 0
        first_row = np.full(len(uniq), -1, dtype=np.int64)
        first_row[codes[::-1]] = np.arange(len(codes))[::-1]
        gkeys = [keys[i] for i in first_row.tolist()]
        keep_g = np.array(
            [bool(sg) or k in self.acc for sg, k in zip(sig.tolist(), gkeys, strict=True)]
        )
        if not keep_g.any():
            return
        sel = np.flatnonzero(keep_g[codes])
        order = sel[np.argsort(codes[sel], kind="stable")]
        c = codes[order]
        starts = np.flatnonzero(np.r_[True, c[1:] != c[:-1]])
        rows = idx[order]
        sub_len, ent = f["sub_len"][rows], f["entropy"][rows]
        e, u = enc[order], unusual[order]
        answered = (dns.answers[rows] != "") & np.isin(dns.qtype[rows], (1, 28))
        ts = dns.ts[rows]
        sums = {
            "q": np.diff(np.r_[starts, len(order)]),
            "nx": np.add.reduceat(nx[order].astype(np.int64), starts),
            "len": np.add.reduceat(sub_len.astype(np.float64), starts),
            "ent": np.add.reduceat(ent, starts),
            "enc_bytes": np.add.reduceat(np.where(e, sub_len, 0), starts),
            "answered": np.add.reduceat(answered.astype(np.int64), starts),
            "sig": np.add.reduceat((e | u).astype(np.int64), starts),
        }
        t_min, t_max = np.minimum.reduceat(ts, starts), np.maximum.reduceat(ts, starts)
        hashes = hash64([str(q) for q in dns.query[rows].tolist()])
        bounds = np.r_[starts, len(order)].tolist()
        for gi in range(len(starts)):
            lo, hi = bounds[gi], bounds[gi + 1]
            key = gkeys[int(c[lo])]
            acc = self.acc.get(key)
            if acc is None:
                if len(self.acc) >= self.max_window_pairs:
                    self.dropped += hi - lo
                    continue
                acc = self.acc[key] = _new_acc()
            for name in ("q", "nx", "enc_bytes", "answered"):
                acc[name] += int(sums[name][gi])
            acc["len"] += float(sums["len"][gi])
            acc["ent"] += float(sums["ent"][gi])
            acc["first"] = min(acc["first"], float(t_min[gi]))
            acc["last"] = max(acc["last"], float(t_max[gi]))
            self._sets(acc, hashes[lo:hi], e[lo:hi], u[lo:hi])
            self._samples(acc, dns, rows[lo:hi], (e | u)[lo:hi])
            if sums["sig"][gi]:
                self._track(key, hashes[lo:hi], e[lo:hi], ts[lo:hi], sub_len[lo:hi])

    def _sets(self, acc: dict[str, Any], h: np.ndarray, e: np.ndarray, u: np.ndarray) -> None:
        cap = self.set_cap
        for target, vals in ((acc["uniq"], h), (acc["enc"], h[e]), (acc["unusual"], h[u])):
            if len(target) < cap and len(vals):
                target.update(vals[: cap - len(target)].tolist())

    def _samples(
        self, acc: dict[str, Any], dns: DnsBatch, rows: np.ndarray, sig: np.ndarray
    ) -> None:
        qt = acc["qtypes"]
        for t_, n_ in zip(*np.unique(dns.qtype[rows], return_counts=True), strict=True):
            if len(qt) < 16 or int(t_) in qt:
                qt[int(t_)] = qt.get(int(t_), 0) + int(n_)
        if len(acc["examples"]) < 5:
            pick = rows[np.argsort(~sig, kind="stable")][: 5 - len(acc["examples"])]
            for r in pick.tolist():
                q = str(dns.query[r])
                acc["examples"].append(q if len(q) <= 60 else q[:57] + "...")
        if len(acc["positions"]) < 8:
            for r in rows[: 8 - len(acc["positions"])].tolist():
                acc["positions"].append((str(dns.origin[r]), int(dns.offset[r])))

    def _track(
        self,
        key: tuple[str, str],
        hashes: np.ndarray,
        enc: np.ndarray,
        ts: np.ndarray,
        sub_len: np.ndarray,
    ) -> None:
        hour = int(float(ts.max()) // 3600)
        st = self.state.get(key)
        if st is None:
            if len(self.state) >= self.max_pairs:
                victim = min(self.state, key=lambda k: self.state[k]["last"])
                del self.state[victim]
            st = self.state[key] = _new_state(hour)
        if hour > st["hour"]:
            slot = st["hour"] % _RING
            st["stamp"][slot] = st["hour"]
            st["enc_h"][slot] = round(float(hll_estimate(st["hll"])[0]))
            st["hll"][:] = 0
            st["hour_bytes"] = 0
            st["hour"] = hour
        if enc.any():
            hll_update(st["hll"], np.zeros(int(enc.sum()), dtype=np.int64), hashes[enc], _HLL_P)
            st["hour_bytes"] += int(sub_len[enc].sum())
        st["last"] = max(st["last"], float(ts.max()))
        st["first"] = min(st["first"], float(ts.min()))

    def _pending_lookups(self, dns: DnsBatch, reg: np.ndarray) -> None:
        m = (dns.answers != "") & np.isin(dns.qtype, (1, 28)) & (dns.rcode <= 0)
        if not m.any():
            return
        pend = self.pending
        for s, a, t, r in zip(
            dns.src[m].tolist(),
            dns.answers[m].tolist(),
            dns.ts[m].tolist(),
            reg[m].tolist(),
            strict=True,
        ):
            first = str(a).split(",", 1)[0].strip()
            if first:
                pend[(s, first)] = (t, r)
        while len(pend) > self.max_pending:
            pend.pop(next(iter(pend)))

    # ------------------------------------------------------------------ close / score / learn
    def close(self, window: Window) -> dict[str, Any]:
        noconn: dict[tuple[str, str], int] = {}
        if self.pending:
            cutoff = window.end - self.follow_seconds
            expired = [k for k, (t, _r) in self.pending.items() if t < cutoff]
            for k in expired:
                _t, r = self.pending.pop(k)
                noconn[(k[0], r)] = noconn.get((k[0], r), 0) + 1
        if window.end - self.last_evict >= 3600.0:
            self.last_evict = window.end
            old = [k for k, st in self.state.items() if st["last"] < window.end - self.idle_evict]
            for k in old:
                del self.state[k]
        acc, self.acc = self.acc, {}
        pairs = []
        now_h = int(window.end // 3600)
        for key in sorted(acc):
            a = acc[key]
            st = self.state.get(key)
            hour_enc, persist, hour_bytes = 0, 0, 0
            if st is not None:
                hour_enc = (
                    round(float(hll_estimate(st["hll"])[0])) if st["hour"] >= now_h - 1 else 0
                )
                recent = (st["stamp"] >= now_h - _RING) & (st["stamp"] != st["hour"])
                persist = int(((st["enc_h"] >= self.slow_hour_min) & recent).sum()) + int(
                    hour_enc >= self.slow_hour_min
                )
                hour_bytes = int(st["hour_bytes"])
            n_uniq = len(a["uniq"])
            pairs.append(
                {
                    "src": key[0],
                    "domain": key[1],
                    "q": a["q"],
                    "uniq": n_uniq,
                    "enc": len(a["enc"]),
                    "unusual": len(a["unusual"]),
                    "nx": a["nx"],
                    "mean_len": a["len"] / max(1, a["q"]),
                    "mean_ent": a["ent"] / max(1, a["q"]),
                    "enc_bytes": a["enc_bytes"],
                    "answered": a["answered"],
                    "noconn": noconn.get(key, 0),
                    "first": a["first"],
                    "last": a["last"],
                    "examples": a["examples"],
                    "positions": tuple(a["positions"]),
                    "qtypes": dict(sorted(a["qtypes"].items())),
                    "hour_enc": hour_enc,
                    "hour_bytes": hour_bytes,
                    "persist": persist,
                    "emitted": st["emitted"] if st is not None else -math.inf,
                    "emitted_ratio": st["emitted_ratio"] if st is not None else 0.0,
                    "first_seen": st["first"] if st is not None else a["first"],
                }
            )
        return {"window": window, "pairs": pairs}

    def _ratios(self, p: dict[str, Any]) -> dict[str, float]:
        unusual_share = p["unusual"] / max(1, p["uniq"])
        burst_unusual = (
            p["unusual"] / self.burst_unusual if p["unusual"] >= 0.5 * p["uniq"] else 0.0
        )
        return {
            "burst_encoded": p["enc"] / self.burst_encoded,
            "burst_unusual": burst_unusual
            if p["uniq"] >= 0.5 * p["q"] or unusual_share >= 0.9
            else 0.0,
            "hour_encoded": p["hour_enc"] / self.hour_encoded,
            "slow": p["persist"] / self.slow_hours,
        }

    def _allowed(self, p: dict[str, Any]) -> bool:
        if p["src"] in self.allow_hosts:
            return True
        d = p["domain"]
        return any(d == x or d.endswith("." + x) for x in self.allow_domains)

    def score(self, features: dict[str, Any]) -> list[Finding]:
        now = features["window"].end
        hot = []
        for p in features["pairs"]:
            ratios = self._ratios(p)
            top = max(ratios, key=lambda k: ratios[k])
            if (
                ratios[top] >= 1.0
                and not self._allowed(p)
                and self._warm(p["src"], features["window"])
            ):
                hot.append((p, ratios, top))
        # a resolver forwarding a client's tunnel is reported on the client's finding
        clients: dict[str, list[str]] = {}
        for p, _r, _t in hot:
            if p["src"] not in self.resolvers:
                clients.setdefault(p["domain"], []).append(p["src"])
        forwarders: dict[str, list[str]] = {}
        findings = []
        for p, ratios, top in hot:
            if p["src"] in self.resolvers and p["domain"] in clients:
                forwarders.setdefault(p["domain"], []).append(p["src"])
                continue
            if p["emitted"] > now - self.reemit_seconds and ratios[top] < 2 * p["emitted_ratio"]:
                continue
            findings.append(tunnel_finding(self, p, ratios, top, now))
        for f in findings:
            if f.domain in forwarders:
                f.facts["forwarded_by"] = sorted(forwarders[f.domain])
        return findings

    def learn(self, features: dict[str, Any], findings: list[Finding]) -> None:
        now = features["window"].end
        for f in findings:
            st = self.state.get((f.entity, f.domain))
            if st is not None:
                st["emitted"] = now
                st["emitted_ratio"] = max(f.facts["ratios"].values())

    # ------------------------------------------------------------------ introspection
    def entities(self) -> int:
        return len(self.state)

    def state_bytes(self) -> int:
        """Approximate bytes of long-lived state (tracked pairs + pending lookups)."""
        per_pair = (1 << _HLL_P) + _RING * 12 + 400
        return len(self.state) * per_pair + 150 * len(self.pending)
