"""``streamer serve``: run the node daemon."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

import trio

from .._config import load
from .._errors import ConfigError


def register(commands: Any) -> None:
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
    serve.set_defaults(handler=_run)


def configure_logging(level: str) -> None:
    """Log to stderr at ``level``. httpx logs every request it sends at INFO (one
    line per S3 part or small file moved, and the cost of formatting it): its
    lines show only at DEBUG."""
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if logging.getLogger().level > logging.DEBUG:
        logging.getLogger("httpx").setLevel(logging.WARNING)


def _skip_httpx_cli() -> None:
    """Keep ``import httpx`` from importing httpx's command-line client.

    httpx imports ``httpx._main`` (rich, pygments, click) whenever those are
    installed, and they are (rich draws the client's progress bars): the daemon
    would keep ~3.5 MB of them resident for its whole life. ``None`` in
    ``sys.modules`` makes that import raise ImportError, which httpx expects (it
    then defines a stub ``main``). Must run before httpx is first imported.
    """
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]


def _run(args: argparse.Namespace) -> int:
    configure_logging(args.log_level)
    _skip_httpx_cli()
    from .._memory import limit_malloc_arenas
    from .._server import serve

    limit_malloc_arenas()

    try:
        config = load(args.config)
        trio.run(serve, config)
    except ConfigError as exc:
        print(f"streamer: {exc.message}", file=sys.stderr)
        return 2
    return 0
