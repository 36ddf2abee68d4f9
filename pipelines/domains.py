"""Public-suffix aware split of DNS names into (sub-domain, registered domain).

Uses ``tldextract`` with the Public Suffix List snapshot bundled in the wheel and **no
network access**: ``suffix_list_urls=()`` and ``cache_dir=None`` mean the extractor
never fetches nor writes a cache file (verified by ``tests/test_domains.py`` with
sockets disabled). Private PSL sections (``cloudfront.net``, ``duckdns.org`` …) are
honoured by default, so each CDN distribution or dynamic-DNS customer is its own
registered domain.

Names whose suffix is unknown to the PSL (lab or internal TLDs such as
``example.attack`` or ``corp.internal``) fall back to their last two labels; reverse
lookups keep their ``in-addr.arpa`` / ``ip6.arpa`` zone so callers can skip them.

>>> s = DomainSplitter()
>>> s.split("4kq2.data.Example.co.uk.")
('4kq2.data', 'example.co.uk')
>>> s.split("isn5c6ki.example.attack")
('isn5c6ki', 'example.attack')
>>> s.split("d1abc.cloudfront.net")
('', 'd1abc.cloudfront.net')
>>> s.split("4.3.2.1.in-addr.arpa")
('4.3.2.1', 'in-addr.arpa')
>>> s.registered("localhost"), s.registered("10.0.0.1"), s.registered("")
('localhost', '', '')
"""

from __future__ import annotations

import ipaddress
from typing import Any

__all__ = ["DomainSplitter", "normalise_name"]

_EXTRACTORS: dict[bool, Any] = {}
_ARPA = ("in-addr.arpa", "ip6.arpa")


def _extractor(private: bool) -> Any:
    """The shared, read-only extractor (built once per process; loading the snapshot costs ~50 ms)."""
    ext = _EXTRACTORS.get(private)
    if ext is None:
        import tldextract

        ext = tldextract.TLDExtract(
            suffix_list_urls=(),
            cache_dir=None,
            fallback_to_snapshot=True,
            include_psl_private_domains=private,
        )
        _EXTRACTORS[private] = ext
    return ext


def normalise_name(name: str) -> str:
    """Lower-case, strip the trailing dot and surrounding blanks.

    >>> normalise_name(" WWW.Example.COM. ")
    'www.example.com'
    """
    return name.strip().rstrip(".").lower()


def _is_ip(name: str) -> bool:
    """Whether ``name`` is an IP literal (fast path: IPv4 is ASCII digits and dots, IPv6 has ':').

    >>> _is_ip("10.0.0.1"), _is_ip("::1"), _is_ip("www.example.com"), _is_ip("1.2.3")
    (True, True, False, False)
    """
    if ":" not in name and name.strip("0123456789."):
        return False  # what ip_address would reject, without raising (and catching) an error
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class DomainSplitter:
    """Splits names with a bounded result cache (cleared when it reaches ``cache_size``).

    The cache is not pickled (it is rebuilt on demand), so a detector holding a
    splitter pickles small.
    """

    def __init__(self, include_private: bool = True, cache_size: int = 100_000) -> None:
        self.include_private = include_private
        self.cache_size = cache_size
        self._cache: dict[str, tuple[str, str]] = {}

    def split(self, name: str) -> tuple[str, str]:
        """``(sub-domain, registered domain)`` of ``name`` (both lower-case; ``""`` if none)."""
        got = self._cache.get(name)
        if got is not None:
            return got
        got = self._split(name)
        if len(self._cache) >= self.cache_size:
            self._cache.clear()
        self._cache[name] = got
        return got

    def registered(self, name: str) -> str:
        """The registered domain of ``name`` (``""`` for IP literals and empty names)."""
        return self.split(name)[1]

    def _split(self, raw: str) -> tuple[str, str]:
        name = normalise_name(str(raw))
        if not name or _is_ip(name):
            return "", ""
        for zone in _ARPA:
            if name == zone or name.endswith("." + zone):
                return name[: -len(zone) - 1] if name != zone else "", zone
        r = _extractor(self.include_private)(name)
        if r.suffix and r.domain:
            reg = f"{r.domain}.{r.suffix}"
            return r.subdomain, reg
        labels = [x for x in name.split(".") if x]
        if r.suffix and not r.domain:
            # the name is itself a public suffix (e.g. "s3.amazonaws.com")
            return "", name
        if len(labels) <= 2:
            return "", ".".join(labels)
        return ".".join(labels[:-2]), ".".join(labels[-2:])

    def __getstate__(self) -> dict[str, Any]:
        return {"include_private": self.include_private, "cache_size": self.cache_size}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.include_private = state["include_private"]
        self.cache_size = state["cache_size"]
        self._cache = {}
