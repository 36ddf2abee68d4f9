"""Dead letters outside Kafka: a JSON-lines file sink and per-(decoder, reason) counting.

Every dead letter is counted by ``(decoder, reason)``, once per batch, through an
optional ``on_dead(decoder, reason, n)`` callable (the metrics module plugs its counter
in there). The file sink writes one JSON object per dead letter: ``error``, ``reason``,
``detail``, ``decoder``, ``source``, ``offset``, ``value_len`` and the value, as text
(``value``) when it is UTF-8 or base64 (``value_b64``) when not, cut to ``max_value``
bytes (``value_truncated``).

>>> import io, json
>>> from stream.decoders.base import DeadLetter
>>> seen = []
>>> buf = io.StringIO()
>>> sink = DeadLetterFileSink(buf, on_dead=lambda d, r, n: seen.append((d, r, n)))
>>> sink.write([DeadLetter(b"nope", "not_json", "bad", "zeek-json", "zeek/0", 4),
...             DeadLetter(b"\\xff\\x00", "not_json", "bad", "zeek-json", "zeek/0", 5)])
2
>>> [json.loads(line)["value" if i == 0 else "value_b64"] for i, line in enumerate(buf.getvalue().splitlines())]
['nope', '/wA=']
>>> seen, sink.counts
([('zeek-json', 'not_json', 2)], {('zeek-json', 'not_json'): 2})
"""

from __future__ import annotations

import base64
import json
import os
from collections import Counter
from collections.abc import Callable, Iterable
from typing import IO, Any

from stream.decoders.base import DeadLetter

__all__ = ["DeadLetterCounter", "DeadLetterFileSink", "OnDead", "count_dead", "dead_letter_record"]

#: ``on_dead(decoder, reason, n)``: called once per (decoder, reason) per batch
OnDead = Callable[[str, str, int], None]


def count_dead(
    dead: Iterable[DeadLetter], on_dead: OnDead | None = None
) -> dict[tuple[str, str], int]:
    """Count dead letters by (decoder, reason) and report each group once to ``on_dead``."""
    counts = Counter((d.decoder, d.reason) for d in dead)
    if on_dead is not None:
        for (decoder, reason), n in counts.items():
            on_dead(decoder, reason, n)
    return dict(counts)


def _utf8(data: bytes, cut_at_end: bool) -> str | None:
    """``data`` as text, allowing a multi-byte character cut at the end; None if binary."""
    for trim in range(4 if cut_at_end else 1):
        try:
            return data[: len(data) - trim].decode("utf-8")
        except UnicodeDecodeError:
            continue
    return None


def dead_letter_record(d: DeadLetter, max_value: int = 4096) -> dict[str, Any]:
    """The JSON-serialisable record of one dead letter (value cut to ``max_value`` bytes)."""
    value = bytes(d.value)
    rec: dict[str, Any] = {
        "error": f"{d.reason}: {d.detail}",
        "reason": d.reason,
        "detail": d.detail,
        "decoder": d.decoder,
        "source": d.origin,
        "offset": d.offset,
        "value_len": len(value),
    }
    cut = value[:max_value]
    text = _utf8(cut, cut_at_end=len(value) > max_value)
    if text is not None:
        rec["value"] = text
    else:
        rec["value_b64"] = base64.b64encode(cut).decode("ascii")
    rec["value_truncated"] = len(value) > max_value
    return rec


class DeadLetterCounter:
    """Running totals by (decoder, reason); also usable as an ``on_dead`` callable."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}

    def __call__(self, decoder: str, reason: str, n: int) -> None:
        key = (decoder, reason)
        self.counts[key] = self.counts.get(key, 0) + n

    def by_reason(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for (_decoder, reason), n in self.counts.items():
            out[reason] = out.get(reason, 0) + n
        return out

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class DeadLetterFileSink:
    """Append dead letters as JSON lines to a path or an open text stream."""

    def __init__(
        self,
        target: str | os.PathLike[str] | IO[str],
        on_dead: OnDead | None = None,
        max_value: int = 4096,
    ) -> None:
        self.max_value = max_value
        self.on_dead = on_dead
        self.counts: dict[tuple[str, str], int] = {}
        self._own = not hasattr(target, "write")
        self._path = None if not self._own else os.fspath(target)  # type: ignore[arg-type]
        self._f: IO[str] | None = None if self._own else target  # type: ignore[assignment]

    def write(self, dead: Iterable[DeadLetter]) -> int:
        """Write and count a batch of dead letters; returns how many were written."""
        dead = list(dead)
        if not dead:
            return 0
        if self._f is None:
            assert self._path is not None
            self._f = open(self._path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()
        lines = [
            json.dumps(dead_letter_record(d, self.max_value), ensure_ascii=False) + "\n"
            for d in dead
        ]
        self._f.writelines(lines)
        for key, n in count_dead(dead, self.on_dead).items():
            self.counts[key] = self.counts.get(key, 0) + n
        return len(dead)

    def flush(self) -> None:
        if self._f is not None:
            self._f.flush()

    def close(self) -> None:
        if self._f is not None:
            self._f.flush()
            if self._own:
                self._f.close()
                self._f = None

    def __enter__(self) -> DeadLetterFileSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
