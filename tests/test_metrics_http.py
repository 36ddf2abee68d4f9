"""``slowburn run --metrics-port``: scrape /metrics over HTTP and parse it as Prometheus text.

The parser is prometheus_client's own (``text_string_to_metric_families``), so the test
fails on anything a Prometheus server would reject, and it checks the numbers: records
consumed equal what was produced, dead letters by reason, checkpoints, consumer lag
down to zero on every partition, entities tracked, build info.
"""

from __future__ import annotations

import re
import signal
import socket
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.runtime_helpers import produce_canonical, simulated_flows, start_run, wait_for

pytestmark = [pytest.mark.kafka]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """sample name + labels -> value, parsed by the Prometheus text-format parser."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            assert resp.headers["Content-Type"].startswith("text/plain")
            text = resp.read().decode()
    except OSError:
        return {}
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _get(m: dict[Any, float], name: str, **labels: str) -> float | None:
    return m.get((name, tuple(sorted(labels.items()))))


def test_metrics_endpoint_over_http(kafka, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from kafka import KafkaProducer

    flows, _ = simulated_flows()
    topic = "t-metrics-http"
    kafka.create_topic(topic, partitions=2)
    n = produce_canonical(kafka.bootstrap, topic, flows, 0, 20_000)
    p = KafkaProducer(bootstrap_servers=kafka.bootstrap)
    p.send(topic, b"not json", partition=0)
    p.send(topic, b'{"kind":"flow","ts_start":1.0,"bytes_out":-5}', partition=1)
    p.flush()
    p.close()
    port = _free_port()
    run = start_run(
        kafka.bootstrap,
        topic,
        "gm",
        tmp_path,
        "--metrics-port",
        str(port),
        "--checkpoint-interval",
        "1",
        "--idle-exit",
        "600",
        "--state-dir",
        str(tmp_path / "state"),
    )
    try:

        def done() -> dict[Any, float] | None:
            m = _scrape(port)
            consumed = _get(m, "slowburn_records_consumed_total", source="canonical")
            lags = [
                _get(m, "slowburn_consumer_lag_messages", topic=topic, partition=str(i))
                for i in (0, 1)
            ]
            ok = consumed == n + 2 and lags == [0.0, 0.0]
            return m if ok and _get(m, "slowburn_checkpoints_total", result="ok") else None

        m = wait_for(done, 150, "all records consumed and lag 0 on the scraped endpoint")
        run.send_signal(signal.SIGTERM)
        assert run.wait(60) == 0, (tmp_path / "run.log").read_text()[-3000:]
    finally:
        if run.poll() is None:
            run.kill()
    assert _get(m, "slowburn_records_decoded_total", source="canonical", kind="flow") == n
    assert (
        _get(m, "slowburn_records_dead_lettered_total", source="canonical", reason="not_json") == 1
    )
    assert (
        _get(m, "slowburn_records_dead_lettered_total", source="canonical", reason="negative") == 1
    )
    assert (_get(m, "slowburn_entities_tracked", detector="exfil") or 0) > 0
    assert (_get(m, "slowburn_state_bytes") or 0) > 0
    assert (_get(m, "slowburn_processing_latency_seconds_count") or 0) >= 1
    assert (_get(m, "slowburn_checkpoint_last_success_timestamp_seconds") or 0) > 1.7e9
    assert (_get(m, "slowburn_rebalances_total", change="assigned") or 0) >= 1
    assert any(k[0] == "slowburn_build_info" for k in m)
    # bounded labels: no IP address ever appears as a label value
    ipv4 = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")
    assert not any(ipv4.match(v) for _n, lab in m for _k, v in lab)
