"""The frame of every client command: options, node connection, output, exit codes.

Exit codes: 0 success; 1 the node refused (an error answer), could not be
reached, or a job did not complete cleanly; 2 bad usage (endpoint, config file);
130 interrupted (Ctrl-C, then detach).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import trio
from rich.console import Console

from ..client.api import TransferApi
from ..client.config import ClientConfig, ClientConfigError, resolve
from ..client.endpoints import EndpointError
from ..client.http import ApiError, connect
from . import display

T = TypeVar("T")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """The command line asks for something the command cannot do (exit code 2)."""


@dataclass
class Session:
    """One client command's node, output streams and mode."""

    config: ClientConfig
    json: bool
    out: Console
    err: Console

    @property
    def terminal(self) -> bool:
        """Output for humans on a terminal: rich tables, bars, prompts."""
        return self.out.is_terminal and not self.json

    @property
    def interactive(self) -> bool:
        """Whether the user can be asked a question (stdin and stdout are terminals)."""
        return self.terminal and sys.stdin.isatty()

    def run(self, work: Callable[[TransferApi], Awaitable[T]]) -> T:
        """Run ``work`` with an API client of the node, in a fresh trio run."""

        async def main() -> T:
            async with connect(self.config.server, self.config.token) as http:
                return await work(TransferApi(http))

        return trio.run(main)

    def emit(self, value: Any) -> None:
        """Print ``value`` as one JSON line on stdout (the ``--json`` output)."""
        print(display.json_line(value), flush=True)

    def fail(self, code: str, message: str) -> None:
        """Report an error on stderr: JSON with ``--json``, else ``streamer: message``."""
        if self.json:
            print(display.json_line({"error": code, "message": message}), file=sys.stderr)
        else:
            self.err.print(f"streamer: {message}", markup=False)


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """--server, --token and --json, accepted by every client command."""
    group = parser.add_argument_group("node")
    group.add_argument("--server", help="node URL (default: $STREAMER_URL, client.yml, :8080)")
    group.add_argument("--token", help="API token (default: $STREAMER_TOKEN, client.yml)")
    parser.add_argument("--json", action="store_true", help="machine-readable JSON output")


def client_command(
    handler: Callable[[Session, argparse.Namespace], int],
) -> Callable[[argparse.Namespace], int]:
    """Wrap ``handler`` with session setup and the mapping of errors to messages and codes."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        session = Session(
            config=ClientConfig(server="", token=None),
            json=args.json,
            out=display.console(),
            err=display.console(stderr=True),
        )
        try:
            session.config = resolve(args.server, args.token)
            return handler(session, args)
        except (UsageError, EndpointError, ClientConfigError) as exc:
            session.fail("usage", str(exc))
            return EXIT_USAGE
        except ApiError as exc:
            hint = " (check the token: streamer login)" if exc.status == 401 else ""
            session.fail(exc.code, f"{exc.message} [{exc.code}, HTTP {exc.status}]{hint}")
            return EXIT_FAILED
        except httpx.TransportError as exc:
            session.fail("unreachable", f"cannot reach {session.config.server}: {exc}")
            return EXIT_FAILED
        except BrokenPipeError:  # stdout closed early (``| head``): stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_FAILED

    return run
