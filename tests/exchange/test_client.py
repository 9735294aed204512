"""The shared resumable client (streamer.client.transfer) against a real node's exchange."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from streamer._pipeline.throttle import TokenBucket
from streamer.client import ApiError, connect
from streamer.client.transfer import TransferOptions, download, part_path, upload
from tests.e2e.cutproxy import CutProxy
from tests.e2e.node import TOKEN, Node
from tests.support.faultproxy import fault_proxy

MIB = 1 << 20
QUICK = TransferOptions(backoff_base=0.05, backoff_jitter=0.1)  # real time: keep retries short


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def proxied(proxy_port: int) -> str:
    return f"http://127.0.0.1:{proxy_port}"


def port(node: Node) -> int:
    return int(node.url.rsplit(":", 1)[1])


async def create(node: Node, **body: Any) -> dict[str, Any]:
    async with connect(node.url, TOKEN) as client:
        answer = await client.post(
            "/api/v1/transfers", json={"worker_id": "w1", "location_id": "local-0", **body}
        )
    assert answer.status_code == 201, answer.text
    return answer.json()  # type: ignore[no-any-return]


async def staged(node: Node, data: bytes, name: str = "src.bin") -> dict[str, Any]:
    (node.data / name).write_bytes(data)
    return await create(node, direction="upload", path=name)


async def test_download_whole_compressed_and_in_parallel_ranges(node: Node, tmp_path: Path) -> None:
    data = os.urandom(20 * MIB + 3)
    made = await staged(node, data)
    tmp_path = tmp_path / "w"
    seen: list[tuple[int, int | None]] = []
    async with connect(node.url) as client:
        params = {"token": made["auth_token"]}
        plain = await download(
            client,
            made["download_url"],
            tmp_path / "plain.bin",
            params=params,
            options=QUICK,
            progress=lambda done, total: seen.append((done, total)),
        )
        squeezed = await download(
            client,
            made["download_url"],
            tmp_path / "zstd.bin",
            params=params,
            options=TransferOptions(compress=True),
        )
        ranged = await download(
            client,
            made["download_url"],
            tmp_path / "ranged.bin",
            params=params,
            options=TransferOptions(parallel=2, parallel_min_size=MIB),
        )
    for result, name in ((plain, "plain.bin"), (squeezed, "zstd.bin"), (ranged, "ranged.bin")):
        assert (tmp_path / name).read_bytes() == data
        assert result.sha256 == sha(data) and result.verified and result.size == len(data)
        assert result.retries == 0 and result.resumed == ()
    assert plain.ranges == 1 and squeezed.ranges == 1 and ranged.ranges == 2
    assert seen[-1] == (len(data), len(data))
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.bin", "ranged.bin", "zstd.bin"]


async def test_a_cut_download_resumes_where_it_stopped(node: Node, tmp_path: Path) -> None:
    data = os.urandom(6 * MIB + 11)
    made = await staged(node, data)
    async with fault_proxy(port(node)) as proxy, connect(proxied(proxy.port)) as client:
        proxy.drop_after(2 * MIB + 700)
        result = await download(
            client,
            made["download_url"],
            tmp_path / "got.bin",
            params={"token": made["auth_token"]},
            options=QUICK,
        )
    assert (tmp_path / "got.bin").read_bytes() == data and result.verified
    assert proxy.dropped == 1 and result.retries == 1
    # The second request asked for the rest only, pinned to the first one's ETag.
    resumed_at = result.resumed[0]
    assert MIB <= resumed_at <= 2 * MIB + 700
    second = proxy.log[1].headers
    assert second["range"] == f"bytes={resumed_at}-{len(data) - 1}"
    assert second["if-range"] == f'"{sha(data)}"'
    assert not part_path(tmp_path / "got.bin").exists()


async def test_a_cancelled_download_leaves_a_part_the_next_run_resumes(
    node: Node, tmp_path: Path
) -> None:
    data = os.urandom(8 * MIB)
    made = await staged(node, data)
    target = tmp_path / "got.bin"
    params = {"token": made["auth_token"]}
    slow = TransferOptions(bandwidth=TokenBucket(4 * MIB))
    async with connect(node.url) as client:
        with trio.move_on_after(1.0):
            await download(client, made["download_url"], target, params=params, options=slow)
        assert part_path(target).exists() and not target.exists()
        result = await download(client, made["download_url"], target, params=params)
    assert target.read_bytes() == data and result.verified
    assert len(result.resumed) == 1 and result.resumed[0] > 0
    assert not part_path(target).exists()


async def test_a_refused_download_leaves_nothing(node: Node, tmp_path: Path) -> None:
    made = await staged(node, b"x" * 1000)
    tmp_path = tmp_path / "w"
    async with connect(node.url) as client:
        with pytest.raises(ApiError) as refused:
            await download(
                client, made["download_url"], tmp_path / "x.bin", params={"token": "forged"}
            )
    assert refused.value.status == 401 and not refused.value.retryable
    assert list(tmp_path.iterdir()) == []  # the directory was made, nothing stays in it


async def test_upload_plain_and_compressed(node: Node, tmp_path: Path) -> None:
    data = os.urandom(3 * MIB + 5)
    source = tmp_path / "result.bin"
    source.write_bytes(data)
    async with connect(node.url) as client:
        for name, options in (("plain.bin", QUICK), ("zstd.bin", TransferOptions(compress=True))):
            made = await create(node, direction="download", path=f"out/{name}")
            result = await upload(
                client,
                made["upload_url"],
                source,
                params={"token": made["auth_token"]},
                options=options,
            )
            assert result.sha256 == sha(data) and result.size == len(data)
            assert result.answer["status"] == "completed" and result.resumed == ()
            assert (node.data / "out" / name).read_bytes() == data


async def test_a_cut_upload_resumes_with_head_and_patch(node: Node, tmp_path: Path) -> None:
    data = os.urandom(4 * MIB + 77)
    source = tmp_path / "result.bin"
    source.write_bytes(data)
    made = await create(node, direction="download", path="out/up.bin")
    # Paced in small chunks so that the server keeps up (the bucket's first burst is
    # ~1 MiB): what the proxy forwarded before the cut is read and kept, not lost in a
    # socket buffer.
    paced = TransferOptions(backoff_base=0.05, bandwidth=TokenBucket(2 * MIB), chunk_size=MIB // 4)
    with CutProxy(port(node), after=2 * MIB + 10) as proxy:
        async with connect(f"http://127.0.0.1:{proxy.port}") as client:
            result = await upload(
                client,
                made["upload_url"],
                source,
                params={"token": made["auth_token"]},
                options=paced,
            )
    assert (node.data / "out/up.bin").read_bytes() == data
    assert proxy.cut == 1 and result.retries >= 1
    # Resumed from what the server kept (whole MiBs), not from zero.
    assert result.resumed and result.resumed[-1] % MIB == 0
    assert MIB <= result.resumed[-1] <= 2 * MIB


async def test_a_failing_server_is_retried_then_given_up_on(node: Node, tmp_path: Path) -> None:
    data = os.urandom(MIB)
    made = await staged(node, data)
    async with fault_proxy(port(node)) as proxy, connect(proxied(proxy.port)) as client:
        params = {"token": made["auth_token"]}
        proxy.fail_next(2, status=503, body=b"busy", content_type="text/plain")
        result = await download(
            client, made["download_url"], tmp_path / "a.bin", params=params, options=QUICK
        )
        assert result.retries == 2 and (tmp_path / "a.bin").read_bytes() == data
        proxy.fail_next(4, status=503, body=b"busy", content_type="text/plain")
        with pytest.raises(ApiError) as gave_up:
            await download(
                client, made["download_url"], tmp_path / "b.bin", params=params, options=QUICK
            )
    assert gave_up.value.status == 503 and proxy.failed == 6
    assert not (tmp_path / "b.bin").exists() and not part_path(tmp_path / "b.bin").exists()


def test_httpx_is_not_asked_to_decode_anything_else(node: Node) -> None:
    """The client asks for identity (or zstd) explicitly: httpx's default would invite
    gzip/br bodies with no Content-Length to check."""
    assert "identity" not in httpx.Client().headers["Accept-Encoding"]
