"""``streamer worker``: process jobs of a node's ``/api/worker`` queue (seed 004).

Exit codes: 0 done (also after SIGTERM), 1 a transfer or job failed, 2 bad usage,
3 the server refused the credentials (401/403).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from .._concurrency import open_nursery
from .._pipeline.throttle import TokenBucket, mib_per_second
from ..client import ApiError
from ..client._runner import command_argv
from ..client._wire import DEFAULT_TIMEOUT, TransferOptions
from ..client.worker import WorkerSettings, download_source, run_worker, upload_result
from .workerdisplay import worker_display

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3

RUN_EXAMPLES = """examples:
  streamer worker run --server http://master:8080 --token $WORKER_TOKEN \\
      --exec 'ffmpeg -y -i {input} -c:v libx265 {output}'
  STREAMER_URL=http://master:8080 STREAMER_TOKEN=... streamer worker run \\
      --exec 'python3 convert.py {input} {output}' --parallel 2 --bwlimit 50 --timeout 3600

{input} and {output} are replaced by the job's files under --cache (the command
runs without a shell; write 'sh -c "..."' to get one). SIGTERM stops claiming,
lets running jobs finish for --grace seconds, then hands them back.
"""

TRANSFER_EXAMPLES = """examples:
  streamer worker download 3f2c… source.mp4 --server http://master:8080 --token $JOB_TOKEN
  streamer worker upload 3f2c… output.mkv --zstd

The token is the job token a claim returned, or the node's API token.
"""


def register(commands: Any) -> None:
    worker = commands.add_parser(
        "worker",
        help="process jobs of a node's worker queue (claim, download, run, upload)",
        description="Process jobs of a node's /api/worker queue.",
    )
    actions = worker.add_subparsers(dest="action", required=True, metavar="ACTION")

    run = actions.add_parser(
        "run",
        help="claim jobs and process them until stopped",
        description="Claim jobs, download each source, run a command on it and upload "
        "the result, until stopped (SIGTERM, Ctrl-C).",
        epilog=RUN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(run)
    run.add_argument(
        "--exec",
        dest="command",
        required=True,
        metavar="CMD",
        help="command template with {input} and {output}",
    )
    run.add_argument("--cache", type=Path, default=None, help="job files (default: a temp dir)")
    run.add_argument("--parallel", type=_positive_int, default=1, help="jobs at once (1)")
    run.add_argument("--worker-id", default=None, help="this worker's name (host-pid)")
    run.add_argument(
        "--timeout",
        type=_seconds,
        default=None,
        help="seconds a command may run (the server's worker.command_timeout, else 21600)",
    )
    run.add_argument(
        "--poll", type=_seconds, default=5.0, help="seconds between claims when idle (5)"
    )
    run.add_argument(
        "--grace", type=_seconds, default=30.0, help="seconds jobs get to finish on stop (30)"
    )
    for name in ("download", "upload"):
        run.add_argument(
            f"--{name}-timeout",
            type=_seconds,
            default=None,
            help=f"seconds for one {name} (the server's worker.{name}_timeout, else 1800)",
        )
    run.add_argument("--max-jobs", type=_positive_int, default=None, help="stop after N jobs")
    run.set_defaults(handler=_run)

    for name, verb in (("download", "download a job's source"), ("upload", "upload a result")):
        one = actions.add_parser(
            name,
            help=f"{verb} (resumable, verified)",
            description=f"{verb.capitalize()} (resumable, sha256-verified, retried).",
            epilog=TRANSFER_EXAMPLES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        one.add_argument("job_id", metavar="JOB_ID")
        one.add_argument("file", metavar="FILE", type=Path)
        _common(one)
        one.add_argument("--timeout", type=_seconds, default=DEFAULT_TIMEOUT, help="seconds (1800)")
        one.set_defaults(handler=_download if name == "download" else _upload)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server",
        default=os.environ.get("STREAMER_URL"),
        help="the node's base URL (default: $STREAMER_URL)",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("STREAMER_TOKEN"),
        help="worker token, job token or API token (default: $STREAMER_TOKEN)",
    )
    parser.add_argument(
        "--bwlimit", type=float, default=0.0, metavar="MiB/s", help="bandwidth limit (none)"
    )
    parser.add_argument("--zstd", action="store_true", help="compress transfers with zstd")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return number


def _seconds(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {value}")
    return number


def _options(args: argparse.Namespace, timeout: float | None) -> TransferOptions:
    bucket = TokenBucket(mib_per_second(args.bwlimit)) if args.bwlimit > 0 else None
    return TransferOptions(timeout=timeout, bandwidth=bucket, compress=args.zstd)


def _connection(args: argparse.Namespace) -> tuple[str, str] | None:
    if not args.server or not args.token:
        print("streamer worker: --server and --token (or STREAMER_URL and STREAMER_TOKEN) "
              "are required", file=sys.stderr)  # fmt: skip
        return None
    return args.server, args.token


def _outcome(main: Callable[[], Awaitable[int]]) -> int:
    """Run ``main`` under trio; map failures to exit codes with one clear line."""
    try:
        return trio.run(main)
    except ApiError as exc:
        print(f"streamer worker: {exc}", file=sys.stderr)
        return EXIT_REFUSED if exc.status in (401, 403) else EXIT_FAILED
    except OSError as exc:
        print(f"streamer worker: {exc}", file=sys.stderr)
        return EXIT_FAILED


def _run(args: argparse.Namespace) -> int:
    connection = _connection(args)
    if connection is None:
        return EXIT_USAGE
    server, token = connection
    settings = WorkerSettings(
        command=args.command,
        parallel=args.parallel,
        poll_interval=args.poll,
        command_timeout=args.timeout,
        grace_period=args.grace,
        download_timeout=args.download_timeout,
        upload_timeout=args.upload_timeout,
        max_jobs=args.max_jobs,
        options=_options(args, None),
        **({"cache_dir": args.cache} if args.cache else {}),
        **({"worker_id": args.worker_id} if args.worker_id else {}),
    )
    try:
        command_argv(settings.command, Path("in"), Path("out"))
    except ValueError as exc:
        print(f"streamer worker: bad --exec: {exc}", file=sys.stderr)
        return EXIT_USAGE

    async def main() -> int:
        stop = trio.Event()
        with worker_display(args.log_level) as shown:
            async with open_nursery() as nursery:

                async def on_signals() -> None:
                    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                        async for signum in signals:
                            shown.event(None, f"{signal.Signals(signum).name}: stopping")
                            stop.set()

                nursery.start_soon(on_signals)
                shown.event(None, f"worker {settings.worker_id} polling {server}")
                stats = await run_worker(server, token, settings, stop=stop, reporter=shown)
                nursery.cancel_scope.cancel()
            shown.event(
                None,
                f"done: {stats.completed} completed, {stats.failed} failed, "
                f"{stats.released} released, {stats.lost} lost",
            )
        return 0

    return _outcome(main)


def _transfer(args: argparse.Namespace, upload: bool) -> int:
    connection = _connection(args)
    if connection is None:
        return EXIT_USAGE
    server, token = connection
    options = _options(args, args.timeout)

    async def main() -> int:
        with worker_display(args.log_level) as shown:

            def progress(done: int, total: int | None) -> None:
                shown.progress(args.job_id, "upload" if upload else "download", done, total)

            if upload:
                sent = await upload_result(
                    server, token, args.job_id, args.file, options=options, progress=progress
                )
                shown.event(args.job_id, f"uploaded {sent.size} bytes, sha256 {sent.sha256}")
            else:
                got = await download_source(
                    server, token, args.job_id, args.file, options=options, progress=progress
                )
                shown.event(args.job_id, f"downloaded {got.size} bytes, sha256 {got.sha256}")
            shown.finished(args.job_id)
        return 0

    return _outcome(main)


def _download(args: argparse.Namespace) -> int:
    return _transfer(args, upload=False)


def _upload(args: argparse.Namespace) -> int:
    return _transfer(args, upload=True)
