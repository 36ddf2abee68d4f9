"""Real broker: collector publishes raw datagrams (key/peer = exporter); sensor publishes keyed batches."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer

from pipelines.records import FlowBatch
from stream.collector import Collector, KafkaSink
from stream.decoders.base import Message
from stream.decoders.netflow import NetflowDecoder
from stream.decoders.summaries import SummaryDecoder
from stream.sensor import KafkaSummarySink, Sensor
from tests.kafka_broker import KafkaBroker
from tests.test_netflow import UPTIME, V9_FIELDS, fset, tmpl, v9, v9_rec
from tests.test_netflow_collect import send

pytestmark = pytest.mark.kafka


def consume(broker: KafkaBroker, topic: str, expected: int, timeout: float = 60.0) -> list[Any]:
    consumer = KafkaConsumer(
        topic, auto_offset_reset="earliest", group_id=None, **broker.client_config()
    )
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                out.extend(batch)
    finally:
        consumer.close()
    return out


def test_collector_raw_mode_to_kafka_decodes_downstream(
    kafka: KafkaBroker, topic_name: str
) -> None:
    kafka.create_topic(topic_name, partitions=2)
    sink = KafkaSink(topic_name, kafka.bootstrap)
    collector = Collector(("127.0.0.1", 0), sink, mode="raw", max_seconds=30)
    port = collector.bind()
    thread = threading.Thread(target=collector.serve, daemon=True)
    thread.start()
    rec = v9_rec("10.0.0.5", "203.0.113.8", 40000, 443, 6, 0x1B, 5000, 9, UPTIME - 100, UPTIME)
    send(port, v9([fset(0, tmpl(300, V9_FIELDS))]), v9([fset(300, rec)]))
    time.sleep(0.5)
    collector.stop()
    thread.join(10)
    collector.close()
    records = consume(kafka, topic_name, 2)
    assert len(records) == 2
    assert {r.key for r in records} == {b"127.0.0.1"}
    assert all(dict(r.headers)["peer"] == b"127.0.0.1" for r in records)
    records.sort(key=lambda r: (r.timestamp, r.offset))
    d = NetflowDecoder()
    peers = [dict(r.headers)["peer"].decode() for r in records]
    result = d.decode(
        [
            Message(r.value, f"{topic_name}/{r.partition}", r.offset, key=r.key, peer=p)
            for r, p in zip(records, peers, strict=True)
        ]
    )
    (flow,) = list(result.flows.rows())
    assert (flow["src"], flow["bytes_out"], flow["sensor"]) == ("10.0.0.5", 5000, "127.0.0.1")


def test_sensor_to_kafka_keyed_by_internal_host(
    kafka: KafkaBroker, topic_name: str, datasets: Path
) -> None:
    kafka.create_topic(topic_name, partitions=3)
    sink = KafkaSummarySink(topic_name, kafka.bootstrap)
    sensor = Sensor(sink, batch=200)
    n = sensor.from_capture(datasets / "protocols/ssh/sshguess.pcap")
    sink.close()
    records = consume(kafka, topic_name, sink.sent)
    assert len(records) == sink.sent
    assert {r.key for r in records} == {b"192.168.56.1"}  # both ends inside: the smaller address
    assert len({r.partition for r in records}) == 1
    d = SummaryDecoder()
    rs = [
        d.decode([Message(r.value, f"{topic_name}/{r.partition}", r.offset) for r in records]),
        d.flush(),
    ]
    flows = FlowBatch.concat([r.flows for r in rs])
    assert int(flows.pkts_out.sum() + flows.pkts_in.sum()) == n == 431
    assert len(flows) == 11
