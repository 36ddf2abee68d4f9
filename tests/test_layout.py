"""The one dependency rule (DESIGN §2): ``pipelines`` is pure and never imports ``stream``.

Checked on the syntax tree of every module, so an import inside a function, a
``from stream...`` or an ``importlib.import_module("stream...")`` is caught as well.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PIPELINES = REPO / "pipelines"
MAX_LINES = 600

#: modules that do I/O; ``pipelines`` gets its input as batches and returns results
IO_MODULES = ("kafka", "confluent_kafka", "socket", "subprocess", "requests", "urllib", "http")
#: pure address conversions of ``socket`` (no network): allowed, e.g. inet_ntop in the pcap parser
SOCKET_PURE = {"inet_ntoa", "inet_aton", "inet_ntop", "inet_pton", "AF_INET", "AF_INET6"}
#: calls that open files
OPEN_CALLS = {"open", "read_text", "write_text", "read_bytes", "write_bytes"}
_STREAM_PATH = re.compile(r"^stream(\.[A-Za-z_][A-Za-z0-9_]*)*(:[A-Za-z_][A-Za-z0-9_]*)?$")


def _modules(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if ".venv" not in p.parts)


def _is_stream(module: str | None) -> bool:
    return module is not None and (module == "stream" or module.startswith("stream."))


def _dotted(node: ast.AST) -> str:
    """``a.b.c`` for a Name/Attribute chain, else ''."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def violations(source: str, filename: str = "<src>") -> Iterator[str]:
    """Every breach of the purity rule in one module's source, as ``line: what``.

    >>> list(violations("import stream.cli\\nfrom stream import x\\n"))
    ['1: imports stream.cli', '2: imports from stream']
    >>> list(violations("import importlib\\nimportlib.import_module('stream.kafka')"))
    ["2: dynamic import of 'stream.kafka'", "2: names module 'stream.kafka'"]
    >>> list(violations("import time\\nt = time.time()\\nf = open('x')"))
    ['2: wall clock time.time', '3: opens a file with open()']
    >>> list(violations("import socket\\nsocket.inet_ntoa(b'1234')"))
    []
    >>> list(violations("import datetime as dt\\ndt.datetime.now()\\nimport numpy"))
    ['2: wall clock dt.datetime.now']
    """
    tree = ast.parse(source, filename)
    time_aliases: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _is_stream(alias.name):
                    yield f"{node.lineno}: imports {alias.name}"
                top = alias.name.split(".")[0]
                if top in IO_MODULES and top != "socket":
                    yield f"{node.lineno}: imports {alias.name} (I/O)"
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and _is_stream(node.module):
                yield f"{node.lineno}: imports from {node.module}"
            top = (node.module or "").split(".")[0]
            if node.level == 0 and top == "socket":
                bad = [a.name for a in node.names if a.name not in SOCKET_PURE]
                if bad:
                    yield f"{node.lineno}: imports socket.{','.join(bad)} (I/O)"
            elif node.level == 0 and top in IO_MODULES:
                yield f"{node.lineno}: imports from {node.module} (I/O)"
            if node.level == 0 and node.module == "time":
                time_aliases |= {a.asname or a.name for a in node.names if a.name == "time"}
            if node.level == 0 and node.module == "datetime":
                for a in node.names:
                    if a.name in ("datetime", "date"):
                        time_aliases.add(f"{a.asname or a.name}.now")
        elif isinstance(node, ast.Attribute):
            name = _dotted(node)
            if name.startswith("socket.") and node.attr not in SOCKET_PURE:
                yield f"{node.lineno}: uses {name} (I/O)"
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if _STREAM_PATH.match(node.value) and node.value != "stream":
                yield f"{node.lineno}: names module {node.value!r}"
        elif isinstance(node, ast.Call):
            yield from _call_violations(node, time_aliases)


def _call_violations(node: ast.Call, time_aliases: set[str]) -> Iterator[str]:
    func = _dotted(node.func)
    if isinstance(node.func, ast.Attribute):
        last, owner = node.func.attr, _dotted(node.func.value)
    else:
        last, owner = func, ""
    arg = node.args[0] if node.args else None
    if (
        last in ("import_module", "__import__")
        and isinstance(arg, ast.Constant)
        and isinstance(arg.value, str)
        and _is_stream(arg.value)
    ):
        yield f"{node.lineno}: dynamic import of {arg.value!r}"
    wall = func in ("time.time", "time.time_ns") or func in time_aliases
    if wall or (last in ("now", "utcnow", "today") and re.search(r"(^|\.)(datetime|date)$", owner)):
        yield f"{node.lineno}: wall clock {func or last}"
    elif last in OPEN_CALLS:
        yield f"{node.lineno}: opens a file with {last}()"


PIPELINE_FILES = _modules(PIPELINES)


def test_pipelines_has_modules() -> None:
    assert len(PIPELINE_FILES) >= 5 and (PIPELINES / "records.py") in PIPELINE_FILES


@pytest.mark.parametrize("path", PIPELINE_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_pipelines_module_is_pure(path: Path) -> None:
    found = list(violations(path.read_text(encoding="utf-8"), str(path)))
    assert not found, f"{path.relative_to(REPO)} breaks the pipelines purity rule:\n" + "\n".join(
        found
    )


@pytest.mark.parametrize(
    "snippet",
    [
        "import stream",
        "import stream.kafka as k",
        "from stream.decoders import get_decoder",
        "def f():\n    from stream import cli",
        "import importlib\nimportlib.import_module('stream')",
        "__import__('stream.cli')",
        "REGISTRY = {'x': 'stream.sinks:KafkaSink'}",
        "import kafka",
        "from confluent_kafka import Producer",
        "import socket\ns = socket.socket()",
        "from socket import create_connection",
        "import subprocess",
        "data = open('/etc/passwd').read()",
        "from pathlib import Path\nPath('x').read_text()",
        "import time\nnow = time.time()",
        "from time import time\nnow = time()",
        "from datetime import datetime\nnow = datetime.now()",
        "import datetime\ntoday = datetime.date.today()",
    ],
)
def test_checker_catches(snippet: str) -> None:
    assert list(violations(snippet)), snippet


@pytest.mark.parametrize(
    "snippet",
    [
        "from pipelines.records import FlowBatch",
        "from .records import FlowBatch",
        "import socket\nsocket.inet_ntop(socket.AF_INET6, b'\\0' * 16)",
        "import numpy as np\nx = np.datetime64('2024-01-01')",
        "stream_id = 'stream'",
        "'''Nothing in stream.kafka is imported here.'''",
        "import datetime as dt\nt = dt.datetime.fromtimestamp(0, dt.timezone.utc)",
    ],
)
def test_checker_allows(snippet: str) -> None:
    assert not list(violations(snippet)), snippet


SIZED_FILES = _modules(REPO / "stream") + PIPELINE_FILES


@pytest.mark.parametrize("path", SIZED_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_module_size(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines < MAX_LINES, (
        f"{path.relative_to(REPO)} has {lines} lines (limit {MAX_LINES}): split it"
    )
