"""docker-compose.yml, the Dockerfile, Prometheus and Grafana provisioning agree with the code.

There is no Docker here, so these are consistency checks: every file the stack mounts or
builds exists, every slowburn container runs a real ``slowburn`` sub-command that parses,
Prometheus scrapes the port slowburn serves, the rules and the dashboard query metrics that
``stream/metrics.py`` declares, and Grafana's datasource points at the prometheus service.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from stream.cli import COMMANDS, build_parser
from stream.decoders import FORMATS
from stream.metrics import Metrics

REPO = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
DOCKERFILE = "deploy/Dockerfile"
SLOWBURN_SERVICES = sorted(
    name
    for name, svc in SERVICES.items()
    if isinstance(svc.get("build"), dict) and svc["build"].get("dockerfile") == DOCKERFILE
)
#: series Prometheus makes itself, allowed in rules beside slowburn_* metrics
SYNTHETIC_SERIES = {"up"}
_PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}


# -- helpers ------------------------------------------------------------------------------
def metric_names(expr: str) -> set[str]:
    """Series names a PromQL expression selects (functions, labels, keywords removed).

    >>> sorted(metric_names('sum by (le) (rate(a_bucket{x="y"}[5m])) / on (i) b or vector(0)'))
    ['a_bucket', 'b']
    >>> sorted(metric_names('time() - max(c_seconds) > 600 and up{job="s"} == 1'))
    ['c_seconds', 'up']
    """
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", s):
        if s[m.end() :].lstrip().startswith("(") or m.group(0) in _PROMQL_KEYWORDS:
            continue
        names.add(m.group(0))
    return names


def declared_series() -> set[str]:
    """Every series name stream.metrics.Metrics can export (with the type's suffixes)."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("_sum", "_count", "_created", ""),
        "gauge": ("",),
        "info": ("_info",),
    }
    out = set()
    for family in Metrics(CollectorRegistry()).registry.collect():
        out |= {family.name + sfx for sfx in suffixes.get(family.type, ("",))}
    return out


def option(cmd: list[str], flag: str) -> list[str]:
    """Every value given to ``flag`` in an argv list."""
    return [cmd[i + 1] for i, tok in enumerate(cmd[:-1]) if tok == flag]


def subcommand(cmd: list[str]) -> str:
    return next(tok for tok in cmd if not tok.startswith("-"))


def host_mounts(svc: dict[str, Any]) -> dict[str, Path]:
    """container path -> host path of a service's bind mounts."""
    out = {}
    for vol in svc.get("volumes", []):
        src, dst = vol.split(":")[:2]
        if src.startswith((".", "/")):
            out[dst] = (REPO / src).resolve()
    return out


def to_host(svc: dict[str, Any], container_path: str) -> Path:
    """Host file behind ``container_path`` through the service's bind mounts."""
    for dst, src in host_mounts(svc).items():
        if container_path == dst or container_path.startswith(dst.rstrip("/") + "/"):
            return src / container_path[len(dst) :].lstrip("/")
    raise AssertionError(f"{container_path} is not bind-mounted")


def kafka_env() -> dict[str, str]:
    return {k: str(v) for k, v in SERVICES["kafka"]["environment"].items()}


# -- the compose file ---------------------------------------------------------------------
def test_stack_has_its_services() -> None:
    assert {"kafka", "slowburn", "simulator", "prometheus", "grafana"} <= set(SERVICES)
    assert SLOWBURN_SERVICES == ["simulator", "slowburn"]
    assert SERVICES["kafka"]["image"].startswith("apache/kafka:4.")


def test_referenced_files_exist() -> None:
    named = set(COMPOSE.get("volumes") or {})
    for name, svc in SERVICES.items():
        build = svc.get("build")
        if build:
            context = REPO / build["context"]
            assert context.is_dir(), name
            assert (context / build["dockerfile"]).is_file(), name
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith((".", "/")):
                assert (REPO / src).exists(), f"{name}: {src} does not exist"
            else:
                assert src in named, f"{name}: volume {src} is not declared"


def test_dockerfile_copies_existing_sources_and_runs_slowburn() -> None:
    text = (REPO / DOCKERFILE).read_text()
    assert re.search(r"^FROM python:3\.11-slim", text, re.M)
    assert 'ENTRYPOINT ["slowburn"]' in text
    copies = re.findall(r"^COPY\s+(.+)$", text, re.M)
    assert copies
    for line in copies:
        *sources, _dest = line.split()
        for src in sources:
            if "*" not in src:
                assert (REPO / src).exists(), f"COPY {src}: missing"
    assert re.search(r"pip install \"?\.(\[[a-z,]+\])?\"?", text)


def test_kafka_is_single_node_kraft() -> None:
    env = kafka_env()
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    node = env["KAFKA_NODE_ID"]
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{node}@kafka:")
    assert int(env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]) == 1
    listeners = {x.split("://")[0] for x in env["KAFKA_LISTENERS"].split(",")}
    protocol_map = dict(
        p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    assert listeners == set(protocol_map)
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] in listeners
    assert "test" in SERVICES["kafka"]["healthcheck"]


@pytest.mark.parametrize("name", SLOWBURN_SERVICES)
def test_command_is_a_real_subcommand(name: str) -> None:
    cmd = [str(tok) for tok in SERVICES[name]["command"]]
    sub = subcommand(cmd)
    assert sub in COMMANDS, f"{name}: slowburn has no sub-command {sub!r}"
    if importlib.util.find_spec(COMMANDS[sub]) is not None:
        try:
            build_parser().parse_args(cmd)
        except SystemExit as exc:  # argparse's way of saying no
            raise AssertionError(f"{name}: slowburn {' '.join(cmd)} does not parse") from exc


@pytest.mark.parametrize("name", SLOWBURN_SERVICES)
def test_bootstrap_servers_name_an_advertised_listener(name: str) -> None:
    cmd = [str(tok) for tok in SERVICES[name]["command"]]
    advertised = {x.split("://")[1] for x in kafka_env()["KAFKA_ADVERTISED_LISTENERS"].split(",")}
    servers = option(cmd, "--bootstrap-servers")
    assert servers, f"{name}: no --bootstrap-servers"
    for server in servers[0].split(","):
        assert server in advertised
    depends = SERVICES[name]["depends_on"]
    assert depends["kafka"]["condition"] == "service_healthy"


def test_simulator_feeds_what_slowburn_consumes() -> None:
    run = [str(t) for t in SERVICES["slowburn"]["command"]]
    sim = [str(t) for t in SERVICES["simulator"]["command"]]
    inputs = dict(text.partition(":")[::2] for text in option(run, "--input"))
    assert inputs and all(fmt in FORMATS for fmt in inputs.values())
    assert inputs[option(sim, "--topic")[0]] == option(sim, "--format")[0]
    for dns_topic in option(sim, "--dns-topic"):
        assert inputs[dns_topic] == "zeek-json"  # the simulator tags DNS as Zeek dns records


def test_depends_on_names_services_without_cycles() -> None:
    graph = {}
    for name, svc in SERVICES.items():
        deps = svc.get("depends_on") or []
        graph[name] = set(deps if isinstance(deps, list) else deps.keys())
        assert graph[name] <= set(SERVICES), name
    assert "kafka" in graph["slowburn"] and "kafka" in graph["simulator"]
    assert "prometheus" in graph["grafana"]
    done: set[str] = set()
    while len(done) < len(graph):
        ready = {n for n, deps in graph.items() if n not in done and deps <= done}
        assert ready, f"dependency cycle among {set(graph) - done}"
        done |= ready


# -- Prometheus ---------------------------------------------------------------------------
PROM_SVC = SERVICES["prometheus"]


def prometheus_config_path() -> Path:
    flag = next(str(t) for t in PROM_SVC["command"] if str(t).startswith("--config.file="))
    return to_host(PROM_SVC, flag.split("=", 1)[1])


def prometheus_port() -> int:
    flags = [
        str(t) for t in PROM_SVC.get("command", []) if str(t).startswith("--web.listen-address=")
    ]
    return int(flags[0].rsplit(":", 1)[1]) if flags else 9090


def test_prometheus_scrapes_the_slowburn_metrics_port() -> None:
    config = yaml.safe_load(prometheus_config_path().read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = [t for sc in jobs["slowburn"]["static_configs"] for t in sc["targets"]]
    run = [str(t) for t in SERVICES["slowburn"]["command"]]
    assert targets == [f"slowburn:{option(run, '--metrics-port')[0]}"]
    assert jobs["slowburn"].get("metrics_path", "/metrics") == "/metrics"
    for rule_file in config["rule_files"]:
        assert to_host(PROM_SVC, rule_file).is_file(), rule_file


RULES = yaml.safe_load((REPO / "deploy" / "prometheus" / "rules.yml").read_text())
ALL_RULES = [rule for group in RULES["groups"] for rule in group["rules"]]


def test_rules_file_structure() -> None:
    names = [group["name"] for group in RULES["groups"]]
    assert names and len(names) == len(set(names))
    alerts = [rule["alert"] for rule in ALL_RULES]
    assert len(alerts) == len(set(alerts))
    for rule in ALL_RULES:
        assert re.fullmatch(r"Slowburn[A-Z][A-Za-z]+", rule["alert"]), rule
        assert isinstance(rule["expr"], str) and rule["expr"].strip()
        assert re.fullmatch(r"\d+[smhd]", rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]


@pytest.mark.parametrize("rule", ALL_RULES, ids=lambda r: r["alert"])
def test_rule_queries_declared_slowburn_metrics(rule: dict[str, Any]) -> None:
    names = metric_names(rule["expr"])
    assert names, rule["expr"]
    slowburn = {n for n in names if n.startswith("slowburn_")}
    assert names - slowburn <= SYNTHETIC_SERIES, names
    assert slowburn <= declared_series(), (
        f"not declared in stream/metrics.py: {slowburn - declared_series()}"
    )


def test_rules_cover_lag_dead_letters_checkpoints_and_silence() -> None:
    used = set().union(*(metric_names(rule["expr"]) for rule in ALL_RULES))
    assert {
        "slowburn_consumer_lag_messages",
        "slowburn_records_dead_lettered_total",
        "slowburn_checkpoint_last_success_timestamp_seconds",
        "slowburn_records_consumed_total",
    } <= used


# -- Grafana ------------------------------------------------------------------------------
GRAFANA_SVC = SERVICES["grafana"]
PROVISIONING = to_host(GRAFANA_SVC, "/etc/grafana/provisioning")


def datasource() -> dict[str, Any]:
    config = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    (ds,) = config["datasources"]
    return ds


def test_grafana_datasource_points_at_prometheus() -> None:
    ds = datasource()
    assert ds["type"] == "prometheus"
    assert ds["url"] == f"http://prometheus:{prometheus_port()}"


def dashboards() -> list[Path]:
    config = yaml.safe_load((PROVISIONING / "dashboards" / "dashboards.yml").read_text())
    out: list[Path] = []
    for provider in config["providers"]:
        assert provider["type"] == "file"
        out += sorted(to_host(GRAFANA_SVC, provider["options"]["path"]).glob("*.json"))
    return out


def test_dashboard_provider_finds_the_slowburn_dashboard() -> None:
    assert [p.name for p in dashboards()] == ["slowburn.json"]


def test_dashboard_panels_query_declared_metrics_through_the_datasource() -> None:
    (path,) = dashboards()
    dash = json.loads(path.read_text())
    uid = datasource()["uid"]
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    assert len(panels) >= 10
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])
    declared = declared_series()
    used: set[str] = set()
    for panel in panels:
        assert panel["datasource"]["uid"] == uid, panel["title"]
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid
            names = metric_names(target["expr"])
            assert names and names <= declared, (panel["title"], names - declared)
            used |= names
    assert {"slowburn_consumer_lag_messages", "slowburn_records_dead_lettered_total"} <= used


# -- the rules fire when they should (promtool test rules) ---------------------------------
#: promtool (Debian package "prometheus"); deploy/install-tools puts it in this cache
PROMTOOL_CACHE = Path.home() / ".cache" / "slowburn" / "promtool" / "usr" / "bin" / "promtool"
BAD = {"job": "slowburn", "instance": "a:9108"}  # the unhealthy instance of each scenario
OK = {"job": "slowburn", "instance": "b:9108"}  # a healthy one, which must not alert


def _series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    body = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return {"series": f"{name}{{{body}}}", "values": values}


def _alert(**labels: str) -> dict[str, Any]:
    return {"exp_labels": labels}


def _hist(name: str, labels: dict[str, str], bounds: dict[str, str]) -> list[dict[str, str]]:
    return [_series(f"{name}_bucket", {**labels, "le": le}, v) for le, v in bounds.items()]


#: (alert, input series, eval time, expected alerts): unhealthy instance a fires, b stays quiet
SCENARIOS: list[tuple[str, list[dict[str, str]], str, list[dict[str, Any]]]] = [
    (
        "SlowburnDown",
        [_series("up", BAD, "0x10"), _series("up", OK, "1x10")],
        "5m",
        [_alert(severity="critical", **BAD)],
    ),
    (
        "SlowburnNoRecords",
        [
            _series("slowburn_records_consumed_total", {**BAD, "source": "goflow2-json"}, "100x40"),
            _series(
                "slowburn_records_consumed_total", {**OK, "source": "goflow2-json"}, "0+600x40"
            ),
            _series("up", BAD, "1x40"),
            _series("up", OK, "1x40"),
            _series("up", {"job": "slowburn", "instance": "c:9108"}, "1x40"),
        ],  # never consumed
        "30m",
        [
            _alert(severity="critical", instance="a:9108"),
            _alert(severity="critical", instance="c:9108"),
        ],
    ),
    (
        "SlowburnConsumerLagHigh",
        [
            _series(
                "slowburn_consumer_lag_messages",
                {**BAD, "topic": "flow-messages", "partition": p},
                "300000x30",
            )
            for p in ("0", "1")
        ]
        + [
            _series(
                "slowburn_consumer_lag_messages",
                {**BAD, "topic": "zeek-dns", "partition": "0"},
                "1000x30",
            )
        ],
        "20m",
        [_alert(severity="warning", topic="flow-messages")],
    ),
    (
        "SlowburnConsumerLagGrowing",
        [
            _series(
                "slowburn_consumer_lag_messages",
                {**BAD, "topic": "flow-messages", "partition": "0"},
                "0+10000x70",
            ),
            _series(
                "slowburn_consumer_lag_messages",
                {**OK, "topic": "zeek-dns", "partition": "0"},
                "200000x70",
            ),
        ],
        "65m",
        [_alert(severity="warning", topic="flow-messages")],
    ),
    (
        "SlowburnEventTimeLagHigh",
        _hist(
            "slowburn_event_time_lag_seconds",
            BAD,
            {"600": "0x40", "1800": "0+100x40", "+Inf": "0+100x40"},
        )
        + _hist(
            "slowburn_event_time_lag_seconds",
            OK,
            {"60": "0+100x40", "600": "0+100x40", "+Inf": "0+100x40"},
        ),
        "30m",
        [_alert(severity="warning", instance="a:9108")],
    ),
    (
        "SlowburnDeadLettersHigh",
        [
            _series(
                "slowburn_records_dead_lettered_total",
                {**BAD, "source": "goflow2-json", "reason": "not_json"},
                "0+600x30",
            ),
            _series(
                "slowburn_records_dead_lettered_total",
                {**OK, "source": "zeek-json", "reason": "schema"},
                "0+6x30",
            ),
        ],
        "20m",
        [_alert(severity="warning", source="goflow2-json", reason="not_json")],
    ),
    (
        "SlowburnDeadLetterRatioHigh",
        [
            _series(
                "slowburn_records_dead_lettered_total",
                {**BAD, "source": "goflow2-json", "reason": "not_json"},
                "0+600x30",
            ),
            _series(
                "slowburn_records_consumed_total", {**BAD, "source": "goflow2-json"}, "0+6000x30"
            ),
            _series(
                "slowburn_records_dead_lettered_total",
                {**OK, "source": "zeek-json", "reason": "schema"},
                "0+6x30",
            ),
            _series("slowburn_records_consumed_total", {**OK, "source": "zeek-json"}, "0+6000x30"),
        ],
        "20m",
        [_alert(severity="critical", source="goflow2-json")],
    ),
    (
        "SlowburnCheckpointStale",
        [
            _series("slowburn_checkpoint_last_success_timestamp_seconds", BAD, "0x40"),
            _series("slowburn_checkpoint_last_success_timestamp_seconds", OK, "0+60x40"),
        ],
        "20m",
        [_alert(severity="critical", **BAD)],
    ),
    (
        "SlowburnCheckpointFailures",
        [
            _series("slowburn_checkpoints_total", {**BAD, "result": "error"}, "0 0 1 1 1"),
            _series("slowburn_checkpoints_total", {**OK, "result": "ok"}, "0 1 2 3 4"),
        ],
        "3m",
        [_alert(severity="warning", result="error", **BAD)],
    ),
    (
        "SlowburnCheckpointSlow",
        _hist(
            "slowburn_checkpoint_duration_seconds",
            BAD,
            {"10": "0x70", "60": "0+10x70", "+Inf": "0+10x70"},
        )
        + _hist(
            "slowburn_checkpoint_duration_seconds",
            OK,
            {"1": "0+10x70", "60": "0+10x70", "+Inf": "0+10x70"},
        ),
        "60m",
        [_alert(severity="warning", instance="a:9108")],
    ),
    (
        "SlowburnRebalanceStorm",
        [
            _series("slowburn_rebalances_total", {**BAD, "change": "assigned"}, "0+1x60"),
            _series("slowburn_rebalances_total", {**OK, "change": "assigned"}, "0x60"),
        ],
        "40m",
        [_alert(severity="warning", instance="a:9108")],
    ),
]


def promtool() -> str:
    found = shutil.which("promtool") or (str(PROMTOOL_CACHE) if PROMTOOL_CACHE.is_file() else None)
    if found is None:
        raise AssertionError("promtool not found: `make tools` (deploy/install-tools) installs it")
    return found


def test_every_rule_has_a_firing_scenario() -> None:
    assert sorted(s[0] for s in SCENARIOS) == sorted(r["alert"] for r in ALL_RULES)


@pytest.mark.tools
def test_promtool_accepts_the_rules_and_the_config(tmp_path: Path) -> None:
    rules = REPO / "deploy" / "prometheus" / "rules.yml"
    out = subprocess.run([promtool(), "check", "rules", str(rules)], capture_output=True, text=True)
    assert out.returncode == 0 and f"{len(ALL_RULES)} rules found" in out.stdout, (
        out.stdout + out.stderr
    )
    config = yaml.safe_load(prometheus_config_path().read_text())
    config["rule_files"] = [str(to_host(PROM_SVC, f)) for f in config["rule_files"]]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    out = subprocess.run(
        [promtool(), "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.tools
def test_rules_fire_on_unhealthy_and_stay_quiet_on_healthy_instances(tmp_path: Path) -> None:
    # annotations are templates (checked by promtool check rules); the test compares labels
    stripped = {
        "groups": [
            {**g, "rules": [{k: v for k, v in r.items() if k != "annotations"} for r in g["rules"]]}
            for g in RULES["groups"]
        ]
    }
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(stripped))
    tests = [
        {
            "interval": "1m",
            "input_series": series,
            "alert_rule_test": [{"eval_time": at, "alertname": alert, "exp_alerts": expected}],
        }
        for alert, series, at, expected in SCENARIOS
    ]
    spec = {"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": tests}
    (tmp_path / "test.yml").write_text(yaml.safe_dump(spec, sort_keys=False))
    out = subprocess.run(
        [promtool(), "test", "rules", "test.yml"], cwd=tmp_path, capture_output=True, text=True
    )
    assert out.returncode == 0 and "SUCCESS" in out.stdout, out.stdout + out.stderr
