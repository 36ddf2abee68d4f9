"""Beaconing / C2 detector: regular check-ins from an internal host to one destination.

Entity: ``(internal src, external dst, dst_port)`` and, where DNS answers tell which name
an address belongs to, ``(src, registered domain, dst_port)`` (catches C2 that rotates
addresses behind one name). Each series keeps the last ``ring_size`` connection starts
and sizes (flow ``ts_start``; bytes both ways) in a bounded :class:`PairTable` of at most
``max(max_pairs, pairs_per_host × known hosts)`` series (least active evicted first;
known hosts are capped by ``max_hosts``; ring storage is tiered by series length, so a
one-off pair costs ~120 bytes of arrays).

When a window closes, every series that received connections and has at least
``min_checkins`` check-ins is scored with :func:`regularity` (RITA-style: Bowley skew,
MAD and CV of inter-arrival times and sizes, span histogram with CV / two-mode fit,
coverage and hour consistency; see ``_periodicity``). A series is *periodic* when the
combined score ≥ ``threshold``, the interval CV ≤ ``cv_max`` (scaled by
``sqrt(n / 24)`` below 24 check-ins; ``cv_max_long`` from 32 check-ins on) and both
halves of the series agree on the period within 1.5×; below ``size_gate_checkins``
check-ins the sizes must be steady too, ``1 - MAD/median >= size_gate_score`` (C2
check-ins have steady sizes, short random web/CDN series do not).

Prevalence discount (network-wide): for each destination the detector remembers which
internal hosts were (loosely: score ≥ ``prevalence_score`` from ``prevalence_checkins``
check-ins) periodic to it and with what period. With ``h`` hosts on the same schedule
(period within 1.4×, this host included) the score is multiplied by the smaller of
``1 - (h - free) / (full - free)`` (``prevalence_free`` / ``prevalence_full`` hosts) and
the same ramp on the share of known internal hosts (``prevalence_free_fraction`` ..
``prevalence_full_fraction``): update servers, telemetry and sync polls score low, a
single host never is discounted. Allow-lists (hosts, destination IPs/CIDRs, domains)
suppress findings but the series are still tracked. DNS and NTP ports
(``ignore_ports``) are left to the DNS detector / not tracked.

Warm-up: beaconing is judged on the series itself (``min_checkins`` check-ins), and a
host is reported only once it has been seen for ``warmup_seconds`` (a replay of a short
capture of a host never seen before sets it to 0). Series are re-scored when they grew
by ``rescore_growth``× or after ``rescore_seconds``; a vectorised MAD/median pre-filter
skips clearly irregular series.

Connection-failure storms (≥ 90 % S0/REJ) are not beacons by themselves; when periodic
they are reported with severity 2 ("periodic failed connections").

ATT&CK: T1071.001 (web ports / http, ssl service), T1573 (TLS ports), T1571 (port not
standard for any common service), T1071 otherwise; T1041 when the channel also uploads
≥ ``upload_bytes`` and more than it downloads.

>>> import numpy as np
>>> from pipelines.records import FlowBatch
>>> t = 1000.0 + np.cumsum(np.full(30, 60.0) + np.linspace(-5, 5, 30) % 7)
>>> b = FlowBatch.from_columns({"ts_start": t, "ts_end": t + 1, "src": ["10.0.0.5"] * 30,
...     "dst": ["198.51.100.7"] * 30, "dst_port": [8443] * 30, "proto": [6] * 30,
...     "bytes_out": [900] * 30, "bytes_in": [1500] * 30, "src_inside": [True] * 30})
>>> det = BeaconDetector(warmup_seconds=0)
>>> w = Window.of(int(t[-1] // 3600), 3600.0)
>>> det.ingest(b, DnsBatch.empty(), w)
>>> [(f.kind, f.episode, round(f.facts["period_s"])) for f in det.process_window(w)]
[('beaconing', '198.51.100.7:8443', 64)]
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any, ClassVar

import numpy as np

from pipelines.detectors._beacon_finding import beacon_finding
from pipelines.detectors._pairs import PairTable
from pipelines.detectors._periodicity_many import regularity_flat
from pipelines.detectors._warmup import HostWarmup
from pipelines.detectors.base import Detector, Finding, Window
from pipelines.domains import DomainSplitter
from pipelines.exceptions import ConfigError
from pipelines.records import DnsBatch, FlowBatch

__all__ = ["BeaconDetector"]

log = logging.getLogger(__name__)

FAILED_STATES = np.array(["S0", "REJ", "RSTOS0", "RSTRH", "SH", "SHR", "OTH"], dtype=object)


def _networks(values: Any, key: str) -> list[Any]:
    out = []
    for v in values:
        try:
            out.append(ipaddress.ip_network(str(v), strict=False))
        except ValueError:
            raise ConfigError(
                f"detectors.beacon.{key}: {v!r} is not an IP address or CIDR"
            ) from None
    return out


def _in(ip: str, nets: list[Any]) -> bool:
    if not nets:
        return False
    try:
        a = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(a.version == n.version and a in n for n in nets)


def _first_positions(
    chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray]], rows: np.ndarray
) -> dict[int, list[tuple[str, int]]]:
    """Row -> its first 8 ``(origin, offset)`` in ``chunks`` (arrival order), for ``rows``."""
    if not chunks or len(rows) == 0:
        return {}
    r = np.concatenate([c[0] for c in chunks])
    keep = np.flatnonzero(np.isin(r, rows))
    if len(keep) == 0:
        return {}
    rk = r[keep]
    order = np.argsort(rk, kind="stable")
    srt = rk[order]
    at = np.arange(len(srt))
    head = np.maximum.accumulate(np.where(np.r_[True, srt[1:] != srt[:-1]], at, 0))
    pick = keep[np.sort(order[at - head < 8])]
    origin = np.concatenate([c[1] for c in chunks])[pick].tolist()
    offset = np.concatenate([c[2] for c in chunks])[pick].tolist()
    out: dict[int, list[tuple[str, int]]] = {}
    for row, o, off in zip(r[pick].tolist(), origin, offset, strict=True):
        out.setdefault(row, []).append((str(o), int(off)))
    return out


class BeaconDetector(HostWarmup, Detector):
    """Periodic check-ins per (src, dst, port) and (src, domain, port); see module docstring."""

    name: ClassVar[str] = "beacon"
    kind: ClassVar[str] = "beaconing"

    def __init__(
        self,
        threshold: float = 0.8,
        min_checkins: int = 12,
        cv_max: float = 0.35,
        cv_max_long: float = 0.4,
        ring_size: int = 128,
        max_pairs: int = 20_000,
        pairs_per_host: float = 1.0,
        idle_evict: float = 86_400.0,
        merge_gap: float = 0.5,
        max_missed: float = 0.3,
        fold_min: int = 32,
        prevalence_free: int = 2,
        prevalence_full: int = 6,
        prevalence_free_fraction: float = 0.05,
        prevalence_full_fraction: float = 0.2,
        prevalence_horizon: float = 7 * 86_400.0,
        prevalence_score: float = 0.6,
        prevalence_checkins: int = 6,
        reemit_seconds: float = 3600.0,
        max_scored: int = 2000,
        prefilter_madm: float = 0.45,
        size_gate_checkins: int = 48,
        size_gate_score: float = 0.5,
        rescore_growth: float = 1.25,
        rescore_seconds: float = 3600.0,
        ignore_ports: tuple[int, ...] = (53, 123),
        upload_bytes: float = 5e6,
        track_domains: bool = True,
        name_map_size: int = 50_000,
        warmup_seconds: float = 1800.0,
        max_hosts: int = 200_000,
        allow_hosts: tuple[str, ...] = (),
        allow_destinations: tuple[str, ...] = (),
        allow_domains: tuple[str, ...] = (),
    ) -> None:
        self.threshold = threshold
        self.min_checkins = min_checkins
        self.cv_max = cv_max
        self.cv_max_long = cv_max_long
        self.ring_size = ring_size
        self.max_pairs = max_pairs
        self.pairs_per_host = pairs_per_host
        self.idle_evict = idle_evict
        self.merge_gap = merge_gap
        self.max_missed = max_missed
        self.fold_min = fold_min
        self.prevalence_free = prevalence_free
        self.prevalence_full = prevalence_full
        self.prevalence_free_fraction = prevalence_free_fraction
        self.prevalence_full_fraction = prevalence_full_fraction
        self.prevalence_horizon = prevalence_horizon
        self.prevalence_score = prevalence_score
        self.prevalence_checkins = prevalence_checkins
        self.reemit_seconds = reemit_seconds
        self.max_scored = max_scored
        self.prefilter_madm = prefilter_madm
        self.size_gate_checkins = size_gate_checkins
        self.size_gate_score = size_gate_score
        self.rescore_growth = rescore_growth
        self.rescore_seconds = rescore_seconds
        self.ignore_ports = tuple(ignore_ports)
        self.upload_bytes = upload_bytes
        self.track_domains = track_domains
        self.name_map_size = name_map_size
        self.warmup_seconds = warmup_seconds
        self.max_hosts = max_hosts
        self.hosts: dict[str, float] = {}  # internal host -> first time seen (warm-up)
        self.allow_hosts = tuple(allow_hosts)
        self.allow_destinations = tuple(allow_destinations)
        self.allow_domains = tuple(d.lower().strip(".") for d in allow_domains)
        self._allow_h = _networks(self.allow_hosts, "allow_hosts")
        self._allow_d = _networks(self.allow_destinations, "allow_destinations")
        self.pairs = PairTable(ring_size, max_pairs, protect_n=min_checkins)
        self.dirty: set[int] = set()
        # this window's record positions, (rows, origins, offsets) chunks in arrival order;
        # the first 8 of a row are its positions (materialised in close() for scored rows)
        self.positions: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.names: dict[str, tuple[str, str]] = {}  # ip -> (query name, registered domain)
        self.domain_ips: dict[int, list[str]] = {}  # domain row -> distinct dst IPs (≤ 8)
        self.prevalence: dict[tuple[str, int], dict[str, tuple[float, float]]] = {}
        self.splitter = DomainSplitter()
        self.last_evict = -np.inf

    # ------------------------------------------------------------------ ingest
    def _learn_names(self, dns: DnsBatch) -> None:
        has = (dns.answers != "") & (dns.rcode <= 0) & np.isin(dns.qtype, (1, 28))
        if not has.any():
            return
        names = self.names
        # only the last occurrence of a (query, answers) pair matters: it re-inserts the same
        # values at the end of the (insertion-ordered) map, overriding earlier ones
        pairs = zip(dns.query[has].tolist(), dns.answers[has].tolist(), strict=True)
        last = list(dict.fromkeys(reversed(list(pairs))))
        for q, ans in reversed(last):
            reg = self.splitter.registered(q)
            if not reg:
                continue
            for ip in str(ans).split(","):
                ip = ip.strip()
                if not ip:
                    continue
                names.pop(ip, None)
                names[ip] = (q.rstrip(".").lower(), reg)
        while len(names) > self.name_map_size:
            names.pop(next(iter(names)))

    def ingest(self, flows: FlowBatch, dns: DnsBatch, window: Window) -> None:
        self._see_hosts(flows, dns)
        if self.track_domains and len(dns):
            self._learn_names(dns)
        if not len(flows):
            return
        m = (
            flows.src_inside
            & ~flows.dst_inside
            & np.isin(flows.proto, (6, 17))
            & (flows.dst_port >= 0)
        )
        if self.ignore_ports:
            m &= ~np.isin(flows.dst_port, self.ignore_ports)
        if not m.any():
            return
        idx = np.flatnonzero(m)
        src, dst, port = (
            flows.src[idx].tolist(),
            flows.dst[idx].tolist(),
            flows.dst_port[idx].tolist(),
        )
        keys: list[Any] = [(s, d, p_, False) for s, d, p_ in zip(src, dst, port, strict=True)]
        sel = idx
        if self.track_domains and self.names:
            names = self.names
            extra = [
                (i, (s, names[d][1], p_, True))
                for i, (s, d, p_, _) in enumerate(keys)
                if d in names
            ]
            if extra:
                keys = keys + [k for _, k in extra]
                sel = np.concatenate([idx, idx[[i for i, _ in extra]]])
        # the series table grows with the network: max_pairs, or pairs_per_host per known host
        self.pairs.max_pairs = max(self.max_pairs, int(self.pairs_per_host * len(self.hosts)))
        rows = self.pairs.rows(keys, now=float(flows.ts_start[idx].min()))
        fresh = self.pairs.last_fresh
        for r in fresh:  # reused rows start clean
            self.domain_ips.pop(r, None)
        if fresh and self.positions:
            gone = np.array(fresh, dtype=np.int64)
            kept = []
            for rr, oo, ff in self.positions:
                k = ~np.isin(rr, gone)
                kept.append((rr, oo, ff) if k.all() else (rr[k], oo[k], ff[k]))
            self.positions = kept
        ts = flows.ts_start[sel]
        out = flows.bytes_out[sel].astype(np.float64)
        inb = flows.bytes_in[sel].astype(np.float64)
        failed = np.isin(flows.conn_state[sel], FAILED_STATES) | (
            flows.bidirectional[sel] & (flows.pkts_in[sel] == 0)
        )
        self.pairs.append(rows, ts, out + inb, out, inb, failed)
        self._note_rows(flows, rows, sel, len(idx))

    def _note_rows(self, flows: FlowBatch, rows: np.ndarray, sel: np.ndarray, n_ip: int) -> None:
        """Mark rows dirty; keep ≤ 8 record positions and ≤ 8 distinct IPs per domain row.

        Only the first 8 records of each row (in batch order) can add a position, so the
        Python loop runs over at most 8 records per row instead of every record.
        """
        ok = np.flatnonzero(rows >= 0)
        if len(ok) == 0:
            return
        rr = rows[ok]
        self.dirty.update(np.unique(rr).tolist())
        order = np.argsort(rr, kind="stable")
        srt = rr[order]
        at = np.arange(len(srt))
        first = np.maximum.accumulate(np.where(np.r_[True, srt[1:] != srt[:-1]], at, 0))
        jj = ok[np.sort(order[at - first < 8])]
        kk = sel[jj]
        self.positions.append((rows[jj], flows.origin[kk], flows.offset[kk]))
        dj = ok[ok >= n_ip]
        if len(dj) == 0:
            return
        seen = dict.fromkeys(zip(rows[dj].tolist(), flows.dst[sel[dj]].tolist(), strict=True))
        for r, d in seen:
            ips = self.domain_ips.setdefault(r, [])
            d = str(d)
            if len(ips) < 8 and d not in ips:
                ips.append(d)

    # ------------------------------------------------------------------ close / score / learn
    def close(self, window: Window) -> dict[str, Any]:
        t = self.pairs
        if window.end - self.last_evict >= 3600.0:
            self.last_evict = window.end
            evicted = t.evict_idle(window.end - self.idle_evict)
            if evicted:
                for r in [r for r in self.domain_ips if t.keys[r] is None]:
                    del self.domain_ips[r]
        least = min(self.min_checkins, self.prevalence_checkins)
        dirty = [r for r in self.dirty if t.keys[r] is not None and t.fill[r] >= least]
        self.dirty = set()
        if dirty:
            d = np.array(dirty, dtype=np.int64)
            due = (t.n[d] >= t.scored[d] * self.rescore_growth) | (
                t.scored_at[d] <= window.end - self.rescore_seconds
            )
            dirty = d[due].tolist()
        chunks, self.positions = self.positions, []
        rows = np.array(sorted(dirty), dtype=np.int64)
        count, ratio = t.dispersion(rows, self.merge_gap)
        rows = rows[(count >= least - 1) & (ratio <= self.prefilter_madm)]
        if len(rows) > self.max_scored:
            rows = np.sort(rows[np.argsort(-t.n[rows], kind="stable")[: self.max_scored]])
        t.scored[rows] = t.n[rows]
        t.scored_at[rows] = window.end
        pairs: list[dict[str, Any]] = []
        if len(rows) == 0:
            return {"window": window, "pairs": pairs}
        ts, sz, lens = t.series_flat(rows)
        regs = regularity_flat(
            ts,
            sz,
            lens,
            merge_gap=self.merge_gap,
            max_missed=self.max_missed,
            fold_min=self.fold_min,
        )
        positions = _first_positions(chunks, rows)
        ends = np.cumsum(lens)
        firsts, lasts = ts[ends - lens].tolist(), ts[ends - 1].tolist()
        for r, reg, first, last in zip(rows.tolist(), regs, firsts, lasts, strict=True):
            if reg["checkins"] < least:
                continue
            src, target, port, is_domain = t.keys[r]  # type: ignore[misc]
            pairs.append(
                {
                    "row": r,
                    "src": src,
                    "target": target,
                    "port": int(port),
                    "reg": reg,
                    "is_domain": bool(is_domain),
                    "domain_ips": tuple(self.domain_ips.get(r, ())) if is_domain else (),
                    "n": int(t.n[r]),
                    "failed": int(t.failed[r]),
                    "bytes_out": float(t.out[r]),
                    "bytes_in": float(t.inb[r]),
                    "first": first,
                    "last": last,
                    "emitted": float(t.emitted[r]),
                    "positions": tuple(positions.get(r, ())),
                    "name": target if is_domain else self.names.get(target, ("", ""))[0],
                }
            )
        return {"window": window, "pairs": pairs}

    def _periodic(self, reg: dict[str, Any]) -> bool:
        if reg["checkins"] < self.min_checkins or reg["score"] < self.threshold:
            return False
        n = reg["checkins"]
        # short series are noisy: the CV bound shrinks with sqrt(n / 24) below 24 check-ins
        cv_max = self.cv_max_long if n >= 32 else self.cv_max * min(1.0, (n / 24) ** 0.5)
        # below ``size_gate_checkins`` sizes must be steady too: 1 - MAD/median >= size_gate_score
        sizes_ok = n >= self.size_gate_checkins or reg["ds_madm"] >= self.size_gate_score
        return bool(reg["ts_cv"] <= cv_max and reg["halves"] >= 2 / 3 and sizes_ok)

    def _loosely_periodic(self, reg: dict[str, Any]) -> bool:
        return bool(
            reg["checkins"] >= self.prevalence_checkins
            and reg["score"] >= self.prevalence_score
            and reg["ts_cv"] <= 0.6
        )

    def _same_schedule(
        self, known: dict[str, tuple[float, float]], src: str, period: float, now: float
    ) -> set[str]:
        """Other hosts of ``known`` seen within the horizon with a period within 1.4× of ``period``."""
        return {
            s
            for s, (p, seen) in known.items()
            if s != src
            and seen >= now - self.prevalence_horizon
            and max(p, period) <= 1.4 * min(p, period)
        }

    def _same_counts(
        self,
        tables: tuple[dict[str, tuple[float, float]], ...],
        srcs: list[str],
        periods: list[float],
        now: float,
    ) -> list[int]:
        """``len(union of _same_schedule(t, src, period, now) over tables)`` for each (src, period).

        One host × series matrix per destination instead of a Python set per series (same
        float comparisons, so the same counts).
        """
        names: dict[str, int] = {}
        for tab in tables:
            for h in tab:
                names.setdefault(h, len(names))
        if not names:
            return [0] * len(srcs)
        q = np.array(periods, dtype=np.float64)[:, None]
        me = np.array([names.get(s_, -1) for s_ in srcs], dtype=np.int64)[:, None]
        hit = np.zeros((len(srcs), len(names)), dtype=bool)
        for tab in tables:
            if not tab:
                continue
            at = np.fromiter((names[h] for h in tab), dtype=np.int64, count=len(tab))
            ps = np.fromiter((v[0] for v in tab.values()), dtype=np.float64, count=len(tab))
            seen = np.fromiter((v[1] for v in tab.values()), dtype=np.float64, count=len(tab))
            ok = (seen >= now - self.prevalence_horizon)[None, :] & (
                np.maximum(ps[None, :], q) <= 1.4 * np.minimum(ps[None, :], q)
            )
            hit[:, at] |= ok
        hit &= np.arange(len(names))[None, :] != me
        return np.count_nonzero(hit, axis=1).tolist()

    def score(self, features: dict[str, Any]) -> list[Finding]:
        window: Window = features["window"]
        now = window.end
        periodic = [p for p in features["pairs"] if self._periodic(p["reg"])]
        current: dict[tuple[str, int], dict[str, tuple[float, float]]] = {}
        for p in features["pairs"]:
            if not self._loosely_periodic(p["reg"]):
                continue
            current.setdefault((p["target"], p["port"]), {})[p["src"]] = (p["reg"]["period"], now)
        # the gates that do not depend on the prevalence first (all side-effect free)
        cand = [
            p
            for p in periodic
            if not (
                self._allowed(p)
                or not self._warm(p["src"], window)
                or p["emitted"] > now - self.reemit_seconds
                or (p["is_domain"] and len(p["domain_ips"]) < 2)
            )
        ]
        by_key: dict[tuple[str, int], list[int]] = {}
        for i, p in enumerate(cand):
            by_key.setdefault((p["target"], p["port"]), []).append(i)
        others = [0] * len(cand)
        for key, idx in by_key.items():
            tables = (self.prevalence.get(key, {}), current.get(key, {}))
            counts = self._same_counts(
                tables, [cand[i]["src"] for i in idx], [cand[i]["reg"]["period"] for i in idx], now
            )
            for i, c in zip(idx, counts, strict=True):
                others[i] = c
        findings = []
        for p, same in zip(cand, others, strict=True):
            hosts = same + 1
            discount = self._discount(hosts)
            final = p["reg"]["score"] * discount
            if final < self.threshold:
                continue
            findings.append(beacon_finding(self, p, final, hosts - 1, discount))
        return findings

    def _discount(self, hosts: int) -> float:
        """Prevalence discount for ``hosts`` internal hosts (self included) on the same schedule."""
        if hosts < 2:
            return 1.0
        free, full = self.prevalence_free, max(self.prevalence_full, self.prevalence_free + 1)
        absolute = 1.0 if hosts <= free else max(0.0, 1.0 - (hosts - free) / (full - free))
        frac = hosts / max(1, len(self.hosts))
        f_free, f_full = self.prevalence_free_fraction, max(self.prevalence_full_fraction, 1e-9)
        relative = (
            1.0 if frac <= f_free else max(0.0, 1.0 - (frac - f_free) / max(f_full - f_free, 1e-9))
        )
        return min(absolute, relative)

    def _allowed(self, p: dict[str, Any]) -> bool:
        if _in(p["src"], self._allow_h):
            return True
        ips = p["domain_ips"] if p["is_domain"] else (p["target"],)
        if self._allow_d and all(_in(ip, self._allow_d) for ip in ips):
            return True
        dom = p["target"] if p["is_domain"] else self.names.get(p["target"], ("", ""))[1]
        name = p["name"]
        return any(
            x and (x == d or x.endswith("." + d)) for d in self.allow_domains for x in (dom, name)
        )

    def learn(self, features: dict[str, Any], findings: list[Finding]) -> None:
        now = features["window"].end
        for p in features["pairs"]:
            if not self._loosely_periodic(p["reg"]):
                continue
            known = self.prevalence.pop((p["target"], p["port"]), None) or {}
            known[p["src"]] = (p["reg"]["period"], now)
            if len(known) == 65:  # the oldest (first of equals, as a stable sort) goes
                del known[min(known, key=lambda s: known[s][1])]
            elif len(known) > 64:
                for s in sorted(known, key=lambda s: known[s][1])[: len(known) - 64]:
                    del known[s]
            self.prevalence[(p["target"], p["port"])] = known
        while len(self.prevalence) > self.max_pairs:
            self.prevalence.pop(next(iter(self.prevalence)))
        for f in findings:
            key = (
                f.src,
                f.episode.rsplit(":", 1)[0],
                f.dst_ports[0],
                f.facts["series"] == "domain",
            )
            r = self.pairs.index.get(key)
            if r is not None:
                self.pairs.emitted[r] = now

    # ------------------------------------------------------------------ introspection
    def entities(self) -> int:
        return len(self.pairs)

    def state_bytes(self) -> int:
        """Approximate bytes of state (numpy tables + name map + prevalence)."""
        return (
            self.pairs.nbytes()
            + 120 * len(self.names)
            + 200 * sum(len(v) for v in self.prevalence.values())
        )

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_allow_h", None)
        state.pop("_allow_d", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._allow_h = _networks(self.allow_hosts, "allow_hosts")
        self._allow_d = _networks(self.allow_destinations, "allow_destinations")
