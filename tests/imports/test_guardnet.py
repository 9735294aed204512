"""Connections of the import client under the default address policy: the backend's
resolve-once-and-connect-to-the-checked-address, redirects, proxies."""

from __future__ import annotations

from collections.abc import Iterable

import httpcore
import httpx
import pytest
import trio
import trio.testing

from streamer._storage.guardnet import ATTEMPT_DELAY, GuardedBackend, ImportTransport
from streamer._storage.http import HttpClient, HttpSettings
from streamer._storage.netguard import AddressGuard, BlockedAddress
from tests.support.hubstub import FileServer

GUARDED = HttpSettings(max_retries=0, connect_timeout=5.0, read_timeout=5.0)


class Recorder(httpcore.AsyncNetworkBackend):
    """An inner backend that records where it is asked to connect; ``refuse`` fail."""

    def __init__(self, refuse: Iterable[str] = (), hang: Iterable[str] = ()) -> None:
        self.connects: list[tuple[str, int]] = []
        self.refuse = set(refuse)
        self.hang = set(hang)  # blackholed: never answer (until the timeout)
        self.cancelled: list[str] = []

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.connects.append((host, port))
        if host in self.refuse:
            raise httpcore.ConnectError(f"{host} refused")
        if host in self.hang:
            try:
                with trio.fail_after(timeout or float("inf")):
                    await trio.sleep_forever()
            except trio.TooSlowError:
                raise httpcore.ConnectTimeout(f"{host} timed out") from None
            except trio.Cancelled:
                self.cancelled.append(host)
                raise
        return httpcore.AsyncMockStream([])


class Resolver:
    """A fake resolver: fixed answers per name, counting lookups."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.lookups: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.lookups.append(host)
        if host not in self.answers:
            raise OSError(-2, "Name or service not known")
        return self.answers[host]


def backend(
    answers: dict[str, list[str]], guard: AddressGuard | None = None, **inner: Iterable[str]
) -> tuple[GuardedBackend, Resolver, Recorder]:
    resolver, recorder = Resolver(answers), Recorder(**inner)
    guarded = GuardedBackend(guard or AddressGuard(), resolver=resolver, inner=recorder)
    return guarded, resolver, recorder


async def test_a_name_resolving_to_loopback_is_refused_without_connecting() -> None:
    guarded, _, recorder = backend({"rebind.test": ["127.0.0.1", "::1"]})
    with pytest.raises(BlockedAddress) as caught:
        await guarded.connect_tcp("rebind.test", 80)
    assert "rebind.test resolves only to non-public addresses" in caught.value.message
    assert recorder.connects == []


async def test_connects_to_the_checked_address_not_the_name() -> None:
    """One lookup, then a connection to the very address checked: a second lookup
    (DNS rebinding) never happens."""
    guarded, resolver, recorder = backend({"mixed.test": ["10.0.0.7", "93.184.216.34"]})
    await guarded.connect_tcp("mixed.test", 443, timeout=5)
    assert resolver.lookups == ["mixed.test"]
    assert recorder.connects == [("93.184.216.34", 443)]


async def test_tries_the_allowed_addresses_in_order_when_they_refuse() -> None:
    guarded, _, recorder = backend(
        {"two.test": ["2606:4700::1", "169.254.169.254", "1.1.1.1"]}, refuse=["2606:4700::1"]
    )
    await guarded.connect_tcp("two.test", 80)
    assert recorder.connects == [("2606:4700::1", 80), ("1.1.1.1", 80)]


async def test_a_blackholed_address_delays_the_next_by_the_attempt_delay_only(
    autojump_clock: trio.testing.MockClock,
) -> None:
    guarded, _, recorder = backend(
        {"v6broken.test": ["2001:4860::1", "2001:4860::2", "8.8.8.8"]}, hang=["2001:4860::1"]
    )
    start = trio.current_time()
    await guarded.connect_tcp("v6broken.test", 443, timeout=10)
    assert trio.current_time() - start == pytest.approx(ATTEMPT_DELAY)
    # the other family goes second (RFC 8305), the blackholed attempt is cancelled
    assert recorder.connects == [("2001:4860::1", 443), ("8.8.8.8", 443)]
    assert recorder.cancelled == ["2001:4860::1"]


async def test_a_timeout_wins_over_refusals_when_nothing_connects(
    autojump_clock: trio.testing.MockClock,
) -> None:
    guarded, _, recorder = backend(
        {"dead.test": ["1.1.1.1", "8.8.8.8"]}, hang=["1.1.1.1"], refuse=["8.8.8.8"]
    )
    with pytest.raises(httpcore.ConnectTimeout):
        await guarded.connect_tcp("dead.test", 80, timeout=3)
    assert [host for host, _ in recorder.connects] == ["1.1.1.1", "8.8.8.8"]


async def test_when_every_allowed_address_fails_the_last_error_is_raised() -> None:
    guarded, _, _ = backend({"down.test": ["1.1.1.1", "8.8.8.8"]}, refuse=["1.1.1.1", "8.8.8.8"])
    with pytest.raises(httpcore.ConnectError, match=r"8\.8\.8\.8 refused"):
        await guarded.connect_tcp("down.test", 80)


async def test_resolution_failures_and_timeouts_are_connection_errors(
    autojump_clock: trio.testing.MockClock,
) -> None:
    guarded, _, _ = backend({})
    with pytest.raises(httpcore.ConnectError, match=r"cannot resolve nowhere\.test"):
        await guarded.connect_tcp("nowhere.test", 80)

    async def hang(host: str, port: int) -> list[str]:
        await trio.sleep_forever()
        raise AssertionError

    slow = GuardedBackend(AddressGuard(), resolver=hang, inner=Recorder())
    with pytest.raises(httpcore.ConnectTimeout):
        await slow.connect_tcp("slow.test", 80, timeout=3)


async def test_trusted_origins_and_allow_private_connect_by_name_unchecked() -> None:
    trusted = AddressGuard.of(allow_private=False, trusted_urls=("http://hub.internal:8080",))
    guarded, resolver, recorder = backend({}, trusted)
    await guarded.connect_tcp("hub.internal", 8080)
    open_, resolver2, recorder2 = backend({}, AddressGuard(allow_private=True))
    await open_.connect_tcp("10.0.0.1", 80)
    assert resolver.lookups == resolver2.lookups == []
    assert recorder.connects == [("hub.internal", 8080)]
    assert recorder2.connects == [("10.0.0.1", 80)]
    with pytest.raises(BlockedAddress):  # same host, another port: checked
        await backend({"hub.internal": ["10.0.0.2"]}, trusted)[0].connect_tcp("hub.internal", 80)


# -- the real client, real sockets -------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]"])
async def test_the_default_client_refuses_loopback(files: FileServer, host: str) -> None:
    files.files["/a.bin"] = b"secret"
    async with HttpClient(GUARDED) as client:
        with pytest.raises(BlockedAddress) as caught:
            await client.fetch("GET", f"http://{host}:{files.port}/a.bin")
    assert caught.value.message.startswith(f"GET http://{host}:{files.port}/a.bin: refusing")
    assert files.requests() == []


async def test_every_redirect_hop_is_checked(files: FileServer) -> None:
    """A trusted origin (as the Hub endpoint is) redirecting to a loopback name: the
    hop is refused before any connection to it."""
    target = FileServer({"/secret": b"internal only"}).start()
    try:
        files.redirects["/go"] = f"http://localhost:{target.port}/secret"
        files.redirects["/go-literal"] = f"http://127.0.0.1:{target.port}/secret"
        settings = HttpSettings(max_retries=0, trusted_origins=(files.url,))
        async with HttpClient(settings) as client:
            for path in ("/go", "/go-literal"):
                with pytest.raises(BlockedAddress, match=f":{target.port}: "):
                    await client.fetch("GET", f"{files.url}{path}")
        assert [r.target for r in files.requests()] == ["/go", "/go-literal"]
        assert target.requests() == []
    finally:
        target.stop()


async def test_blocked_connections_are_not_retried(files: FileServer) -> None:
    async with HttpClient(HttpSettings(max_retries=3, backoff_base=0.001)) as client:
        with pytest.raises(BlockedAddress):
            await client.probe(f"http://localhost:{files.port}/x")
    assert client.retries == 0


async def test_proxied_requests_have_their_literal_hosts_checked(files: FileServer) -> None:
    """Through a proxy (here the file server, which logs the absolute-form target)
    names go to the proxy unresolved; literal blocked hosts are refused first;
    NO_PROXY hosts connect directly, through the guard."""
    proxies = {"http": files.url, "no": "other.example, localhost"}
    transport = ImportTransport(AddressGuard(), limits=httpx.Limits(), proxies=proxies)
    async with httpx.AsyncClient(transport=transport) as client:
        answer = await client.get("http://files.example/a.bin")
        assert answer.status_code == 404  # the proxy (file server) answered
        with pytest.raises(BlockedAddress):
            await client.get("http://169.254.169.254/latest/meta-data/")
        with pytest.raises(BlockedAddress):  # direct: resolved, refused
            await client.get(f"http://localhost:{files.port}/a.bin")
    assert [r.target for r in files.requests()] == ["http://files.example/a.bin"]
