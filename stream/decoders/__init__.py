"""Input decoders, one module per format, and the registry that names them.

Formats are loaded lazily by name: ``get_decoder("zeek-json")``. ``auto`` sniffs every
message and dispatches it to the first format that claims it (see :mod:`.auto`).

>>> sorted(FORMATS)[:3]
['auto', 'canonical', 'goflow2-json']
"""

from __future__ import annotations

import importlib
from typing import Any

from stream.decoders.base import MAX_MESSAGE_BYTES, DeadLetter, Decoder, DecodeResult, Message
from stream.exceptions import StreamError

__all__ = [
    "FORMATS",
    "MAX_MESSAGE_BYTES",
    "DeadLetter",
    "DecodeResult",
    "Decoder",
    "Message",
    "get_decoder",
]

#: format name -> "module:Class". Order matters for auto-detection (most specific first).
FORMATS: dict[str, str] = {
    "goflow2-json": "stream.decoders.goflow2_json:Goflow2JsonDecoder",
    "goflow2-pb": "stream.decoders.goflow2_pb:Goflow2ProtobufDecoder",
    "zeek-json": "stream.decoders.zeek:ZeekJsonDecoder",
    "zeek-tsv": "stream.decoders.zeek:ZeekTsvDecoder",
    "suricata": "stream.decoders.suricata:SuricataDecoder",
    "pmacct": "stream.decoders.pmacct:PmacctDecoder",
    "netflow": "stream.decoders.netflow:NetflowDecoder",
    "summary": "stream.decoders.summaries:SummaryDecoder",
    "pcap": "stream.decoders.pcap:PcapDecoder",
    "canonical": "stream.decoders.canonical:CanonicalDecoder",
    "auto": "stream.decoders.auto:AutoDecoder",
}


def decoder_class(name: str) -> type[Decoder]:
    try:
        target = FORMATS[name]
    except KeyError:
        raise StreamError(
            f"unknown input format {name!r}; known: {', '.join(sorted(FORMATS))}"
        ) from None
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)  # type: ignore[no-any-return]


def get_decoder(name: str, **options: Any) -> Decoder:
    """Instantiate the decoder for format ``name`` with keyword options."""
    return decoder_class(name)(**options)
