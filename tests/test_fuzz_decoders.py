"""Hypothesis fuzzing of every JSON-family decoder and of AutoDecoder.

Inputs are arbitrary bytes and mutations of the valid samples (byte flips, cuts,
insertions, and structural JSON mutations: a field replaced by a hostile value or
removed). Properties: no decoder raises; batches are well-formed; dead-letter reasons
come from the bounded vocabulary; every message is accounted for (decoded, ignored or
dead; exactly once for one-record-per-message formats); a batch decodes like its
messages one by one.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.records import DnsBatch, FlowBatch
from stream.decoders import get_decoder
from stream.decoders.base import DecodeResult, Message
from stream.decoders.goflow2_pb import encode_flow
from stream.sources import iter_messages

SAMPLES = Path(__file__).parent / "samples"
REASONS = {
    "not_json",
    "schema",
    "nan",
    "negative",
    "oversized",
    "truncated",
    "unknown_format",
    "bad_value",
}
#: raise for a longer campaign, e.g. SLOWBURN_FUZZ_EXAMPLES=5000
FUZZ = settings(
    max_examples=int(os.environ.get("SLOWBURN_FUZZ_EXAMPLES", "80")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def _lines(*names: str) -> list[bytes]:
    return [m.value for n in names for b in iter_messages(SAMPLES / n) for m in b]


PB_SAMPLE = {
    "time_flow_start_ns": 1707834880 * 10**9,
    "bytes": 100,
    "packets": 2,
    "sampling_rate": 3,
    "proto": 6,
    "src_addr": bytes([10, 0, 0, 1]),
    "dst_addr": bytes([8, 8, 8, 8]),
    "src_port": 1234,
    "dst_port": 443,
    "tcp_flags": 2,
    "sampler_address": bytes(16),
}
VALID: dict[str, list[bytes]] = {
    "goflow2-json": _lines("goflow2.json"),
    "zeek-json": _lines(
        "zeek_conn.json", "zeek_conn_underscore.json", "zeek_conn_tagged.json", "zeek_dns.json"
    ),
    "suricata": _lines("suricata_eve.json"),
    "pmacct": _lines("pmacct.json"),
    "goflow2-pb": [encode_flow(PB_SAMPLE)],
}
VALID["auto"] = [
    v for k in ("goflow2-json", "zeek-json", "suricata", "pmacct", "goflow2-pb") for v in VALID[k]
]
ONE_PER_MESSAGE = ("goflow2-json", "zeek-json", "pmacct")

hostile = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([-1, 0, 65536, 2**63, 2**64, 1e308, -0.0]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(
        [
            "",
            "NaN",
            "10.0.0.1",
            "::1",
            "fe80::1%eth0",
            "999.1.1.1",
            "TCP",
            "udp",
            "2024-13-45T99:00:00Z",
        ]
    ),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)


def _mutate_json(value: bytes, data: st.DataObject) -> bytes:
    try:
        obj = json.loads(value)
    except ValueError:
        return value
    target = obj
    if isinstance(obj, dict) and len(obj) == 1 and isinstance(next(iter(obj.values())), dict):
        target = next(iter(obj.values()))  # a tagged Zeek record or an EVE sub-object
    if isinstance(target, dict) and target:
        key = data.draw(st.sampled_from(sorted(target)))
        if data.draw(st.booleans()):
            target[key] = data.draw(hostile)
        else:
            del target[key]
    text = json.dumps(obj, allow_nan=True)
    return text.encode()


@st.composite
def messages(draw: st.DrawFn, fmt: str) -> list[Message]:
    valid = VALID[fmt]
    out: list[Message] = []
    n = draw(st.integers(min_value=1, max_value=8))
    data = draw(st.data())
    for i in range(n):
        kinds = ["raw", "valid", "flip", "cut", "insert", "json", "json"]
        if fmt in ("goflow2-pb", "auto"):
            kinds += ["pbfield", "pbfield"]
        kind = draw(st.sampled_from(kinds))
        base = draw(st.sampled_from(valid))
        if kind == "raw":
            v = draw(st.binary(max_size=200))
        elif kind == "valid":
            v = base
        elif kind == "flip":
            pos = draw(st.integers(0, len(base) - 1))
            v = base[:pos] + bytes([base[pos] ^ draw(st.integers(1, 255))]) + base[pos + 1 :]
        elif kind == "cut":
            v = base[: draw(st.integers(0, len(base)))]
        elif kind == "insert":
            pos = draw(st.integers(0, len(base)))
            v = base[:pos] + draw(st.binary(min_size=1, max_size=8)) + base[pos:]
        elif kind == "pbfield":  # one FlowMessage field replaced by a hostile value or wire type
            fields = dict(PB_SAMPLE)
            key = draw(st.sampled_from(sorted(fields)))
            fields[key] = draw(st.one_of(st.integers(0, 2**64 - 1), st.binary(max_size=20)))
            v = encode_flow(fields) * draw(st.integers(1, 3))
        else:
            v = _mutate_json(base, data)
        out.append(Message(v, "fuzz/0", i))
    return out


def _check(result: DecodeResult) -> int:
    assert isinstance(result.flows, FlowBatch) and isinstance(result.dns, DnsBatch)
    result.flows.validate()
    result.dns.validate()
    for d in result.dead:
        assert d.reason in REASONS, d
        assert "decoder error" not in d.detail, d.detail
    for name in ("ts_start", "ts_end"):
        assert all(math.isfinite(t) for t in getattr(result.flows, name).tolist())
    assert all(math.isfinite(t) for t in result.dns.ts.tolist())
    assert (result.flows.bytes_out >= 0).all() and (result.flows.bytes_in >= 0).all()
    assert (result.flows.pkts_out >= 0).all() and (result.flows.pkts_in >= 0).all()
    assert "" not in result.flows.src.tolist() and "" not in result.flows.dst.tolist()
    return len(result.flows) + len(result.dns) + len(result.dead) + result.ignored


def _run(fmt: str, msgs: list[Message]) -> tuple[DecodeResult, int]:
    dec = get_decoder(fmt)
    r = dec.decode(msgs)
    n = _check(r)
    tail = dec.flush()
    return r, n + _check(tail)


@pytest.mark.parametrize("fmt", sorted(VALID))
def test_fuzz_never_raises_and_accounts(fmt: str) -> None:
    @FUZZ
    @given(msgs=messages(fmt))
    def prop(msgs: list[Message]) -> None:
        r, n = _run(fmt, msgs)
        if fmt in ONE_PER_MESSAGE:
            assert n == len(msgs)
            singles = [get_decoder(fmt).decode([m]) for m in msgs]
            assert sum(len(s.flows) + len(s.dns) for s in singles) == len(r.flows) + len(r.dns)
            assert sorted(d.reason for s in singles for d in s.dead) == sorted(
                d.reason for d in r.dead
            )
        else:
            assert n >= len(msgs)

    prop()


@FUZZ
@given(lines=st.lists(st.binary(max_size=120), max_size=8), cut=st.integers(0, 30))
def test_fuzz_zeek_tsv(lines: list[bytes], cut: int) -> None:
    real = _lines("conn.log")
    header = real[:8]
    msgs = [
        Message(v, "f.log", i)
        for i, v in enumerate(header + [real[8][:cut] + b"\t" + x for x in lines] + lines)
    ]
    _, n = _run("zeek-tsv", msgs)
    assert n == len(msgs)


@FUZZ
@given(data=st.binary(min_size=1, max_size=300))
def test_fuzz_auto_binary_and_netflow_like(data: bytes) -> None:
    msgs = [Message(data, "udp:1", 0, peer="192.0.2.1"), Message(b"\x00\x09" + data, "udp:1", 1, peer="192.0.2.1"),
            Message(b"\x00\x05" + data, "udp:1", 2, peer="192.0.2.1"), Message(b"#" + data, "z.log", 3)]  # fmt: skip
    _, n = _run("auto", msgs)
    assert n >= len(msgs)
