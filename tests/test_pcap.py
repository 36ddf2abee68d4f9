"""PcapDecoder against tshark on the shared captures, plus hand-built link types and hostile files."""

from __future__ import annotations

import collections
import io
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.records import FlowBatch
from stream.decoders import get_decoder
from stream.decoders.base import Message
from stream.decoders.pcap import PcapDecoder

Key = tuple[str, str, int, int, int]

TSHARK_FIELDS = [
    "ip.src",
    "ipv6.src",
    "ip.dst",
    "ipv6.dst",
    "tcp.srcport",
    "udp.srcport",
    "tcp.dstport",
    "udp.dstport",
    "ip.proto",
    "ipv6.nxt",
    "ip.len",
    "ipv6.plen",
    "frame.cap_len",
    "ip.hdr_len",
]


def tshark_totals(path: Path) -> tuple[collections.Counter[Key], collections.Counter[Key]]:
    """(bytes, packets) per directional 5-tuple as tshark dissects them (IP-layer bytes)."""
    cmd = [
        "tshark",
        "-n",
        "-r",
        str(path),
        "-T",
        "fields",
        "-E",
        "separator=;",
        "-E",
        "occurrence=f",
    ]
    for f in TSHARK_FIELDS:
        cmd += ["-e", f]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert proc.returncode in (0, 2), proc.stderr  # 2: "cut short in the middle of a packet"
    out = proc.stdout
    nbytes: collections.Counter[Key] = collections.Counter()
    npkts: collections.Counter[Key] = collections.Counter()
    for line in out.splitlines():
        f = line.split(";")
        src, dst = f[0] or f[1], f[2] or f[3]
        if not src:
            continue
        proto = int(f[8] or f[9])
        size = int(f[10]) if f[10] else 40 + int(f[11])
        key = (src, dst, int(f[4] or f[5] or -1), int(f[6] or f[7] or -1), proto)
        nbytes[key] += size
        npkts[key] += 1
    return nbytes, npkts


def flow_totals(flows: FlowBatch) -> tuple[collections.Counter[Key], collections.Counter[Key]]:
    """(bytes, packets) per directional 5-tuple from (bi- or unidirectional) flows."""
    nbytes: collections.Counter[Key] = collections.Counter()
    npkts: collections.Counter[Key] = collections.Counter()
    for f in flows.rows():
        k = (f["src"], f["dst"], f["src_port"], f["dst_port"], f["proto"])
        r = (f["dst"], f["src"], f["dst_port"], f["src_port"], f["proto"])
        nbytes[k] += f["bytes_out"]
        npkts[k] += f["pkts_out"]
        nbytes[r] += f["bytes_in"]
        npkts[r] += f["pkts_in"]
    return +nbytes, +npkts


def decode_all(path: Path, **kw: object) -> tuple[FlowBatch, object, PcapDecoder]:
    d = PcapDecoder(**kw)  # type: ignore[arg-type]
    results = list(d.decode_file(path))
    flows = FlowBatch.concat([r.flows for r in results])
    from pipelines.records import DnsBatch

    dns = DnsBatch.concat([r.dns for r in results])
    return flows, dns, d


CAPTURES = [
    "beacon-https/test-cc-capture-2.pcap",
    "lateral-smb-svcctl/covenant_sc_query_dcerpc_smb_svcctl_2020-08-05034820.cap",
    "lateral-winrm/covenant_psremoting_command_2020-08-06115603.cap",
    "discovery-ldap/covenant_getdomaingroup_ldap_searchrequest_domain_admins_2020-09-22141005.cap",
    "protocols/ssh/sshguess.pcap",
    "protocols/dce-rpc/mapi.pcap",
    "protocols/dce-rpc/dce_rpc_netlogon.pcapng",
    "protocols/dce-rpc/kerberos445_auth.pcapng",
    "protocols/dce-rpc/kerberos135_auth.pcapng",
    "protocols/ldap/missing_krbtgt_ldap_request.pcapng",
    "protocols/rdp/rdpeudp-handshake-success.pcap",
    "dns-tunnel/0b04bdc87563f4909dcf819e299473e0/dns.pcap",
]


@pytest.mark.tools
@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed (make tools)")
@pytest.mark.parametrize("name", CAPTURES)
def test_per_5tuple_totals_equal_tshark(datasets: Path, name: str) -> None:
    path = datasets / name
    flows, _dns, _d = decode_all(path)
    flows.validate()
    tb, tp = tshark_totals(path)
    ob, op = flow_totals(flows)
    assert ob == tb
    assert op == tp
    assert int(flows.pkts_out.sum() + flows.pkts_in.sum()) == sum(tp.values())


def test_chunking_does_not_change_flows(datasets: Path) -> None:
    path = datasets / "beacon-https/test-cc-capture-2.pcap"
    whole, _, _ = decode_all(path)
    small, _, _ = decode_all(path, chunk=37)

    def key(b):
        return sorted(
            (
                f["ts_start"],
                f["src"],
                f["src_port"],
                f["bytes_out"],
                f["bytes_in"],
                f["conn_state"],
            )
            for f in b.rows()
        )

    assert key(whole) == key(small)


def test_beacon_flows_are_tls_from_the_internal_host(datasets: Path) -> None:
    flows, _, _ = decode_all(datasets / "beacon-https/test-cc-capture-2.pcap")
    beacon = flows.take((flows.dst == "141.193.213.20") & (flows.dst_port == 443))
    assert len(beacon) == 22
    assert set(beacon.src.tolist()) == {"147.32.80.37"}
    assert set(beacon.service.tolist()) == {"ssl"}
    assert set(beacon.conn_state.tolist()) <= {"SF", "S1", "RSTO", "RSTR", "S3", "S2"}
    assert bool(beacon.bidirectional.all()) and bool((beacon.payload_out > 0).all())


TUNNELS = [  # run id, tunnel tool's RR type (truth.json: iodine private 65399, dns2tcp KEY, dnstt TXT)
    ("e5af6780e45da6f9f6b30fafa53548da", 65399),
    ("afc3bce01fc430c13eace2370412dd09", 25),
    ("0b04bdc87563f4909dcf819e299473e0", 16),
]


@pytest.mark.tools
@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed (make tools)")
@pytest.mark.parametrize(("run", "qtype"), TUNNELS)
def test_sll_dns_tunnel_rows(datasets: Path, run: str, qtype: int) -> None:
    path = datasets / "dns-tunnel" / run / "dns.pcap"
    _, dns, d = decode_all(path)
    attack = dns.take(
        np.array([q.endswith("example.attack") for q in dns.query.tolist()], dtype=bool)
    )
    proc = subprocess.run(
        [
            "tshark",
            "-n",
            "-r",
            str(path),
            "-Y",
            "udp.port == 53 && dns.flags.response == 0",
            "-T",
            "fields",
            "-e",
            "dns.qry.name",
            "-e",
            "dns.qry.type",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    expect = [tuple(line.split("\t")) for line in proc.stdout.splitlines()]
    got = list(zip(dns.query.tolist(), map(str, dns.qtype.tolist()), strict=True))
    assert len(got) == len(expect)
    printable = lambda rows: sorted(r for r in rows if r[0].isascii() and r[0].isprintable())  # noqa: E731
    assert printable(got) == printable(expect)  # binary labels (iodine) are rendered differently
    assert len(attack) == len(dns) > 40
    assert set(attack.src.tolist()) == {"192.168.0.10"} and set(attack.dst.tolist()) == {
        "192.168.0.20"
    }
    assert set(attack.qtype.tolist()) == {qtype}
    assert (attack.rcode >= 0).mean() > 0.5  # paired with responses
    assert d.stats.get("dns_malformed", 0) == 0


def test_ipv6_loopback_udp(datasets: Path) -> None:
    flows, _, _ = decode_all(datasets / "protocols/rdp/rdpeudp-handshake-success.pcap")
    (f,) = list(flows.rows())
    assert (f["src"], f["dst"], f["proto"], f["dst_port"], f["service"]) == (
        "::1",
        "::1",
        17,
        3389,
        "rdp",
    )
    assert f["pkts_out"] + f["pkts_in"] == 10


def test_truncated_last_record_is_counted(datasets: Path) -> None:
    flows, _, d = decode_all(
        datasets / "lateral-smb-svcctl/covenant_sc_query_dcerpc_smb_svcctl_2020-08-05034820.cap"
    )
    assert d.stats["truncated"] == 1 and len(flows) > 0


def test_decode_whole_file_messages_and_registry(datasets: Path) -> None:
    value = (datasets / "protocols/ssh/sshguess.pcap").read_bytes()
    d = get_decoder("pcap")
    r = d.decode([Message(value, "f.pcap", 0), Message(b"not a capture", "x", 1)])
    assert len(r.flows) == 11 and [x.reason for x in r.dead] == ["bad_value"]
    assert PcapDecoder.sniff(value) and not PcapDecoder.sniff(b"{}")


# -- hand-built link types ---------------------------------------------------------------


def ipv4(
    proto: int,
    payload: bytes,
    src: bytes = b"\x0a\x00\x00\x01",
    dst: bytes = b"\x0a\x00\x00\x02",
    frag: int = 0,
) -> bytes:
    return (
        struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, frag, 64, proto, 0, src, dst)
        + payload
    )


def udp(sp: int, dp: int, data: bytes = b"") -> bytes:
    return struct.pack("!HHHH", sp, dp, 8 + len(data), 0) + data


def tcp(sp: int, dp: int, flags: int, data: bytes = b"") -> bytes:
    return struct.pack("!HHIIBBHHH", sp, dp, 1, 0, 0x50, flags, 1024, 0, 0) + data


def pcap(frames: list[bytes], linktype: int, big: bool = False, nano: bool = False) -> bytes:
    e = ">" if big else "<"
    out = struct.pack(
        e + "IHHiIII", 0xA1B23C4D if nano else 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype
    )
    for i, f in enumerate(frames):
        out += (
            struct.pack(e + "IIII", 1000 + i, 500_000_000 if nano else 500_000, len(f), len(f)) + f
        )
    return out


def cols_of(data: bytes) -> list[tuple]:
    d = PcapDecoder()
    out = []
    for c, _raw in d.packets(io.BytesIO(data)):
        out += list(
            zip(
                c.ts.tolist(),
                c.src.tolist(),
                c.dst.tolist(),
                c.sport.tolist(),
                c.dport.tolist(),
                c.proto.tolist(),
                c.ip_len.tolist(),
                c.tcp_flags.tolist(),
                strict=True,
            )
        )
    return out


def test_linktypes_endianness_and_resolution() -> None:
    pkt = ipv4(17, udp(1111, 53, b"x" * 4))
    eth = b"\x00" * 12 + b"\x08\x00"
    vlan = b"\x00" * 12 + b"\x81\x00\x00\x05\x08\x00"
    sll = b"\x00\x00\x00\x01\x00\x06" + b"\x00" * 8 + b"\x08\x00"
    sll2 = b"\x08\x00\x00\x00" + b"\x00" * 16
    null = struct.pack("<I", 2)
    expect = (1000.5, "10.0.0.1", "10.0.0.2", 1111, 53, 17, 32, 0)
    for link, lt in (
        (eth, 1),
        (vlan, 1),
        (sll, 113),
        (sll2, 276),
        (null, 0),
        (b"", 101),
        (b"", 12),
    ):
        for big in (False, True):
            for nano in (False, True):
                assert cols_of(pcap([link + pkt], lt, big, nano)) == [expect], (lt, big, nano)


def test_fragments_ipv6_ext_headers_icmp_and_non_ip() -> None:
    eth6 = b"\x00" * 12 + b"\x86\xdd"
    seg = tcp(40000, 22, 0x12)
    hbh = bytes([6, 0]) + b"\x00" * 6  # hop-by-hop, next header TCP
    ip6 = (
        struct.pack(
            "!IHBB16s16s",
            0x60000000,
            len(hbh) + len(seg),
            0,
            64,
            b"\x20\x01\x0d\xb8" + b"\0" * 11 + b"\1",
            b"\x20\x01\x0d\xb8" + b"\0" * 11 + b"\2",
        )
        + hbh
        + seg
    )
    eth = b"\x00" * 12 + b"\x08\x00"
    frames = [
        eth6 + ip6,
        eth + ipv4(17, udp(5, 6, b"a" * 8), frag=0x2000),
        eth + ipv4(17, b"b" * 16, frag=3),
        eth + ipv4(1, bytes([8, 0, 0, 0, 0, 1, 0, 1])),
        b"\x00" * 12 + b"\x08\x06" + b"\x00" * 28,
    ]
    got = cols_of(pcap(frames, 1))
    assert got[0][1:] == ("2001:db8::1", "2001:db8::2", 40000, 22, 6, 68, 0x12)
    assert got[1][3:5] == (5, 6) and got[2][3:5] == (-1, -1)  # only the first fragment has ports
    assert got[3][3:6] == (8, 0, 1)  # ICMP: type, code
    assert len(got) == 4  # ARP dropped


def test_pcapng_tsresol_and_interfaces() -> None:
    def block(bt: int, body: bytes) -> bytes:
        body += b"\0" * ((-len(body)) % 4)
        return struct.pack("<II", bt, 12 + len(body)) + body + struct.pack("<I", 12 + len(body))

    shb = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    idb_eth = block(
        1, struct.pack("<HHI", 1, 0, 65535) + struct.pack("<HHB3x", 9, 1, 9) + b"\0" * 4
    )  # ns
    idb_raw = block(1, struct.pack("<HHI", 101, 0, 65535))  # default µs
    pkt = ipv4(6, tcp(1, 2, 0x02))
    eth = b"\x00" * 12 + b"\x08\x00" + pkt
    ts_ns = 1_700_000_000_123_456_789
    epb0 = block(
        6, struct.pack("<IIIII", 0, ts_ns >> 32, ts_ns & 0xFFFFFFFF, len(eth), len(eth)) + eth
    )
    ts_us = 1_700_000_001_000_000
    epb1 = block(
        6, struct.pack("<IIIII", 1, ts_us >> 32, ts_us & 0xFFFFFFFF, len(pkt), len(pkt)) + pkt
    )
    got = cols_of(
        shb + idb_eth + idb_raw + epb0 + epb1 + b"\x06\x00\x00\x00\xff"
    )  # + truncated block
    assert [round(g[0], 6) for g in got] == [1700000000.123457, 1700000001.0]
    assert [g[5] for g in got] == [6, 6]


def test_not_a_capture_is_a_dead_letter() -> None:
    (r, last) = list(PcapDecoder().decode_stream(io.BytesIO(b"garbage!" * 10), "g"))
    assert [x.reason for x in r.dead] == ["bad_value"] and len(last.flows) == 0


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400), st.sampled_from([1, 113, 276, 101, 0]), st.booleans())
def test_fuzz_records_never_raise(blob: bytes, linktype: int, ng: bool) -> None:
    if ng:
        data = (
            struct.pack("<II", 0x0A0D0D0A, 28)
            + struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)
            + struct.pack("<I", 28)
        )
        data += struct.pack("<IIHHI", 1, 20, linktype, 0, 65535) + struct.pack("<I", 20) + blob
    else:
        data = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype) + blob
    results = list(PcapDecoder(chunk=3).decode_stream(io.BytesIO(data), "fuzz"))
    for r in results:
        r.flows.validate()
        r.dns.validate()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=0, max_size=120), min_size=1, max_size=6))
def test_fuzz_frames_never_raise(frames: list[bytes]) -> None:
    eth = b"\x00" * 12 + b"\x08\x00"
    cooked = [
        eth + b"\x45" + f if i % 2 else eth + ipv4(17, udp(53, 5353))[:20] + f
        for i, f in enumerate(frames)
    ]
    list(PcapDecoder().decode_stream(io.BytesIO(pcap(cooked, 1)), "fuzz"))
