"""The Quart-Trio application: services, auth, error mapping, access log."""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import msgspec
import trio
from quart import Quart, Response, g, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from .._auth import TicketBook, TokenAuth
from .._config import MetricsConfig
from .._engine import Engine
from .._errors import BadRequest, InvalidBody, StreamerError
from .._storage.registry import Locations
from .describe import describe
from .sse import Subscribers

if TYPE_CHECKING:
    from .._exchange.service import Exchange
    from .._node.service import NodeService
    from .._worker.service import WorkerJobs
    from .metrics import RetryCounter
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
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    #: Clients whose retries ``/metrics`` reports, by name (``s3``, ``http``).
    retry_counters: dict[str, RetryCounter] = field(default_factory=dict)
    subscribers: Subscribers = field(default_factory=Subscribers)
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


def read_query(kind: type[T]) -> T:
    """The query string as ``kind`` (a ``Struct`` of optional fields; values are
    converted from text; other parameters, such as cache busters, are ignored);
    a bad value is a 400 naming the parameter."""
    try:
        return msgspec.convert(request.args.to_dict(), kind, strict=False)
    except msgspec.ValidationError as exc:
        message = str(exc).replace("`$.", "`")
        raise BadRequest(f"invalid query: {message}", code="invalid_query") from exc


class Health(msgspec.Struct):
    status: Literal["ok"] = "ok"


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
    from . import docs, exchange, metrics, node, upload, worker
    from .flow import FlowConnection, FlowRequest
    from .openapi import openapi_path
    from .transfer import PUBLIC_ENDPOINTS, blueprint

    app = QuartTrio("streamer", static_folder=None)  # no /static route: nothing to serve
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
    app.register_blueprint(docs.blueprint)
    app.register_blueprint(metrics.blueprint)
    public = public_endpoints | PUBLIC_ENDPOINTS | node.PUBLIC_ENDPOINTS | {"health"}
    public |= exchange.PUBLIC_ENDPOINTS | worker.PUBLIC_ENDPOINTS
    public |= docs.PUBLIC_ENDPOINTS | metrics.PUBLIC_ENDPOINTS
    app.config["PUBLIC_ENDPOINTS"] = public
    observed = app.extensions["metrics"] = metrics.Metrics(svc)

    @app.get("/healthz")
    @describe("Liveness: the node answers", auth=(), responses={200: Health})
    async def health() -> Response:
        return json_response(Health())

    @app.before_request
    async def authenticate() -> None:
        g.started = time.perf_counter()
        if request.endpoint not in public:
            svc.auth.check(request.headers.get("Authorization"))

    @app.after_request
    async def log_access(response: Response) -> Response:
        started = getattr(g, "started", None)
        seconds = time.perf_counter() - started if started else 0.0
        elapsed = seconds * 1000
        rule = request.url_rule
        route = openapi_path(rule.rule) if rule is not None else None
        observed.observe(request.method, route, response.status_code, seconds)
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
