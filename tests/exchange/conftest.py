from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.node import Node


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    """A running ``streamer serve`` with ``local-0`` at ``tmp_path/home/data``."""
    server = Node(tmp_path / "home", config={"exchange": {"default_ttl": 600}}).start()
    yield server
    if server.proc is not None and server.proc.poll() is None:
        server.kill()
