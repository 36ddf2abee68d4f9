"""Per-query features of DNS names, vectorised over a batch.

For each query: registered domain and sub-domain (public-suffix aware, see
:mod:`pipelines.domains`), sub-domain length (dots excluded), longest label, Shannon
entropy of the sub-domain characters (bits/char), whether the sub-domain is an address
lookup (reversed IPv4 such as DNSBL ``4.3.2.1.zen.spamhaus.org`` or PTR), and whether
the name looks *encoded* (long, high-entropy labels as produced by base32/base64/hex
tunnels).

>>> from pipelines.domains import DomainSplitter
>>> f = query_features(np.array(["isn5c6ki37lc7y5d4iwbudwvm3lfcacaaacqaa.example.attack",
...                              "www.example.com", "5.72.127.175.zen.spamhaus.org"], dtype=object),
...                    DomainSplitter())
>>> f["reg"].tolist(), f["sub_len"].tolist(), f["encoded"].tolist(), f["ip_like"].tolist()
(['example.attack', 'example.com', 'spamhaus.org'], [38, 3, 12], [True, False, False], [False, False, True])
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from pipelines.domains import DomainSplitter

__all__ = ["UNUSUAL_QTYPES", "entropy_bits", "query_features"]

#: TXT, NULL, CNAME, MX, KEY, ANY, SRV-less "data" types used by tunnels; >= 256 (private/unassigned) too
UNUSUAL_QTYPES = np.array([5, 10, 15, 16, 25, 255], dtype=np.int32)
_IP_LIKE = re.compile(r"^(\d{1,3}\.){3}\d{1,3}(\.|$)")


def entropy_bits(strings: list[str]) -> np.ndarray:
    """Shannon entropy (bits per character) of each string, vectorised.

    >>> entropy_bits(["aaaa", "abcd", ""]).round(2).tolist()
    [0.0, 2.0, 0.0]
    """
    n = len(strings)
    if n == 0:
        return np.zeros(0)
    enc = [s.encode("utf-8", "surrogatepass") for s in strings]
    lens = np.fromiter((len(b) for b in enc), dtype=np.int64, count=n)
    if lens.sum() == 0:
        return np.zeros(n)
    data = np.frombuffer(b"".join(enc), dtype=np.uint8).astype(np.int64)
    row = np.repeat(np.arange(n), lens)
    codes, counts = np.unique(row * 256 + data, return_counts=True)
    r = codes // 256
    p = counts / lens[r]
    out = np.zeros(n)
    np.add.at(out, r, -p * np.log2(p))
    return out


def query_features(
    names: np.ndarray,
    splitter: DomainSplitter,
    min_len: int = 24,
    min_label: int = 20,
    min_entropy: float = 3.2,
) -> dict[str, Any]:
    """Feature columns of ``names`` (see module docstring).

    Features are computed once per distinct name of the batch and mapped back.
    """
    index: dict[Any, int] = {}
    inv = np.fromiter(
        (index.setdefault(q, len(index)) for q in names.tolist()), dtype=np.int64, count=len(names)
    )
    f = _unique_features(list(index), splitter, min_len, min_label, min_entropy)
    inv_list = inv.tolist()
    f["sub"] = [f["sub"][i] for i in inv_list]
    for k in ("reg", "sub_len", "max_label", "entropy", "ip_like", "encoded"):
        f[k] = f[k][inv]
    return f


def _unique_features(
    names: list[Any], splitter: DomainSplitter, min_len: int, min_label: int, min_entropy: float
) -> dict[str, Any]:
    split = [splitter.split(str(q)) for q in names]
    subs = [s for s, _ in split]
    reg = np.empty(len(split), dtype=object)
    reg[:] = [r for _, r in split]
    flat = [s.replace(".", "") for s in subs]
    sub_len = np.fromiter((len(s) for s in flat), dtype=np.int64, count=len(flat))
    max_label = np.fromiter(
        (max((len(x) for x in s.split(".")), default=0) for s in subs),
        dtype=np.int64,
        count=len(subs),
    )
    ip_like = np.fromiter((bool(_IP_LIKE.match(s)) for s in subs), dtype=bool, count=len(subs))
    ip_like |= np.isin(reg, ("in-addr.arpa", "ip6.arpa"))
    ent = entropy_bits(flat)
    encoded = ~ip_like & (ent >= min_entropy) & ((sub_len >= min_len) | (max_label >= min_label))
    return {
        "reg": reg,
        "sub": subs,
        "sub_len": sub_len,
        "max_label": max_label,
        "entropy": ent,
        "ip_like": ip_like,
        "encoded": encoded,
    }
