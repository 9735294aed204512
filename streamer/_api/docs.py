"""The API's own description: ``/openapi.json`` and a Swagger UI page at ``/docs``.

Both are public (no token): they describe the code, not the node's state, and a
reader needs them before having a token. The page and its assets are served by
the node itself from the ``swagger-ui-py`` package's Swagger UI distribution, so
``/docs`` works offline; its Content-Security-Policy forbids any other origin.
"""

from __future__ import annotations

from importlib import resources
from typing import Final

import trio
from quart import Blueprint, Response, current_app

from .._errors import NotFound
from .describe import Reply, Stream, describe
from .openapi import document

blueprint = Blueprint("docs", __name__)

PUBLIC_ENDPOINTS = frozenset({"docs.openapi", "docs.page", "docs.asset"})

#: Served from the Swagger UI distribution; anything else under /docs/assets is a 404.
ASSETS: Final = {
    "swagger-ui.css": "text/css; charset=utf-8",
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "favicon-32x32.png": "image/png",
    "favicon-16x16.png": "image/png",
}
INIT_SCRIPT: Final = "init.js"
CSP: Final = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self'; connect-src 'self'; frame-ancestors 'none'"
)

PAGE: Final = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>streamer API</title>
<link rel="stylesheet" href="docs/assets/swagger-ui.css">
<link rel="icon" type="image/png" href="docs/assets/favicon-32x32.png" sizes="32x32">
<link rel="icon" type="image/png" href="docs/assets/favicon-16x16.png" sizes="16x16">
</head>
<body>
<noscript>This page needs JavaScript; the raw document is at
<a href="openapi.json">openapi.json</a>.</noscript>
<div id="swagger-ui"></div>
<script src="docs/assets/swagger-ui-bundle.js"></script>
<script src="docs/assets/init.js"></script>
</body>
</html>
"""

# Relative URLs: the page works behind a reverse proxy that adds a path prefix.
INIT: Final = """window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
});
"""

_ASSET_REPLY = Reply("The file.", Stream("", media_type="application/octet-stream"))


@blueprint.get("/openapi.json")
@describe("This document (OpenAPI 3.1)", auth=(), responses={200: dict})
async def openapi() -> Response:
    import msgspec

    return Response(
        msgspec.json.encode(document(current_app)),
        content_type="application/json",
        headers={"Cache-Control": "no-cache"},
    )


@blueprint.get("/docs")
@describe(
    "The API documentation page (Swagger UI)",
    auth=(),
    responses={200: Reply("An HTML page.", Stream("", media_type="text/html"))},
)
async def page() -> Response:
    return Response(PAGE, content_type="text/html; charset=utf-8", headers=_page_headers())


@blueprint.get("/docs/assets/<name>")
@describe(
    "A file of the documentation page",
    auth=(),
    params={"name": "A file name, e.g. swagger-ui.css."},
    responses={200: _ASSET_REPLY},
    errors={404: "No such file."},
)
async def asset(name: str) -> Response:
    if name == INIT_SCRIPT:
        content, content_type = INIT.encode(), "text/javascript; charset=utf-8"
    elif name in ASSETS:
        content, content_type = await _read_asset(name), ASSETS[name]
    else:
        raise NotFound(f"no documentation asset {name[:100]!r}")
    headers = {**_page_headers(), "Cache-Control": "public, max-age=86400"}
    return Response(content, content_type=content_type, headers=headers)


def _page_headers() -> dict[str, str]:
    return {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff"}


async def _read_asset(name: str) -> bytes:
    path = resources.files("swagger_ui").joinpath("static", name)
    return await trio.to_thread.run_sync(path.read_bytes)
