"""The ``streamer`` command line: one module per command group.

Each module exposes ``register(commands)``, which adds its sub-parsers and sets
``handler`` (a function of the parsed arguments returning the exit code) on each.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from .. import __version__
from . import client, serve, worker


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamer",
        description="Move files between places and machines, fast and safely.",
    )
    parser.add_argument("--version", action="version", version=f"streamer {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (serve, client, worker):
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    code: int = args.handler(args)
    return code
