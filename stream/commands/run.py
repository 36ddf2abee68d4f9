"""Run slowburn as a Kafka consumer group: consume sensor topics, publish alerts.

Settings come from --config (sections ``kafka``, ``inputs``, ``state``, ``metrics``,
``alerts`` plus the engine sections) and the flags below override them. Delivery is
at-least-once with deterministic alert ids; state is checkpointed to the compacted
``slowburn.state`` topic and --state-dir. SIGTERM finishes the batch, checkpoints and
leaves. Secrets: ``kafka.sasl_password`` / ``sasl_password_env`` / ``sasl_password_file``
or the SLOWBURN_KAFKA_SASL_PASSWORD environment variable; they are never logged.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

HELP = "consume Kafka topics, detect, publish alerts (the streaming service)"

#: keys of the ``kafka`` section that configure the runtime rather than the client
RUNTIME_KEYS = (
    "group",
    "instance_id",
    "backend",
    "alerts_topic",
    "deadletter_topic",
    "state_topic",
    "topic_partitions",
    "max_poll_records",
    "session_timeout_s",
    "max_poll_interval_s",
    "max_in_flight",
)

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML or TOML configuration file")
    p.add_argument("--bootstrap-servers", metavar="HOST:PORT", help="Kafka bootstrap servers")
    p.add_argument(
        "--input",
        action="append",
        metavar="TOPIC[:FORMAT]",
        help="input topic and format (repeatable; default auto)",
    )
    p.add_argument("--alerts-topic", help="alert topic (default slowburn.alerts)")
    p.add_argument("--deadletter-topic", help="dead-letter topic (default slowburn.deadletter)")
    p.add_argument("--state-topic", help="compacted state topic (default slowburn.state)")
    p.add_argument("--group", help="consumer group (default slowburn)")
    p.add_argument(
        "--instance-id", help="static group membership id (default: $SLOWBURN_INSTANCE_ID when set)"
    )
    p.add_argument(
        "--backend",
        choices=("kafka-python", "confluent"),
        help="Kafka client (default kafka-python)",
    )
    p.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on this port")
    p.add_argument("--state-dir", help="local checkpoint directory (default ./state)")
    p.add_argument("--alert-format", choices=("ocsf", "ecs"))
    p.add_argument("--checkpoint-interval", type=float, metavar="SECONDS", help="default 30")
    p.add_argument("--max-seconds", type=float, help="stop after this long (tests, benchmarks)")
    p.add_argument(
        "--idle-exit", type=float, metavar="SECONDS", help="stop after this long without input"
    )


def build(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """(RuntimeConfig, Settings, ClientSettings, metrics port) from config + flags."""
    from stream.config import load_config
    from stream.exceptions import StreamError
    from stream.kafka import settings_from
    from stream.runtime import RuntimeConfig

    config = load_config(args.config)
    kafka = config.section("kafka")
    runtime = {k: kafka.pop(k) for k in RUNTIME_KEYS if k in kafka}
    if args.bootstrap_servers:
        kafka["bootstrap_servers"] = args.bootstrap_servers
    client = settings_from(kafka)

    inputs: list[tuple[str, str]] = []
    for item in config.raw.get("inputs") or []:
        if not isinstance(item, dict) or "topic" not in item:
            raise StreamError(
                "config: inputs: each entry needs a 'topic' (and optionally 'format')"
            )
        inputs.append((str(item["topic"]), str(item.get("format", "auto"))))
    if args.input:
        inputs = []
        for text in args.input:
            topic, _, fmt = text.partition(":")
            inputs.append((topic, fmt or "auto"))
    from stream.decoders import FORMATS

    for topic, fmt in inputs:
        if fmt not in FORMATS or fmt in ("pcap", "zeek-tsv"):
            raise StreamError(f"input {topic}: format {fmt!r} cannot be consumed from Kafka")
    state = config.section("state")
    cfg = RuntimeConfig(**runtime)
    if inputs:
        cfg.inputs = inputs
    cfg.alerts_topic = args.alerts_topic or config.section("alerts").get("topic", cfg.alerts_topic)
    cfg.deadletter_topic = args.deadletter_topic or cfg.deadletter_topic
    cfg.state_topic = args.state_topic or state.get("topic", cfg.state_topic)
    cfg.group = args.group or cfg.group
    cfg.instance_id = (
        args.instance_id or cfg.instance_id or os.environ.get("SLOWBURN_INSTANCE_ID") or None
    )
    cfg.backend = args.backend or cfg.backend
    cfg.alert_format = config.alert_format(args.alert_format)
    # alerts.snapshot_in_body: also name the snapshot inside the alert body (default: only
    # in the ``snapshot_id`` record header, so redelivered bodies are byte-identical)
    cfg.snapshot_in_body = bool(
        config.section("alerts").get("snapshot_in_body", cfg.snapshot_in_body)
    )
    cfg.state_dir = args.state_dir or state.get("dir", cfg.state_dir)
    cfg.checkpoint_interval_s = float(
        args.checkpoint_interval or state.get("checkpoint_interval_s", cfg.checkpoint_interval_s)
    )
    cfg.max_seconds = args.max_seconds
    cfg.idle_exit_s = args.idle_exit
    port = (
        args.metrics_port
        if args.metrics_port is not None
        else config.section("metrics").get("port")
    )
    return cfg, config.settings, client, port


def run(args: argparse.Namespace) -> int:
    from stream.metrics import Metrics, serve
    from stream.runtime import Runtime

    cfg, settings, client, port = build(args)
    metrics = Metrics()
    server = serve(metrics, int(port)) if port else None
    runtime = Runtime(cfg, settings, client, metrics)
    runtime.install_signal_handlers()
    try:
        runtime.run()
    finally:
        if server is not None:
            server.shutdown()
    sys.stderr.write(f"slowburn run: {runtime.records:,} records, {runtime.sent_alerts:,} alerts\n")
    return 0
