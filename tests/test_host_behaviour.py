"""HostBehaviourDetector: shared HalfSpaceTrees over per-host deviation vectors."""

from __future__ import annotations

import pickle

import numpy as np
from river import anomaly

from pipelines.detectors._hst import BatchHalfSpaceTrees
from pipelines.detectors.base import Window
from pipelines.detectors.host_behaviour import FEATURES, HostBehaviourDetector
from pipelines.inject import merge
from pipelines.records import DnsBatch, FlowBatch, HomeNetworks, annotate_direction
from tests.test_lateral import DAY, T0, background, run_windows, windows, workstations


def _burst(host: str, t: float, n: int = 60) -> FlowBatch:
    """A host suddenly uploading to many new external hosts, with failures (exfil/scan-like)."""
    b = FlowBatch.from_columns(
        {
            "ts_start": t + np.arange(n) * 4.0,
            "ts_end": t + np.arange(n) * 4.0 + 1.0,
            "src": [host] * n,
            "dst": [f"198.51.100.{i}" for i in range(n)],
            "dst_port": [443] * n,
            "proto": [6] * n,
            "bytes_out": [5_000_000] * n,
            "bytes_in": [2000] * n,
            "conn_state": ["SF" if i % 3 else "S0" for i in range(n)],
            "origin": ["burst"] * n,
            "offset": list(range(n)),
        }
    )
    return annotate_direction(b, HomeNetworks.default())


def test_background_is_quiet_and_a_burst_is_a_host_anomaly_with_its_score() -> None:
    flows, dns = background(days=3, n_ws=8)
    det = HostBehaviourDetector(warmup_windows=24)
    assert run_windows([det], flows, dns) == []
    assert isinstance(det.model, BatchHalfSpaceTrees) and det.learnt > det.window_size
    assert not det.model.first_window and det.model.l_mass.sum() > 0

    victim = workstations(8)[2]
    det = HostBehaviourDetector(warmup_windows=24)
    found = run_windows([det], merge(flows, _burst(victim, T0 + 2 * DAY + 11 * 3600 + 30)), dns)
    assert found, "burst not flagged"
    assert {f.entity for f in found} == {victim}
    f = found[0]
    assert (f.kind, f.analytic, f.detector) == ("host_anomaly", "Learning", "host_behaviour")
    assert f.facts["hst_score"] >= det.threshold and f.score == f.facts["hst_score"]
    names = {e.name for e in f.evidence}
    assert "host-behaviour score" in names and len(names & set(FEATURES)) >= det.min_features
    assert "host-behaviour score" in f.sentence
    # audit trail: a bounded sample of the host's records behind the finding
    assert 0 < len(f.positions) <= 8 and all(o == "burst" for o, _k in f.positions)


def test_entity_score_pure_score_pickle_and_params() -> None:
    flows, dns = background(days=2, n_ws=6)
    det = HostBehaviourDetector(warmup_windows=24, seed=3, n_trees=6, height=6, window_size=100)
    assert det.params() == {
        **det.params(),
        "n_trees": 6,
        "height": 6,
        "window_size": 100,
        "seed": 3,
        "warmup_windows": 24,
    }
    run_windows([det], flows, dns)
    ws = workstations(6)[0]
    t = T0 + 2 * DAY + 10 * 3600
    burst = _burst(ws, t)
    w = Window.of(int(t // 300), 300.0)
    det.ingest(burst, DnsBatch.empty(), w)
    feats = det.close(w)
    before = pickle.dumps(det)
    clone = pickle.loads(before)
    first = det.score(feats)
    assert pickle.dumps(det) == before
    feats2 = clone.close(w)  # nothing accumulated in the clone: re-ingest the same records
    clone.ingest(burst, DnsBatch.empty(), w)
    feats2 = clone.close(w)
    assert [f.sentence for f in clone.score(feats2)] == [f.sentence for f in first]
    det.learn(feats, first)
    s = det.entity_score(ws)
    assert s is not None and 0.0 <= s <= 1.0
    assert det.entity_score("10.99.99.99") is None


def test_deterministic_and_empty_windows_cheap() -> None:
    flows, dns = background(days=2, n_ws=6)
    a, b = HostBehaviourDetector(warmup_windows=12), HostBehaviourDetector(warmup_windows=12)
    burst = _burst(workstations(6)[1], T0 + DAY + 15 * 3600)
    fa = run_windows([a], merge(flows, burst), dns)
    fb = run_windows([b], merge(flows, burst), dns)
    assert [(f.entity, f.start, f.score) for f in fa] == [(f.entity, f.start, f.score) for f in fb]
    size = a.nbytes()
    last = max(w.index for w, _, _ in windows(flows, dns))
    for i in range(last + 1, last + 2000):
        assert a.process_window(Window.of(i, 300.0)) == []
    assert a.nbytes() <= size + 4096


def test_idle_hosts_are_evicted() -> None:
    flows, dns = background(days=2, n_ws=6)
    det = HostBehaviourDetector(warmup_windows=12, idle_days=1.0)
    run_windows([det], flows, dns)
    assert det.entities() > 6
    last = max(w.index for w, _, _ in windows(flows, dns))
    for i in range(last + 1, last + 1 + 3 * 288):
        det.process_window(Window.of(i, 300.0))
    assert det.entities() == 0 and not det.drift.daily.index


def test_drift_day_rollup_keeps_a_bounded_positions_sample_per_host() -> None:
    from pipelines.detectors.drift import DriftMonitor

    m = DriftMonitor(("bytes_out",), max_positions=3)
    for w in range(4):
        m.add(["a", "b"], np.array([[1.0], [2.0]]), [[("f", 2 * w), ("f", 2 * w + 1)], []])
    roll = m.close_day(0)
    assert roll.positions == {"a": (("f", 0), ("f", 1), ("f", 2))}
    assert m.close_day(1).positions == {}
    assert pickle.loads(pickle.dumps(m)).max_positions == 3


def _as_river(model: BatchHalfSpaceTrees) -> anomaly.HalfSpaceTrees:
    """The River HalfSpaceTrees holding the same trees and masses (an older snapshot's model)."""
    river = anomaly.HalfSpaceTrees(
        n_trees=model.n_trees, height=model.height, window_size=model.window_size, seed=model.seed
    )
    river.learn_one({name: 0.5 for name in model.names})  # builds the trees from the seed
    inner = 2**model.height - 1
    for t, root in enumerate(river.trees):
        stack = [(root, 0)]
        while stack:
            node, i = stack.pop()
            node.l_mass, node.r_mass = int(model.l_mass[t, i]), int(model.r_mass[t, i])
            if i < inner:
                assert (node.feature, node.threshold) == (
                    model.names[model.feature[t, i]],
                    model.threshold[t, i],
                )
                stack += [(node.children[0], 2 * i + 1), (node.children[1], 2 * i + 2)]
    river.counter, river._first_window = model.counter, model.first_window
    return river


def test_snapshot_with_river_trees_and_per_host_dicts_restores_and_continues_identically() -> None:
    flows, dns = background(days=3, n_ws=6)
    victim = workstations(6)[3]
    flows = merge(flows, _burst(victim, T0 + 2 * DAY + 14 * 3600 + 30))
    parts = list(windows(flows, dns))
    cut = int(len(parts) * 0.6)
    a = HostBehaviourDetector(warmup_windows=12, window_size=100)
    for w, f, d in parts[:cut]:
        a.ingest(f, d, w)
        a.process_window(w)
    w, f, d = parts[cut]
    a.ingest(f, d, w)  # an open window in the snapshot
    old = dict(a.__getstate__())
    old["model"] = _as_river(a.model)
    acc = a._acc
    old["_acc"] = {h: acc.x[i].copy() for i, h in enumerate(acc.names)}
    old["_pos"] = {}
    for h_idx, origin, offset in acc.pos:
        for i, o, k in zip(h_idx.tolist(), origin.tolist(), offset.tolist(), strict=True):
            old["_pos"].setdefault(acc.names[i], []).append((o, k))
    names = a.baseline.names
    old["last_scores"] = {names[j]: float(a._last_score[j]) for j in a._last_rows.tolist()}
    for k in ("_last_score", "_last_rows", "_gen"):
        del old[k]
    b = HostBehaviourDetector.__new__(HostBehaviourDetector)
    b.__setstate__(pickle.loads(pickle.dumps(old)))
    assert isinstance(b.model, BatchHalfSpaceTrees) and b.entity_score(victim) == a.entity_score(
        victim
    )
    found_a, found_b = a.process_window(w), b.process_window(w)
    for w, f, d in parts[cut + 1 :]:
        for det, out in ((a, found_a), (b, found_b)):
            if len(f) or len(d):
                det.ingest(f, d, w)
            out.extend(det.process_window(w))
        assert a.entity_score(victim) == b.entity_score(victim)
    assert found_a == found_b and any(f.entity == victim for f in found_a)
    assert np.array_equal(a.model.l_mass, b.model.l_mass) and a.learnt == b.learnt


def test_vectorised_off_hours_equals_hour_profile_per_host() -> None:
    det = HostBehaviourDetector()
    hosts = [f"10.0.0.{i}" for i in range(40)]
    for day in range(3):
        for h in range(24):
            active = [x for i, x in enumerate(hosts) if i % 4 == 0 or 8 <= h < 18 - i % 5]
            det.hours.observe(active, day * DAY + h * 3600.0)
    names = [*hosts, "10.9.9.9"]
    for h in range(24):
        t = 3 * DAY + h * 3600.0 + 60.0
        want = [det.hours.off_hours(x, t) for x in names]
        assert det._off_hours(names, t).tolist() == want
    assert (
        any(det._off_hours(names, 3 * DAY + 3 * 3600.0))
        and not det._off_hours(names, 3 * DAY + 9 * 3600.0).any()
    )
