"""API tokens and SSE ticket rules (time via MockClock)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import trio

from streamer._auth import TicketBook, TokenAuth, load_or_create_token
from streamer._errors import Unauthorized


def test_bearer_tokens() -> None:
    auth = TokenAuth(["a" * 20, "b" * 20])
    auth.check("Bearer " + "b" * 20)
    auth.check("bearer " + "a" * 20)
    for header in (None, "", "Bearer", "Basic " + "a" * 20, "Bearer wrong", "Bearer " + "a" * 19):
        with pytest.raises(Unauthorized):
            auth.check(header)
    TokenAuth([], enabled=False).check(None)


def test_generated_token_is_private_and_stable(tmp_path: Path) -> None:
    token, created = load_or_create_token(str(tmp_path))
    assert created and len(token) >= 32
    assert stat.S_IMODE(os.stat(tmp_path / "api-token").st_mode) == 0o600
    assert load_or_create_token(str(tmp_path)) == (token, False)


async def test_ticket_is_single_use_and_bound_to_its_job(autojump_clock: object) -> None:
    book = TicketBook()
    ticket = book.issue("job-1")
    with pytest.raises(Unauthorized):
        book.redeem(ticket, "job-2")  # wrong job also burns it
    with pytest.raises(Unauthorized):
        book.redeem(ticket, "job-1")
    ticket = book.issue("job-1")
    book.redeem(ticket, "job-1")
    with pytest.raises(Unauthorized):
        book.redeem(ticket, "job-1")
    with pytest.raises(Unauthorized):
        book.redeem(None, "job-1")


async def test_ticket_expires_after_60_seconds(autojump_clock: object) -> None:
    book = TicketBook()
    fresh, stale = book.issue("j"), book.issue("j")
    await trio.sleep(59)
    book.redeem(fresh, "j")
    await trio.sleep(2)
    with pytest.raises(Unauthorized):
        book.redeem(stale, "j")
