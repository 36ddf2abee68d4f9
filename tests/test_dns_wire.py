"""Vectorised DNS parsing and pairing equal their one-message-at-a-time references."""

from __future__ import annotations

import pickle
import random
import struct

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.dns_pairing import DnsPairer
from pipelines.dns_wire import DnsMessage, dns_columns, parse_dns
from pipelines.packets import PacketParser


def _name(labels: list[bytes]) -> bytes:
    return b"".join(bytes([len(x)]) + x for x in labels) + b"\x00"


def _message(
    rnd: random.Random, response: bool, qtype: int, answers: list[tuple[int, bytes]]
) -> bytes:
    labels = [
        rnd.randbytes(rnd.randint(1, 30)) if rnd.random() < 0.3 else b"www"
        for _ in range(rnd.randint(0, 5))
    ]
    head = struct.pack(
        "!HHHHHH", rnd.randrange(65536), 0x8180 if response else 0x0100, 1, len(answers), 0, 0
    )
    body = _name(labels) + struct.pack("!HH", qtype, 1)
    for rtype, rdata in answers:
        owner = b"\xc0\x0c" if rnd.random() < 0.8 else _name([b"cdn", b"example"])
        body += owner + struct.pack("!HHIH", rtype, 1, 60, len(rdata)) + rdata
    return head + body


def _corpus(seed: int, n: int) -> list[bytes]:
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        qtype = rnd.choice([1, 28, 16, 5, 65399, 255])
        answers = [
            rnd.choice(
                [(1, rnd.randbytes(4)), (28, rnd.randbytes(16)), (5, b"\x01a\x00"), (1, b"xy")]
            )
            for _ in range(rnd.randint(0, 4))
        ]
        m = bytearray(_message(rnd, rnd.random() < 0.6, qtype, answers))
        k = rnd.random()
        if k < 0.2:
            m = m[: rnd.randrange(len(m) + 1)]
        elif k < 0.4:
            for _ in range(rnd.randint(1, 3)):
                m[rnd.randrange(len(m))] = rnd.randrange(256)
        elif k < 0.45 and len(m) > 12:
            m[12] = rnd.choice([0xC0, 0x40, 63])
        elif k < 0.5:
            m[4:6] = b"\x00\x02"  # two questions: the scalar fallback
        out.append(bytes(m))
    return out


def _columns_of(msgs: list[bytes], gap: int = 0) -> list[DnsMessage | None]:
    buf = (b"\x00" * gap).join(msgs)
    lens = np.array([len(m) for m in msgs], dtype=np.int64)
    ends = np.cumsum(lens + gap) - gap
    p = PacketParser()
    cols = dns_columns(buf, ends - lens, ends, p.v4_strings, p.v6_strings)
    return [cols.message(i) for i in range(len(msgs))]


def test_columns_equal_scalar_parser_on_hostile_messages() -> None:
    msgs = _corpus(1, 3000)
    expect = [parse_dns(m, a_only=True) for m in msgs]
    assert _columns_of(msgs) == expect
    assert _columns_of(msgs[:400], gap=3000) == expect[:400]  # sparse: gathered names
    good = [e for e in expect if e is not None]
    assert 0.3 < len(good) / len(msgs) < 0.95
    assert any(e.answers for e in good) and any("." in e.query for e in good)


def test_answers_only_for_a_and_aaaa_questions() -> None:
    rnd = random.Random(2)
    a = _message(rnd, True, 1, [(1, bytes([192, 0, 2, 7])), (28, bytes(15) + b"\x01")])
    txt = _message(rnd, True, 16, [(1, bytes([192, 0, 2, 8]))])
    got = _columns_of([a, txt])
    assert got[0] is not None and got[0].answers == ("192.0.2.7", "::1")
    assert got[1] is not None and got[1].answers == () and got[1].answers_n == 1
    full = parse_dns(txt)  # the scalar default reads them all
    assert full is not None and full.answers == ("192.0.2.8",)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(max_size=80), min_size=1, max_size=8))
def test_columns_never_raise_and_match(msgs: list[bytes]) -> None:
    assert _columns_of(msgs) == [parse_dns(m, a_only=True) for m in msgs]


_NAMES = ("ts", "src", "dst", "sport", "dport", "proto", "ident", "response", "rcode", "query",
          "qtype", "answers_n", "answers", "size", "origin", "offset")  # fmt: skip


def _events(rnd: random.Random, n: int) -> list[tuple[object, ...]]:
    out: list[tuple[object, ...]] = []
    t = 0.0
    for i in range(n):
        t += rnd.choice([0.0, 0.4, 3.0, 12.0])
        c, s = f"10.0.0.{rnd.randint(1, 3)}", rnd.choice(["10.9.0.1", "fd00::53"])
        port, ident, proto = rnd.choice([5000, 5001]), rnd.randint(1, 3), rnd.choice([17, 17, 6])
        q = f"q{rnd.randint(0, 3)}.example"
        if rnd.random() < 0.5:
            out.append((t, s, c, 53, port, proto, ident, True, rnd.randint(0, 3), q, 1,
                        rnd.randint(0, 2), rnd.choice(["", "192.0.2.1,192.0.2.2"]), 90, "o", i))  # fmt: skip
        else:
            out.append((t, c, s, port, 53, proto, ident, False, 0, q, 1, 0, "", 40, "o", i))
    return out


def test_add_many_equals_add_one_by_one() -> None:
    rnd = random.Random(3)
    for trial in range(150):
        events = _events(rnd, rnd.randint(0, 50))
        max_pending = rnd.choice([100_000, 4])
        one, many = DnsPairer(max_pending=max_pending), DnsPairer(max_pending=max_pending)
        rows_one: list[dict[str, object]] = []
        rows_many: list[dict[str, object]] = []
        pos = 0
        while pos < len(events):
            chunk = events[pos : pos + rnd.randint(1, 12)]
            pos += len(chunk)
            for e in chunk:
                one.add(*e)  # type: ignore[arg-type]
            cols = dict(zip(_NAMES, zip(*chunk, strict=True), strict=True))
            kw = {
                k: np.array(v, dtype=object if isinstance(v[0], str) else None)
                for k, v in cols.items()
            }
            if trial % 2:  # addresses as codes, as the pcap decoder passes them
                addrs = sorted(set(kw["src"].tolist()) | set(kw["dst"].tolist()))
                ix = {a: i for i, a in enumerate(addrs)}
                kw["addrs"] = np.array(addrs, dtype=object)
                kw["src_code"] = np.array([ix[a] for a in kw["src"]])
                kw["dst_code"] = np.array([ix[a] for a in kw["dst"]])
            many.add_many(**kw)
            if rnd.random() < 0.6:
                rows_one += list(one.take().rows())
                rows_many += list(many.take().rows())
            assert list(one.pending.items()) == list(many.pending.items())
        many = pickle.loads(pickle.dumps(many))
        rows_one += list(one.take(final=True).rows())
        rows_many += list(many.take(final=True).rows())
        assert rows_one == rows_many
