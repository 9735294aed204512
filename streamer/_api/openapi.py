"""The OpenAPI 3.1 document of an app, built from the routes' declarations.

:func:`document` walks ``app.url_map``; each route's view carries an
:class:`~streamer._api.describe.Operation` (see :mod:`streamer._api.describe`)
naming the msgspec types of its body, query and answers. One call of
:func:`msgspec.json.schema_components` turns every type into a JSON Schema
2020-12 component (the dialect of OpenAPI 3.1). Routes without a declaration are
left out; the test suite fails on any such route.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from typing import Any, Final

import msgspec
from quart import Quart
from werkzeug.routing import Rule

from .. import __version__
from .describe import (
    API_TOKEN,
    JOB_TOKEN,
    METRICS_TOKEN,
    NODE_JWT,
    SSE_TICKET,
    TRANSFER_TOKEN,
    WORKER_TOKEN,
    ErrorBody,
    Operation,
    Reply,
    Stream,
    operation_of,
)

OPENAPI_VERSION: Final = "3.1.0"
_REF: Final = "#/components/schemas/{name}"
_PARAM = re.compile(r"<(?:(?P<converter>[^:<>()]+)(?:\([^)]*\))?:)?(?P<name>[^<>:]+)>")
_INTEGER_CONVERTERS: Final = frozenset({"int"})
_IMPLICIT_METHODS: Final = frozenset({"OPTIONS"})
_SERVICE_TAG: Final = "service"

SECURITY_SCHEMES: Final[dict[str, dict[str, Any]]] = {
    API_TOKEN: {
        "type": "http",
        "scheme": "bearer",
        "description": "An API token: one of `auth.tokens`, the Panel's node token, "
        "or the token generated into `<state_dir>/api-token` on first start.",
    },
    SSE_TICKET: {
        "type": "apiKey",
        "in": "query",
        "name": "ticket",
        "description": "A one-time ticket from `POST /api/auth/sse-ticket` (60 s, one job).",
    },
    TRANSFER_TOKEN: {
        "type": "apiKey",
        "in": "query",
        "name": "token",
        "description": "The exchange transfer's JWT (`auth_token` of its creation), scoped "
        "to that transfer and direction; also accepted as `Authorization: Bearer`.",
    },
    NODE_JWT: {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "The Wings transfer JWT the Panel hands the source node (HS256, "
        "signed with the destination's node token, `sub` = server uuid).",
    },
    WORKER_TOKEN: {
        "type": "http",
        "scheme": "bearer",
        "description": "A worker credential: one of `worker.tokens` (the API token works too).",
    },
    JOB_TOKEN: {
        "type": "apiKey",
        "in": "query",
        "name": "token",
        "description": "The job token returned by claim (JWT, valid while the claiming "
        "worker holds the job); also accepted as `Authorization: Bearer`.",
    },
    METRICS_TOKEN: {
        "type": "http",
        "scheme": "bearer",
        "description": "The scrape token `metrics.token` (an API token works too; with "
        "`metrics.auth: false` no token is needed).",
    },
}


def document(app: Quart) -> dict[str, Any]:
    """The app's OpenAPI document (built once, then cached on the app)."""
    cached = app.extensions.get("openapi")
    if cached is None:
        cached = app.extensions["openapi"] = _build(app)
    return cached


def openapi_path(rule: str) -> str:
    """``/api/transfer/<job_id>`` → ``/api/transfer/{job_id}``."""
    return _PARAM.sub(lambda m: "{" + m.group("name") + "}", rule)


def documented_methods(rule: Rule) -> set[str]:
    """The methods of ``rule`` a document lists: all but OPTIONS, and HEAD only where
    it is not the automatic twin of GET."""
    methods = set(rule.methods or ()) - _IMPLICIT_METHODS
    if "GET" in methods:
        methods.discard("HEAD")
    return methods


def _described(app: Quart) -> Iterator[tuple[Rule, Operation]]:
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        operation = operation_of(app.view_functions[rule.endpoint])
        if operation is not None:
            yield rule, operation


def _build(app: Quart) -> dict[str, Any]:
    described = list(_described(app))
    schemas = _Schemas(described)
    paths: dict[str, dict[str, Any]] = {}
    tags: dict[str, str] = {}
    for rule, operation in described:
        tag = _tag(app, rule, tags)
        methods = sorted(documented_methods(rule))
        for method in methods:
            op_id = rule.endpoint if len(methods) == 1 else f"{rule.endpoint}.{method.lower()}"
            entry = _operation(rule, operation, schemas, op_id=op_id, tag=tag)
            paths.setdefault(openapi_path(rule.rule), {})[method.lower()] = entry
    return _readable_names(
        {
            "openapi": OPENAPI_VERSION,
            "info": {
                "title": "streamer",
                "version": __version__,
                "description": "The HTTP API of a streamer node. Every error answer is JSON "
                '`{"error": code, "message": text}` (the `ErrorBody` schema).',
            },
            "tags": [{"name": n, "description": tags[n]} for n, _ in _tag_order(app, tags)],
            "paths": paths,
            "components": {"schemas": schemas.components, "securitySchemes": SECURITY_SCHEMES},
        }
    )


def _readable_names(doc: dict[str, Any]) -> dict[str, Any]:
    """msgspec names two types of one name by their module paths
    (``streamer._worker.models.JobStatus``); call them ``WorkerJobStatus`` instead."""
    text = msgspec.json.encode(doc).decode()
    for name in [n for n in doc["components"]["schemas"] if "." in n]:
        package = name.split(".")[1].strip("_").capitalize()
        readable = package + name.rsplit(".", 1)[1]
        text = text.replace(f'"{name}"', f'"{readable}"')
        text = text.replace(_REF.format(name=name) + '"', _REF.format(name=readable) + '"')
    return msgspec.json.decode(text)  # type: ignore[no-any-return]


def _tag_order(app: Quart, tags: dict[str, str]) -> list[tuple[str, str]]:
    """Tags in the order the blueprints were registered, the node's own last."""
    order = [*app.blueprints, _SERVICE_TAG]
    return sorted(tags.items(), key=lambda item: order.index(item[0]))


def _tag(app: Quart, rule: Rule, tags: dict[str, str]) -> str:
    """The blueprint's name; its module docstring's first line describes it."""
    endpoint: str = rule.endpoint
    name, dot, _ = endpoint.partition(".")
    if not dot:
        tags.setdefault(_SERVICE_TAG, "The node itself: is it up.")
        return _SERVICE_TAG
    module = sys.modules.get(app.blueprints[name].import_name)
    doc: str = (module.__doc__ if module else None) or name
    tags.setdefault(name, doc.strip().split("\n\n")[0].replace("\n", " "))
    return name


class _Schemas:
    """Every type the declarations name, as components (one msgspec call), and the
    fields of each query ``Struct`` (parameters, not components)."""

    def __init__(self, described: list[tuple[Rule, Operation]]) -> None:
        types: list[Any] = [ErrorBody]
        queries: list[Any] = []
        for _, operation in described:
            types.extend(_json_types(operation))
            if operation.query is not None and operation.query not in queries:
                queries.append(operation.query)
        found, self.components = msgspec.json.schema_components(types + queries, ref_template=_REF)
        self._by_type = {id(kind): schema for kind, schema in zip(types, found, strict=False)}
        self.error = self.of(ErrorBody)
        self._queries = {  # parameters, not components (what they refer to stays)
            id(query): self.components.pop(ref["$ref"].rsplit("/", 1)[1])
            for query, ref in zip(queries, found[len(types) :], strict=True)
        }

    def of(self, kind: Any) -> dict[str, Any]:
        """The schema (usually a ``$ref``) of a body or answer type."""
        return self._by_type[id(kind)]

    def fields(self, query: type) -> tuple[dict[str, Any], list[str]]:
        """A query ``Struct``'s properties and required names."""
        schema = self._queries[id(query)]
        return schema.get("properties", {}), schema.get("required", [])


def _json_types(operation: Operation) -> Iterator[Any]:
    if operation.body is not None and not isinstance(operation.body, Stream):
        yield operation.body
    for reply in operation.responses.values():
        if reply.body is not None and not isinstance(reply.body, Stream):
            yield reply.body


def _operation(
    rule: Rule, operation: Operation, schemas: _Schemas, *, op_id: str, tag: str
) -> dict[str, Any]:
    entry: dict[str, Any] = {"operationId": op_id, "summary": operation.summary, "tags": [tag]}
    if operation.description:
        entry["description"] = operation.description
    parameters = list(_parameters(rule, operation, schemas))
    if parameters:
        entry["parameters"] = parameters
    if operation.body is not None:
        entry["requestBody"] = _request_body(operation.body, schemas)
    entry["responses"] = _responses(operation, schemas)
    entry["security"] = [{name: []} for name in operation.auth]
    return entry


def _parameters(rule: Rule, operation: Operation, schemas: _Schemas) -> Iterator[dict[str, Any]]:
    for match in _PARAM.finditer(rule.rule):
        name, converter = match.group("name"), match.group("converter") or "default"
        kind = "integer" if converter in _INTEGER_CONVERTERS else "string"
        param: dict[str, Any] = {"name": name, "in": "path", "required": True}
        param["schema"] = {"type": kind} if kind == "integer" else {"type": kind, "minLength": 1}
        if name in operation.params:
            param["description"] = operation.params[name]
        yield param
    if operation.query is not None:
        properties, required = schemas.fields(operation.query)
        for name, schema in properties.items():
            param = {"name": name, "in": "query", "required": name in required, "schema": schema}
            if "description" in schema:
                param["description"] = schema["description"]
            yield param
    for header in operation.headers:
        yield {
            "name": header.name,
            "in": "header",
            "required": header.required,
            "description": header.description,
            "schema": dict(header.schema),
        }


def _request_body(body: type | Stream, schemas: _Schemas) -> dict[str, Any]:
    if not isinstance(body, Stream):
        return {"required": True, "content": {"application/json": {"schema": schemas.of(body)}}}
    content: dict[str, Any] = {}
    if body.media_type is not None:
        content[body.media_type] = {"schema": {"type": "string", "format": "binary"}}
    if body.parts:
        content["multipart/form-data"] = {
            "schema": {
                "type": "object",
                "properties": {
                    part.name: {
                        "type": "string",
                        "description": part.description,
                        **({"format": "binary"} if part.binary else {}),
                    }
                    for part in body.parts
                },
                "required": [part.name for part in body.parts if part.required],
            }
        }
    return {"required": True, "description": body.description, "content": content}


def _responses(operation: Operation, schemas: _Schemas) -> dict[str, Any]:
    answers: dict[str, Any] = {}
    for status, reply in sorted(operation.responses.items()):
        answers[str(status)] = _reply(reply, schemas)
    errors = dict(operation.errors)
    if operation.body is not None or operation.query is not None or operation.headers:
        errors.setdefault(400, "The body, a parameter or a header is malformed.")
    if operation.auth:
        errors.setdefault(401, "Missing, invalid or expired credentials.")
    error_content = {"application/json": {"schema": schemas.error}}
    for status, when in sorted(errors.items()):
        answers[str(status)] = {"description": when, "content": error_content}
    answers["default"] = {"description": "Any other error.", "content": error_content}
    return answers


def _reply(reply: Reply, schemas: _Schemas) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": reply.description}
    body = reply.body
    if isinstance(body, Stream):
        answer["content"] = {body.media_type or "application/octet-stream": {"schema": {}}}
    elif body is not None:
        answer["content"] = {"application/json": {"schema": schemas.of(body)}}
    if reply.headers:
        answer["headers"] = {
            name: {"description": text, "schema": {"type": "string"}}
            for name, text in reply.headers.items()
        }
    return answer
