"""Follow a job to its end (``streamer cp``, ``streamer watch``): a progress bar fed
by the SSE stream, the outcome with its errors as a table, and Ctrl-C.

Ctrl-C stops following and asks whether to cancel the job or detach from it
(it keeps running on the node); without a terminal to ask on, it detaches and
prints the job id.
"""

from __future__ import annotations

import signal
from collections.abc import Sequence

import trio
from rich.prompt import Prompt

from .._concurrency import open_nursery
from ..client.api import TransferApi
from ..client.http import ApiError
from ..client.models import Event, Job, JobError
from . import display
from .session import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, Session


async def _until_interrupted(
    api: TransferApi, job_id: str, session: Session, bars: display.Bars
) -> Event | None:
    """The job's final event, or ``None`` when SIGINT came first."""

    def on_event(event: Event) -> None:
        if session.json:
            session.emit(event)
        bars.show(event)

    final: Event | None = None
    with trio.open_signal_receiver(signal.SIGINT) as interrupts:
        async with open_nursery() as nursery:

            async def stop_on_interrupt() -> None:
                async for _ in interrupts:
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(stop_on_interrupt)
            final = await api.follow(job_id, on_event)
            nursery.cancel_scope.cancel()
    return final


def _watch(session: Session, job_id: str, bars: display.Bars) -> Event | None:
    with bars.shown():
        return session.run(lambda api: _until_interrupted(api, job_id, session, bars))


def _ask_cancel(session: Session) -> bool:
    """Whether the user wants the job cancelled (else detach); never asks without a terminal."""
    if not session.interactive:
        return False
    try:
        answer = Prompt.ask(
            "Cancel the job, or detach and leave it running?",
            choices=["cancel", "detach"],
            default="detach",
            console=session.out,
        )
    except (KeyboardInterrupt, EOFError):
        return False
    return answer == "cancel"


def follow(session: Session, job_id: str) -> int:
    """Show ``job_id`` until it ends; the exit code (0 only for a clean completion)."""
    bars = display.Bars(session.out, enabled=session.terminal)
    final = _watch(session, job_id, bars)
    if final is None:
        if not _ask_cancel(session):
            return detach(session, job_id)
        try:
            session.run(lambda api: api.cancel(job_id))
        except ApiError as exc:
            if exc.code != "job_finished":  # it ended meanwhile: show how
                raise
        final = _watch(session, job_id, bars)
        if final is None:
            return detach(session, job_id)
    return report(session, final.job)


def detach(session: Session, job_id: str) -> int:
    """Leave the job running; the id goes to stdout, how to find it again to stderr."""
    print(job_id, flush=True)
    if not session.json:
        session.err.print(f"detached: {job_id} keeps running (streamer watch {job_id})")
    return EXIT_INTERRUPTED


def report(session: Session, job: Job) -> int:
    """Print how ``job`` ended (for humans) and return the exit code it deserves."""
    if not session.json:
        session.out.print(display.summary(job), markup=False)
    report_errors(session, job.errors)
    return EXIT_OK if job.succeeded else EXIT_FAILED


def report_errors(session: Session, errors: Sequence[JobError]) -> None:
    """The errors as a table (for humans; ``--json`` output already carries them)."""
    if errors and not session.json:
        session.out.print(display.errors_table(errors, terminal=session.terminal))
