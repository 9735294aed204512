"""The ``streamer`` command line."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

import trio

from . import __version__
from ._config import load
from ._errors import ConfigError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamer",
        description="Move files between places and machines, fast and safely.",
    )
    parser.add_argument("--version", action="version", version=f"streamer {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="run the node daemon (REST API, job engine)",
        description="Run the node daemon. Without --config, serves local-0 under ./data "
        "with state in ./state on 127.0.0.1:8080.",
        epilog="example: streamer serve --config /etc/streamer/config.yml",
    )
    serve.add_argument(
        "--config",
        default=os.environ.get("STREAMER_CONFIG"),
        help="YAML config file (default: $STREAMER_CONFIG, else embedded defaults)",
    )
    serve.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args.config, args.log_level)
    raise AssertionError(args.command)


def _serve(config_path: str | None, log_level: str) -> int:
    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from ._memory import limit_malloc_arenas
    from ._server import serve

    limit_malloc_arenas()

    try:
        config = load(config_path)
        trio.run(serve, config)
    except ConfigError as exc:
        print(f"streamer: {exc.message}", file=sys.stderr)
        return 2
    return 0
