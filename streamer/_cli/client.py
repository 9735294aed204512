"""The client commands that talk to a running ``streamer serve``: login, cp, jobs,
watch, cancel, cleanup and settings (``cp`` lives in :mod:`.copy`)."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from typing import Any

from ..client.config import ClientConfig, config_path, save
from . import copy, display
from .follow import follow
from .session import EXIT_OK, Session, UsageError, add_common_options, client_command

STATUSES = ["pending", "in_progress", "completed", "failed", "cancelled"]


def register(commands: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    add_common_options(common)

    def command(name: str, help: str, example: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = commands.add_parser(
            name,
            parents=[common],
            help=help,
            description=help[0].upper() + help[1:] + ".",
            epilog=f"example:\n  {example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        return parser

    login = command(
        "login",
        "check a node's URL and token and save them for later commands",
        'echo "$TOKEN" | streamer login --server http://node-1:8080',
    )
    login.set_defaults(handler=client_command(_login))

    copy.register(commands, common)

    jobs = command("jobs", "list the jobs of the node", "streamer jobs --status in_progress")
    jobs.add_argument("--status", choices=STATUSES, help="only jobs in this state")
    jobs.set_defaults(handler=client_command(_jobs))

    watch = command("watch", "follow a job's progress until it ends", "streamer watch transfer-…")
    watch.add_argument("job", metavar="JOB", help="job id")
    watch.set_defaults(handler=client_command(_watch))

    cancel = command("cancel", "stop a pending or running job", "streamer cancel transfer-…")
    cancel.add_argument("job", metavar="JOB", help="job id")
    cancel.set_defaults(handler=client_command(_cancel))

    cleanup = command("cleanup", "forget a finished job", "streamer cleanup transfer-…")
    cleanup.add_argument("job", metavar="JOB", help="job id")
    cleanup.set_defaults(handler=client_command(_cleanup))

    settings = command(
        "settings",
        "show or change node settings",
        "streamer settings max-concurrent 4",
    )
    settings.add_argument("name", choices=["max-concurrent"], help="the setting")
    settings.add_argument(
        "value", nargs="?", type=int, help="new value (1-64); without it, show the current one"
    )
    settings.set_defaults(handler=client_command(_settings))


def _login(session: Session, args: argparse.Namespace) -> int:
    config = session.config
    # a token saved earlier is not reused: login checks the one given now
    token = args.token or os.environ.get("STREAMER_TOKEN") or _read_token(session)
    if not token:
        raise UsageError("no token given (--token, $STREAMER_TOKEN or standard input)")
    checked = ClientConfig(server=config.server, token=token)
    session.config = checked
    session.run(lambda api: api.max_concurrent())  # 401 for a wrong token: nothing saved
    path = config_path()
    save(checked, path)
    if session.json:
        session.emit({"server": checked.server, "path": str(path)})
    else:
        session.out.print(f"logged in to {checked.server}; saved to {path}", markup=False)
    return EXIT_OK


def _read_token(session: Session) -> str:
    """The token typed at a hidden prompt, or the first line of standard input."""
    if sys.stdin.isatty():
        return getpass.getpass(f"API token for {session.config.server}: ").strip()
    return sys.stdin.readline().strip()


def _jobs(session: Session, args: argparse.Namespace) -> int:
    jobs = session.run(lambda api: api.jobs(args.status))
    if session.json:
        session.emit({"jobs": jobs})
    elif jobs:
        session.out.print(display.jobs_table(jobs, terminal=session.terminal))
    else:
        session.err.print("no jobs" + (f" {args.status}" if args.status else ""))
    return EXIT_OK


def _watch(session: Session, args: argparse.Namespace) -> int:
    return follow(session, args.job)


def _cancel(session: Session, args: argparse.Namespace) -> int:
    answer = session.run(lambda api: api.cancel(args.job))
    if session.json:
        session.emit(answer)
    else:
        session.out.print(
            f"{answer.job_id} cancelled ({answer.files_completed}/{answer.total_files} "
            "files had completed)",
            markup=False,
        )
    return EXIT_OK


def _cleanup(session: Session, args: argparse.Namespace) -> int:
    session.run(lambda api: api.cleanup(args.job))
    if session.json:
        session.emit({"jobId": args.job, "cleanedUp": True})
    else:
        session.out.print(f"{args.job} cleaned up", markup=False)
    return EXIT_OK


def _settings(session: Session, args: argparse.Namespace) -> int:
    value: int | None = args.value
    current = session.run(
        lambda api: api.max_concurrent() if value is None else api.set_max_concurrent(value)
    )
    if session.json:
        session.emit({"maxConcurrentTransfers": current})
    else:
        session.out.print(f"max-concurrent {current}")
    return EXIT_OK
