"""Engine: event-time windows, lateness, ordering, incidents, model version, snapshots."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from pipelines.detectors.base import Detector, Finding, Window
from pipelines.engine import Engine, EngineConfig
from pipelines.exceptions import StateError
from pipelines.governance import ModelRegistry, restore_snapshot, take_snapshot
from pipelines.records import DnsBatch, FlowBatch


class Recorder(Detector):
    """Records what the engine hands it; flags a host whose window bytes exceed ``limit``."""

    name = "recorder"

    def __init__(self, limit: int = 1000) -> None:
        self.limit = limit
        self.calls: list[tuple[str, int, int]] = []
        self.acc: dict[str, int] = {}
        self.first: dict[str, tuple[str, int]] = {}

    def ingest(self, flows: FlowBatch, dns: DnsBatch, window: Window) -> None:
        assert np.all(np.floor(flows.ts_start / 300.0) <= window.index)
        assert np.all(np.diff(flows.ts_start) >= 0), "records of a window arrive time-sorted"
        self.calls.append(("ingest", window.index, len(flows)))
        for s, b, o, off in zip(
            flows.src.tolist(),
            flows.bytes_out.tolist(),
            flows.origin.tolist(),
            flows.offset.tolist(),
            strict=True,
        ):
            self.acc[s] = self.acc.get(s, 0) + b
            self.first.setdefault(s, (o, off))

    def close(self, window: Window) -> tuple[Window, dict[str, int], dict[str, tuple[str, int]]]:
        self.calls.append(("close", window.index, 0))
        acc, first, self.acc, self.first = self.acc, self.first, {}, {}
        return window, acc, first

    def score(self, features):  # type: ignore[no-untyped-def]
        window, acc, first = features
        return [
            Finding(
                self.name,
                "exfiltration",
                h,
                "",
                window.start,
                window.end,
                0.9,
                4,
                80,
                ("T1048",),
                "Big upload",
                f"{h} sent {b} bytes",
                src=h,
                count=1,
                positions=(first[h],),
                facts={"bytes": b},
            )
            for h, b in sorted(acc.items())
            if b > self.limit
        ]

    def learn(self, features, findings) -> None:  # type: ignore[no-untyped-def]
        pass


def flows(ts, src="10.0.0.1", nbytes=10):  # type: ignore[no-untyped-def]
    ts = np.asarray(ts, dtype=float)
    return FlowBatch.from_columns(
        {
            "ts_start": ts,
            "ts_end": ts + 1,
            "src": [src] * len(ts),
            "dst": ["8.8.8.8"] * len(ts),
            "bytes_out": [nbytes] * len(ts),
            "origin": ["t/0"] * len(ts),
            "offset": np.arange(len(ts)),
        }
    )


def test_windows_close_in_order_including_empty_ones() -> None:
    det = Recorder()
    eng = Engine(EngineConfig(window=300.0, lateness=60.0), detectors=[det])
    eng.process(flows([10, 20]))
    eng.process(flows([1300]))  # window 4; watermark 1240 closes windows 0..3
    closes = [i for kind, i, _ in det.calls if kind == "close"]
    assert closes == [0, 1, 2, 3]
    eng.flush()
    assert [i for kind, i, _ in det.calls if kind == "close"] == [0, 1, 2, 3, 4]


def test_late_records_go_to_oldest_open_window_and_are_counted() -> None:
    det = Recorder()
    eng = Engine(EngineConfig(window=300.0, lateness=0.0), detectors=[det])
    eng.process(flows([10, 700]))  # closes windows 0 and 1
    eng.process(flows([50]))  # late: window 0 is closed
    eng.flush()
    assert eng.stats["late_records"] == 1
    ingested = sum(n for kind, _, n in det.calls if kind == "ingest")
    assert ingested == 3, "late records are processed, never dropped"


def test_out_of_order_within_allowance_is_sorted_into_its_window() -> None:
    det = Recorder()
    eng = Engine(EngineConfig(window=300.0, lateness=120.0), detectors=[det])
    eng.process(flows([310, 20]))
    eng.process(flows([250]))
    eng.flush()
    assert eng.stats["late_records"] == 0
    assert [(k, i, n) for k, i, n in det.calls if k == "ingest"] == [
        ("ingest", 0, 2),
        ("ingest", 1, 1),
    ]


def test_non_finite_times_never_poison_the_watermark() -> None:
    eng = Engine(EngineConfig(), detectors=[Recorder()])
    eng.process(flows([np.nan, 100.0]))
    assert eng.max_ts == 100.0


def test_jump_in_time_skips_long_empty_runs() -> None:
    det = Recorder()
    eng = Engine(EngineConfig(window=300.0, lateness=0.0, max_empty_windows=10), detectors=[det])
    eng.process(flows([0]))
    eng.process(flows([300.0 * 1000]))
    closes = [i for kind, i, _ in det.calls if kind == "close"]
    assert len(closes) == 11 and closes[0] == 0 and closes[-1] == 999
    assert eng.stats["windows_skipped"] == 1000 - 11


def test_findings_become_incidents_with_deterministic_ids() -> None:
    def run() -> list[str]:
        eng = Engine(EngineConfig(window=300.0, lateness=0.0), detectors=[Recorder(limit=100)])
        out = eng.process(flows(np.arange(0, 3000, 30), nbytes=50))
        out += eng.flush()
        return [a.uid for a in out]

    first, second = run(), run()
    assert first and first == second
    assert len(set(first)) == 1, "one incident for one entity's episode"


def test_model_version_depends_on_parameters_only() -> None:
    a = Engine(EngineConfig(), detectors=[Recorder(limit=5)]).model_version
    b = Engine(EngineConfig(), detectors=[Recorder(limit=5)]).model_version
    c = Engine(EngineConfig(), detectors=[Recorder(limit=6)]).model_version
    assert a == b != c


def test_snapshot_restore_continues_identically() -> None:
    def stream(eng: Engine, start: int, stop: int) -> list[tuple[str, int]]:
        out = []
        for t in range(start, stop, 100):
            out += [(x.uid, x.revision) for x in eng.process(flows([t, t + 1], nbytes=600))]
        return out

    eng = Engine(EngineConfig(window=300.0, lateness=0.0), detectors=[Recorder()])
    stream(eng, 0, 3000)
    info, blob = take_snapshot(eng)
    restored = restore_snapshot(blob, expected_model_version=eng.model_version)
    assert restored.snapshot_id == info.snapshot_id
    assert stream(eng, 3000, 6000) == stream(restored, 3000, 6000)
    with pytest.raises(StateError):
        restore_snapshot(blob[:-5])
    with pytest.raises(StateError):
        restore_snapshot(blob, expected_model_version="other")
    reg = ModelRegistry(keep=1)
    reg.record(info, blob)
    with pytest.raises(StateError):
        reg.rollback("nope")


def test_engine_pickles_with_pending_windows() -> None:
    eng = Engine(EngineConfig(window=300.0, lateness=600.0), detectors=[Recorder()])
    eng.process(flows([10, 400]))
    assert eng.buffered_records() == 2
    clone = pickle.loads(pickle.dumps(eng))
    assert clone.buffered_records() == 2
