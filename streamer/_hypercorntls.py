"""Hypercorn's https connections through :class:`~streamer._tlsstream.TlsStream`.

Hypercorn wraps every accepted https connection in :class:`trio.SSLStream`, whose
``receive_some`` hands back one TLS record (16 KiB at most) per call, each then a
Hypercorn event, an h11 event and an ASGI message: a 512 MiB ``PUT /api/upload``
over https cost the node 10.5-11.9 s of CPU per GiB against 5.3-5.9 over http
(curl, HTTP/1.1; 17.8-20.9 over HTTP/2). :func:`serve_tls_leanly` makes Hypercorn's
trio TCP server take the same connection (not yet negotiated: SSLStream's handshake
is lazy) as a server-side TlsStream on the same socket and context instead, which
receives up to Hypercorn's read size at a time. TLS 1.2 renegotiation is turned off
on that context (TLS 1.3 has none): no peer of ours needs it, and it would make a
send wait for a read.

Like :func:`streamer._netio.tune_server_reads` this sets what Hypercorn looks up
when it serves (``hypercorn.trio.run.TCPServer``), once per process; plain-http
connections are untouched.
"""

from __future__ import annotations

import ssl
from typing import Any

import hypercorn.trio.run
import trio
from hypercorn.trio.tcp_server import TCPServer

from ._tlsstream import TlsStream


class _LeanTlsTCPServer(TCPServer):
    """Hypercorn's TCP server, an https connection taken as a TlsStream."""

    def __init__(self, app: Any, config: Any, context: Any, state: Any, stream: Any) -> None:
        if isinstance(stream, trio.SSLStream):
            tls_context: ssl.SSLContext = stream.context
            tls_context.options |= ssl.OP_NO_RENEGOTIATION
            stream = TlsStream(stream.transport_stream.socket, tls_context, server_side=True)
        super().__init__(app, config, context, state, stream)


def serve_tls_leanly() -> None:
    """Make Hypercorn's https connections TlsStreams (idempotent)."""
    hypercorn.trio.run.TCPServer = _LeanTlsTCPServer  # type: ignore[attr-defined]
