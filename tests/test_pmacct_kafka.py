"""Real pmacctd -> real Kafka broker -> PmacctDecoder, checked against tshark on the same pcap.

pmacctd (Debian 1.7.7, built with ``--enable-kafka``) reads a shared capture through
``pcap_savefile`` and publishes JSON records with its ``kafka`` plugin; the test consumes
them from the broker with kafka-python and decodes them. Totals are compared with
tshark's per-packet IP lengths of the same capture.

Documented difference: pmacctd 1.7.7 with ``pcap_savefile_wait: true`` (needed: with
``false`` it exits before the plugin has accounted the capture) accounts the last plugin
buffer twice when it is stopped. With ``plugin_buffer_size: 100`` a buffer holds one
packet, so the difference is exactly the capture's last packet, counted twice. Bytes are
IP-layer on both sides (pmacct ``bytes`` = IP total length, tshark ``ip.len``).
"""

from __future__ import annotations

import collections
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from stream.decoders.base import Message
from stream.decoders.pmacct import PmacctDecoder

pytestmark = [pytest.mark.kafka, pytest.mark.tools]

CONF = """\
daemonize: false
pcap_savefile: {pcap}
pcap_savefile_wait: true
pmacctd_stitching: true
timestamps_since_epoch: true
timestamps_utc: true
plugins: kafka[k]
aggregate[k]: src_host, dst_host, src_port, dst_port, proto, tcpflags
kafka_output[k]: json
kafka_broker_host[k]: {host}
kafka_broker_port[k]: {port}
kafka_topic[k]: {topic}
kafka_refresh_time[k]: 300
kafka_markers[k]: true
plugin_buffer_size[k]: 100
plugin_pipe_size[k]: 1024000
"""


def _tshark(pcap: Path) -> list[tuple[float, str, str, int, int, int]]:
    out = subprocess.run(
        ["tshark", "-r", str(pcap), "-Y", "ip", "-T", "fields", "-e", "frame.time_epoch", "-e", "ip.src",
         "-e", "ip.dst", "-e", "ip.len", "-e", "tcp.srcport", "-e", "udp.srcport", "-e", "tcp.dstport",
         "-e", "udp.dstport"],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout  # fmt: skip
    rows = []
    for line in out.splitlines():
        t, src, dst, length, tsp, usp, tdp, udp = line.split("\t")
        rows.append(
            (
                float(t),
                src,
                dst,
                int(length.split(",")[0]),
                int(tsp or usp or 0),
                int(tdp or udp or 0),
            )
        )
    return rows


def _consume(bootstrap: str, topic: str, idle_s: float = 8.0) -> list[Any]:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=int(idle_s * 1000))  # fmt: skip
    try:
        return list(consumer)
    finally:
        consumer.close()


def test_pmacctd_kafka_totals_match_tshark(kafka: Any, datasets: Path, tmp_path: Path) -> None:
    if shutil.which("pmacctd") is None or shutil.which("tshark") is None:
        pytest.fail("pmacctd and tshark are required (apt install pmacct tshark)")
    assert "kafka" in subprocess.run(["pmacctd", "-V"], capture_output=True, text=True).stdout
    pcap = datasets / "beacon-https" / "test-cc-capture-2.pcap"
    topic = kafka.create_topic(f"pmacct-{tmp_path.name[-20:]}", 1)
    host, _, port = kafka.bootstrap.rpartition(":")
    conf = tmp_path / "pmacctd.conf"
    conf.write_text(CONF.format(pcap=pcap, host=host, port=port, topic=topic))
    log = (tmp_path / "pmacctd.log").open("w")
    proc = subprocess.Popen(["pmacctd", "-f", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    try:
        time.sleep(5)  # the 1,084-packet capture is read in well under a second
        proc.send_signal(signal.SIGINT)  # purge the cache to Kafka and exit
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    records = _consume(kafka.bootstrap, topic)
    assert records, (tmp_path / "pmacctd.log").read_text()[-2000:]
    msgs = [
        Message(r.value, f"{r.topic}/{r.partition}", r.offset, timestamp=r.timestamp / 1000)
        for r in records
    ]
    result = PmacctDecoder().decode(msgs)
    assert not result.dead, result.dead[:3]
    assert result.ignored >= 2  # purge_init / purge_close markers (kafka_markers: true)
    flows = result.flows
    assert len(flows) + result.ignored == len(msgs)

    packets = _tshark(pcap)
    last = packets[-1]
    assert int(flows.pkts_out.sum()) == len(packets) + 1
    assert int(flows.bytes_out.sum()) == sum(p[3] for p in packets) + last[3]
    assert not flows.bidirectional.any() and int(flows.bytes_in.sum()) == 0

    # per (src, dst, sport, dport): same bytes/packets, and the flow starts at its first packet
    want: dict[tuple[str, str, int, int], list[float]] = collections.defaultdict(
        lambda: [0, 0, float("inf")]
    )
    for t, src, dst, length, sport, dport in packets:
        w = want[(src, dst, sport, dport)]
        w[0] += length
        w[1] += 1
        w[2] = min(w[2], t)
    got: dict[tuple[str, str, int, int], list[float]] = collections.defaultdict(
        lambda: [0, 0, float("inf")]
    )
    for row in flows.rows():
        g = got[(row["src"], row["dst"], row["src_port"], row["dst_port"])]
        g[0] += row["bytes_out"]
        g[1] += row["pkts_out"]
        g[2] = min(g[2], row["ts_start"])
    assert set(got) == set(want)
    last_key = (last[1], last[2], last[4], last[5])
    for key, (b, n, t0) in want.items():
        extra = (last[3], 1) if key == last_key else (0, 0)
        assert (got[key][0], got[key][1]) == (b + extra[0], n + extra[1]), key
        assert got[key][2] == pytest.approx(t0, abs=1e-6), key
    beacon = [k for k in got if k[1] == "141.193.213.20" and k[3] == 443]
    assert len(beacon) == 22  # the 22 curl TLS connections of the dataset's truth
