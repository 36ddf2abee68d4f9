"""Kafka client layer: one small interface, two backends, security settings.

>>> s = settings_from({"bootstrap_servers": "b:9092", "security_protocol": "SASL_PLAINTEXT",
...                    "sasl_mechanism": "SCRAM-SHA-512", "sasl_username": "u", "sasl_password": "p"})
>>> s.redacted()["sasl_password"], s.sasl_mechanism
('***', 'SCRAM-SHA-512')
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stream.exceptions import KafkaSetupError
from stream.kafka.base import (
    TP,
    AdminClient,
    ClientSettings,
    ConsumerClient,
    InRecord,
    ProducerClient,
    RebalanceEvent,
)

__all__ = [
    "BACKENDS",
    "TP",
    "AdminClient",
    "ClientSettings",
    "ConsumerClient",
    "InRecord",
    "ProducerClient",
    "RebalanceEvent",
    "make_admin",
    "make_consumer",
    "make_producer",
    "settings_from",
]

BACKENDS = ("kafka-python", "confluent")
_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
_MECHANISMS = ("", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER")
_SECRETS = ("sasl_password", "ssl_password")


def _secret(section: Mapping[str, Any], name: str) -> str:
    """A secret from ``NAME``, ``NAME_env`` (an environment variable) or ``NAME_file``.

    ``SLOWBURN_KAFKA_<NAME>`` in the environment is the fallback. Never logged.
    """
    if section.get(name):
        return str(section[name])
    env = section.get(f"{name}_env")
    if env:
        if env not in os.environ:
            raise KafkaSetupError(f"kafka.{name}_env: environment variable {env} is not set")
        return os.environ[env]
    path = section.get(f"{name}_file")
    if path:
        try:
            return Path(str(path)).read_text().strip()
        except OSError as exc:
            raise KafkaSetupError(f"kafka.{name}_file: cannot read {path}: {exc.strerror}") from exc
    return os.environ.get(f"SLOWBURN_KAFKA_{name.upper()}", "")


def settings_from(section: Mapping[str, Any]) -> ClientSettings:
    """Client settings from the ``kafka`` config section (after CLI overrides)."""
    known = {
        "bootstrap_servers",
        "client_id",
        "security_protocol",
        "sasl_mechanism",
        "sasl_username",
        "ssl_cafile",
        "ssl_certfile",
        "ssl_keyfile",
        "extra",
    } | {f"{s}{suffix}" for s in _SECRETS for suffix in ("", "_env", "_file")}
    for k in section:
        if k not in known:
            raise KafkaSetupError(f"kafka.{k}: unknown client setting")
    protocol = str(section.get("security_protocol", "PLAINTEXT")).upper()
    if protocol not in _PROTOCOLS:
        raise KafkaSetupError(
            f"kafka.security_protocol: {protocol!r} not one of {', '.join(_PROTOCOLS)}"
        )
    mechanism = str(section.get("sasl_mechanism", "") or "").upper()
    if mechanism not in _MECHANISMS:
        raise KafkaSetupError(
            f"kafka.sasl_mechanism: {mechanism!r} not one of {', '.join(m for m in _MECHANISMS if m)}"
        )
    return ClientSettings(
        bootstrap_servers=str(section.get("bootstrap_servers", "127.0.0.1:9092")),
        client_id=str(section.get("client_id", "slowburn")),
        security_protocol=protocol,
        sasl_mechanism=mechanism,
        sasl_username=str(
            section.get("sasl_username", "") or os.environ.get("SLOWBURN_KAFKA_SASL_USERNAME", "")
        ),
        sasl_password=_secret(section, "sasl_password"),
        ssl_cafile=str(section.get("ssl_cafile", "")),
        ssl_certfile=str(section.get("ssl_certfile", "")),
        ssl_keyfile=str(section.get("ssl_keyfile", "")),
        ssl_password=_secret(section, "ssl_password"),
        extra=dict(section.get("extra") or {}),
    )


def _backend(name: str) -> Any:
    if name == "kafka-python":
        from stream.kafka import kafka_python

        return kafka_python
    if name == "confluent":
        try:
            from stream.kafka import confluent  # type: ignore[attr-defined]
        except ImportError as exc:
            raise KafkaSetupError(
                "client backend 'confluent' needs confluent-kafka: pip install 'slowburn[fast]'"
            ) from exc
        return confluent
    raise KafkaSetupError(f"unknown Kafka client backend {name!r}; known: {', '.join(BACKENDS)}")


def make_consumer(backend: str, settings: ClientSettings, group: str, **kw: Any) -> ConsumerClient:
    mod = _backend(backend)
    return (
        mod.KPConsumer(settings, group, **kw)
        if backend == "kafka-python"
        else mod.CKConsumer(settings, group, **kw)
    )  # type: ignore[no-any-return]


def make_producer(backend: str, settings: ClientSettings, **kw: Any) -> ProducerClient:
    mod = _backend(backend)
    return (
        mod.KPProducer(settings, **kw)
        if backend == "kafka-python"
        else mod.CKProducer(settings, **kw)
    )  # type: ignore[no-any-return]


def make_admin(backend: str, settings: ClientSettings) -> AdminClient:
    mod = _backend(backend)
    return mod.KPAdmin(settings) if backend == "kafka-python" else mod.CKAdmin(settings)  # type: ignore[no-any-return]
