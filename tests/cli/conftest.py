"""A ``streamer serve`` shared by the CLI tests of a module, and ways to run the CLI
against it: as a plain subprocess (pipes, no terminal) or under a pseudo-terminal."""

from __future__ import annotations

import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from fcntl import ioctl
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.e2e.node import TOKEN, Node
from tests.support.threadserver import serving

CLI_SECONDS = 60.0
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    # URL imports of the trickling server on 127.0.0.1, which the default policy refuses
    config = {"http": {"allow_private_networks": True}}
    server = Node(tmp_path_factory.mktemp("cli") / "home", config).start()
    yield server
    if server.proc is not None and server.proc.poll() is None:
        server.kill()


#: What the trickling server declares and sends, and how fast: a job that runs ~4 min
#: unless cancelled, and writes little meanwhile.
SLOW_SIZE = 1 << 30
SLOW_CHUNK = 64 << 10
SLOW_PAUSE = 0.015


class _Trickle(BaseHTTPRequestHandler):
    """``SLOW_SIZE`` zero bytes at ~4 MiB/s, until the client goes away."""

    def _head(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(SLOW_SIZE))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()

    def do_HEAD(self) -> None:
        self._head()

    def do_GET(self) -> None:
        self._head()
        chunk = bytes(SLOW_CHUNK)
        try:
            for _ in range(SLOW_SIZE // SLOW_CHUNK):
                self.wfile.write(chunk)
                time.sleep(SLOW_PAUSE)
        except OSError:  # the node cancelled the download
            return

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def slow_url() -> Iterator[str]:
    """The URL of a file served slowly: a throttled job for cancel and Ctrl-C tests."""
    with serving(ThreadingHTTPServer(("127.0.0.1", 0), _Trickle)) as server:
        yield f"http://127.0.0.1:{server.server_address[1]}/slow.bin"


def cli_env(node: Node, home: Path, **extra: str) -> dict[str, str]:
    """The environment of a CLI run: the node's URL and token, a private config home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMER_")}
    env.update(
        STREAMER_URL=node.url,
        STREAMER_TOKEN=TOKEN,
        XDG_CONFIG_HOME=str(home / "config"),
        HOME=str(home),
        COLUMNS="160",
    )
    env.update(extra)
    return {k: v for k, v in env.items() if v}


def cli(
    node: Node, home: Path, *args: str, stdin: str = "", **env: str
) -> subprocess.CompletedProcess[str]:
    """``streamer ARGS`` with pipes for stdin/stdout/stderr (no terminal)."""
    return subprocess.run(
        [sys.executable, "-m", "streamer", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=cli_env(node, home, **env),
        cwd=home,
        timeout=CLI_SECONDS,
        check=False,
    )


class Terminal:
    """``streamer ARGS`` with a pseudo-terminal (160x40) as stdin, stdout and stderr."""

    def __init__(self, node: Node, home: Path, *args: str) -> None:
        self.master, slave = os.openpty()
        ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
        env = cli_env(node, home, TERM="xterm-256color", COLUMNS="")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamer", *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            cwd=home,
        )
        os.close(slave)
        self.raw = b""

    @property
    def text(self) -> str:
        """Everything printed so far, without escape sequences and carriage returns."""
        return ANSI.sub("", self.raw.decode(errors="replace"))

    def _read(self, seconds: float) -> bool:
        """Read what arrives within ``seconds``; False once the terminal is closed."""
        ready, _, _ = select.select([self.master], [], [], seconds)
        if not ready:
            return True
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # EIO: the process exited and the slave side is gone
            return False
        self.raw += chunk
        return bool(chunk)

    def expect(self, pattern: str, timeout: float = CLI_SECONDS) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.text)
            if match:
                return match
            if not self._read(0.1):
                break
        raise AssertionError(f"{pattern!r} never shown; output:\n{self.text}")

    def write(self, text: str) -> None:
        os.write(self.master, text.encode())

    def interrupt(self) -> None:
        self.proc.send_signal(signal.SIGINT)

    def finish(self, timeout: float = CLI_SECONDS) -> int:
        """Read until the process exits; its exit code."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._read(0.1):
            pass
        code = self.proc.wait(max(0.0, deadline - time.monotonic()))
        os.close(self.master)
        return code
