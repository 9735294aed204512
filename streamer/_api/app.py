"""The Quart-Trio application: services, auth, error mapping, access log."""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec
import trio
from quart import Quart, Response, g, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from .._auth import TicketBook, TokenAuth
from .._engine import Engine
from .._errors import InvalidBody, StreamerError
from .._storage.registry import Locations

if TYPE_CHECKING:
    from .._exchange.service import Exchange
    from .._node.service import NodeService
    from .._worker.service import WorkerJobs
    from .upload import Uploads

log = logging.getLogger("streamer.api")
access_log = logging.getLogger("streamer.access")

MAX_JSON_BODY = 1 << 20
_SECRET_QUERY = re.compile(r"((?:ticket|token)=)[^&]*", re.IGNORECASE)

T = TypeVar("T")


@dataclass
class Services:
    """Everything the routes need; built once by ``streamer serve`` (or a test)."""

    engine: Engine
    locations: Locations
    auth: TokenAuth
    tickets: TicketBook = field(default_factory=TicketBook)
    closing: trio.Event = field(default_factory=trio.Event)
    node: NodeService | None = None
    uploads: Uploads | None = None
    exchange: Exchange | None = None
    workers: WorkerJobs | None = None
    worker_auth: TokenAuth | None = None  # worker.tokens + the API tokens


def services() -> Services:
    from quart import current_app

    return current_app.config["SERVICES"]  # type: ignore[no-any-return]


async def read_body(kind: type[T]) -> T:
    """Decode the request's JSON body into ``kind``; bad input is a 400 naming the field."""
    data = await request.get_data(cache=False)
    try:
        return msgspec.json.decode(data, type=kind)
    except msgspec.ValidationError as exc:
        raise InvalidBody(f"invalid request body: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise InvalidBody(f"request body is not valid JSON: {exc}", code="invalid_json") from exc


def json_response(body: Any, status: int = 200) -> Response:
    return Response(msgspec.json.encode(body), status=status, content_type="application/json")


def error_response(error: StreamerError) -> Response:
    return _closing_if_unread(json_response(error.to_json(), error.status_code))


def _closing_if_unread(response: Response) -> Response:
    """An error may be answered before the request body was read; the connection
    then cannot be reused safely (the unread bytes would be parsed as the next
    request), so ask the server to close it."""
    if request.headers.get("Content-Length", "0") != "0" or "Transfer-Encoding" in request.headers:
        response.headers["Connection"] = "close"
    return response


def redact(path_and_query: str) -> str:
    """A request target safe to log: ticket and token values are blanked."""
    return _SECRET_QUERY.sub(r"\1[redacted]", path_and_query)


def create_app(svc: Services, *, public_endpoints: frozenset[str] = frozenset()) -> Quart:
    """Build the app. Every endpoint needs the API token except those named
    ``public`` (they authenticate themselves, e.g. the SSE stream's ticket)."""
    from . import exchange, node, upload, worker
    from .flow import FlowConnection, FlowRequest
    from .transfer import PUBLIC_ENDPOINTS, blueprint

    app = QuartTrio("streamer")
    app.asgi_http_class = FlowConnection  # uploads are read with back-pressure
    app.request_class = FlowRequest
    app.config.update(
        SERVICES=svc,
        MAX_CONTENT_LENGTH=MAX_JSON_BODY,
        RESPONSE_TIMEOUT=None,
        BODY_TIMEOUT=60,
        PROVIDE_AUTOMATIC_OPTIONS=False,
        STREAMING_ROUTES=node.STREAMING_ROUTES | worker.STREAMING_ROUTES,
        STREAMING_PREFIXES=upload.STREAMING_PREFIXES + exchange.STREAMING_PREFIXES,
    )
    app.register_blueprint(blueprint)
    app.register_blueprint(node.blueprint)
    app.register_blueprint(upload.blueprint)
    app.register_blueprint(exchange.blueprint)
    app.register_blueprint(worker.blueprint)
    public = public_endpoints | PUBLIC_ENDPOINTS | node.PUBLIC_ENDPOINTS | {"health"}
    public |= exchange.PUBLIC_ENDPOINTS | worker.PUBLIC_ENDPOINTS

    @app.get("/healthz")
    async def health() -> Response:
        return json_response({"status": "ok"})

    @app.before_request
    async def authenticate() -> None:
        g.started = time.perf_counter()
        if request.endpoint not in public:
            svc.auth.check(request.headers.get("Authorization"))

    @app.after_request
    async def log_access(response: Response) -> Response:
        started = getattr(g, "started", None)
        elapsed = (time.perf_counter() - started) * 1000 if started else 0.0
        target = request.path + (
            f"?{request.query_string.decode()}" if request.query_string else ""
        )
        access_log.info(
            "%s %s %s %d %.1fms",
            request.remote_addr,
            request.method,
            redact(target),
            response.status_code,
            elapsed,
        )
        return response

    @app.errorhandler(StreamerError)
    async def on_streamer_error(error: StreamerError) -> Response:
        return error_response(error)

    @app.errorhandler(HTTPException)
    async def on_http_error(error: HTTPException) -> Response:
        code = re.sub(r"\W+", "_", (error.name or "error").lower()).strip("_")
        status = error.code or 500
        body = {"error": code, "message": error.description or code}
        return _closing_if_unread(json_response(body, status))

    @app.errorhandler(Exception)
    async def on_crash(error: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, redact(request.path))
        return json_response({"error": "internal_error", "message": "internal error"}, 500)

    return app
