"""Run every evaluation scenario and write ``eval/RESULTS.md``.

    python -m eval.run_all                 # every eval/*.yaml, then RESULTS.md + results.json
    python -m eval.run_all --quick         # the CI subset (configs with ``quick: true``), printed only
    python -m eval.run_all --only beacon --only lateral-winrm   # re-run some, merge into RESULTS.md

For each config the background is generated with ``slowburn simulate`` (zeek-json, with
the config's simulator scenarios) into a temporary directory; injected captures of
``../shared/datasets`` get ``--shift`` (to the configured hour of the simulation) and
``--remap`` (attacker/victim onto simulated hosts of the configured roles, picked by
index among the hosts of that role — the simulated network is deterministic by seed),
and a derived truth file per injected group (the dataset's incidents for those files,
their span) linked to its input with ``--truth FILE=INPUT``. ``slowburn eval --json``
scores the alerts; its reports are collected here. Scenarios run as subprocesses, at
most ``--jobs`` (default 2) at a time.

Per-scenario records are kept in ``eval/results.json`` (so ``--only`` merges into the
previous full run) and rendered as Markdown tables in ``eval/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
#: the shared labelled captures (as tests/conftest.py: override with SLOWBURN_DATASETS)
DATASETS = Path(os.environ.get("SLOWBURN_DATASETS", REPO.parent / "shared" / "datasets"))
RESULTS_MD = HERE / "RESULTS.md"
RESULTS_JSON = HERE / "results.json"
SIM_START = 1_699_833_600.0  # pipelines.simulate.DEFAULT_START (Monday 2023-11-13 00:00 UTC)

__all__ = [
    "load_configs",
    "main",
    "parse_results_md",
    "plan_injection",
    "render",
    "run",
    "run_scenario",
]


class EvalSuiteError(Exception):
    """A scenario config is invalid or a scenario run failed."""


def load_configs(names: list[str] | None = None, quick: bool = False) -> list[dict[str, Any]]:
    """Scenario configs from ``eval/*.yaml`` (sorted by name), filtered by ``names``/``quick``.

    >>> cfgs = load_configs(["benign"])
    >>> cfgs[0]["name"], cfgs[0]["simulate"]["scenarios"]
    ('benign', [])
    """
    out = []
    for path in sorted(HERE.glob("*.yaml")):
        cfg = yaml.safe_load(path.read_text())
        cfg.setdefault("name", path.stem)
        cfg.setdefault("simulate", {})
        cfg["simulate"].setdefault("scenarios", [])
        cfg["file"] = path.name
        out.append(cfg)
    if names:
        known = {c["name"] for c in out}
        unknown = sorted(set(names) - known)
        if unknown:
            raise EvalSuiteError(f"unknown scenario(s) {unknown}; known: {sorted(known)}")
        out = [c for c in out if c["name"] in names]
    if quick:
        out = [c for c in out if c.get("quick")]
    return out


def hosts_by_role(hosts: int, seed: int) -> dict[str, list[str]]:
    """Simulated internal addresses per role (workstation, server, dc, jump, printer)."""
    from pipelines.simulate.network import Network

    roles: dict[str, list[str]] = {}
    for h in Network(hosts, seed).hosts:
        roles.setdefault(h.role, []).append(h.ip)
    return roles


def resolve_remap(spec: dict[str, Any], roles: dict[str, list[str]]) -> dict[str, str]:
    """``{old: new}`` from ``{old: "1.2.3.4" | {role: R, index: I}}``.

    >>> resolve_remap({"a": "9.9.9.9", "b": {"role": "dc", "index": 1}}, {"dc": ["10.2.1.10", "10.2.1.11"]})
    {'a': '9.9.9.9', 'b': '10.2.1.11'}
    """
    out = {}
    for old, new in (spec or {}).items():
        if isinstance(new, dict):
            pool = roles.get(str(new["role"]), [])
            if not pool:
                raise EvalSuiteError(f"remap {old}: no simulated host has role {new['role']!r}")
            out[str(old)] = pool[int(new.get("index", 0)) % len(pool)]
        else:
            out[str(old)] = str(new)
    return out


def _t(v: str) -> float:
    return dt.datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp()


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def group_truth(truth: dict[str, Any], files: list[str]) -> dict[str, Any]:
    """The dataset's incidents recorded for ``files`` (all incidents if they name no files).

    >>> t = {"name": "d", "incidents": [
    ...     {"id": "a", "files": ["x/dns.pcap"], "start": "2022-01-01T00:00:00Z", "end": "2022-01-01T00:01:00Z"},
    ...     {"id": "b", "files": ["y/dns.pcap"], "start": "2022-01-02T00:00:00Z", "end": "2022-01-02T00:01:00Z"}]}
    >>> g = group_truth(t, ["y/dns.pcap"])
    >>> [i["id"] for i in g["incidents"]], g["span"]
    (['b'], {'start': '2022-01-02T00:00:00.000Z', 'end': '2022-01-02T00:01:00.000Z'})
    """
    wanted = set(files)
    incs = []
    for inc in truth.get("incidents", []):
        names = inc.get("files")
        # exact relative paths (dns-tunnel's three files are all called dns.pcap)
        if names is None or wanted & set(names):
            incs.append(dict(inc))
    if not incs:
        raise EvalSuiteError(f"{truth.get('name')}: no incidents for files {files}")
    start = min(_t(i["start"]) for i in incs)
    end = max(_t(i["end"]) for i in incs)
    return {
        "name": f"{truth.get('name', 'dataset')}[{','.join(files)}]",
        "sources": [{"file": f} for f in files],
        "span": {"start": _iso(start), "end": _iso(end)},
        "hosts": {},
        "incidents": incs,
    }


def plan_injection(
    cfg: dict[str, Any], workdir: Path, roles: dict[str, list[str]], datasets: Path | None = None
) -> tuple[list[str], list[str]]:
    """(extra inputs, extra ``slowburn eval`` arguments) for the config's injected captures."""
    inj = cfg.get("inject")
    if not inj:
        return [], []
    folder = (datasets or DATASETS) / inj["dataset"]
    truth = json.loads((folder / "truth.json").read_text())
    remap = resolve_remap(inj.get("remap", {}), roles)
    inputs: list[str] = []
    args: list[str] = []
    for g, group in enumerate(inj["groups"]):
        files = [str(f) for f in group["files"]]
        sub = group_truth(truth, files)
        shift = SIM_START + float(group["at_hours"]) * 3600.0 - _t(sub["span"]["start"])
        tpath = workdir / f"truth-{cfg['name']}-{g}.json"
        tpath.write_text(json.dumps(sub, indent=1))
        paths = [str(folder / f) for f in files]
        for p in paths:
            if not Path(p).is_file():
                raise EvalSuiteError(f"{cfg['name']}: missing dataset file {p}")
            inputs.append(p)
            args += ["--shift", f"{p}={shift:+.3f}"]
            args += [a for old, new in remap.items() for a in ("--remap", f"{p}:{old}={new}")]
        args += ["--truth", f"{tpath}={paths[0]}"]
    return inputs, args


def _run(cmd: list[str], log: Path) -> None:
    with log.open("ab") as fh:
        fh.write(("$ " + " ".join(cmd) + "\n").encode())
        fh.flush()
        rc = subprocess.run(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT).returncode
    if rc:
        tail = log.read_text(errors="replace")[-2000:]
        raise EvalSuiteError(f"command failed ({rc}): {' '.join(cmd)}\n{tail}")


def _logged_times(log: Path) -> tuple[float, float]:
    """(simulate s, eval s) from a scenario log written by an earlier run."""
    import re

    text = log.read_text(errors="replace") if log.exists() else ""
    sim = re.findall(r"records in ([0-9.]+) s", text)
    ev = re.findall(r"^time\s+([0-9.]+)\s+s", text, re.M)
    return (float(sim[-1]) if sim else 0.0), (float(ev[-1]) if ev else 0.0)


def run_scenario(cfg: dict[str, Any], workdir: Path, reuse: bool = False) -> dict[str, Any]:
    """Simulate the background, replay + score it with ``slowburn eval``; the result record.

    With ``reuse``, a report left in ``workdir`` by an earlier run of the same config
    (same simulate section, recorded next to it) is taken instead of running again.
    """
    sim = cfg["simulate"]
    hosts, days, seed = (
        int(sim.get("hosts", 100)),
        float(sim.get("days", 3)),
        int(sim.get("seed", 1)),
    )
    name = cfg["name"]
    log = workdir / f"{name}.log"
    bg = workdir / f"{name}.jsonl"
    report = workdir / f"{name}.report.json"
    began = time.monotonic()
    stamp = json.dumps({k: cfg.get(k) for k in ("simulate", "inject", "config")}, sort_keys=True)
    stamp_file = workdir / f"{name}.config.json"
    if reuse and report.exists() and stamp_file.exists() and stamp_file.read_text() == stamp:
        simulated, evaluated = _logged_times(log)
        return _record(
            cfg, hosts, days, seed, bg, json.loads(report.read_text()), simulated, evaluated
        )
    stamp_file.write_text(stamp)
    report.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "stream", "simulate", "--hosts", str(hosts), "--days", f"{days:g}"]
    cmd += ["--seed", str(seed), "--format", "zeek-json", "--out", str(bg)]
    for s in sim["scenarios"]:
        cmd += ["--scenario", s]
    _run(cmd, log)
    simulated = time.monotonic() - began
    inputs, extra = plan_injection(cfg, workdir, hosts_by_role(hosts, seed))
    cmd = [sys.executable, "-m", "stream", "eval", "--truth", f"{bg}.truth.json", str(bg), *inputs]
    cmd += [*extra, "--hosts", str(hosts), "--json", str(report)]
    if cfg.get("config"):
        cmd += ["--config", str(HERE / cfg["config"])]
    _run(cmd, log)
    rep = json.loads(report.read_text())
    return _record(cfg, hosts, days, seed, bg, rep, simulated, time.monotonic() - began - simulated)


def _record(
    cfg: dict[str, Any],
    hosts: int,
    days: float,
    seed: int,
    bg: Path,
    rep: dict[str, Any],
    simulated: float,
    evaluated: float,
) -> dict[str, Any]:
    sim = cfg["simulate"]
    name = cfg["name"]
    bg_truth = json.loads(Path(f"{bg}.truth.json").read_text())
    return {
        "name": name,
        "kind": "dataset"
        if cfg.get("inject")
        else ("benign" if not sim["scenarios"] else "simulated"),
        "quick": bool(cfg.get("quick")),
        "description": str(cfg.get("description", "")).strip(),
        "hosts": hosts,
        "days": days,
        "seed": seed,
        "records": bg_truth.get("span", {}).get("packets_or_records"),
        "simulate_s": round(simulated, 1),
        "eval_s": round(evaluated, 1),
        "report": rep,
    }


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "pipelines", "stream"],
            cwd=REPO,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return out.stdout.strip() + (
            " (+ uncommitted changes in pipelines/stream)" if dirty else ""
        )
    except OSError:
        return "unknown"


def _f(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


SUMMARY_HEADER = (
    "| scenario | kind | quick | hosts | days | incidents | detected | recall | precision "
    "| alerts | false alerts | false / 1000 host-days | alerts/day | run time (s) |"
)


def summary_row(r: dict[str, Any]) -> str:
    rep = r["report"]
    incs = rep["incidents"]
    det = sum(1 for i in incs if i["detected"])
    return (
        f"| {r['name']} | {r['kind']} | {'yes' if r['quick'] else 'no'} | {r['hosts']} | {r['days']:g} "
        f"| {len(incs)} | {det} | {_f(rep['recall'])} | {_f(rep['precision'])} | {rep['alerts']} "
        f"| {rep['false_alerts']} | {_f(rep['false_per_1000_host_days'], 1)} "
        f"| {_f(rep['alerts_per_day'], 1)} | {r['simulate_s'] + r['eval_s']:.0f} |"
    )


def render(results: list[dict[str, Any]], meta: dict[str, str]) -> str:
    """RESULTS.md text: summary table, totals, then one incident table per scenario."""
    lines = [
        "# slowburn evaluation results",
        "",
        f"Generated by `python -m eval.run_all` on {meta['date']} at commit {meta['commit']} "
        f"({meta['machine']}). Scenario configs: `eval/*.yaml` (see eval/README.md). "
        "Default configuration (all detectors, default thresholds), alerts matched to truth by "
        "`pipelines/evaluate.py` (kind/technique family, entity, time overlap with 1 h slack).",
        "",
        "## Summary",
        "",
        SUMMARY_HEADER,
        "|" + "---|" * 14,
    ]
    lines += [summary_row(r) for r in results]
    n_inc = sum(len(r["report"]["incidents"]) for r in results)
    n_det = sum(1 for r in results for i in r["report"]["incidents"] if i["detected"])
    alerts = sum(r["report"]["alerts"] for r in results)
    true = sum(r["report"]["true_alerts"] for r in results)
    false = sum(r["report"]["false_alerts"] for r in results)
    hd = sum(r["report"]["host_days"] for r in results)
    days = sum(r["days"] for r in results)
    lines += [
        "",
        f"**All scenarios:** recall {n_det}/{n_inc} = {_f(n_det / n_inc if n_inc else 1.0)}, "
        f"precision {true}/{alerts} = {_f(true / alerts if alerts else 1.0)}, "
        f"false alerts per 1,000 host-days {_f(1000 * false / hd if hd else 0.0, 1)} "
        f"({false} false alerts over {hd:,.0f} host-days), alerts/day {_f(alerts / days if days else 0.0, 1)}.",
        "",
    ]
    for r in results:
        rep = r["report"]
        lines += [f"## {r['name']}", ""]
        if r["description"]:
            lines += [r["description"], ""]
        lines += [
            f"{r['hosts']} hosts × {r['days']:g} days, seed {r['seed']}, {r['records'] or 0:,} background "
            f"records; simulate {r['simulate_s']:.0f} s, eval {r['eval_s']:.0f} s.",
            "",
        ]
        if rep["incidents"]:
            lines += [
                "| incident | kind | detected | time to detect | technique right | detector |",
                "|---|---|---|---|---|---|",
            ]
            for i in rep["incidents"]:
                ttd = i["time_to_detect"]
                lines.append(
                    f"| {i['id']} | {i['kind']} | {'yes' if i['detected'] else '**NO**'} "
                    f"| {'-' if ttd is None else f'{ttd / 3600:.2f} h'} "
                    f"| {('yes' if i['technique_correct'] else 'no') if i['detected'] else '-'} "
                    f"| {i['detector'] or '-'} |"
                )
            lines.append("")
        lines += [
            "| recall | precision | alerts | false alerts | false / 1000 host-days | alerts/day |",
            "|---|---|---|---|---|---|",
            f"| {_f(rep['recall'])} | {_f(rep['precision'])} | {rep['alerts']} | {rep['false_alerts']} "
            f"| {_f(rep['false_per_1000_host_days'], 1)} | {_f(rep['alerts_per_day'], 1)} |",
            "",
        ]
    return "\n".join(lines)


def parse_results_md(text: str) -> dict[str, dict[str, str]]:
    """The summary table of a RESULTS.md as ``{scenario: {column: cell}}``.

    >>> md = SUMMARY_HEADER + "\\n|---|\\n| x | simulated | yes | 40 | 2 | 1 | 1 | 1.00 | 1.00 | 1 | 0 | 0.0 | 0.5 | 9 |\\n"
    >>> parse_results_md(md)["x"]["recall"]
    '1.00'
    """
    cols: list[str] = []
    out: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        if not line.startswith("|"):
            cols = [] if not out else cols
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] == "scenario":
            cols = cells
        elif cols and not set(cells[0]) <= {"-"}:
            out[cells[0]] = dict(zip(cols, cells, strict=False))
    return out


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"


def run(
    configs: list[dict[str, Any]], jobs: int = 2, keep: str | None = None, reuse: bool = False
) -> list[dict[str, Any]]:
    """Run ``configs`` (at most ``jobs`` at a time); the result records, in config order."""
    tmp = None if keep else tempfile.TemporaryDirectory(prefix="slowburn-eval-")
    workdir = Path(keep or (tmp.name if tmp else "."))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            futures = [pool.submit(run_scenario, c, workdir, reuse) for c in configs]
            results = []
            for c, f in zip(configs, futures, strict=True):
                try:
                    r = f.result()
                except EvalSuiteError as exc:
                    sys.stderr.write(f"{c['name']}: FAILED {exc}\n")
                    continue
                sys.stderr.write(f"{c['name']}: {summary_row(r)}\n")
                results.append(r)
        return results
    finally:
        if tmp is not None:
            tmp.cleanup()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval.run_all", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="only the CI subset (quick: true)")
    p.add_argument("--only", action="append", metavar="NAME", help="only these scenarios")
    p.add_argument("--jobs", type=int, default=2, help="scenarios in parallel (default 2)")
    p.add_argument("--keep", metavar="DIR", help="keep generated files and logs in DIR")
    p.add_argument(
        "--reuse", action="store_true", help="with --keep: reuse reports of earlier runs"
    )
    p.add_argument("--write", action="store_true", help="with --quick: still update RESULTS.md")
    p.add_argument("--json", metavar="FILE", help="also write this run's records as JSON")
    args = p.parse_args(argv)
    configs = load_configs(args.only, args.quick)
    # largest first (host-days): the pool of --jobs finishes close together
    configs.sort(
        key=lambda c: -float(c["simulate"].get("hosts", 100)) * float(c["simulate"].get("days", 3))
    )
    if not configs:
        raise EvalSuiteError("no scenario selected")
    results = run(configs, args.jobs, args.keep, args.reuse)
    sys.stdout.write(SUMMARY_HEADER + "\n" + "\n".join(summary_row(r) for r in results) + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    if args.quick and not args.write:
        return 0
    stored: dict[str, Any] = {}
    if RESULTS_JSON.exists():
        stored = {r["name"]: r for r in json.loads(RESULTS_JSON.read_text())["results"]}
    for r in results:
        stored[r["name"]] = r
    current = {c["name"]: c for c in load_configs()}
    order = list(current)
    merged = [stored[n] for n in order if n in stored]
    for r in merged:  # flags/descriptions as the configs say now
        r["quick"] = bool(current[r["name"]].get("quick"))
        r["description"] = str(current[r["name"]].get("description", "")).strip()
    missing = [n for n in order if n not in stored]
    meta = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": _git_commit(),
        "machine": machine(),
    }
    RESULTS_JSON.write_text(json.dumps({"meta": meta, "results": merged}, indent=1) + "\n")
    text = render(merged, meta)
    if missing:
        text += "\n## Not run\n\n" + "".join(f"- {n}: no result recorded yet\n" for n in missing)
    RESULTS_MD.write_text(text + "\n")
    sys.stdout.write(f"wrote {RESULTS_MD}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
