"""A TLS terminator on 127.0.0.1 for the tests: https in front of a plain server.

Each connection is decrypted with trio's own TLS server (an independent
implementation of what streamer's client speaks) and its bytes are passed both
ways to ``127.0.0.1:<upstream>``; either side closing ends both.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio


@asynccontextmanager
async def tls_terminator(upstream: int, cert: Path, key: Path) -> AsyncIterator[int]:
    """Serve TLS (``cert``/``key``) on a free port, yielded, in front of ``upstream``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def relay(client: trio.SSLStream[trio.SocketStream]) -> None:
        try:
            server = await trio.open_tcp_stream("127.0.0.1", upstream)
        except OSError:
            await trio.aclose_forcefully(client)
            return
        async with client, server, trio.open_nursery() as nursery:
            nursery.start_soon(_pump, client, server, nursery.cancel_scope)
            nursery.start_soon(_pump, server, client, nursery.cancel_scope)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    tls = [trio.SSLListener(listener, context, https_compatible=True) for listener in listeners]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, relay, tls)
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


async def _pump(source: trio.abc.Stream, sink: trio.abc.Stream, done: trio.CancelScope) -> None:
    try:
        while data := await source.receive_some(1 << 20):
            await sink.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    done.cancel()
