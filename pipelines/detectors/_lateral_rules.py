"""Scoring rules of :class:`~pipelines.detectors.lateral.LateralDetector` (pure functions).

Kept apart from the state-keeping class so that each file stays small. Nothing here
changes the detector: every function only reads it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from pipelines.detectors.base import Evidence, Finding

if TYPE_CHECKING:
    from pipelines.detectors.lateral import Edge, LateralDetector, LateralWindow

__all__ = ["score_window"]

# service codes (mirrors pipelines.detectors.lateral.SERVICES)
SMB, RPC, RPC_DYN, WINRM, RDP, SSH, LDAP, KERBEROS = range(8)
LABEL = ("SMB", "RPC/135", "dynamic RPC", "WinRM", "RDP", "SSH", "LDAP", "Kerberos")
TECHNIQUE = {SMB: "T1021.002", RPC: "T1021.003", RPC_DYN: "T1047", WINRM: "T1021.006", RDP: "T1021.001",
             SSH: "T1021.004"}  # fmt: skip
REMOTE_EXEC = (WINRM, RDP, SSH)


def _hhmm(ts: float, offset_h: float) -> str:
    return time.strftime("%H:%M", time.gmtime(ts + offset_h * 3600.0))


def _severity(score: float) -> int:
    return 4 if score >= 0.8 else 3 if score >= 0.6 else 2


def _positions(edges: Iterable[Edge]) -> tuple[tuple[str, int], ...]:
    out: list[tuple[str, int]] = []
    for e in edges:
        out.extend(e.positions)
    return tuple(out[:8])


def _finding(det: LateralDetector, kind: str, src: str, episode: str, edges: list[Edge], score: float,
             attacks: Iterable[str], title: str, sentence: str, evidence: list[Evidence],
             facts: dict[str, object], dst: tuple[str, ...] | None = None) -> Finding:  # fmt: skip
    ports = sorted({p for e in edges for p in e.ports})
    conns = sum(e.conns for e in edges)
    facts = {"connections": conns, "bytes_out": sum(e.bytes_out for e in edges),
             "bytes_in": sum(e.bytes_in for e in edges), "failed": sum(e.failed for e in edges),
             "src_role": det.host_roles.role(src), **facts}  # fmt: skip
    return Finding(
        detector=det.name, kind=kind, entity=src, episode=episode,
        start=min(e.first for e in edges), end=max(e.last for e in edges),
        score=round(min(1.0, score), 3), severity_id=_severity(score), confidence=int(min(95, 40 + 50 * score)),
        attacks=tuple(sorted(set(attacks))), title=title, sentence=sentence, evidence=evidence, facts=facts,
        src=src, dst=dst if dst is not None else tuple(sorted({e.dst for e in edges})), dst_ports=tuple(ports),
        direction="lateral", count=conns, positions=_positions(edges), analytic="Behavioral",
    )  # fmt: skip


def score_window(det: LateralDetector, feats: LateralWindow) -> list[Finding]:
    """All findings of one closed window (pure: reads ``det``, never writes it)."""
    w = feats.window
    by_src: dict[str, list[Edge]] = {}
    for e in feats.edges:
        by_src.setdefault(e.src, []).append(e)
    out: list[Finding] = []
    for src in sorted(by_src):
        edges = by_src[src]
        if not det.warm(src, w.start):
            continue
        fan = _fanout(det, src, edges)
        if fan is not None:
            out.append(fan)
        else:
            out.extend(_new_edges(det, src, edges, w.start))
        out.extend(_ldap(det, src, edges))
        out.extend(_brute(det, src, edges))
    # chains: hops flagged earlier (det.taints) or in this very window
    local: dict[str, tuple[tuple[str, ...], float]] = {}
    for f in out:
        if f.kind == "lateral_movement" and f.episode not in ("chain", "fanout"):
            for d in f.dst:
                local.setdefault(d, ((f.src, d), f.start))
    for src in sorted(by_src):
        taint = det.taints.get(src) or local.get(src)
        if taint is not None:
            out.extend(_chain(det, src, by_src[src], w.start, taint))
    return out


def _new_edges(det: LateralDetector, src: str, edges: list[Edge], t: float) -> list[Finding]:
    if det.host_roles.administers(src):
        return []
    role = det.host_roles.role(src)
    off = det.hours.off_hours(src, t)
    by_dst: dict[str, dict[int, Edge]] = {}
    for e in edges:
        by_dst.setdefault(e.dst, {})[e.svc] = e
    out = []
    for dst in sorted(by_dst):
        svcs = by_dst[dst]
        serving = det.host_roles.serving(dst)
        points, attacks, reasons, used = 0.0, set(), [], []
        rpc, smb = svcs.get(RPC), svcs.get(SMB)
        dyns = [x for x in edges if x.dst == dst and x.svc == RPC_DYN]
        dyn = next(
            (x for x in dyns if not det.known_edge(x) and det.sources_of_edge(x) == 0),
            dyns[0] if dyns else None,
        )
        if rpc is not None and (dyn is not None or smb is not None) and _rpc_unusual(det, rpc, dyn):
            points = 0.6
            used += [x for x in (rpc, dyn, smb) if x is not None]
            if smb is not None:
                attacks |= {"T1021.002", "T1569.002"}
                reasons.append(
                    "RPC endpoint mapper (135) then SMB to the same host (service-control pattern)"
                )
            else:
                attacks |= {"T1047", "T1021.003"}
                gap = dyn.first - rpc.first if dyn is not None else 0.0
                reasons.append(
                    f"RPC endpoint mapper (135) then a dynamic port {gap:.0f} s later (WMI/DCOM pattern)"
                )
        for svc in REMOTE_EXEC:
            ex = svcs.get(svc)
            if ex is not None and not det.known_edge(ex):
                points = max(points, 0.6 if ex.conns > ex.failed else 0.45)
                attacks.add(TECHNIQUE[svc])
                used.append(ex)
                reasons.append(f"first {LABEL[svc]} connection from this host to {dst}")
        if (
            smb is not None
            and not serving
            and not det.known_edge(smb)
            and smb.bytes_out + smb.bytes_in >= det.smb_min_bytes
        ):
            points = max(points, 0.5)
            attacks.add("T1021.002")
            used.append(smb)
            reasons.append(f"new SMB session to non-server host {dst}")
        taint = det.taints.get(dst)
        if (
            smb is not None
            and points <= 0.0
            and taint is not None
            and src in taint[0]
            and t - taint[1] <= det.chain_seconds
            and not det.known_edge(smb)
        ):  # SMB following a flagged RPC/admin session to the same host (service install, copy)
            points = 0.5
            attacks.add("T1021.002")
            used.append(smb)
            reasons.append(f"new SMB session to {dst} right after a flagged admin session to it")
        if smb is not None and smb.bytes_out >= det.smb_upload_bytes and points > 0:
            attacks.add("T1570")
            points += 0.1
            reasons.append(f"{smb.bytes_out / 1e6:.1f} MB uploaded over SMB")
        if points <= 0.0:
            continue
        used = list({id(e): e for e in used}.values())
        first_use = sorted({LABEL[e.svc] for e in used if not det.used_service(src, e.svc)})
        if first_use:
            points += 0.2
            reasons.append(f"first use of {', '.join(first_use)} by this host")
        if off:
            points += 0.15
            reasons.append(
                f"at {_hhmm(used[0].first, det.utc_offset_hours)}, an hour when this host is rarely active"
            )
        if all(det.sources_of_edge(e) == 0 for e in used):
            points += 0.05
            reasons.append("no other host administers it this way")
        if points < det.alert_score:
            continue
        conns = sum(e.conns for e in used)
        names = "/".join(sorted({LABEL[e.svc] for e in used}))
        sentence = (f"{src} ({role}) opened {conns} {names} connection{'s' if conns != 1 else ''} to {dst} "
                    f"({det.host_roles.role(dst)}), a host it never administered in its "
                    f"{det.warmup_days:g}-day baseline: {'; '.join(reasons)}.")  # fmt: skip
        ev = [Evidence("new admin edge", 1.0, 0.0, 0.0, "flag", f"host {det.warmup_days:g}-day edge history"),
              Evidence("connections", float(conns), 0.0, 0.0, "connections", "this window")]  # fmt: skip
        out.append(_finding(det, "lateral_movement", src, dst, used, points, attacks,
                            f"New admin connection {src} → {dst} ({names})", sentence, ev,
                            {"services": [LABEL[e.svc] for e in used], "first_use": first_use,
                             "off_hours": off, "path": [src, dst]}))  # fmt: skip
    return out


def _rpc_unusual(det: LateralDetector, rpc: Edge, dyn: Edge | None) -> bool:
    """RPC 135 (+ dynamic endpoint) that this host never used and few others use on that server.

    Workstations talk RPC to their DC at every logon (the same endpoint for everyone): that
    is common. A new endpoint nobody uses (svcctl, WMI, task scheduler) or RPC to a host no
    one else calls that way is not.
    """
    if not det.known_edge(rpc) and det.sources_of_edge(rpc) < 2:
        return True
    return dyn is not None and not det.known_edge(dyn) and det.sources_of_edge(dyn) == 0


def _peer_typical(det: LateralDetector, role: str, exclude: str) -> float:
    names = [h for h in det.fanout.names if h != exclude and det.host_roles.role(h) == role]
    if not names:
        return 0.0
    ids = det.fanout.known(names)
    ids = ids[det.fanout.warm(ids)]
    return float(np.median(det.fanout.typical(ids)[:, 0])) if len(ids) else 0.0


def _fanout(det: LateralDetector, src: str, edges: list[Edge]) -> Finding | None:
    admin = [e for e in edges if det.counts_as_admin(e)]
    dsts = sorted({e.dst for e in admin})
    n = len(dsts)
    if n < det.fanout_min:
        return None
    ids = det.fanout.known([src])
    z = float(det.fanout.z(ids, np.array([[n]], float))[0, 0])
    typical = float(det.fanout.typical(ids)[0, 0])
    role = det.host_roles.role(src)
    peer = _peer_typical(det, role, src)
    if z < det.fanout_z or n < 2.0 * peer + 2.0 or n <= det.fanout_ratio * det.most_fanout(src):
        return None
    conns = sum(e.conns for e in admin)
    failed = sum(e.failed for e in admin)
    svcs = sorted({e.svc for e in admin})
    scan = failed >= 0.5 * conns
    kind = "discovery" if scan else "lateral_movement"
    attacks = {"T1046", "T1018"} if scan else {TECHNIQUE.get(s, "T1021") for s in svcs}
    score = min(1.0, 0.5 + 0.05 * z)
    names = "/".join(LABEL[s] for s in svcs)
    sentence = (f"{src} ({role}) reached {n} distinct hosts on {names} in one window ({conns} connections, "
                f"{failed} failed) — its baseline is {typical:.1f} and its {role} peers' {peer:.1f}.")  # fmt: skip
    ev = [Evidence("distinct admin destinations", float(n), typical, round(z, 2), "hosts", "host baseline"),
          Evidence("distinct admin destinations (peers)", float(n), peer, 0.0, "hosts", f"{role} peer median")]  # fmt: skip
    title = (
        f"Admin-protocol fan-out from {src} to {n} hosts"
        if not scan
        else f"Internal scan from {src}"
    )
    return _finding(det, kind, src, "fanout", admin, score, attacks, title, sentence, ev,
                    {"destinations": n, "baseline": typical, "peer_baseline": peer}, dst=tuple(dsts[:16]))  # fmt: skip


def _ldap(det: LateralDetector, src: str, edges: list[Edge]) -> list[Finding]:
    ldap = [e for e in edges if e.svc == LDAP]
    got = sum(e.bytes_in for e in ldap)
    if got < det.ldap_min_bytes or det.host_roles.role(src) == "dc":  # DCs replicate over LDAP
        return []
    conns = sum(e.conns for e in ldap)
    ids = det.ldap.known([src])
    z = det.ldap.z(ids, np.array([[got, conns]], float))[0]
    typical = det.ldap.typical(ids)[0]
    if float(z[0]) < det.ldap_z or got < det.ldap_ratio * float(typical[0]):
        return []
    score = min(1.0, 0.45 + 0.05 * float(z[0]))
    top = max(ldap, key=lambda e: e.bytes_in)
    sentence = (f"{src} ({det.host_roles.role(src)}) pulled {got / 1024:.0f} KiB of LDAP results from {top.dst} "
                f"in {conns} connection{'s' if conns != 1 else ''} — {max(got / max(typical[0], 1.0), 1.0):.0f}× "
                f"its usual {typical[0] / 1024:.1f} KiB per window (directory enumeration).")  # fmt: skip
    ev = [Evidence("LDAP bytes received", float(got), float(typical[0]), round(float(z[0]), 2), "bytes", "host LDAP baseline"),
          Evidence("LDAP connections", float(conns), float(typical[1]), round(float(z[1]), 2), "connections", "host LDAP baseline")]  # fmt: skip
    gc = any(p in (3268, 3269) for e in ldap for p in e.ports)
    attacks = ("T1087.002", "T1018") if gc or conns >= 50 else ("T1087.002",)
    return [_finding(det, "discovery", src, top.dst, ldap, score, attacks,
                     f"LDAP enumeration burst {src} → {top.dst}", sentence, ev, {"ldap_bytes_in": got})]  # fmt: skip


def _brute(det: LateralDetector, src: str, edges: list[Edge]) -> list[Finding]:
    out = []
    for e in edges:
        if e.svc not in (SSH, RDP) or e.conns < det.brute_min_conns:
            continue
        per = (e.bytes_out + e.bytes_in) / e.conns
        if per > det.brute_max_bytes:
            continue
        ids = det.auth.known([src])
        z = float(det.auth.z(ids, np.array([[e.conns]], float))[0, 0])
        if ids[0] < 0:  # never used SSH/RDP: compare with "none" on the tightest spread
            z = float(np.log1p(e.conns)) / det.auth.min_spread
        typical = float(det.auth.typical(ids)[0, 0])
        if z < 3.0:
            continue
        score = min(1.0, 0.5 + 0.03 * e.conns)
        sentence = (f"{src} made {e.conns} short {LABEL[e.svc]} connections to {e.dst} in one window "
                    f"({per:.0f} bytes each on average, usual {typical:.0f} per window) — password guessing.")  # fmt: skip
        ev = [Evidence(f"{LABEL[e.svc]} connections to one host", float(e.conns), typical, round(z, 2),
                       "connections", "host baseline")]  # fmt: skip
        out.append(_finding(det, "brute_force", src, e.dst, [e], score, ("T1110", "T1110.001"),
                            f"{LABEL[e.svc]} password guessing {src} → {e.dst}", sentence, ev, {}))  # fmt: skip
    return out


def _chain(
    det: LateralDetector,
    src: str,
    edges: list[Edge],
    t: float,
    taint: tuple[tuple[str, ...], float],
) -> list[Finding]:
    path, when = taint
    if t - when > det.chain_seconds:
        return []
    hops = [
        e
        for e in edges
        if det.counts_as_admin(e) and e.dst not in path and e.last >= when and not det.known_edge(e)
    ]
    if not hops:
        return []
    dsts = sorted({e.dst for e in hops})
    full = (*path, dsts[0])
    svcs = "/".join(sorted({LABEL[e.svc] for e in hops}))
    gap = (min(e.first for e in hops) - when) / 60.0
    sentence = (f"Lateral chain {' → '.join(full)}: {src} was reached on an admin service and {gap:.0f} min later "
                f"itself connected to {', '.join(dsts)} over {svcs}.")  # fmt: skip
    ev = [Evidence("hops", float(len(full) - 1), 0.0, 0.0, "hops", "admin path")]
    attacks = {TECHNIQUE.get(e.svc, "T1021") for e in hops}
    f = _finding(det, "lateral_movement", path[0], "chain", hops, 0.9, attacks,
                 f"Lateral movement chain {' → '.join(full)}", sentence, ev,
                 {"path": list(full), "hop_gap_minutes": round(gap, 1)}, dst=tuple(full[1:]))  # fmt: skip
    f.src = src
    return [f]
