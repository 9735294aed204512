"""The OpenAPI document: every route is in it, it is valid 3.1, and the shapes it
describes are the shapes the code sends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest
from openapi_spec_validator import validate
from quart import Quart

from streamer._api import Services, create_app
from streamer._api.describe import API_TOKEN, operation_of
from streamer._api.openapi import document, documented_methods, openapi_path
from streamer._api.shapes import ConflictCheck, FileShape, JobShape, WorkerJobShape
from streamer._auth import TokenAuth
from streamer._engine import Engine, FileTask, Job, Store
from streamer._engine import transfer as transfer_module
from streamer._engine.jobs import FileStatus, JobError, JobStatus
from streamer._engine.transfer import TransferSpec, check_conflicts
from streamer._storage import LocalStorage
from streamer._storage.registry import Locations
from streamer._worker.models import JobStatus as WorkerJobStatus
from streamer._worker.models import WorkerJob, job_json


@pytest.fixture
def app(tmp_path: Path) -> Quart:
    store = Store(str(tmp_path))
    svc = Services(engine=Engine(store, {}), locations=Locations([]), auth=TokenAuth(["t" * 20]))
    return create_app(svc)


def test_every_route_is_documented_with_its_methods(app: Quart) -> None:
    paths = document(app)["paths"]
    missing = []
    for rule in app.url_map.iter_rules():
        listed = {m.upper() for m in paths.get(openapi_path(rule.rule), {})}
        if not documented_methods(rule) <= listed:
            missing.append(f"{sorted(documented_methods(rule))} {rule.rule} ({rule.endpoint})")
    assert not missing, "routes missing from /openapi.json (add @describe):\n" + "\n".join(missing)
    documented = sum(len(methods) for methods in paths.values())
    expected = sum(len(documented_methods(rule)) for rule in app.url_map.iter_rules())
    assert documented == expected  # and nothing that is not a route


def test_the_document_is_valid_openapi_3_1(app: Quart) -> None:
    doc = document(app)
    assert doc["openapi"].startswith("3.1")
    validate(doc)  # raises on any violation of the OpenAPI 3.1 schema
    assert not [name for name in doc["components"]["schemas"] if "." in name]
    ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))


def test_bodies_and_queries_come_from_the_validating_types(app: Quart) -> None:
    doc = document(app)
    create = doc["paths"]["/api/transfer"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/TransferSpec"
    }
    spec = doc["components"]["schemas"]["TransferSpec"]
    assert spec["additionalProperties"] is False  # forbid_unknown_fields, as validated
    assert set(spec["properties"]["conflictResolution"]["enum"]) == {"overwrite", "skip", "rename"}
    listing = doc["paths"]["/api/transfer"]["get"]
    (status,) = listing["parameters"]
    assert status["in"] == "query" and status["name"] == "status"
    upload = doc["paths"]["/api/upload/{location_id}/{path}"]["put"]
    names = {(p["in"], p["name"]) for p in upload["parameters"]}
    assert names == {
        ("path", "location_id"),
        ("path", "path"),
        ("query", "conflictResolution"),
        ("header", "X-Checksum-Sha256"),
    }


def test_errors_share_one_shape_and_protected_routes_say_so(app: Quart) -> None:
    doc = document(app)
    error = {"$ref": "#/components/schemas/ErrorBody"}
    assert doc["components"]["schemas"]["ErrorBody"]["required"] == ["error", "message"]
    for path, item in doc["paths"].items():
        for method, op in item.items():
            responses = op["responses"]
            assert responses["default"]["content"]["application/json"]["schema"] == error
            if op["security"]:
                assert "401" in responses, f"{method} {path}"


def test_security_matches_the_auth_hook(app: Quart) -> None:
    """A route is public to the API-token hook exactly when it declares other credentials."""
    public = app.config["PUBLIC_ENDPOINTS"]
    wrong = []
    for rule in app.url_map.iter_rules():
        operation = operation_of(app.view_functions[rule.endpoint])
        assert operation is not None, rule.rule
        needs_api_token = operation.auth == (API_TOKEN,)
        if needs_api_token == (rule.endpoint in public):
            wrong.append(f"{rule.endpoint}: declares {operation.auth}")
    assert not wrong, wrong


def _strict(value: Any, kind: type) -> None:
    """``value`` (as sent) has exactly the fields of ``kind``, each of its type."""
    assert msgspec.convert(msgspec.to_builtins(value), kind) is not None


def test_described_shapes_are_what_the_engine_sends() -> None:
    file = FileTask(0, "a.bin", "out/a.bin", 3, status=FileStatus.ERROR)
    file.error, file.message = "NotFound", "gone"
    job = Job(id="transfer-1", kind="cross-storage", spec={"source": {}}, files=[file])
    job.job_errors.append(JobError(None, "interrupted", "stopped"))
    job.status = JobStatus.FAILED
    _strict(job.to_json(), JobShape)
    _strict(file.to_json(), FileShape)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({**job.to_json(), "extra": 1}, JobShape)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({k: v for k, v in job.to_json().items() if k != "errors"}, JobShape)

    worker_job = WorkerJob(
        id="w-1",
        status=WorkerJobStatus.COMPLETED,
        source_location="local-0",
        source_path="in.mp4",
        output_location="local-0",
        output_path="out.mp4",
        max_attempts=3,
        created_at=1.0,
        updated_at=2.0,
        result_size=5,
        result_sha256="ab" * 32,
    )
    _strict(job_json(worker_job), WorkerJobShape)


async def test_the_conflict_check_is_what_check_conflicts_sends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a").write_bytes(b"a")
    (tmp_path / "dst").mkdir()
    (tmp_path / "dst" / "a").write_bytes(b"old")
    spec = msgspec.convert(
        {
            "source": {"type": "local", "locationId": "l", "path": "src"},
            "destination": {"type": "local", "locationId": "l", "path": "dst"},
            "items": [{"path": "a", "type": "file"}],
        },
        TransferSpec,
    )
    locations = Locations([LocalStorage("l", tmp_path)])
    plain = await check_conflicts(spec, locations)
    assert msgspec.convert(plain, ConflictCheck).conflicts == ["src/a"]
    monkeypatch.setattr(transfer_module, "LARGE_FOLDER_FILES", 0)
    warned = msgspec.convert(await check_conflicts(spec, locations), ConflictCheck)
    assert warned.warning is not msgspec.UNSET
