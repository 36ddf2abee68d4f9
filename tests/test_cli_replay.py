"""`slowburn replay`, `eval` and `demo` as a user runs them: files in, alerts out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stream.cli import main
from tests.ocsf_schema import validate_detection_finding

SIM_ARGS = ["--hosts", "20", "--days", "2", "--seed", "11", "--scenario", "fast_exfil"]


@pytest.fixture(scope="module")
def sim_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sim") / "net.zeek.json"
    assert main(["simulate", *SIM_ARGS, "--format", "zeek-json", "--out", str(out)]) == 0
    return out


def _alerts(path: Path) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def replayed(sim_file: Path, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:  # type: ignore[type-arg]
    """One OCSF replay of the simulated file, shared by the tests that only read it."""
    out = tmp_path_factory.mktemp("replay") / "alerts.jsonl"
    assert main(["replay", str(sim_file), "--alerts-out", str(out), "--no-progress"]) == 0
    return _alerts(out)


def test_replay_writes_valid_ocsf_alerts_and_a_summary(
    sim_file: Path, replayed: list[dict]
) -> None:  # type: ignore[type-arg]
    alerts = replayed
    truth = json.loads(Path(str(sim_file) + ".truth.json").read_text())
    exfil = next(i for i in truth["incidents"] if i["kind"] == "exfiltration")
    hits = [a for a in alerts if a["unmapped"]["slowburn"]["entity"] == exfil["src"]]
    assert hits, "the exfiltrating host is alerted"
    for a in alerts:
        assert validate_detection_finding(a) == []
        expl = a["unmapped"]["slowburn"]
        assert (
            expl["model_version"]
            and expl["sentence"]
            and any(c.isdigit() for c in expl["sentence"])
        )
        assert expl["positions"] and all(p["origin"] == str(sim_file) for p in expl["positions"])
    attacks = {t["technique"]["uid"] for a in hits for t in a["finding_info"]["attacks"]}
    assert attacks & {"T1048", "T1041", "T1030"}


def test_replaying_again_gives_identical_ids_and_ecs_on_request(
    sim_file: Path,
    replayed: list[dict],
    tmp_path: Path,
    capsys,  # type: ignore[type-arg]
) -> None:
    out = tmp_path / "ecs.jsonl"
    assert (
        main(
            [
                "replay",
                str(sim_file),
                "--alerts-out",
                str(out),
                "--alert-format",
                "ecs",
                "--no-progress",
            ]
        )
        == 0
    )
    docs = _alerts(out)
    assert docs and all(
        d["event"]["kind"] == "alert" and d["threat"]["framework"] == "MITRE ATT&CK" for d in docs
    )
    again = [(d["event"]["id"], d["message"]) for d in docs]
    assert again == [(a["metadata"]["uid"], a["message"]) for a in replayed], (
        "same input, same alert ids"
    )
    err = capsys.readouterr().err
    assert "records" in err and "exfil" in err, "a summary table on stderr"


def test_state_dir_resumes_across_runs(sim_file: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    lines = sim_file.read_text().splitlines(keepends=True)
    first, second = tmp_path / "part1.json", tmp_path / "part2.json"
    first.write_text("".join(lines[: len(lines) // 2]))
    second.write_text("".join(lines[len(lines) // 2 :]))
    assert (
        main(
            [
                "replay",
                str(first),
                "--alerts-out",
                str(tmp_path / "x1"),
                "--state-dir",
                str(state),
                "--no-progress",
            ]
        )
        == 0
    )
    saved = (state / "engine.state").read_bytes()
    from pipelines.governance import read_header

    sid = read_header(saved)["snapshot_id"]
    out = tmp_path / "x2"
    assert (
        main(
            [
                "replay",
                str(second),
                "--alerts-out",
                str(out),
                "--state-dir",
                str(state),
                "--no-progress",
            ]
        )
        == 0
    )
    later = _alerts(out)
    assert later, "the exfiltration in the second half is found with the first half's baselines"
    assert {a["unmapped"]["slowburn"]["snapshot_id"] for a in later} == {sid}


def test_bad_config_names_the_key(sim_file: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("detectors:\n  exfil:\n    no_such_knob: 3\n")
    assert main(["replay", str(sim_file), "--config", str(cfg)]) == 2
    assert "detectors.exfil.no_such_knob" in capsys.readouterr().err
    cfg.write_text("engine:\n  window: -5\n")
    assert main(["replay", str(sim_file), "--config", str(cfg)]) == 2
    cfg.write_text("detector:\n  exfil: {}\n")
    assert main(["replay", str(sim_file), "--config", str(cfg)]) == 2
    assert "'detector'" in capsys.readouterr().err


def test_allowlisted_destination_is_suppressed(sim_file: Path, tmp_path: Path) -> None:
    truth = json.loads(Path(str(sim_file) + ".truth.json").read_text())
    exfil = next(i for i in truth["incidents"] if i["kind"] == "exfiltration")
    dst = exfil["dst"] if isinstance(exfil["dst"], str) else exfil["dst"][0]
    cfg = tmp_path / "allow.toml"
    cfg.write_text(f'[allowlist]\ndestinations = ["{dst}/32"]\nhosts = ["{exfil["src"]}"]\n')
    out = tmp_path / "allowed.jsonl"
    assert (
        main(
            [
                "replay",
                str(sim_file),
                "--config",
                str(cfg),
                "--alerts-out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    assert not [a for a in _alerts(out) if a["unmapped"]["slowburn"]["entity"] == exfil["src"]]


def test_eval_reports_detection_and_writes_json_and_plot(
    sim_file: Path, tmp_path: Path, capsys
) -> None:  # type: ignore[no-untyped-def]
    truth = str(sim_file) + ".truth.json"
    rep, png = tmp_path / "r.json", tmp_path / "t.png"
    assert (
        main(["eval", "--truth", truth, str(sim_file), "--json", str(rep), "--plot", str(png)]) == 0
    )
    report = json.loads(rep.read_text())
    assert report["recall"] == 1.0
    assert report["incidents"][0]["detected"] and report["incidents"][0]["technique_correct"]
    assert png.stat().st_size > 5000
    assert "recall 1.00" in capsys.readouterr().out
