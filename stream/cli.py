"""The ``slowburn`` command line: one sub-command per module in :mod:`stream.commands`.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``. Modules import their heavy dependencies inside ``run`` so that
``slowburn --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from types import ModuleType

from stream.exceptions import StreamError

log = logging.getLogger("slowburn")

#: sub-command name -> module. A module that does not exist yet is left out of the CLI.
COMMANDS: dict[str, str] = {
    "demo": "stream.commands.demo",
    "replay": "stream.commands.replay",
    "decode": "stream.commands.decode",
    "collect": "stream.commands.collect",
    "sensor": "stream.commands.sensor",
    "run": "stream.commands.run",
    "repartition": "stream.commands.repartition",
    "simulate": "stream.commands.simulate",
    "eval": "stream.commands.eval",
}


def _load(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(COMMANDS[name])
    except ModuleNotFoundError as exc:
        if exc.name == COMMANDS[name]:
            return None
        raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slowburn",
        description="Streaming detection of slow exfiltration, beaconing, DNS tunnelling "
        "and living-off-the-land lateral movement.",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = _load(name)
        if module is None:
            continue
        p = sub.add_parser(name, help=module.HELP, description=module.__doc__)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except StreamError as exc:
        log.error("%s", exc)
        sys.stderr.write(f"slowburn {args.command}: {exc}\n")
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
