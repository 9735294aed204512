"""The ``streamer`` command line: one module per command group.

Each module exposes ``register(commands)``, which adds its sub-parsers and sets
``handler`` (a function of the parsed arguments returning the exit code) on each.

``streamer serve`` registers the serve group alone: the daemon never imports the
client and worker commands' modules (rich, the client API), which it would keep
resident for its whole life for nothing.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from types import ModuleType

from .. import __version__
from . import serve


def _groups(argv: Sequence[str]) -> tuple[ModuleType, ...]:
    """The command groups to register for ``argv``: serve alone when it runs the daemon."""
    if argv[:1] == ["serve"]:
        return (serve,)
    from . import client, worker  # the client side: not loaded by the daemon

    return (serve, client, worker)


def _parser(groups: Sequence[ModuleType]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamer",
        description="Move files between places and machines, fast and safely.",
    )
    parser.add_argument("--version", action="version", version=f"streamer {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in groups:
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = _parser(_groups(arguments)).parse_args(arguments)
    code: int = args.handler(args)
    return code
