"""The Panel callback outbox: shape, retry/backoff (MockClock), persistence, supersession."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import trio

from streamer._engine import Store
from streamer._node.panel import PanelClient, backoff

SERVER = "8a2b7c1d-0e4f-4a5b-9c6d-7e8f9a0b1c2d"
OTHER = "11111111-2222-4333-8444-555555555555"
TOKEN = "node-secret-token-" + "x" * 40


class Panel:
    """A scripted Panel: answers each request with the next status (204 when out)."""

    def __init__(self, *script: int | type[Exception]) -> None:
        self.script = list(script)
        self.requests: list[tuple[float, httpx.Request]] = []
        self.delivered: list[str] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append((trio.current_time(), request))
        step = self.script.pop(0) if self.script else 204
        if isinstance(step, type):
            raise step("connection refused", request=request)  # type: ignore[call-arg]
        if 200 <= step < 300:
            self.delivered.append(request.url.path)
        return httpx.Response(step)

    def client(self, store: Store, **kwargs: float) -> PanelClient:
        return PanelClient(
            store,
            url="https://panel.example/",
            token_id="tid",
            token=TOKEN,
            transport=httpx.MockTransport(self.handler),
            **kwargs,
        )


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(str(tmp_path / "state"))


async def run_until(client: PanelClient, done: Callable[[], bool], limit: float = 3600) -> None:
    """Run the client until ``done()`` (polled: the test observes, it is not notified)."""
    with trio.fail_after(limit):
        async with trio.open_nursery() as nursery:
            await nursery.start(client.run)
            while not done():  # noqa: ASYNC110
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()


async def test_callback_shape(store: Store, autojump_clock: object) -> None:
    panel = Panel()
    client = panel.client(store)
    client.report(SERVER, success=True, job_id="j1")
    await run_until(client, lambda: bool(panel.delivered))
    (_, request), *_ = panel.requests
    assert request.method == "POST"
    assert str(request.url) == f"https://panel.example/api/remote/servers/{SERVER}/transfer/success"
    assert request.headers["authorization"] == f"Bearer tid.{TOKEN}"
    user_agent = request.headers["user-agent"]
    assert "streamer" in user_agent and "tid" in user_agent and TOKEN not in user_agent
    assert request.headers["content-type"] == "application/json"
    assert request.content == b"{}"
    assert store.pending_callbacks() == []


async def test_retries_5xx_429_and_connection_errors_with_backoff(
    store: Store, autojump_clock: object
) -> None:
    panel = Panel(503, httpx.ConnectError, 429, 502, httpx.ReadTimeout, 204)
    client = panel.client(store, base_delay=1.0, max_delay=60.0)
    client.report(SERVER, success=False, job_id="j1")
    await run_until(client, lambda: bool(panel.delivered))
    times = [t for t, _ in panel.requests]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(panel.requests) == 6
    for attempt, gap in enumerate(gaps, start=1):
        full = min(60.0, 2.0 ** (attempt - 1))
        assert full / 2 - 0.05 <= gap <= full + 0.05, (attempt, gaps)
    assert panel.delivered == [f"/api/remote/servers/{SERVER}/transfer/failure"]
    assert store.pending_callbacks() == []


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
async def test_other_4xx_are_not_retried(store: Store, autojump_clock: object, status: int) -> None:
    panel = Panel(status)
    client = panel.client(store)
    client.report(SERVER, success=True, job_id="j1")
    await run_until(client, lambda: client.delivered == 1)
    await trio.sleep(120)
    assert len(panel.requests) == 1
    assert store.pending_callbacks() == []


async def test_pending_callbacks_survive_a_restart(store: Store, autojump_clock: object) -> None:
    down = Panel(*([httpx.ConnectError] * 100))
    first = down.client(store)
    first.report(SERVER, success=True, job_id="j1")
    first.report(OTHER, success=False, job_id="j2")
    with trio.move_on_after(30):
        await run_until(first, lambda: False)
    assert len(down.requests) > 3 and not down.delivered
    [pending, _] = store.pending_callbacks()
    assert pending.attempts == len(down.requests)

    up = Panel()
    second = up.client(store)  # a new process: nothing in memory, all in the store
    await run_until(second, lambda: len(up.delivered) == 2, limit=5)
    assert up.delivered == [
        f"/api/remote/servers/{SERVER}/transfer/success",
        f"/api/remote/servers/{OTHER}/transfer/failure",
    ]


async def test_success_supersedes_an_undelivered_failure(store: Store) -> None:
    client = Panel().client(store)
    client.report(SERVER, success=False, job_id="j1")
    client.report(OTHER, success=False, job_id="j2")
    client.report(SERVER, success=True, job_id="j3")
    assert [(c.server, c.outcome) for c in store.pending_callbacks()] == [
        (OTHER, "failure"),
        (SERVER, "success"),
    ]


async def test_one_callback_per_job(store: Store) -> None:
    client = Panel().client(store)
    client.report(SERVER, success=False, job_id="j1")
    client.report(SERVER, success=False, job_id="j1")
    assert len(store.pending_callbacks()) == 1


async def test_without_a_panel_url_nothing_is_queued(store: Store) -> None:
    client = PanelClient(store, url="", token_id="", token="")
    client.report(SERVER, success=True, job_id="j1")
    assert not client.enabled and store.pending_callbacks() == []


def test_backoff_is_exponential_capped_and_jittered() -> None:
    assert [backoff(n, base=1, cap=10, jitter=lambda: 1.0) for n in range(1, 7)] == [
        1,
        2,
        4,
        8,
        10,
        10,
    ]
    assert backoff(3, base=1, cap=10, jitter=lambda: 0.0) == 2
    assert backoff(10_000, base=1, cap=60, jitter=lambda: 0.5) == 45
