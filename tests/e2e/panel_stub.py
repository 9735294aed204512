"""A Panel stand-in for node-transfer tests: issues transfer JWTs, records callbacks.

It serves ``POST /api/remote/servers/<uuid>/transfer/success|failure`` on
127.0.0.1 from a thread, records each call (path, headers, body), can answer
the next calls with an error, and can be stopped and started again on the
same port (a Panel that is down, then back).
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def server(self) -> str:
        return self.path.split("/")[4]

    @property
    def outcome(self) -> str:
        return self.path.rsplit("/", 1)[1]


class PanelStub:
    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.port = 0
        self._failures: list[int] = []
        self._lock = threading.Condition()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- serving -------------------------------------------------------------

    def start(self) -> PanelStub:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                with stub._lock:
                    status = stub._failures.pop(0) if stub._failures else 204
                    if status == 204:
                        headers = {k.lower(): v for k, v in self.headers.items()}
                        stub.calls.append(Call("POST", self.path, headers, body))
                        stub._lock.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def fail_next(self, n: int, status: int = 503) -> None:
        with self._lock:
            self._failures.extend([status] * n)

    # -- observing -----------------------------------------------------------

    def for_server(self, server: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.server == server]

    def wait(
        self, server: str, *, count: int = 1, timeout: float = 20.0, settle: float = 0.0
    ) -> list[Call]:
        """Wait until ``count`` callbacks for ``server`` arrived (then ``settle`` more
        seconds, to catch unwanted extra ones); return them."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len([c for c in self.calls if c.server == server]) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {count} callbacks for {server}: {self.calls}")
                self._lock.wait(left)
        if settle:
            time.sleep(settle)
        return self.for_server(server)

    # -- tokens --------------------------------------------------------------

    @staticmethod
    def token(
        sub: str | None,
        key: str,
        *,
        ttl: float = 300.0,
        algorithm: str = "HS256",
        **claims: Any,
    ) -> str:
        """A transfer JWT as the Panel makes one (``sub`` = destination server)."""
        payload: dict[str, Any] = {"exp": int(time.time() + ttl), "iat": int(time.time())}
        if sub is not None:
            payload["sub"] = sub
        payload.update(claims)
        return jwt.encode(payload, key, algorithm=algorithm)

    @staticmethod
    def unsigned_token(sub: str, *, ttl: float = 300.0) -> str:
        """An ``alg: none`` token (must always be refused)."""

        def part(data: dict[str, Any]) -> str:
            raw = json.dumps(data, separators=(",", ":")).encode()
            return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

        header = part({"alg": "none", "typ": "JWT"})
        return f"{header}.{part({'sub': sub, 'exp': time.time() + ttl})}."


def eventually(check: Callable[[], bool], *, timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        time.sleep(0.02)
