"""CI check of detection quality: the quick evaluation subset must not lose recall.

Runs ``eval.run_all`` on the configs marked ``quick: true`` (a few minutes: small
simulated backgrounds, one simulator scenario and one injected real capture) and fails
if the recall of any of them drops below what the committed ``eval/RESULTS.md`` records
for that scenario (its summary table is parsed).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from eval import run_all

RESULTS = Path(run_all.__file__).with_name("RESULTS.md")


def test_results_md_parses_and_lists_the_quick_subset() -> None:
    table = run_all.parse_results_md(RESULTS.read_text())
    quick = {c["name"] for c in run_all.load_configs(quick=True)}
    assert quick, "no config is marked quick: true"
    assert quick <= set(table), f"RESULTS.md lacks quick scenarios {sorted(quick - set(table))}"
    for name in quick:
        assert table[name]["quick"] == "yes"
        assert 0.0 <= float(table[name]["recall"]) <= 1.0


def test_injection_plan_remaps_onto_simulated_roles(tmp_path: Path, datasets: Path) -> None:
    cfg = run_all.load_configs(["ds-lateral-smb-svcctl"])[0]
    sim = cfg["simulate"]
    roles = run_all.hosts_by_role(sim["hosts"], sim["seed"])
    inputs, args = run_all.plan_injection(cfg, tmp_path, roles, datasets)
    assert len(inputs) == 1 and Path(inputs[0]).is_file()
    remaps = [a for a in args if "=" in a and ":" in a and not a.startswith(str(tmp_path))]
    new = {r.rsplit("=", 1)[1] for r in remaps}
    assert roles["dc"][0] in new and set(roles["workstation"]) & new
    shift = next(a for a in args if a.startswith(inputs[0] + "=+"))
    truth = (tmp_path / "truth-ds-lateral-smb-svcctl-0.json").read_text()
    assert "lateral-smb-svcctl-1" in truth and float(shift.split("=+")[1]) > 0


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_quick_subset_recall_not_below_results_md(tmp_path: Path) -> None:
    recorded = run_all.parse_results_md(RESULTS.read_text())
    configs = run_all.load_configs(quick=True)
    results = run_all.run(configs, jobs=2, keep=str(tmp_path))
    assert len(results) == len(configs), "a quick scenario failed to run"
    for r in results:
        want = float(recorded[r["name"]]["recall"])
        got = r["report"]["recall"]
        assert got + 1e-9 >= want, f"{r['name']}: recall {got:.2f} < recorded {want:.2f}"
        assert r["report"]["alerts"] >= r["report"]["true_alerts"] >= 0
