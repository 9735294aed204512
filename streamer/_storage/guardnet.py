"""The import client's connections, checked by :class:`~streamer._storage.netguard.AddressGuard`.

:class:`GuardedBackend` is an httpcore network backend: for each new connection
it resolves the host once, keeps the addresses the guard allows and connects to
those very addresses (Happy Eyeballs over them, as trio's own
``open_tcp_stream`` does over a name's), so a name cannot pass the check
with one address and then connect to another (DNS rebinding). TLS is still
negotiated and verified for the host name (through streamer's lean TLS stream,
:mod:`streamer._httpcoretls`, not trio's ``SSLStream``). Every redirect hop that needs a new
connection goes through it; a pooled connection was checked when it was made.

:class:`ImportTransport` sends requests through a pool on that backend, or,
for URLs the environment routes through a proxy (``HTTP_PROXY``,
``HTTPS_PROXY``, ``ALL_PROXY``, minus ``NO_PROXY``, as httpx reads them), through
that proxy. The proxy resolves names itself, so for proxied requests only
literal addresses and ``localhost`` can be refused (every hop is).
"""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import TracebackType

import httpcore
import httpx
import trio

from .._concurrency import cleanup, open_nursery
from .._httpcoretls import LeanTlsBackend, lean_transport
from .netguard import AddressGuard

Resolve = Callable[[str, int], Awaitable[list[str]]]
ATTEMPT_DELAY = 0.25  # seconds before the next address is tried alongside (RFC 8305)


async def resolve(host: str, port: int) -> list[str]:
    """The distinct addresses ``host`` resolves to for TCP, in the resolver's order."""
    infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """Connects like httpcore's trio backend, to addresses ``guard`` allows only.

    ``resolver`` replaces the system resolver, for tests; ``inner`` makes the
    connections (default :class:`~streamer._httpcoretls.LeanTlsBackend`: httpcore's
    trio backend, TLS through streamer's lean stream). Raises
    :class:`~streamer._storage.netguard.BlockedAddress` when no address may be
    used, :class:`httpcore.ConnectError` / :class:`httpcore.ConnectTimeout` when
    resolving or connecting fails (within one ``timeout`` for both).
    """

    def __init__(
        self,
        guard: AddressGuard,
        *,
        resolver: Resolve = resolve,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self._guard = guard
        self._resolve = resolver
        self._inner = inner or LeanTlsBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        if not self._guard.active_for(host, port):
            return await self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        deadline = trio.current_time() + (float("inf") if timeout is None else timeout)
        try:
            with trio.fail_at(deadline):
                addresses = await self._resolve(host, port)
        except trio.TooSlowError:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from None
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        allowed = _interleaved(self._guard.allowed(host, port, addresses))

        async def connect(address: str) -> httpcore.AsyncNetworkStream:
            left = max(deadline - trio.current_time(), 0.0)
            return await self._inner.connect_tcp(address, port, left, local_address, socket_options)

        return await _first_connected(allowed, connect)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("imports do not use unix sockets")

    async def sleep(self, seconds: float) -> None:
        await trio.sleep(seconds)


def _interleaved(addresses: list[str]) -> list[str]:
    """``addresses`` with the first of the other family moved second (RFC 8305 §4), so
    a broken IPv6 (or IPv4) route delays a connection by one attempt at most."""
    first_v6 = ":" in addresses[0]
    other = next((i for i, a in enumerate(addresses) if (":" in a) != first_v6), None)
    if other is None or other == 1:
        return addresses
    return [addresses[0], addresses[other], *addresses[1:other], *addresses[other + 1 :]]


async def _first_connected(
    addresses: list[str], connect: Callable[[str], Awaitable[httpcore.AsyncNetworkStream]]
) -> httpcore.AsyncNetworkStream:
    """Happy Eyeballs (RFC 8305) over ``addresses``: a new attempt every
    :data:`ATTEMPT_DELAY` seconds, or as soon as the previous one failed; the first
    connection wins and the other attempts are cancelled (or closed). When all fail,
    raises a timeout if one timed out, else the last error."""
    winner: list[httpcore.AsyncNetworkStream] = []
    errors: list[httpcore.ConnectError | httpcore.ConnectTimeout] = []

    async def attempt(address: str, failed: trio.Event) -> None:
        try:
            stream = await connect(address)
        except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
            errors.append(exc)
            failed.set()
            return
        if winner:
            await cleanup(stream.aclose)  # a tie: the first one is kept
            return
        winner.append(stream)
        nursery.cancel_scope.cancel()

    async with open_nursery() as nursery:
        for address in addresses:
            failed = trio.Event()
            nursery.start_soon(attempt, address, failed)
            with trio.move_on_after(ATTEMPT_DELAY):
                await failed.wait()
    if winner:
        return winner[0]
    timeouts = [e for e in errors if isinstance(e, httpcore.ConnectTimeout)]
    raise (timeouts or errors)[-1]


def _direct(guard: AddressGuard, limits: httpx.Limits) -> httpx.AsyncHTTPTransport:
    """httpx's transport over a pool on :class:`GuardedBackend`."""
    return lean_transport(limits=limits, network_backend=GuardedBackend(guard))


class ImportTransport(httpx.AsyncBaseTransport):
    """Direct requests over guarded connections, proxied ones through the environment's
    proxies with their literal hosts checked (see the module docstring).

    ``proxies`` replaces the environment's (``urllib.request.getproxies_environment()``
    shape: ``{"http": url, "https": url, "all": url, "no": "host,..."}``). A host
    listed in ``no`` (or below one, or any for ``*``) is connected to directly.
    """

    def __init__(
        self,
        guard: AddressGuard,
        *,
        limits: httpx.Limits,
        proxies: Mapping[str, str] | None = None,
    ) -> None:
        self._guard = guard
        if proxies is None:
            proxies = urllib.request.getproxies_environment()
        self._no_proxy = [
            entry.strip().lower().lstrip(".") for entry in proxies.get("no", "").split(",")
        ]
        self._direct = _direct(guard, limits)
        self._via: dict[str, httpx.AsyncHTTPTransport] = {}
        for scheme in ("http", "https"):
            url = proxies.get(scheme) or proxies.get("all")
            if url:
                self._via[scheme] = httpx.AsyncHTTPTransport(proxy=url, limits=limits)

    def _route(self, url: httpx.URL) -> httpx.AsyncHTTPTransport | None:
        """The proxy transport for ``url``, or ``None`` to connect directly."""
        proxy = self._via.get(url.scheme)
        host = url.host.lower()
        for entry in self._no_proxy:
            if entry and (entry == "*" or host == entry or host.endswith(f".{entry}")):
                return None
        return proxy

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        proxy = self._route(request.url)
        if proxy is None:
            return await self._direct.handle_async_request(request)
        self._guard.check_url(str(request.url))
        return await proxy.handle_async_request(request)

    async def __aenter__(self) -> ImportTransport:
        for transport in (self._direct, *self._via.values()):
            await transport.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc: BaseException | None = None,
        tb: TracebackType | None = None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for transport in (self._direct, *self._via.values()):
            await transport.aclose()
