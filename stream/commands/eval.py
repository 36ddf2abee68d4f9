"""Replay inputs and score the alerts against labelled truth (``truth.json``).

Several truth files may be given (e.g. the simulated background's and an injected real
capture's). A truth file follows the ``--shift``/``--remap`` of the inputs it describes
(an input whose file name appears in the truth's ``sources[].file``, or the input given
as ``--truth FILE=INPUT``), so an attack capture injected into background keeps correct
labels. Prints, per incident, detected yes/no, time to detect and whether the ATT&CK
technique was right, then recall, precision, false alerts per 1,000 host-days and alerts
per day.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any

from stream.commands.replay import add_input_arguments, build_inputs, load

HELP = "replay inputs and score alerts against truth.json (recall, precision, false alerts)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_input_arguments(p)
    p.add_argument(
        "--truth",
        action="append",
        required=True,
        metavar="TRUTH.json[=INPUT]",
        help="labels (repeatable)",
    )
    p.add_argument(
        "--hosts",
        type=int,
        help="internal hosts for false alerts per host-day (default: from truth)",
    )
    p.add_argument("--json", metavar="FILE", help="write the report as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="draw a timeline of incidents vs alerts")
    p.add_argument("--alerts-out", metavar="FILE", help="also write the alerts (OCSF JSON lines)")
    p.add_argument(
        "--slack", type=float, default=3600.0, help="time tolerance when matching (s, default 3600)"
    )


def _iso(t: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def transform_truth(truth: dict[str, Any], shift: float, remap: dict[str, str]) -> dict[str, Any]:
    """The truth as it is after its input was shifted by ``shift`` s and remapped.

    >>> t = {"incidents": [{"src": "1.1.1.1", "dst": ["2.2.2.2"], "start": "2024-01-01T00:00:00Z",
    ...                     "end": "2024-01-01T00:01:00Z"}], "span": {}, "hosts": {"1.1.1.1": "x"}}
    >>> out = transform_truth(t, 3600.0, {"1.1.1.1": "10.0.0.9"})
    >>> out["incidents"][0]["src"], out["incidents"][0]["start"], list(out["hosts"])
    ('10.0.0.9', '2024-01-01T01:00:00.000Z', ['10.0.0.9'])
    """
    from pipelines.evaluate import parse_time

    t = copy.deepcopy(truth)

    def ip(v: Any) -> Any:
        if isinstance(v, list):
            return [remap.get(x, x) for x in v]
        return remap.get(v, v) if isinstance(v, str) else v

    def when(v: Any) -> Any:
        return _iso(parse_time(v) + shift) if v else v

    for inc in t.get("incidents", []):
        inc["src"], inc["dst"] = ip(inc.get("src")), ip(inc.get("dst"))
        inc["start"], inc["end"] = when(inc.get("start")), when(inc.get("end"))
    span = t.get("span") or {}
    for k in ("start", "end"):
        if span.get(k):
            span[k] = when(span[k])
    t["hosts"] = {remap.get(k, k): v for k, v in (t.get("hosts") or {}).items()}
    return t


def _linked(
    truth: dict[str, Any], truth_path: str, explicit: str | None, inputs: list[Any]
) -> list[Any]:
    if explicit:
        return [s for s in inputs if s.path == explicit]
    names = {
        Path(str(s.get("file", ""))).name for s in truth.get("sources", []) if isinstance(s, dict)
    }
    names |= {
        Path(str(s.get("file", ""))).as_posix()
        for s in truth.get("sources", [])
        if isinstance(s, dict)
    }
    return [
        s
        for s in inputs
        if Path(s.path).name in names or any(s.path.endswith(n) for n in names if n)
    ]


def merge_truths(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One truth from several: incidents and hosts united, span covering all."""
    from pipelines.evaluate import parse_time

    out: dict[str, Any] = {
        "name": "+".join(str(p.get("name", "")) for p in parts),
        "incidents": [],
        "hosts": {},
    }
    starts, ends = [], []
    for p in parts:
        out["incidents"].extend(p.get("incidents", []))
        out["hosts"].update(p.get("hosts") or {})
        span = p.get("span") or {}
        if span.get("start") and span.get("end"):
            starts.append(parse_time(span["start"]))
            ends.append(parse_time(span["end"]))
    if starts:
        out["span"] = {"start": _iso(min(starts)), "end": _iso(max(ends))}
    return out


def plot_timeline(path: str, truth: dict[str, Any], alerts: list[Any]) -> None:
    from datetime import UTC, datetime

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    from pipelines.evaluate import parse_time

    incs = truth.get("incidents", [])
    latest: dict[str, Any] = {}
    for a in alerts:
        latest[a.uid] = a
    rows = [f"truth {i['id']}" for i in incs] + [
        f"{a.detector} {a.entity}" for a in latest.values()
    ]
    spans = [(parse_time(i["start"]), parse_time(i["end"])) for i in incs] + [
        (a.start, a.end) for a in latest.values()
    ]
    span = truth.get("span") or {}
    lo = parse_time(span["start"]) if span.get("start") else min((s for s, _ in spans), default=0.0)
    hi = parse_time(span["end"]) if span.get("end") else max((e for _, e in spans), default=1.0)
    min_w = max(hi - lo, 60.0) / 300.0  # keep short incidents visible

    def day(t: float) -> float:
        return float(mdates.date2num(datetime.fromtimestamp(t, UTC)))

    fig, ax = plt.subplots(figsize=(12, max(2.5, 0.32 * len(rows) + 1)))
    for y, (s, e) in enumerate(spans):
        color = "tab:red" if y < len(incs) else "tab:blue"
        ax.barh(y, max(e - s, min_w) / 86400.0, left=day(s), color=color, alpha=0.65)
    ax.set_xlim(day(lo), day(hi))
    ax.xaxis_date()
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.set_xlabel("event time (UTC)")
    ax.set_title("labelled incidents (red) vs alerts (blue)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    from pipelines.evaluate import evaluate
    from stream.replay import run_replay
    from stream.sinks import JsonLinesAlertSink

    _config, home, engine = load(args)
    inputs = build_inputs(args)
    sink = JsonLinesAlertSink(args.alerts_out) if args.alerts_out else None
    summary = run_replay(engine, inputs, home, sink, None, None, sys.stderr.isatty())
    if sink:
        sink.close()
    parts = []
    for text in args.truth:
        path, _, explicit = text.partition("=")
        truth = json.loads(Path(path).read_text())
        for spec in _linked(truth, path, explicit or None, inputs):
            truth = transform_truth(truth, spec.applied_shift, spec.remap)
        parts.append(truth)
    truth = merge_truths(parts) if len(parts) > 1 else parts[0]
    report = evaluate(truth, summary.alerts, hosts=args.hosts, slack=args.slack)
    out = sys.stdout.write
    out(
        f"{'incident':<28}{'kind':<18}{'detected':<10}{'time to detect':<16}{'technique':<10}detector\n"
    )
    for r in report.incidents:
        ttd = "-" if r.time_to_detect is None else f"{r.time_to_detect / 3600:.2f} h"
        out(
            f"{r.id:<28}{r.kind:<18}{'yes' if r.detected else 'NO':<10}{ttd:<16}"
            f"{'right' if r.technique_correct else ('-' if not r.detected else 'wrong'):<10}{r.detector}\n"
        )
    out(
        f"\nrecall {report.recall:.2f}  precision {report.precision:.2f}  "
        f"alerts {report.alerts} (true {report.true_alerts}, false {report.false_alerts})  "
        f"false per 1000 host-days {report.false_per_1000_host_days:.1f}  alerts/day {report.alerts_per_day:.1f}\n"
    )
    sys.stderr.write(summary.table() + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(report.as_dict(), indent=2))
    if args.plot:
        plot_timeline(args.plot, truth, summary.alerts)
    return 0
