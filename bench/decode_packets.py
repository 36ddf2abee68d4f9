"""Packet-path benchmark: PcapDecoder per shared capture, and the goflow2 protobuf decoder.

For each capture in ``../shared/datasets`` its records are repeated (timestamps shifted
by the capture's span each time) into one in-memory classic pcap of about ``--n``
packets, then timed two ways on the same bytes, in CPU seconds (``time.process_time``):

* ``bare``: a pure-Python walk of the pcap records (``struct`` header unpack and one
  ``bytes`` slice per frame, no parsing) - the floor of any per-packet Python loop;
* ``decoder``: ``PcapDecoder.decode_stream`` to flows and DNS rows, all results consumed.

``ratio`` = decoder packets/s / bare packets/s. Goal (issue #3): decoder >= 300 k
packets/s on every capture, DNS-heavy ones included (``dns`` = share of port-53
packets).

goflow2 protobuf: ``--n`` varint length-prefixed FlowMessages (one per message, as
goflow2 publishes them), decoded by ``Goflow2ProtobufDecoder.decode`` in batches of
``--batch``, beside a bare pure-Python varint walk of the same messages (length prefix,
then every field key and value skipped).

    .venv/bin/python bench/decode_packets.py            # ~200k packets per capture
    .venv/bin/python bench/decode_packets.py --smoke    # ~20k (CI)
"""

from __future__ import annotations

import argparse
import io
import random
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stream.decoders.base import Message  # noqa: E402
from stream.decoders.goflow2_pb import Goflow2ProtobufDecoder, encode_flow  # noqa: E402
from stream.decoders.pcap import PcapDecoder  # noqa: E402

DATASETS = REPO.parent / "shared" / "datasets"
_ALL = [
    "dns-tunnel/0b04bdc87563f4909dcf819e299473e0/dns.pcap",
    "dns-tunnel/afc3bce01fc430c13eace2370412dd09/dns.pcap",
    "dns-tunnel/e5af6780e45da6f9f6b30fafa53548da/dns.pcap",
    "beacon-https/test-cc-capture-2.pcap",
    "discovery-ldap/covenant_getdomaingroup_ldap_searchrequest_domain_admins_2020-09-22141005.cap",
    "lateral-smb-svcctl/covenant_sc_query_dcerpc_smb_svcctl_2020-08-05034820.cap",
    "lateral-winrm/covenant_psremoting_command_2020-08-06115603.cap",
    "protocols/dce-rpc/mapi.pcap",
    "protocols/ssh/sshguess.pcap",
    "protocols/ldap/missing_krbtgt_ldap_request.pcapng",
]
#: (capture, keep only its port-53 packets): the ``dns only`` rows are the DNS-heavy case
CAPTURES: list[tuple[str, bool]] = [(c, False) for c in _ALL] + [(c, True) for c in _ALL[:4]]


def _records(path: Path, dns_only: bool) -> tuple[list[tuple[float, bytes]], int]:
    recs: list[tuple[float, bytes]] = []
    linktype = -1
    d = PcapDecoder()
    with open(path, "rb") as f:
        for cols, raw in d.packets(f):
            keep = set(cols.index[(cols.sport == 53) | (cols.dport == 53)].tolist())
            lts = np.broadcast_to(np.asarray(raw.linktypes), raw.offsets.shape)
            for off, cap, lt, ts, i in zip(
                raw.offsets.tolist(),
                raw.caplens.tolist(),
                lts.tolist(),
                raw.ts.tolist(),
                raw.index.tolist(),
                strict=True,
            ):
                if linktype < 0:
                    linktype = lt
                if lt == linktype and (i in keep or not dns_only):
                    recs.append((ts, bytes(raw.buf[off : off + cap])))
    return recs, linktype


def repeated_pcap(path: Path, packets: int, dns_only: bool = False) -> tuple[bytes, int, float]:
    """(classic pcap bytes of ~``packets`` records, record count, port-53 share)."""
    recs, linktype = _records(path, dns_only)
    span = recs[-1][0] - recs[0][0] + 1.0
    out = io.BytesIO()
    out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, linktype))
    k = rep = 0
    while k < packets:
        for ts, body in recs:
            t = ts + rep * span
            sec = int(t)
            out.write(struct.pack("<IIII", sec, int((t - sec) * 1e6), len(body), len(body)) + body)
            k += 1
        rep += 1
    blob = out.getvalue()
    dns = total = 0
    for cols, _raw in PcapDecoder().packets(io.BytesIO(blob)):
        total += len(cols)
        dns += int(np.count_nonzero((cols.sport == 53) | (cols.dport == 53)))
    return blob, k, dns / max(total, 1)


def bare_walk(blob: bytes) -> int:
    """Pure-Python record walk: header unpack and a frame slice per record."""
    unpack = struct.Struct("<IIII").unpack_from
    pos, n, k = 24, len(blob), 0
    while pos + 16 <= n:
        _s, _u, cap, _o = unpack(blob, pos)
        _frame = blob[pos + 16 : pos + 16 + cap]
        pos += 16 + cap
        k += 1
    return k


def decoder_run(blob: bytes) -> int:
    d = PcapDecoder()
    flows = dns = 0
    for r in d.decode_stream(io.BytesIO(blob), "bench.pcap"):
        flows += len(r.flows)
        dns += len(r.dns)
    return flows + dns


def cpu(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return max(best, 1e-9)


def bench_pcap(n: int, repeat: int) -> None:
    print(
        f"{'capture':<34} {'packets':>8} {'dns':>5} {'bare pkt/s':>11} {'decoder pkt/s':>14} {'ratio':>6}"
    )
    for name, dns_only in CAPTURES:
        path = DATASETS / name
        if not path.is_file():
            print(f"{name}: missing, skipped")
            continue
        blob, k, dns = repeated_pcap(path, n, dns_only)
        t_bare = cpu(lambda: bare_walk(blob), repeat)  # noqa: B023
        t_ours = cpu(lambda: decoder_run(blob), repeat)  # noqa: B023
        parts = Path(name).parts
        label = f"{parts[0]}/{parts[-2][:8] if parts[0] == 'dns-tunnel' else parts[-1][:18]}"
        label += " dns only" if dns_only else ""
        print(
            f"{label:<34} {k:>8,} {dns:>5.0%} {k / t_bare:>11,.0f} {k / t_ours:>14,.0f} {t_bare / t_ours:>6.2f}"
        )


def pb_messages(n: int) -> list[Message]:
    rnd = random.Random(3)
    pool = []
    t0 = 1_707_834_880_000_000_000
    for i in range(min(n, 20_000)):
        t = t0 + i * 1_000_000
        src = bytes([10, rnd.randint(0, 3), rnd.randint(0, 255), rnd.randint(1, 254)])
        dst = bytes([rnd.randint(1, 223), rnd.randint(0, 255), rnd.randint(0, 255), 7])
        fields = {"type": 4, "time_received_ns": t + 10**9, "sequence_num": i,
                  "sampling_rate": rnd.choice((0, 1, 100)), "time_flow_start_ns": t,
                  "time_flow_end_ns": t + rnd.randint(0, 10**10), "bytes": rnd.randint(40, 10**7),
                  "packets": rnd.randint(1, 10**4), "src_addr": src, "dst_addr": dst,
                  "proto": rnd.choice((6, 17)), "src_port": rnd.randint(1024, 65535),
                  "dst_port": rnd.choice((443, 80, 53, 22, 8443)), "tcp_flags": rnd.randint(0, 63),
                  "sampler_address": bytes([192, 0, 2, 1]), "in_if": 3, "out_if": 7,
                  "etype": 0x800}  # fmt: skip
        pool.append(encode_flow(fields))
    return [Message(pool[i % len(pool)], "bench/0", i) for i in range(n)]


def bare_pb(msgs: list[Message]) -> int:
    """Pure-Python protobuf walk: length prefix, each key and varint value read, bytes fields skipped."""

    def varint(buf: bytes, pos: int) -> tuple[int, int]:
        v = shift = 0
        while True:
            b = buf[pos]
            pos += 1
            v |= (b & 0x7F) << shift
            if b < 0x80:
                return v, pos
            shift += 7

    k = 0
    for m in msgs:
        buf = m.value
        pos, end = 0, len(buf)
        while pos < end:
            size, pos = varint(buf, pos)
            stop = pos + size
            while pos < stop:
                key, pos = varint(buf, pos)
                if key & 7 == 2:
                    size, pos = varint(buf, pos)
                    pos += size
                else:
                    _v, pos = varint(buf, pos)
            k += 1
    return k


def bench_pb(n: int, batch: int, repeat: int) -> None:
    msgs = pb_messages(n)
    size = sum(len(m.value) for m in msgs[:20_000]) // min(n, 20_000)
    dec = Goflow2ProtobufDecoder()

    def ours() -> int:
        return sum(len(dec.decode(msgs[i : i + batch]).flows) for i in range(0, n, batch))

    t_bare = cpu(lambda: bare_pb(msgs), repeat)
    t_ours = cpu(ours, repeat)
    print(
        f"\ngoflow2 pb: {n:,} messages of {size} bytes, batches of {batch:,}: bare varint walk "
        f"{n / t_bare:,.0f} msg/s, decoder {n / t_ours:,.0f} msg/s, ratio {t_bare / t_ours:.2f}"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=200_000, help="packets per capture / pb messages")
    p.add_argument("--smoke", action="store_true", help="quick run with ~20k packets")
    p.add_argument("--batch", type=int, default=10_000, help="pb messages per decode() call")
    p.add_argument("--repeat", type=int, default=2, help="timing repeats (best is kept)")
    p.add_argument("--only", choices=("pcap", "pb"), help="run one half only")
    args = p.parse_args(argv)
    n = 20_000 if args.smoke else args.n
    print(f"packet decode benchmark: ~{n:,} packets per capture, CPU seconds (process_time)")
    if args.only != "pb":
        bench_pcap(n, args.repeat)
    if args.only != "pcap":
        bench_pb(n, args.batch, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
