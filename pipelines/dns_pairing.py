"""DNS query/response pairing into :class:`~pipelines.records.DnsBatch` rows.

:class:`DnsPairer` pairs by (client, server, client port, id, proto). :meth:`DnsPairer.add`
takes one message; :meth:`DnsPairer.add_many` takes a chunk of messages as arrays and
pairs them with numpy (sort by key, then look at each message's neighbours in its key
group), giving exactly the rows and row order of calling :meth:`DnsPairer.add` on each
message in turn.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipelines.records import DnsBatch

__all__ = ["DnsPairer"]


class DnsPairer:
    """Pair DNS queries with responses by (client, server, client port, id).

    One row per query; ``rcode``/``answers`` come from the response. Queries unanswered
    after ``timeout`` seconds of packet time (or at :meth:`flush`) keep ``rcode`` -1. A
    response whose query was not seen yields a row of its own (the capture started late).
    A second query with the same key before any response ends the first one unanswered.

    >>> p = DnsPairer()
    >>> p.add(1.0, "10.0.0.1", "10.0.0.53", 5555, 53, 17, 7, False, 0, "a.example", 1, 0, (), 40, "f", 0)
    >>> p.add(1.1, "10.0.0.53", "10.0.0.1", 53, 5555, 17, 7, True, 3, "a.example", 1, 0, (), 90, "f", 1)
    >>> b = p.take(); b.query.tolist(), b.rcode.tolist(), b.resp_bytes.tolist()
    (['a.example'], [3], [90])
    >>> p.add_many(ts=np.array([2.0, 2.1]), src=np.array(["10.0.0.1", "10.0.0.53"], dtype=object),
    ...            dst=np.array(["10.0.0.53", "10.0.0.1"], dtype=object), sport=np.array([6, 53]),
    ...            dport=np.array([53, 6]), proto=np.array([17, 17]), ident=np.array([9, 9]),
    ...            response=np.array([False, True]), rcode=np.array([0, 0]),
    ...            query=np.array(["b.example"] * 2, dtype=object), qtype=np.array([1, 1]),
    ...            answers_n=np.array([0, 1]), answers=np.array(["", "192.0.2.1"], dtype=object),
    ...            size=np.array([30, 46]), origin="f", offset=np.array([5, 6]))
    >>> b = p.take(); b.query.tolist(), b.answers.tolist(), b.offset.tolist()
    (['b.example'], ['192.0.2.1'], [5])
    """

    _FIELDS = (
        "ts",
        "src",
        "dst",
        "src_port",
        "dst_port",
        "proto",
        "query",
        "qtype",
        "origin",
        "offset",
        "rcode",
        "answers_n",
        "answers",
        "resp_bytes",
    )

    def __init__(self, timeout: float = 10.0, max_pending: int = 100_000, sensor: str = "") -> None:
        self.timeout = timeout
        self.max_pending = max_pending
        self.sensor = sensor
        self.pending: dict[tuple[str, str, int, int, int], tuple[Any, ...]] = {}
        self.ready: list[tuple[Any, ...]] = []
        #: completed rows from :meth:`add_many`, as column dicts, before ``ready``
        self.segments: list[dict[str, Any]] = []
        self.now = float("-inf")

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("segments", [])  # pickles from before add_many
        self.__dict__.update(state)

    def add(
        self,
        ts: float,
        src: str,
        dst: str,
        sport: int,
        dport: int,
        proto: int,
        ident: int,
        response: bool,
        rcode: int,
        query: str,
        qtype: int,
        answers_n: int,
        answers: tuple[str, ...] | str,
        size: int,
        origin: str,
        offset: int,
    ) -> None:
        """Add one parsed DNS message (``answers`` as a tuple or already joined by ",")."""
        if ts > self.now:
            self.now = ts
        if not response:
            key = (src, dst, sport, ident, proto)
            old = self.pending.pop(key, None)
            if old is not None:
                self.ready.append((*old, -1, 0, "", 0))
            self.pending[key] = (ts, src, dst, sport, dport, proto, query, qtype, origin, offset)
            if len(self.pending) > self.max_pending:
                self.ready.append((*self.pending.pop(next(iter(self.pending))), -1, 0, "", 0))
            return
        q = self.pending.pop((dst, src, dport, ident, proto), None)
        if q is None:
            q = (ts, dst, src, dport, sport, proto, query, qtype, origin, offset)
        joined = answers if isinstance(answers, str) else ",".join(answers)
        self.ready.append((*q, rcode, answers_n, joined, size))

    def add_many(
        self,
        *,
        ts: np.ndarray,
        src: np.ndarray,
        dst: np.ndarray,
        sport: np.ndarray,
        dport: np.ndarray,
        proto: np.ndarray,
        ident: np.ndarray,
        response: np.ndarray,
        rcode: np.ndarray,
        query: np.ndarray,
        qtype: np.ndarray,
        answers_n: np.ndarray,
        answers: np.ndarray,
        size: np.ndarray,
        origin: Any,
        offset: np.ndarray,
        addrs: np.ndarray | None = None,
        src_code: np.ndarray | None = None,
        dst_code: np.ndarray | None = None,
    ) -> None:
        """Add a chunk of parsed messages in arrival order (``answers`` joined by ",";
        ``origin`` one string or one per message); same result as :meth:`add` on each.

        ``addrs`` with ``src_code``/``dst_code`` (optional): ``src``/``dst`` as indexes
        into the distinct address strings ``addrs``, which saves encoding them here."""
        n = len(ts)
        if n == 0:
            return
        ts = np.asarray(ts, dtype=np.float64)
        resp = np.asarray(response, dtype=bool)
        origins = np.full(n, origin, dtype=object) if isinstance(origin, str) else origin
        cols = [np.asarray(c) for c in (sport, dport, proto, ident, rcode, qtype, answers_n, size)]
        sport, dport, proto, ident, rcode, qtype, answers_n, size = (
            c.astype(np.int64) for c in cols
        )
        offset = np.asarray(offset, dtype=np.int64)
        query = np.asarray(query, dtype=object)
        answers = np.asarray(answers, dtype=object)
        if len(self.pending) + int(np.count_nonzero(~resp)) > self.max_pending:
            # eviction would interleave with pairing: take the exact one-by-one path
            for i in range(n):
                self.add(
                    float(ts[i]), src[i], dst[i], int(sport[i]), int(dport[i]), int(proto[i]),
                    int(ident[i]), bool(resp[i]), int(rcode[i]), query[i], int(qtype[i]),
                    int(answers_n[i]), answers[i], int(size[i]), origins[i], int(offset[i]),
                )  # fmt: skip
            return
        top = float(np.fmax.reduce(ts))
        if top > self.now:
            self.now = top
        # client orientation: a query as sent, a response turned around
        c_src = np.where(resp, dst, src)
        c_dst = np.where(resp, src, dst)
        c_sport = np.where(resp, dport, sport)
        c_dport = np.where(resp, sport, dport)
        codes: dict[Any, int] = {}
        if addrs is not None and src_code is not None and dst_code is not None:
            sc, dc = np.asarray(src_code, dtype=np.int64), np.asarray(dst_code, dtype=np.int64)
            a_src, a_dst = np.where(resp, dc, sc), np.where(resp, sc, dc)
            if self.pending:
                codes = {a: i for i, a in enumerate(np.asarray(addrs).tolist())}
        else:
            enc = codes.setdefault
            a_src = np.fromiter((enc(x, len(codes)) for x in c_src.tolist()), np.int64, n)
            a_dst = np.fromiter((enc(x, len(codes)) for x in c_dst.tolist()), np.int64, n)
        q_cols: dict[str, Any] = {
            "ts": ts, "src": c_src, "dst": c_dst, "src_port": c_sport, "dst_port": c_dport,
            "proto": proto, "query": query, "qtype": qtype, "origin": origins, "offset": offset,
        }  # fmt: skip
        is_q = ~resp
        order = np.arange(n, dtype=np.int64)
        # pending queries of earlier chunks join as virtual events before the chunk's (those
        # whose key does not come up again are left where they are)
        virt: list[tuple[Any, ...]] = []
        get = codes.get
        for key, val in self.pending.items():
            s_id, d_id = get(key[0]), get(key[1])
            if s_id is not None and d_id is not None:
                virt.append((s_id, d_id, key[2], key[3], key[4], val, key))
        v = len(virt)
        if v:
            vt = list(zip(*[x[5] for x in virt], strict=True))
            for name, vals in zip(("ts", "src", "dst", "src_port", "dst_port", "proto", "query",
                                   "qtype", "origin", "offset"), vt, strict=True):  # fmt: skip
                arr = np.empty(v, dtype=q_cols[name].dtype)
                arr[:] = vals
                q_cols[name] = np.concatenate([arr, q_cols[name]])
            vk = np.array([x[:5] for x in virt], dtype=np.int64).reshape(v, 5)
            a_src = np.concatenate([vk[:, 0], a_src])
            a_dst = np.concatenate([vk[:, 1], a_dst])
            k_port = np.concatenate([vk[:, 2], c_sport])
            k_id = np.concatenate([vk[:, 3], ident])
            k_proto = np.concatenate([vk[:, 4], proto])
            is_q = np.concatenate([np.ones(v, dtype=bool), is_q])
            order = np.concatenate([np.full(v, -1, dtype=np.int64), order])
        else:
            k_port, k_id, k_proto = c_sport, ident, proto
        m = n + v
        srt = np.lexsort((order, k_proto, k_id, k_port, a_dst, a_src))
        same = np.zeros(m + 1, dtype=bool)  # same[i]: sorted event i continues the group of i-1
        same[1:m] = (
            (a_src[srt][1:] == a_src[srt][:-1])
            & (a_dst[srt][1:] == a_dst[srt][:-1])
            & (k_port[srt][1:] == k_port[srt][:-1])
            & (k_id[srt][1:] == k_id[srt][:-1])
            & (k_proto[srt][1:] == k_proto[srt][:-1])
        )
        sq = is_q[srt]
        nxt_same = same[1:]
        prev_q = np.zeros(m, dtype=bool)
        prev_q[1:] = same[1:m] & sq[:-1]
        nq = np.zeros(m, dtype=bool)
        nq[:-1] = sq[1:]
        # responses: paired with the query just before them in the group, else alone
        r_at = np.flatnonzero(~sq)
        q_of_r = np.where(prev_q[r_at], r_at - 1, r_at)
        # queries followed by another query of the group end unanswered at that query
        rep = np.flatnonzero(sq & nxt_same & nq)
        ev = srt - v  # chunk message index of each sorted event (negative: virtual)
        src_rows = np.concatenate([srt[q_of_r], srt[rep]])
        emit_at = np.concatenate([order[srt[r_at]], order[srt[rep + 1]]])
        resp_ev = np.concatenate([ev[r_at], np.full(len(rep), -1, dtype=np.int64)])
        seq = np.argsort(emit_at, kind="stable")
        src_rows, resp_ev = src_rows[seq], resp_ev[seq]
        if self.ready:
            self._freeze_ready()
        answered = resp_ev >= 0
        ri = np.where(answered, resp_ev, 0)
        seg = {name: q_cols[name][src_rows] for name in q_cols}
        seg["rcode"] = np.where(answered, rcode[ri], -1)
        seg["answers_n"] = np.where(answered, answers_n[ri], 0)
        ans = answers[ri]
        ans[~answered] = ""
        seg["answers"] = ans
        seg["resp_bytes"] = np.where(answered, size[ri], 0)
        if len(src_rows):
            self.segments.append(seg)
        for i in np.flatnonzero(nxt_same & (order[srt] < 0)).tolist():
            del self.pending[virt[srt[i]][6]]  # matched: the chunk takes it over
        # the last query of a group with nothing after it stays pending (arrival order)
        last_q = np.flatnonzero(sq & ~nxt_same & (order[srt] >= 0))
        if len(last_q):
            rows = srt[last_q[np.argsort(order[srt[last_q]], kind="stable")]]
            fields = [q_cols[name][rows].tolist() for name in q_cols]
            for t, i in zip(zip(*fields, strict=True), k_id[rows].tolist(), strict=True):
                self.pending[(t[1], t[2], t[3], i, t[5])] = t

    def _freeze_ready(self) -> None:
        rows, self.ready = self.ready, []
        self.segments.append(dict(zip(self._FIELDS, zip(*rows, strict=True), strict=True)))

    def take(self, final: bool = False) -> DnsBatch:
        """Rows completed so far (and expired queries; every pending query if ``final``)."""
        if self.pending:
            limit = self.now - self.timeout
            for key in [k for k, v in self.pending.items() if final or v[0] < limit]:
                self.ready.append((*self.pending.pop(key), -1, 0, "", 0))
        if self.ready:
            self._freeze_ready()
        segs, self.segments = self.segments, []
        if not segs:
            return DnsBatch.empty()
        cols: dict[str, Any] = {}
        for name in self._FIELDS:
            parts = [np.asarray(sg[name], dtype=object if name in _OBJ else None) for sg in segs]
            cols[name] = parts[0] if len(parts) == 1 else np.concatenate(parts)
        cols["sensor"] = np.full(len(cols["ts"]), self.sensor, dtype=object)
        return DnsBatch.from_columns(cols).sorted_by_time()


_OBJ = frozenset(("src", "dst", "query", "origin", "answers"))
