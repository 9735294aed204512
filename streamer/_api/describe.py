"""What each route takes and answers, declared next to it for the OpenAPI document.

A view is described with :func:`describe`, placed under its route decorator::

    @blueprint.get("/api/transfer/<job_id>")
    @describe("Show a job", responses={200: JobEnvelope}, errors={404: "no such job"})
    async def show(job_id: str) -> Response: ...

Bodies, query strings and JSON answers are named by the very types the routes
decode and encode with msgspec (:func:`~streamer._api.app.read_body`,
:func:`~streamer._api.app.read_query`), so the document cannot drift from what
the code validates. :mod:`streamer._api.openapi` turns the declarations into the
document; a route without one is missing from it, which the test suite catches.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import msgspec

F = TypeVar("F", bound=Callable[..., Any])

ATTRIBUTE: Final = "__openapi__"

# Security schemes (see ``openapi.SECURITY_SCHEMES``); a route lists the ones it
# accepts, any one of which is enough. An empty tuple means a public route.
API_TOKEN: Final = "apiToken"
SSE_TICKET: Final = "sseTicket"
TRANSFER_TOKEN: Final = "transferToken"
NODE_JWT: Final = "nodeTransferJwt"
WORKER_TOKEN: Final = "workerToken"
JOB_TOKEN: Final = "workerJobToken"
METRICS_TOKEN: Final = "metricsToken"


class ErrorBody(msgspec.Struct):
    """Every error answer of the API: a machine ``error`` code and a human ``message``."""

    error: str
    message: str


@dataclass(frozen=True)
class Header:
    """A request header a route reads; ``schema`` is a JSON Schema fragment."""

    name: str
    description: str
    schema: Mapping[str, Any] = field(default_factory=lambda: {"type": "string"})
    required: bool = False


@dataclass(frozen=True)
class Part:
    """A field of a ``multipart/form-data`` body (binary unless ``binary=False``)."""

    name: str
    description: str
    binary: bool = True
    required: bool = False


@dataclass(frozen=True)
class Stream:
    """A body that is not JSON: raw bytes of ``media_type``, and/or multipart ``parts``."""

    description: str
    media_type: str | None = "application/octet-stream"
    parts: tuple[Part, ...] = ()


@dataclass(frozen=True)
class Reply:
    """An answer: a JSON ``body`` type, a :class:`Stream`, or nothing (``None``);
    ``headers`` maps a response header to its description."""

    description: str
    body: type | Stream | Any | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Operation:
    """One route's declaration; see :func:`describe`."""

    summary: str
    description: str
    auth: tuple[str, ...]
    body: type | Stream | None
    query: type | None
    headers: tuple[Header, ...]
    params: Mapping[str, str]
    responses: Mapping[int, Reply]
    errors: Mapping[int, str]


def describe(
    summary: str,
    *,
    responses: Mapping[int, type | Reply | Any],
    auth: tuple[str, ...] = (API_TOKEN,),
    body: type | Stream | None = None,
    query: type | None = None,
    headers: tuple[Header, ...] = (),
    params: Mapping[str, str] | None = None,
    errors: Mapping[int, str] | None = None,
) -> Callable[[F], F]:
    """Attach an :class:`Operation` to a view.

    ``responses`` maps a status to a JSON type (a msgspec ``Struct`` or any type
    msgspec can describe) or a :class:`Reply`; ``body`` is the JSON type the view
    reads with ``read_body`` or a :class:`Stream`; ``query`` the ``Struct`` it
    reads with ``read_query``; ``params`` describe path parameters by name;
    ``errors`` map the error statuses the route answers to when they happen (a
    400 for bad input and a 401 for a protected route are added by the generator).
    The description is the view's docstring.
    """

    def attach(view: F) -> F:
        replies = {
            status: kind if isinstance(kind, Reply) else Reply(_phrase(status), kind)
            for status, kind in responses.items()
        }
        operation = Operation(
            summary=summary,
            description=(view.__doc__ or "").strip(),
            auth=auth,
            body=body,
            query=query,
            headers=headers,
            params=params or {},
            responses=replies,
            errors=errors or {},
        )
        setattr(view, ATTRIBUTE, operation)
        return view

    return attach


def operation_of(view: Callable[..., Any]) -> Operation | None:
    """The declaration attached to ``view``, if any."""
    return getattr(view, ATTRIBUTE, None)


def _phrase(status: int) -> str:
    from http import HTTPStatus

    return HTTPStatus(status).phrase
