"""Pytest plugin: one real Apache Kafka broker (KRaft, single node) for the test session.

The broker is ``deploy/kafka/local-kafka`` (Maven Central jars, no Docker), started lazily the
first time a test asks for the ``kafka`` fixture and stopped at the end of the session. It
listens on loopback with a PLAINTEXT listener (``bootstrap``) and a SASL_PLAINTEXT listener
with SCRAM-SHA-256 and SCRAM-SHA-512 (``scram_bootstrap``, user ``scram_user``).

Fault tests may stop, kill and restart it: it comes back on the same data dir and ports with
its data. Tests that use ``kafka`` are marked ``kafka`` automatically (``-m "not kafka"``
deselects them), and a test that finds it stopped (a previous test failed before restarting
it) gets it started again.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "deploy" / "kafka" / "local-kafka"
#: first start may fetch the jars with Maven; later starts take a few seconds
START_TIMEOUT = float(os.environ.get("SLOWBURN_KAFKA_START_TIMEOUT", "240"))
SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")


class KafkaBrokerError(RuntimeError):
    """local-kafka failed: the message carries its stderr."""


class KafkaBroker:
    """A local single-node broker driven through ``deploy/kafka/local-kafka``.

    ``start`` is idempotent; ``stop``/``start`` keep the data dir, ports and SCRAM user.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        scram: bool = True,
        script: Path = SCRIPT,
        scram_user: str = "slowburn",
        scram_password: str = "slowburn-secret",
    ) -> None:
        self.data_dir = Path(data_dir)
        self.scram = scram
        self.script = script
        self.scram_user = scram_user
        self.scram_password = scram_password
        self.scram_mechanisms = SCRAM_MECHANISMS if scram else ()
        self.bootstrap = ""
        self.scram_bootstrap = ""
        self.starts = 0

    def _run(
        self, *args: str, timeout: float, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ)
        env.setdefault("SLOWBURN_PYTHON", sys.executable)
        env["SLOWBURN_KAFKA_SCRAM_USER"] = self.scram_user
        env["SLOWBURN_KAFKA_SCRAM_PASSWORD"] = self.scram_password
        cmd = ["bash", str(self.script), *args, "--dir", str(self.data_dir)]
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL
        )
        if check and proc.returncode != 0:
            raise KafkaBrokerError(
                f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr.strip()[-4000:]}"
            )
        return proc

    def start(self) -> None:
        """Start the broker (or find it running) and wait until clients can list topics."""
        args = ["start", "--owner-pid", str(os.getpid())]  # stopped if this session dies
        if self.scram:
            args.append("--scram")
        out = self._run(*args, timeout=START_TIMEOUT).stdout.split()
        self.bootstrap = out[0]
        self.scram_bootstrap = out[1] if self.scram else ""
        self.starts += 1

    def stop(self, kill: bool = False) -> None:
        """Stop the broker: SIGTERM (clean shutdown) or, with ``kill``, SIGKILL."""
        self._run("stop", *(["--kill"] if kill else []), timeout=90)

    def restart(self, kill: bool = False) -> None:
        """Stop then start the same broker (same ports, same data)."""
        self.stop(kill=kill)
        self.start()

    def is_running(self) -> bool:
        """True while the broker process of this data dir is alive."""
        return self._run("status", timeout=30, check=False).returncode == 0

    @property
    def pid(self) -> int | None:
        """Process id of the running broker, if any."""
        try:
            return int((self.data_dir / "kafka.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def client_config(
        self, *, scram: bool = False, mechanism: str = "SCRAM-SHA-256"
    ) -> dict[str, Any]:
        """kafka-python keyword arguments to reach the plaintext or the SCRAM listener."""
        if not scram:
            return {"bootstrap_servers": self.bootstrap}
        if not self.scram:
            raise KafkaBrokerError("broker was started without SCRAM")
        return {
            "bootstrap_servers": self.scram_bootstrap,
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": mechanism,
            "sasl_plain_username": self.scram_user,
            "sasl_plain_password": self.scram_password,
        }

    def admin(self, **kwargs: Any) -> Any:
        """A kafka-python ``KafkaAdminClient`` on the plaintext listener (caller closes it)."""
        from kafka import KafkaAdminClient

        config: dict[str, Any] = {"request_timeout_ms": 15000, **self.client_config()}
        config.update(kwargs)
        return KafkaAdminClient(**config)

    def create_topic(
        self, name: str, partitions: int = 1, config: Mapping[str, str] | None = None
    ) -> str:
        """Create ``name`` and wait until every partition has a leader; returns the name."""
        from kafka.admin import NewTopic

        admin = self.admin()
        try:
            topic = NewTopic(
                name,
                num_partitions=partitions,
                replication_factor=1,
                topic_configs=dict(config or {}),
            )
            admin.create_topics([topic], timeout_ms=15000)
            admin.wait_for_topics([name], timeout_ms=15000)
        finally:
            admin.close()
        return name

    def __repr__(self) -> str:
        return f"KafkaBroker(bootstrap={self.bootstrap!r}, data_dir={str(self.data_dir)!r})"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses the broker ``kafka``, so ``-m "not kafka"`` leaves it out."""
    for item in items:
        if (
            "kafka" in getattr(item, "fixturenames", ())
            and item.get_closest_marker("kafka") is None
        ):
            item.add_marker(pytest.mark.kafka)


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """The session's broker (PLAINTEXT + SCRAM listeners), started on first use."""
    # not under pytest's basetemp: a concurrent pytest session prunes old basetemps, which
    # would delete a running broker's data
    data = Path(tempfile.mkdtemp(prefix="slowburn-kafka-"))
    broker = KafkaBroker(data, scram=True)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(autouse=True)
def _kafka_running(request: pytest.FixtureRequest) -> None:
    """Before each test that uses the broker: start it again if an earlier test left it down."""
    if "kafka" in request.fixturenames:
        broker: KafkaBroker = request.getfixturevalue("kafka")
        if not broker.is_running():
            broker.start()


@pytest.fixture
def topic_name(request: pytest.FixtureRequest) -> str:
    """A topic name unique to this test run: ``t-<test name>-<8 hex>``."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name)[:60].strip("-")
    return f"t-{stem}-{uuid.uuid4().hex[:8]}"
