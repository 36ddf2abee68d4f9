"""IncidentBook: grouping, episodes, material-change updates, deterministic ids, bounds."""

from __future__ import annotations

import pickle
import re
from typing import Any

from pipelines.detectors.base import Evidence, Finding
from pipelines.incidents import Incident, IncidentBook, incident_uid, score_incident

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def exfil(
    t: float,
    nbytes: float = 5e7,
    *,
    dst: str = "203.0.113.9",
    entity: str = "10.0.0.5",
    score: float = 0.8,
    severity: int = 3,
    attacks: tuple[str, ...] = ("T1048",),
    count: int = 10,
    z: float = 6.0,
    span: float = 300.0,
) -> Finding:
    return Finding(
        detector="exfil",
        kind="exfiltration",
        entity=entity,
        episode=dst,
        start=t,
        end=t + span,
        score=score,
        severity_id=severity,
        confidence=70,
        attacks=attacks,
        title="Slow upload to a rare destination",
        sentence=f"{entity} uploaded {nbytes / 1e6:.1f} MB to {dst}:443.",
        evidence=[Evidence("bytes_out_24h", nbytes, 1e6, z, "B", "host 14-day median")],
        facts={"bytes": nbytes, "connections": count},
        src=entity,
        dst=(dst,),
        dst_ports=(443,),
        count=count,
        positions=(("flows-0", int(t)),),
    )


def test_many_findings_one_episode_make_one_incident_with_few_revisions():
    book = IncidentBook()
    emitted = []
    for i in range(200):  # 200 five-minute windows of the same steady upload
        emitted += book.add([exfil(i * 300.0)], "m1")
    assert len(book) == 1
    assert len({i.uid for i in emitted}) == 1
    assert emitted[0].status == "new" and emitted[0].revision == 0
    # material changes only: far fewer alerts than windows, revisions count up by one
    assert 1 < len(emitted) < 20
    assert [i.revision for i in emitted] == list(range(len(emitted)))
    assert all(i.status == "update" for i in emitted[1:])
    inc = book.get("exfil", "10.0.0.5", "203.0.113.9")
    assert inc is not None and inc.findings_n == 200
    assert inc.start == 0.0 and inc.end == 199 * 300.0 + 300.0
    assert inc.count == 200 * 10  # disjoint windows: summed


def test_one_alert_per_incident_per_call():
    book = IncidentBook()
    out = book.add([exfil(0.0), exfil(0.0, 6e7), exfil(100.0, 7e7)], "m1")
    assert len(out) == 1 and out[0].findings_n == 3


def test_unchanged_evidence_is_not_re_emitted():
    book = IncidentBook()
    assert len(book.add([exfil(0.0, span=86400.0)], "m1")) == 1
    # a long-horizon detector re-reports the same cumulative total: overlapping -> max
    for k in range(1, 6):
        assert book.add([exfil(0.0, span=86400.0 + k)], "m1") == []
    inc = book.get("exfil", "10.0.0.5", "203.0.113.9")
    assert inc is not None and inc.count == 10  # max, not 60


def test_gap_starts_a_new_incident():
    book = IncidentBook(gap=3600.0)
    a = book.add([exfil(0.0)], "m1")
    b = book.add([exfil(300.0 + 3600.0 + 1.0)], "m1")
    assert len(a) == len(b) == 1
    assert b[0].status == "new" and b[0].uid != a[0].uid
    assert b[0].first_window == 3901.0


def test_no_gap_keeps_the_incident():
    book = IncidentBook(gap=3600.0)
    a = book.add([exfil(0.0)], "m1")
    book.add([exfil(3000.0)], "m1")
    inc = book.get("exfil", "10.0.0.5", "203.0.113.9")
    assert inc is not None and inc.uid == a[0].uid and inc.findings_n == 2


def test_different_episode_or_entity_or_detector_is_a_different_incident():
    book = IncidentBook()
    f1 = exfil(0.0)
    f2 = exfil(0.0, dst="198.51.100.1")
    f3 = exfil(0.0, entity="10.0.0.6")
    f4 = exfil(0.0)
    f4.detector = "beacon"
    out = book.add([f1, f2, f3, f4], "m1")
    assert len(out) == 4 and len({i.uid for i in out}) == 4
    assert all(i.status == "new" for i in out)


def test_uids_are_deterministic_and_uuid_formatted():
    def run(model: str) -> list[str]:
        book = IncidentBook()
        out = []
        for i in range(30):
            out += book.add([exfil(i * 300.0), exfil(i * 300.0, dst="198.51.100.1")], model)
        return [i.uid for i in out]

    a, b, c = run("m1"), run("m1"), run("m2")
    assert a == b
    assert set(a).isdisjoint(c)  # model version is part of the id
    assert all(UUID_RE.match(u) for u in a)
    assert a[0] == incident_uid("exfil", "10.0.0.5", "203.0.113.9", 0.0, "m1")


def test_severity_rise_is_emitted_at_once():
    book = IncidentBook(min_update_interval=1e9)
    book.add([exfil(0.0, severity=2, score=0.3)], "m1")
    out = book.add([exfil(300.0, severity=5, score=1.0, z=20.0)], "m1")
    assert len(out) == 1 and out[0].status == "update"
    assert out[0].severity_id >= 4


def test_new_technique_is_emitted_at_once():
    book = IncidentBook(min_update_interval=1e9)
    book.add([exfil(0.0)], "m1")
    out = book.add([exfil(0.0, attacks=("T1048", "T1567.002"))], "m1")
    assert len(out) == 1 and out[0].attacks == ("T1048", "T1567.002")
    assert book.add([exfil(0.0, attacks=("T1567.002",))], "m1") == []


def test_growth_waits_for_min_update_interval_but_is_not_lost():
    book = IncidentBook(min_update_interval=3600.0)
    strong: dict[str, Any] = {
        "score": 1.0,
        "z": 20.0,
    }  # severity already at its cap: only growth can matter
    book.add([exfil(0.0, span=60.0, **strong)], "m1")
    # count doubles inside the interval: held back
    assert book.add([exfil(100.0, count=40, span=60.0, **strong)], "m1") == []
    # a later unchanged finding after the interval carries the held-back update
    out = book.add([exfil(100.0, count=40, span=3700.0, **strong)], "m1")
    assert len(out) == 1 and out[0].count == 50


def test_emitted_incidents_are_snapshots():
    book = IncidentBook()
    first = book.add([exfil(0.0)], "m1")[0]
    book.add([exfil(300.0, 9e9, severity=5, score=1.0)], "m1")
    assert first.findings_n == 1 and first.facts["bytes"] == 5e7


def test_merged_fields():
    book = IncidentBook(max_dst=3)
    fs = [exfil(i * 300.0, dst="203.0.113.9") for i in range(12)]
    for i, f in enumerate(fs):
        f.dst = (f"192.0.2.{i}",)
        f.dst_ports = (443, 8000 + i)
        f.facts = {"bytes": 1.0 * i, f"k{i}": i}
    book.add(fs, "m1", snapshot_id="snap-7", host_scores={"10.0.0.5": 0.9})
    inc = book.get("exfil", "10.0.0.5", "203.0.113.9")
    assert inc is not None
    assert inc.dst == ("192.0.2.0", "192.0.2.1", "192.0.2.2")  # bounded union
    assert inc.dst_ports[:2] == (443, 8000)
    assert inc.facts["k0"] == 0 and inc.facts["k11"] == 11 and inc.facts["bytes"] == 11.0
    assert len(inc.positions) == 8
    assert inc.positions[:4] == tuple(("flows-0", i * 300) for i in range(4))
    assert inc.positions[-1] == ("flows-0", 3300)
    assert inc.snapshot_id == "snap-7" and inc.host_score == 0.9 and inc.model_version == "m1"


def test_host_behaviour_score_moves_risk():
    base = Incident(
        "u",
        "exfil",
        "exfiltration",
        "e",
        "",
        0.0,
        0.0,
        3600.0,
        findings_n=3,
        score=0.6,
        max_z=5.0,
        max_severity=3,
        max_confidence=60,
    )
    r_none = score_incident(base)[0]
    base.host_score = 0.95
    r_high = score_incident(base)[0]
    base.host_score = 0.05
    r_low = score_incident(base)[0]
    assert r_low < r_none < r_high
    assert all(0 <= r <= 100 for r in (r_low, r_none, r_high))


def test_risk_grows_with_evidence():
    weak = Incident("u", "d", "k", "e", "", 0.0, 0.0, 300.0, findings_n=1, score=0.3, max_z=3.0)
    strong = Incident(
        "u", "d", "k", "e", "", 0.0, 0.0, 21600.0, findings_n=40, score=0.95, max_z=15.0
    )
    assert score_incident(weak)[0] < 50 < score_incident(strong)[0]


def test_close_stale_bounds_memory():
    book = IncidentBook(gap=3600.0)
    for i in range(100):
        book.add([exfil(i * 10.0, entity=f"10.0.1.{i}")], "m1")
    assert len(book) == 100
    assert book.close_stale(500.0) == []
    closed = book.close_stale(990.0 + 300.0 + 3600.0 - 495.0)
    assert 0 < len(closed) < 100
    assert len(book) == 100 - len(closed)
    book.close_stale(1e9)
    assert len(book) == 0


def test_max_open_caps_the_book():
    book = IncidentBook(max_open=50)
    for i in range(300):
        book.add([exfil(float(i), entity=f"10.1.{i // 250}.{i % 250}")], "m1")
    assert len(book) == 50 and book.evicted_total == 250


def test_pickle_round_trip_gives_identical_outputs():
    book = IncidentBook()
    for i in range(20):
        book.add([exfil(i * 300.0), exfil(i * 300.0, dst="198.51.100.1", severity=2)], "m1")
    clone = pickle.loads(pickle.dumps(book))
    more = [exfil(6000.0 + i * 300.0, 5e7 * (i + 2), severity=min(5, 2 + i)) for i in range(10)]
    a = [book.add([f], "m1") for f in more]
    b = [clone.add([f], "m1") for f in more]
    assert a == b and any(a)
    assert book.open == clone.open and book.params() == clone.params()


def test_bad_numbers_do_not_crash():
    f = exfil(0.0, z=float("nan"))
    f.score = float("inf")
    f.facts = {"bytes": float("nan")}
    out = IncidentBook().add([f], "m1")
    assert len(out) == 1 and 0 <= out[0].risk_score <= 100
