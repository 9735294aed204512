"""A TCP proxy for tests that injects HTTP faults between a client and a server.

The proxy listens on ``127.0.0.1`` (a free port) and forwards every connection
to ``target_host:target_port``. It understands just enough HTTP/1.1 to see
request boundaries (``Content-Length`` and ``chunked`` bodies are streamed
through, never buffered whole), so it can count requests and, per request:

* **fail** it: answer with a given status and body without forwarding it
  (:meth:`FaultProxy.fail_next`, e.g. S3's ``503 SlowDown``), then close the
  connection (``Connection: close``);
* **drop** it: forward it, then close both sockets after ``K`` bytes of the
  response (status line and headers included) have reached the client
  (:meth:`FaultProxy.drop_after`);
* **stall** it: forward it, pass ``K`` bytes of the response, then hold the
  rest until a :class:`threading.Event` is set (:meth:`FaultProxy.stall_after`),
  to catch a transfer mid-file.

Faults are armed for the next ``n`` matching requests; ``when`` narrows which
requests match (e.g. ``lambda r: r.method == "GET"``). Responses are never
parsed, only counted, so it assumes clients do not pipeline requests (httpx,
requests and curl do not).

From trio tests::

    async with fault_proxy(server_port) as proxy:
        proxy.fail_next(2, status=503, body=s3_error_body("SlowDown"))
        ...  # talk to http://127.0.0.1:{proxy.port}
        assert proxy.failed == 2

From process-based tests (the proxy runs its own trio loop in a thread; arming
faults and reading counters is thread-safe)::

    running = start_in_thread(server_port)
    try:
        running.proxy.drop_after(1000)
        ...  # point the subprocess at running.port
    finally:
        running.stop()
"""

from __future__ import annotations

import queue
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from http import HTTPStatus

import trio

from streamer._concurrency import open_nursery

_READ = 64 * 1024


@dataclass(frozen=True)
class RequestHead:
    """The request line and headers of one proxied request (header names lower-cased)."""

    method: str
    target: str
    headers: dict[str, str]


Match = Callable[[RequestHead], bool]
_Send = Callable[[bytes], Awaitable[None]]


async def _discard(data: bytes) -> None:
    del data


def s3_error_body(
    code: str = "SlowDown", message: str = "Please reduce your request rate."
) -> bytes:
    """An S3 ``<Error>`` document, for :meth:`FaultProxy.fail_next`."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    ).encode()


@dataclass
class _Fault:
    remaining: int
    when: Match | None
    status: int = 0
    body: bytes = b""
    content_type: str = ""
    after: int = 0
    hold: threading.Event | None = None  # set: a stall (released by it), else a drop

    def matches(self, head: RequestHead) -> bool:
        return self.remaining > 0 and (self.when is None or self.when(head))


@dataclass
class FaultProxy:
    """Forwards to ``target_host:target_port``; arm faults, read counters.

    Counters: ``connections`` accepted, ``requests`` seen (all of them),
    ``forwarded`` to the target, ``failed`` answered by an injected failure,
    ``dropped`` connections cut by :meth:`drop_after`, ``stalled`` responses held by
    :meth:`stall_after`; ``log`` keeps every
    :class:`RequestHead` in order.
    """

    target_host: str
    target_port: int
    port: int = 0
    connections: int = 0
    requests: int = 0
    forwarded: int = 0
    failed: int = 0
    dropped: int = 0
    stalled: int = 0
    log: list[RequestHead] = field(default_factory=list)
    _failures: list[_Fault] = field(default_factory=list)
    _drops: list[_Fault] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- arming faults (thread-safe) ---------------------------------------

    def fail_next(
        self,
        n: int = 1,
        *,
        status: int = 503,
        body: bytes | None = None,
        content_type: str = "application/xml",
        when: Match | None = None,
    ) -> None:
        """Answer the next ``n`` matching requests with ``status`` and ``body``
        (default: S3's ``SlowDown`` document) instead of forwarding them."""
        fault = _Fault(n, when, status, s3_error_body() if body is None else body, content_type)
        with self._lock:
            self._failures.append(fault)

    def drop_after(self, nbytes: int, *, times: int = 1, when: Match | None = None) -> None:
        """Cut the connection after ``nbytes`` response bytes, for the next ``times``
        matching requests (which are forwarded normally)."""
        with self._lock:
            self._drops.append(_Fault(times, when, after=nbytes))

    def stall_after(
        self, nbytes: int, *, release: threading.Event, times: int = 1, when: Match | None = None
    ) -> None:
        """Hold the response after ``nbytes`` bytes until ``release`` is set, for the
        next ``times`` matching requests (the rest then flows on normally)."""
        with self._lock:
            self._drops.append(_Fault(times, when, after=nbytes, hold=release))

    def clear_faults(self) -> None:
        """Disarm every fault not yet used up."""
        with self._lock:
            self._failures.clear()
            self._drops.clear()

    def _take(self, faults: list[_Fault], head: RequestHead) -> _Fault | None:
        with self._lock:
            for fault in faults:
                if fault.matches(head):
                    fault.remaining -= 1
                    return fault
        return None

    # -- serving -------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and forward until cancelled; reports the port to ``task_status``."""
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self.port)
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, client: trio.SocketStream) -> None:
        self.connections += 1
        try:
            async with client:
                upstream = await trio.open_tcp_stream(self.target_host, self.target_port)
                async with upstream, trio.open_nursery() as nursery:
                    conn = _Connection(self, client, upstream, nursery.cancel_scope)
                    nursery.start_soon(conn.responses)
                    await conn.requests()
                    nursery.cancel_scope.cancel()
        except* (OSError, EOFError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # either side went away: the connection is over


class _Connection:
    """One client connection and its upstream twin."""

    def __init__(
        self,
        proxy: FaultProxy,
        client: trio.SocketStream,
        upstream: trio.SocketStream,
        scope: trio.CancelScope,
    ) -> None:
        self._proxy = proxy
        self._client = client
        self._upstream = upstream
        self._scope = scope
        self._buffer = bytearray()
        self._budget: int | None = None  # response bytes left before a drop or stall
        self._hold: threading.Event | None = None  # a stall's release, if it is one

    async def _fill(self) -> bool:
        data = await self._client.receive_some(_READ)
        self._buffer += data
        return bool(data)

    async def _line(self) -> bytes:
        while (end := self._buffer.find(b"\r\n")) < 0:
            if not await self._fill():
                raise EOFError
        line = bytes(self._buffer[: end + 2])
        del self._buffer[: end + 2]
        return line

    async def requests(self) -> None:
        """Read requests one by one; fail, forward (maybe arming a drop), repeat."""
        while True:
            try:
                raw_head = await self._head()
            except EOFError:
                return
            head = _parse_head(raw_head)
            proxy = self._proxy
            proxy.requests += 1
            proxy.log.append(head)
            failure = proxy._take(proxy._failures, head)
            if failure is not None:
                await self._body(head, _discard)
                proxy.failed += 1
                await self._client.send_all(_response(head, failure))
                return
            drop = proxy._take(proxy._drops, head)
            self._budget = drop.after if drop is not None else None
            self._hold = drop.hold if drop is not None else None
            proxy.forwarded += 1
            await self._upstream.send_all(raw_head)
            await self._body(head, self._upstream.send_all)

    async def _head(self) -> bytes:
        while (end := self._buffer.find(b"\r\n\r\n")) < 0:
            if not await self._fill():
                raise EOFError
        head = bytes(self._buffer[: end + 4])
        del self._buffer[: end + 4]
        return head

    async def _body(self, head: RequestHead, send: _Send) -> None:
        """Pass the request body's raw bytes (framing included) to ``send`` as they arrive."""
        if "chunked" not in head.headers.get("transfer-encoding", "").lower():
            await self._exactly(int(head.headers.get("content-length", "0")), send)
            return
        while True:
            line = await self._line()
            await send(line)
            size = int(line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while (trailer := await self._line()) != b"\r\n":
                    await send(trailer)
                await send(b"\r\n")
                return
            await self._exactly(size + 2, send)

    async def _exactly(self, n: int, send: _Send) -> None:
        while n > 0:
            if not self._buffer and not await self._fill():
                raise EOFError
            piece = bytes(self._buffer[:n])
            del self._buffer[: len(piece)]
            n -= len(piece)
            await send(piece)

    async def responses(self) -> None:
        """Copy upstream bytes to the client; when a fault's budget is spent, cut the
        connection (a drop) or wait for its release and go on (a stall)."""
        while data := await self._upstream.receive_some(_READ):
            if self._budget is not None and len(data) >= self._budget:
                now, data = data[: self._budget], data[self._budget :]
                await self._client.send_all(now)
                if self._hold is None:
                    self._proxy.dropped += 1
                    self._scope.cancel()
                    return
                hold, self._budget, self._hold = self._hold, None, None
                self._proxy.stalled += 1
                await trio.to_thread.run_sync(hold.wait, abandon_on_cancel=True)
            elif self._budget is not None:
                self._budget -= len(data)
            if data:
                await self._client.send_all(data)
        self._scope.cancel()


def _parse_head(raw: bytes) -> RequestHead:
    lines = raw.decode("latin-1").split("\r\n")
    method, target, _ = [*lines[0].split(" ", 2), "", ""][:3]
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return RequestHead(method, target, headers)


def _response(head: RequestHead, fault: _Fault) -> bytes:
    try:
        reason = HTTPStatus(fault.status).phrase
    except ValueError:
        reason = "Injected Fault"
    lines = [
        f"HTTP/1.1 {fault.status} {reason}",
        f"Content-Type: {fault.content_type}",
        f"Content-Length: {len(fault.body)}",
        "Connection: close",
    ]
    body = b"" if head.method == "HEAD" else fault.body
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@asynccontextmanager
async def fault_proxy(
    target_port: int, target_host: str = "127.0.0.1"
) -> AsyncIterator[FaultProxy]:
    """Run a :class:`FaultProxy` for the duration of the ``async with`` block."""
    proxy = FaultProxy(target_host, target_port)
    async with open_nursery() as nursery:  # errors of the block surface unwrapped
        await nursery.start(proxy.serve)
        try:
            yield proxy
        finally:
            nursery.cancel_scope.cancel()


@dataclass(frozen=True)
class ProxyThread:
    """A :class:`FaultProxy` serving from its own thread; call :meth:`stop` when done."""

    proxy: FaultProxy
    port: int
    stop: Callable[[], None]


def start_in_thread(target_port: int, target_host: str = "127.0.0.1") -> ProxyThread:
    """Start a proxy on a background thread (for tests whose client is another process)."""
    proxy = FaultProxy(target_host, target_port)
    started: queue.Queue[tuple[trio.lowlevel.TrioToken, trio.CancelScope, int] | BaseException]
    started = queue.Queue()

    async def main() -> None:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                port = await nursery.start(proxy.serve)
                started.put((trio.lowlevel.current_trio_token(), scope, port))

    def run() -> None:
        try:
            trio.run(main)
        except BaseException as exc:
            started.put(exc)
            raise

    thread = threading.Thread(target=run, name="fault-proxy", daemon=True)
    thread.start()
    result = started.get(timeout=10)
    if isinstance(result, BaseException):
        raise RuntimeError("fault proxy failed to start") from result
    token, scope, port = result

    def stop() -> None:
        if thread.is_alive():
            trio.from_thread.run_sync(scope.cancel, trio_token=token)
            thread.join(timeout=10)

    return ProxyThread(proxy, port, stop)
