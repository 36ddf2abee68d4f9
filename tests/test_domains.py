"""Registered-domain split: public suffixes, private suffixes, unknown TLDs, no network."""

from __future__ import annotations

import pickle
import socket

import pytest

from pipelines import domains
from pipelines.domains import DomainSplitter


@pytest.mark.parametrize(
    ("name", "sub", "reg"),
    [
        ("www.example.com", "www", "example.com"),
        ("WWW.Example.COM.", "www", "example.com"),
        ("a.b.c.example.co.uk", "a.b.c", "example.co.uk"),
        (
            "isn5c6ki37lc.example.attack",
            "isn5c6ki37lc",
            "example.attack",
        ),  # unknown TLD: last two labels
        ("x.y.corp.internal", "x.y", "corp.internal"),
        (
            "d2x9p4yzqaxo3y.cloudfront.net",
            "",
            "d2x9p4yzqaxo3y.cloudfront.net",
        ),  # private PSL section
        ("data.myhost.duckdns.org", "data", "myhost.duckdns.org"),
        ("247.217.90.189.zen.spamhaus.org", "247.217.90.189.zen", "spamhaus.org"),
        ("4.3.2.1.in-addr.arpa", "4.3.2.1", "in-addr.arpa"),
        ("s3.amazonaws.com", "", "s3.amazonaws.com"),  # the name is itself a public suffix
        ("localhost", "", "localhost"),
        ("192.0.2.1", "", ""),
        ("2001:db8::1", "", ""),
        ("", "", ""),
    ],
)
def test_split(name: str, sub: str, reg: str) -> None:
    assert DomainSplitter().split(name) == (sub, reg)


def test_icann_only_mode_groups_cdn_customers() -> None:
    s = DomainSplitter(include_private=False)
    assert s.registered("d2x9p4yzqaxo3y.cloudfront.net") == "cloudfront.net"


def test_works_without_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bundled PSL snapshot is used: building and using the extractor opens no socket."""

    def no_socket(*_a: object, **_k: object) -> None:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket, "socket", no_socket)
    monkeypatch.setattr(socket, "create_connection", no_socket)
    monkeypatch.setattr(domains, "_EXTRACTORS", {})
    s = DomainSplitter()
    assert s.split("a.b.example.co.jp") == ("a.b", "example.co.jp")
    assert s.registered("tunnel.example.attack") == "example.attack"


def test_cache_is_bounded_and_not_pickled() -> None:
    s = DomainSplitter(cache_size=10)
    for i in range(100):
        s.split(f"h{i}.example.com")
        assert len(s._cache) <= 10
    restored = pickle.loads(pickle.dumps(s))
    assert restored._cache == {} and restored.cache_size == 10
    assert restored.split("h1.example.com") == ("h1", "example.com")
    assert len(pickle.dumps(s)) < 300
