"""Request bodies with back-pressure, for endpoints that stream uploads.

Quart's ASGI layer appends every body chunk the server delivers to the
request's buffer as fast as it arrives, whether or not the handler reads it:
an upload read slower than it is sent (throttled, or waiting on the disk)
would pile up in memory. :class:`FlowConnection` stops taking chunks from the
server while more than ``HIGH_WATER`` bytes are buffered; Hypercorn's bounded
app queue then fills, it stops reading the socket, and TCP slows the sender.

Answering before the body is complete (an early error) needs care, because
Hypercorn closes the connection only after handing the app an
``http.disconnect`` through that same queue:

* once the last response chunk is being sent, the body stops buffering and
  the receiver drains the queue (discarding), so the notice gets through;
* that notice, arriving while the response is being sent, is not a client
  disconnect: the handler is left to finish (Quart-Trio cancels it, which
  interrupted Hypercorn's own close and left the connection open while the
  client kept uploading into the void).

The client then sees its upload fail, with the answer in its receive buffer.

Routes listed in ``app.config["STREAMING_ROUTES"]`` (``(method, path)`` pairs) or under
``app.config["STREAMING_PREFIXES"]`` (``(method, prefix)``) get a body without the app's
``MAX_CONTENT_LENGTH``: they consume it as a stream and enforce their own limits. Every
other request keeps Quart's behaviour (a JSON body over the limit is still a 413).
"""

from __future__ import annotations

from typing import Any, Final

import trio
from quart_trio.asgi import TrioASGIHTTPConnection
from quart_trio.wrappers.request import TrioBody, TrioRequest

HIGH_WATER: Final = 1 << 20


class FlowBody(TrioBody):
    """A request body whose producer waits while ``HIGH_WATER`` bytes are unread."""

    def __init__(self, expected_content_length: int | None, max_content_length: int | None) -> None:
        super().__init__(expected_content_length, max_content_length)
        self._drained = trio.Event()
        self._released = False

    async def __anext__(self) -> bytes:
        data: bytes = await super().__anext__()
        self._drained.set()
        return data

    def append(self, data: bytes) -> None:
        if not self._released:
            super().append(data)

    def release(self) -> None:
        """Nobody will read on (the answer is out): drop the rest, never wait."""
        self._released = True
        self._data.clear()
        self._drained.set()

    async def wait_for_room(self) -> None:
        """Return once the buffer is below ``HIGH_WATER`` (or the body is done for)."""
        while (
            len(self._data) >= HIGH_WATER
            and self._must_raise is None
            and not self._complete.is_set()
            and not self._released
        ):
            self._drained = trio.Event()
            await self._drained.wait()


class FlowRequest(TrioRequest):
    body_class = FlowBody


class FlowConnection(TrioASGIHTTPConnection):
    """Quart-Trio's HTTP connection with a back-pressured body (see the module docstring)."""

    _answered = False

    async def __call__(self, receive: Any, send: Any) -> None:
        request = self._create_request_from_scope(send)

        async def send_tracking_the_end(message: Any) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                self._answered = True  # before sending: the server's notice comes during it
                if isinstance(request.body, FlowBody):
                    request.body.release()
            await send(message)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.handle_messages, nursery, request, receive)
            nursery.start_soon(self.handle_request, nursery, request, send_tracking_the_end)

    async def handle_messages(  # type: ignore[override]  # as quart-trio does
        self, nursery: trio.Nursery, request: Any, receive: Any
    ) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.request":
                request.body.append(message.get("body", b""))
                if not message.get("more_body", False):
                    request.body.set_complete()
                elif isinstance(request.body, FlowBody):
                    await request.body.wait_for_room()
            elif message["type"] == "http.disconnect":
                break
        if not self._answered:  # the client went away: stop the handler
            nursery.cancel_scope.cancel()

    def _create_request_from_scope(self, send: Any) -> Any:
        request = super()._create_request_from_scope(send)
        routes = self.app.config.get("STREAMING_ROUTES", ())
        prefixes = self.app.config.get("STREAMING_PREFIXES", ())
        method, path = self.scope["method"], self.scope["path"]
        if (method, path) in routes or any(
            method == m and path.startswith(prefix) for m, prefix in prefixes
        ):
            request.body = request.body_class(request.content_length, None)
        return request
