"""The vectorised goflow2 protobuf path gives exactly what the scalar parser gives."""

from __future__ import annotations

import math
import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.records import FlowBatch
from stream.decoders import base
from stream.decoders._json import finish_flows
from stream.decoders.base import DecodeResult, Message
from stream.decoders.goflow2_pb import Goflow2ProtobufDecoder, encode_flow
from stream.decoders.goflow2_pb_fast import fast_parse


def _reference(dec: Goflow2ProtobufDecoder, msgs: list[Message]) -> DecodeResult:
    """The decoder as it was before the fast path: every message through ``_one``."""
    out = DecodeResult()
    rows: list[dict[int, Any]] = []
    row_msgs: list[Message] = []
    for m in msgs:
        dec._one(m, rows, row_msgs, out)
    if rows:
        out.flows = finish_flows(dec._columns(rows), row_msgs, dec.name, out.dead)
    return out


def _flow(rnd: random.Random) -> bytes:
    t = 1_707_834_880_000_000_000 + rnd.randrange(10**12)
    fields: dict[str, Any] = {
        "type": 4,
        "time_received_ns": t + 10**9,
        "sampling_rate": rnd.choice([0, 1, 100, 70_000]),
        "time_flow_start_ns": t,
        "time_flow_end_ns": t + rnd.randrange(10**10),
        "bytes": rnd.choice([40, 10**6, 1 << 47]),
        "packets": rnd.randint(1, 10**4),
        "src_addr": rnd.choice([bytes([10, 0, 0, rnd.randint(1, 9)]), bytes(15) + b"\x01"]),
        "dst_addr": rnd.choice(
            [bytes([8, 8, 8, 8]), bytes(10) + b"\xff\xff" + bytes([198, 51, 100, 7])]
        ),
        "proto": rnd.choice([6, 17, 300]),
        "src_port": rnd.randint(1024, 65535),
        "dst_port": rnd.choice([443, 53, 70_000]),
        "tcp_flags": rnd.randint(0, 63),
        "sampler_address": rnd.choice([bytes([192, 0, 2, 1]), b"", b"\x01\x02\x03"]),
    }
    if rnd.random() < 0.2:
        fields = {"time_received": 1707834900, "ip_flags_or_v1_start": 1707834899,
                  "src_addr": bytes(4), "dst_addr": bytes([1, 1, 1, 1]), "bytes": 5}  # fmt: skip
    if rnd.random() < 0.05:
        del fields["dst_addr"]
    return encode_flow(fields)


def _hostile(rnd: random.Random, pool: list[bytes]) -> bytes:
    m = bytearray(rnd.choice(pool))
    k = rnd.random()
    if k < 0.25:
        m = m[: rnd.randrange(len(m) + 1)]
    elif k < 0.5:
        for _ in range(rnd.randint(1, 3)):
            m[rnd.randrange(len(m))] = rnd.randrange(256)
    elif k < 0.7:
        m += rnd.choice(pool)  # two FlowMessages in one message
    elif k < 0.8:
        m += rnd.choice(pool)[:-2]  # ... the second cut short
    return bytes(m)


def _same(a: DecodeResult, b: DecodeResult) -> None:
    def rows(f: FlowBatch) -> list[dict[str, Any]]:
        return [
            {k: ("nan" if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
            for r in f.rows()
        ]

    assert rows(a.flows) == rows(b.flows)
    assert [(d.reason, d.detail, d.offset) for d in a.dead] == [
        (d.reason, d.detail, d.offset) for d in b.dead
    ]


def test_fast_path_equals_scalar_on_hostile_batches() -> None:
    rnd = random.Random(11)
    pool = [_flow(rnd) for _ in range(300)]
    dead = rows = 0
    for _ in range(60):
        values = [
            rnd.choice(pool) if rnd.random() < 0.6 else _hostile(rnd, pool)
            for _ in range(rnd.randint(1, 120))
        ]
        msgs = [Message(v, "fm/0", i) for i, v in enumerate(values)]
        dec = Goflow2ProtobufDecoder()
        got, want = dec.decode(msgs), _reference(dec, msgs)
        _same(got, want)
        block = getattr(base, "MessageBlock", None)  # columnar message blocks, where present
        if block is not None:
            _same(dec.decode(block(values, "fm/0", range(len(values)))), want)
        dead, rows = dead + len(want.dead), rows + len(want.flows)
    assert dead > 100 and rows > 1000


def test_bare_messages_without_length_prefix() -> None:
    rnd = random.Random(12)
    values = [_flow(rnd)[1:] for _ in range(50)] + [b"\x08"]
    msgs = [Message(v, "fm/0", i) for i, v in enumerate(values)]
    dec = Goflow2ProtobufDecoder(length_prefixed=False)
    _same(dec.decode(msgs), _reference(dec, msgs))


def test_only_clean_messages_take_the_fast_path() -> None:
    rnd = random.Random(13)
    clean = encode_flow({"src_addr": bytes(4), "dst_addr": bytes([1, 2, 3, 4]), "bytes": 9})
    f = fast_parse([clean, clean + clean, clean[:-1], b"", _flow(rnd)[:3]], True, str)
    assert f.slow.tolist() == [False, False, True, True, True]
    assert f.msg.tolist() == [0, 1, 1]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(max_size=60), min_size=1, max_size=6))
def test_arbitrary_bytes_match_the_scalar_path(values: list[bytes]) -> None:
    msgs = [Message(v, "fm/0", i) for i, v in enumerate(values)]
    dec = Goflow2ProtobufDecoder()
    _same(dec.decode(msgs), _reference(dec, msgs))
