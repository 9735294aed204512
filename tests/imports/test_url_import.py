"""The ``url`` import: file names from URLs, sizes by probing, reads with resume."""

from __future__ import annotations

from contextlib import aclosing

import pytest

from streamer._errors import BadRequest, SourceNotFound, UnsupportedStorage
from streamer._storage.base import UNKNOWN_SIZE, Conflict
from streamer._storage.http import HttpClient
from streamer._storage.urlimport import UrlImport, url_name, url_names
from tests.support.faultproxy import fault_proxy
from tests.support.hubstub import FileServer

from .conftest import sha256
from .test_http import BIG


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("https://h/models/weights.bin", "weights.bin"),
        ("https://h/a/b%20c.tar.gz?sig=1#x", "b c.tar.gz"),
        ("https://h/dir/", "dir"),
        ("https://h", "download"),
        ("https://h/", "download"),
        ("https://h/..", "download"),
        ("https://h/%2e%2e", "download"),
        ("https://h/a%2F..%2Fetc%2Fpasswd", "a_.._etc_passwd"),
        ("https://h/x%00y%5Cz", "x_y_z"),
        ("https://h/caf%C3%A9.txt", "café.txt"),
        ("https://h/bad%FF.bin", "bad\ufffd.bin"),
        ("https://h/.streamer-x.part", "_.streamer-x.part"),
    ],
)
def test_url_name(url: str, name: str) -> None:
    assert url_name(url) == name


def test_long_names_keep_their_extension() -> None:
    name = url_name("https://h/" + "é" * 300 + ".safetensors")
    assert name.endswith(".safetensors") and len(name.encode()) <= 255


def test_names_are_distinct_and_deterministic() -> None:
    urls = [
        "https://a/x.bin",
        "https://b/x.bin",
        "https://c/x.bin?v=2",
        "https://d/",
        "https://e/",
        "https://f/x (1).bin",
    ]
    expected = ["x.bin", "x (1).bin", "x (2).bin", "download", "download (1)", "x (1) (1).bin"]
    assert url_names(urls) == expected
    assert url_names(urls) == expected


async def test_invalid_urls_are_bad_requests(client: HttpClient) -> None:
    with pytest.raises(BadRequest):
        UrlImport(client, ["http://"])
    with pytest.raises(BadRequest):
        UrlImport(client, ["http://exa mple.com:99999/x"])


async def test_walk_probes_sizes_and_read_streams(files: FileServer, client: HttpClient) -> None:
    files.files.update({"/m/a.bin": BIG, "/n/a.bin": b"second", "/live": b"no length"})
    files.chunked.add("/live")
    source = UrlImport(
        client, [f"{files.url}/m/a.bin", f"{files.url}/n/a.bin", f"{files.url}/live"]
    )
    entries = await source.walk("")
    assert [(e.path, e.size) for e in entries] == [
        ("a (1).bin", 6),
        ("a.bin", len(BIG)),
        ("live", UNKNOWN_SIZE),
    ]
    assert all(e.mtime_ns == 1445412480 * 10**9 for e in entries)  # Last-Modified
    assert await source.stat("a.bin") == entries[1]
    assert await source.stat("nope") is None
    async with aclosing(source.read("a.bin", chunk_size=1 << 20)) as chunks:
        assert sha256(b"".join([c async for c in chunks])) == sha256(BIG)
    with pytest.raises(SourceNotFound):
        async with aclosing(source.read("other", chunk_size=1024)) as chunks:
            await chunks.__anext__()
    with pytest.raises(UnsupportedStorage):
        await source.open_writer("x", conflict=Conflict.SKIP, tag="t")


async def test_a_missing_url_fails_the_walk(files: FileServer, client: HttpClient) -> None:
    files.files["/here"] = b"x"
    source = UrlImport(client, [f"{files.url}/here", f"{files.url}/gone.bin"])
    with pytest.raises(SourceNotFound) as caught:
        await source.walk("")
    assert caught.value.code == "HTTP404" and "/gone.bin" in caught.value.message


async def test_read_resumes_after_a_drop(files: FileServer, client: HttpClient) -> None:
    files.files["/big.bin"] = BIG
    async with fault_proxy(files.port) as proxy:
        source = UrlImport(client, [f"http://127.0.0.1:{proxy.port}/big.bin"])
        await source.walk("")
        proxy.drop_after(700_000, when=lambda r: r.method == "GET")
        async with aclosing(source.read("big.bin", chunk_size=1 << 20)) as chunks:
            assert sha256(b"".join([c async for c in chunks])) == sha256(BIG)
        assert proxy.dropped == 1
    assert files.requests("GET")[-1].headers["range"].startswith("bytes=")
