"""What a running ``streamer serve`` imports: the daemon keeps every module it loads
resident for its whole life, so heavy ones it needs only for some requests (or never)
stay out until used. Read from the process itself (``python -X importtime``)."""

from __future__ import annotations

from pathlib import Path

from .node import Node, tree

#: Packages and modules the daemon must not load to serve local and S3 transfers:
#: the client's display (rich, pygments under it: httpx's CLI would bring both),
#: the client commands, cryptography (exchange encryption, pyjwt tokens), botocore
#: (the AWS CRT signs; botocore is the tests' reference) and the test tools that
#: share the venv.
NOT_LOADED = (
    "rich",
    "pygments",
    "cryptography",
    "jwt",
    "botocore",
    "boto3",
    "moto",
    "streamer.client",
    "streamer._cli.client",
    "streamer._cli.worker",
)


def imported(log: str) -> set[str]:
    """The modules named by the ``import time:`` lines of ``-X importtime`` in ``log``."""
    lines = (line for line in log.splitlines() if line.startswith("import time:"))
    names = {line.rsplit("|", 1)[-1].strip() for line in lines}
    return names - {"imported package"}  # the header line's last column


def is_under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_serve_with_s3_keeps_heavy_modules_out(tmp_path: Path) -> None:
    s3 = {
        "endpoint_url": "http://127.0.0.1:9",  # never reached: no S3 job runs
        "access_key_id": "testaccesskey",
        "secret_access_key": "testsecretkey0123456789",
    }
    node = Node(tmp_path, {"s3": s3}, env={"PYTHONPROFILEIMPORTTIME": "1"})
    tree(node.data / "src", {"a.txt": b"hello"})
    with node.serving():
        job = node.wait(node.transfer([{"path": "a.txt", "type": "file"}])["jobId"])
        assert job["status"] == "completed", job
        with node.client() as client:
            assert client.get("/metrics").status_code == 200
    modules = imported(node.log())
    # The log holds the daemon's imports, S3 signing included.
    assert {"streamer._server", "streamer._engine.copy", "awscrt.auth"} <= modules
    loaded = sorted(m for m in modules if any(is_under(m, p) for p in NOT_LOADED))
    assert not loaded, f"streamer serve imported {loaded}"
