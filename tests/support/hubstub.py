"""HTTP servers for import tests: a plain file server and a Hugging Face Hub stub.

Both are stdlib ``ThreadingHTTPServer`` s on ``127.0.0.1:0`` in a background
thread, so trio tests and ``streamer serve`` processes alike can talk to them;
every request is logged (method, target, lower-cased headers).

:class:`FileServer` serves in-memory files with HEAD, ``Range`` (``bytes=N-``
and ``bytes=N-M``), ``If-Range``, a strong ETag and Last-Modified; switches make
it ignore ``Range``, refuse HEAD, send a file chunked without a length, or
stall a GET part way (``stall_after``) until ``release`` (or that path's own
event in ``held``) is set.

:class:`HubStub` answers the Hub's listing
(``/api/{models,datasets,spaces}/{repo}/revision/{rev}``) and resolve
(``/[datasets/|spaces/]{repo}/resolve/{commit}/{path}``) calls, with the Hub's
``X-Error-Code`` s (``RepoNotFound`` as 401 without a token, ``RevisionNotFound``,
``EntryNotFound``). LFS files are answered with a 302 to a second
:class:`FileServer` (the "CDN", another port, so another origin). :meth:`HubStub.move`
points a branch at a new commit.
"""

from __future__ import annotations

import hashlib
import json
import re
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import unquote, urlsplit

LAST_MODIFIED = "Wed, 21 Oct 2015 07:28:00 GMT"


@dataclass(frozen=True)
class Logged:
    method: str
    target: str
    headers: dict[str, str]


def etag_of(content: bytes) -> str:
    return '"' + hashlib.sha256(content).hexdigest()[:32] + '"'


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    timeout = 30

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_GET(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        owner = self.server.owner
        headers = {k.lower(): v for k, v in self.headers.items()}
        with owner.lock:
            owner.log.append(Logged(self.command, self.path, headers))
        try:
            owner.handle(self)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    # -- helpers for routes --------------------------------------------------

    def reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def json(self, status: int, value: Any, headers: dict[str, str] | None = None) -> None:
        self.reply(
            status,
            json.dumps(value).encode(),
            {"Content-Type": "application/json", **(headers or {})},
        )


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: _Base

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that hang up (dropped by a proxy, closed pools) are expected


class _Base:
    """A server on a thread; subclasses implement :meth:`handle`."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.log: list[Logged] = []
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    scheme = "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def serve_tls(self, cert: Path, key: Path) -> Self:
        """Speak https (call before :meth:`start`) with the certificate in ``cert``."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.scheme = "https"
        return self

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def requests(self, method: str | None = None) -> list[Logged]:
        with self.lock:
            return [r for r in self.log if method is None or r.method == method]

    def handle(self, request: _Handler) -> None:
        raise NotImplementedError


def serve_bytes(
    request: _Handler,
    content: bytes,
    *,
    ignore_range: bool = False,
    chunked: bool = False,
    extra: dict[str, str] | None = None,
) -> None:
    """Answer GET/HEAD for ``content`` with ranges, validators and optional quirks."""
    etag = etag_of(content)
    headers = {"ETag": etag, "Last-Modified": LAST_MODIFIED, **(extra or {})}
    if not ignore_range and not chunked:
        headers["Accept-Ranges"] = "bytes"
    wanted = request.headers.get("Range")
    if_range = request.headers.get("If-Range")
    if if_range is not None and if_range not in (etag, LAST_MODIFIED):
        wanted = None  # the validator does not match: the whole (new) resource
    if chunked:
        request.send_response(200)
        for name, value in headers.items():
            request.send_header(name, value)
        request.send_header("Transfer-Encoding", "chunked")
        request.end_headers()
        if request.command == "HEAD":
            return
        for start in range(0, len(content), 64 * 1024):
            piece = content[start : start + 64 * 1024]
            request.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        request.wfile.write(b"0\r\n\r\n")
        return
    match = re.fullmatch(r"bytes=(\d+)-(\d*)", wanted or "")
    if match is None or ignore_range:
        request.reply(200, content, headers)
        return
    first = int(match.group(1))
    last = int(match.group(2)) if match.group(2) else len(content) - 1
    last = min(last, len(content) - 1)
    if first >= len(content):
        request.reply(416, b"", {**headers, "Content-Range": f"bytes */{len(content)}"})
        return
    headers["Content-Range"] = f"bytes {first}-{last}/{len(content)}"
    request.reply(206, content[first : last + 1], headers)


class FileServer(_Base):
    """In-memory files by URL path (``/a/b.bin``); see the module docstring for switches."""

    def __init__(self, files: dict[str, bytes] | None = None) -> None:
        super().__init__()
        self.files: dict[str, bytes] = dict(files or {})
        self.ignore_range = False
        self.no_head = False
        self.chunked: set[str] = set()
        self.redirects: dict[str, str] = {}
        self.stall_after: dict[str, int] = {}  # path → bytes sent before stalling a GET
        self.release = threading.Event()
        self.held: dict[str, threading.Event] = {}  # path → its own release (else ``release``)

    def handle(self, request: _Handler) -> None:
        path = unquote(urlsplit(request.path).path)
        stall = self.stall_after.get(path)
        if stall is not None and request.command == "GET" and path in self.files:
            self._stalled(request, self.files[path], stall, self.held.get(path, self.release))
            return
        if path in self.redirects:
            request.reply(302, b"", {"Location": self.redirects[path]})
            return
        if request.command == "HEAD" and self.no_head:
            request.reply(405, b"", {"Allow": "GET"})
            return
        content = self.files.get(path)
        if content is None:
            request.reply(404, b"Not Found", {"Content-Type": "text/plain"})
            return
        serve_bytes(request, content, ignore_range=self.ignore_range, chunked=path in self.chunked)

    def _stalled(
        self, request: _Handler, content: bytes, after: int, release: threading.Event
    ) -> None:
        """The whole of ``content``, stopping after ``after`` bytes until ``release``."""
        request.send_response(200)
        request.send_header("Content-Length", str(len(content)))
        request.send_header("ETag", etag_of(content))
        request.end_headers()
        request.wfile.write(content[:after])
        request.wfile.flush()
        release.wait(timeout=60)
        request.wfile.write(content[after:])


@dataclass
class HubFile:
    """A file of a commit; ``sha256`` is what the listing declares for an LFS file."""

    content: bytes
    lfs: bool = False
    sha256: str | None = None

    @property
    def declared_sha256(self) -> str:
        return self.sha256 or hashlib.sha256(self.content).hexdigest()


@dataclass
class HubRepo:
    revisions: dict[str, str] = field(default_factory=dict)  # branch/tag → commit
    commits: dict[str, dict[str, HubFile]] = field(default_factory=dict)
    private: bool = False
    gated: bool = False


_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
_API = re.compile(r"/api/(models|datasets|spaces)/(.+)/revision/([^/]+)")
_RESOLVE = re.compile(r"/(?:(datasets|spaces)/)?(.+)/resolve/([^/]+)/(.+)")


class HubStub(_Base):
    """A Hugging Face Hub for tests; add repositories with :meth:`add`."""

    def __init__(self, token: str = "") -> None:
        super().__init__()
        self.token = token
        self.repos: dict[tuple[str, str], HubRepo] = {}
        self.cdn = FileServer()
        self.on_resolve: Callable[[str], None] | None = None

    def start(self) -> Self:
        self.cdn.start()
        super().start()
        return self

    def stop(self) -> None:
        super().stop()
        self.cdn.stop()

    def add(
        self,
        repo: str,
        revisions: dict[str, dict[str, HubFile]],
        *,
        repo_type: str = "model",
        private: bool = False,
        gated: bool = False,
    ) -> dict[str, str]:
        """Add a repository; returns each revision's commit sha."""
        entry = HubRepo(private=private, gated=gated)
        for name, files in revisions.items():
            commit = hashlib.sha1(f"{repo_type}/{repo}@{name}".encode()).hexdigest()
            entry.revisions[name] = commit
            entry.commits[commit] = files
            for file in files.values():
                if file.lfs:
                    digest = hashlib.sha256(file.content).hexdigest()
                    self.cdn.files[f"/lfs/{digest}"] = file.content
        self.repos[(repo_type, repo)] = entry
        return dict(entry.revisions)

    def move(
        self, repo: str, revision: str, files: dict[str, HubFile], *, repo_type: str = "model"
    ) -> str:
        """Point ``revision`` of ``repo`` at a new commit of ``files``; returns its sha."""
        entry = self.repos[(repo_type, repo)]
        commit = hashlib.sha1(f"{repo_type}/{repo}@{revision}#{len(entry.commits)}".encode())
        entry.commits[commit.hexdigest()] = files
        entry.revisions[revision] = commit.hexdigest()
        for file in files.values():
            if file.lfs:
                self.cdn.files[f"/lfs/{hashlib.sha256(file.content).hexdigest()}"] = file.content
        return commit.hexdigest()

    def _repo(self, request: _Handler, repo_type: str, name: str) -> HubRepo | None:
        repo = self.repos.get((repo_type, name))
        authorized = bool(self.token) and request.headers.get("Authorization") == (
            f"Bearer {self.token}"
        )
        if repo is None or (repo.private and not authorized):
            status = 404 if authorized else 401
            request.json(
                status,
                {"error": "Repository Not Found"},
                {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"},
            )
            return None
        if repo.gated and not authorized:
            request.json(
                403, {"error": "Access to this repo is restricted"}, {"X-Error-Code": "GatedRepo"}
            )
            return None
        return repo

    @staticmethod
    def _commit(request: _Handler, repo: HubRepo, revision: str) -> str | None:
        commit = repo.revisions.get(revision) or (revision if revision in repo.commits else None)
        if commit is None:
            request.json(
                404,
                {"error": f"Invalid rev id: {revision}"},
                {"X-Error-Code": "RevisionNotFound"},
            )
        return commit

    def handle(self, request: _Handler) -> None:
        target = urlsplit(request.path)
        path = target.path
        if api := _API.fullmatch(path):
            repo_type, name, revision = _TYPES[api.group(1)], api.group(2), unquote(api.group(3))
            repo = self._repo(request, repo_type, name)
            commit = None if repo is None else self._commit(request, repo, revision)
            if repo is None or commit is None:
                return
            blobs = "blobs=true" in target.query
            siblings = []
            for rfilename, file in repo.commits[commit].items():
                sibling: dict[str, Any] = {"rfilename": rfilename}
                if blobs:
                    sibling["size"] = len(file.content) if not file.lfs else 135
                    sibling["blobId"] = hashlib.sha1(file.content).hexdigest()
                    if file.lfs:
                        sibling["lfs"] = {
                            "sha256": file.declared_sha256,
                            "size": len(file.content),
                            "pointerSize": 135,
                        }
                siblings.append(sibling)
            request.json(200, {"id": name, "sha": commit, "siblings": siblings})
            return
        if resolve := _RESOLVE.fullmatch(path):
            repo_type = _TYPES[resolve.group(1)] if resolve.group(1) else "model"
            name, revision = resolve.group(2), unquote(resolve.group(3))
            filename = unquote(resolve.group(4))
            if self.on_resolve is not None:
                self.on_resolve(filename)
            repo = self._repo(request, repo_type, name)
            commit = None if repo is None else self._commit(request, repo, revision)
            if repo is None or commit is None:
                return
            found = repo.commits[commit].get(filename)
            if found is None:
                request.json(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"})
                return
            extra = {"X-Repo-Commit": commit}
            if found.lfs:
                digest = hashlib.sha256(found.content).hexdigest()
                request.reply(
                    302,
                    b"",
                    {**extra, "Location": f"{self.cdn.url}/lfs/{digest}?X-Amz-Signature=secret"},
                )
                return
            serve_bytes(request, found.content, extra=extra)
            return
        request.json(404, {"error": "not found"})
