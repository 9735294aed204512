"""Schemathesis against a live ``streamer serve``, driven by its own ``/openapi.json``.

Every operation gets a bounded number of seeded examples (derandomized:
the same requests on every run), valid ones and invalid ones. The node must
never answer 5xx, every error must be the JSON error shape, answers must match
the document, and nothing may be written outside the node's directories. The
node reaches no other host: its HTTP clients go through a proxy address where
nothing listens, and the Hugging Face endpoint is that same closed port.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
)

from .node import TOKEN, Node, tree

EXAMPLES = {GenerationMode.POSITIVE: 12, GenerationMode.NEGATIVE: 8}
REAL_EXAMPLES = {GenerationMode.POSITIVE: 10, GenerationMode.NEGATIVE: 5}
CLOSED_PORT = "http://127.0.0.1:9"  # discard: nothing listens, connections are refused
NODE_DIRS = ("data", "state", "servers")
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy")
CHECKS = [content_type_conformance, response_headers_conformance, response_schema_conformance]


def files_outside(root: Path, home: Path) -> set[str]:
    """Every path under ``root`` except the node's own directories and log."""
    allowed = {home / name for name in NODE_DIRS} | {home / "server.log"}
    found = set()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if Path(dirpath, d) not in allowed]
        for name in filenames + dirnames:
            path = Path(dirpath, name)
            if path not in allowed:
                found.add(str(path.relative_to(root)))
    return found


@pytest.fixture
def fuzzed_node(tmp_path: Path) -> Iterator[Node]:
    home = tmp_path / "home"
    (home / "tmp").mkdir(parents=True)
    env = {name: CLOSED_PORT for name in PROXY_VARIABLES}
    env |= {"NO_PROXY": "", "no_proxy": "", "TMPDIR": str(home / "tmp")}
    node = Node(
        home,
        {
            "servers": {"root": str(home / "servers")},
            "huggingface": {"endpoint": CLOSED_PORT},
            "http": {"max_retries": 0, "connect_timeout": 2, "read_timeout": 5},
            "uploads": {"max_bytes": 1 << 20},
        },
        env,
    )
    tree(node.data, {"src/a.bin": b"a" * 100, "src/dir/b.txt": b"b", "models/config.json": b"{}"})
    node.start()
    yield node
    if node.alive:
        node.kill()


def test_the_api_survives_fuzzing(fuzzed_node: Node, tmp_path: Path) -> None:
    node = fuzzed_node
    home = node.home
    before = files_outside(tmp_path, home)
    session = requests.Session()
    with node.client(token=None) as client:
        schema = schemathesis.openapi.from_dict(client.get("/openapi.json").json())
    failures: list[str] = []
    calls = 0

    def exercise(case: schemathesis.Case) -> None:
        nonlocal calls
        calls += 1
        response = case.call(
            base_url=node.url,
            session=session,
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=30,
        )
        where = f"{case.method} {case.formatted_path} query={case.query} -> {response.status_code}"
        problem = _problem(case, response)
        if problem is None:
            try:
                case.validate_response(response, checks=CHECKS)
            except Exception as exc:
                problem = f"does not match the document: {str(exc)[:600]}"
        if problem is not None:
            failures.append(f"{where}: {problem}\n  body={str(case.body)[:300]}")

    def run(strategy: Any, examples: int) -> None:
        test = settings(
            max_examples=examples,
            derandomize=True,
            database=None,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )(given(case=strategy)(exercise))
        with contextlib.suppress(Unsatisfiable):  # nothing to break (no parameters)
            test()

    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in operations:
        for mode, examples in EXAMPLES.items():
            run(operation.as_strategy(generation_mode=mode), examples)
    # The same operations on things that exist; deletions last, so they exist throughout.
    for operation in sorted(operations, key=_destructive):
        path_names = {p.name for p in operation.path_parameters}
        query_names = {p.name for p in operation.query}
        for params, query in _real_objects(node):
            named = set(query) - {"token"}  # the token is a credential, not a parameter
            if (params or named) and params.keys() <= path_names and named <= query_names:
                for mode, examples in REAL_EXAMPLES.items():
                    strategy = operation.as_strategy(
                        generation_mode=mode, path_parameters=params, query=query
                    )
                    run(strategy, examples)
    assert calls > 300
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures[:30])
    assert files_outside(tmp_path, home) == before
    assert not list((home / "tmp").iterdir())
    assert node.alive, "the node died"
    assert "Traceback" not in node.log(), node.log()[-3000:]


@functools.cache
def _real_objects(node: Node) -> list[tuple[dict[str, str], dict[str, str]]]:
    """Path and query parameters (and credentials) naming things that exist: the
    local location, a finished copy job, an exchange transfer staged for a worker
    to download and one waiting for a worker's upload, a claimed worker job."""
    created = node.transfer([{"path": "a.bin", "type": "file"}])
    node.wait(created["jobId"])
    objects: list[tuple[dict[str, str], dict[str, str]]] = [
        ({"location_id": "local-0"}, {}),
        ({"job_id": created["jobId"]}, {}),
    ]
    with node.client() as client:
        for direction, path in (("upload", "src/a.bin"), ("download", "results/out.bin")):
            body = {
                "worker_id": "w",
                "direction": direction,
                "location_id": "local-0",
                "path": path,
            }
            response = client.post("/api/v1/transfers", json=body)
            assert response.status_code == 201, response.text
            transfer = response.json()
            objects.append(
                ({"transfer_id": transfer["transfer_id"]}, {"token": transfer["auth_token"]})
            )
        body = {
            "source": {"locationId": "local-0", "path": "src/a.bin"},
            "output": {"locationId": "local-0", "path": "results/worker.bin"},
        }
        assert client.post("/api/worker/jobs", json=body).status_code == 201
        claimed = client.post("/api/worker/jobs/claim", json={"workerId": "w"})
        assert claimed.status_code == 200, claimed.text
        job, token = claimed.json()["job"]["id"], claimed.json()["token"]
        objects.append(({"job_id": job}, {"token": token}))
        objects.append(({}, {"job_id": job, "token": token}))
    return objects


def _destructive(operation: Any) -> bool:
    """Whether the operation ends the object it names (run those last)."""
    segments = operation.path.split("/")
    return operation.method.upper() == "DELETE" or bool(
        {"cancel", "cleanup", "fail", "release"} & set(segments)
    )


def _unreachable_upstream(response: requests.Response) -> bool:
    """A 502 because an import's host could not be reached (here: the closed proxy
    port) is the right answer, not a crash."""
    try:
        code = response.json().get("error")
    except ValueError:
        return False
    return response.status_code == 502 and code == "ConnectionError"


def _problem(case: schemathesis.Case, response: requests.Response) -> str | None:
    """What is wrong with an answer regardless of the document, if anything."""
    if response.status_code >= 500 and not _unreachable_upstream(response):
        return f"server error: {response.text[:300]}"
    if response.status_code < 400 or case.method == "HEAD":
        return None
    try:
        body = response.json()
    except ValueError:
        return f"error answer is not JSON: {response.text[:200]!r}"
    if not (
        isinstance(body, dict)
        and isinstance(body.get("error"), str)
        and isinstance(body.get("message"), str)
    ):
        return f"error answer is not {{error, message}}: {body!r}"[:300]
    return None
