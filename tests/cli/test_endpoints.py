"""``streamer cp`` endpoint strings: what each names, and the transfer body built from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamer._cli.copy import _Request, local_files
from streamer.client.endpoints import (
    EndpointError,
    HubRepo,
    LocalPath,
    LocationPath,
    WebUrl,
    parse,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("local-0:models/", LocationPath("local", "local-0", "models/")),
        ("local-0:", LocationPath("local", "local-0", "")),
        ("data.v2:/a b/c", LocationPath("local", "data.v2", "/a b/c")),
        ("s3://bucket/prefix/key", LocationPath("s3", "bucket", "prefix/key")),
        ("S3://bucket", LocationPath("s3", "bucket", "")),
        ("hf://org/repo", HubRepo("org/repo")),
        ("hf://gpt2", HubRepo("gpt2")),
        ("hf://org/repo@v1.0", HubRepo("org/repo", "v1.0")),
        ("hf://org/repo@refs%2Fpr%2F1/sub/dir", HubRepo("org/repo", "refs/pr/1", path="sub/dir")),
        ("hf://datasets/org/set", HubRepo("org/set", repo_type="dataset")),
        ("hf://spaces/org/app@main/app.py", HubRepo("org/app", "main", "space", "app.py")),
        ("https://example.com/a/w.bin?x=1", WebUrl("https://example.com/a/w.bin?x=1")),
        ("http://127.0.0.1:9/f", WebUrl("http://127.0.0.1:9/f")),
        ("./a:b", LocalPath(Path("a:b"))),
        ("/abs/dir/", LocalPath(Path("/abs/dir"), contents=True)),
        ("relative/file.bin", LocalPath(Path("relative/file.bin"))),
        ("../up", LocalPath(Path("../up"))),
    ],
)
def test_parse(text: str, expected: object) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize(
    "text", ["", "s3://", "s3:///key", "hf://", "hf://datasets/", "hf://org/repo@", "ftp://host/f"]
)
def test_malformed_endpoints_are_refused(text: str) -> None:
    with pytest.raises(EndpointError):
        parse(text)


def test_home_is_expanded_for_local_paths() -> None:
    assert parse("~/x") == LocalPath(Path.home() / "x")


@pytest.mark.parametrize(
    ("source", "item_type", "side", "items"),
    [
        ("local-0:models/llama", "directory", "models", [{"path": "llama", "type": "directory"}]),
        ("local-0:models/llama", "file", "models", [{"path": "llama", "type": "file"}]),
        ("local-0:top", "file", "", [{"path": "top", "type": "file"}]),
        ("local-0:models/", "file", "models", [{"path": ".", "type": "directory"}]),
        ("local-0:", "file", "", [{"path": ".", "type": "directory"}]),
    ],
)
def test_location_sources_become_a_base_and_one_item(
    source: str, item_type: str, side: str, items: list[dict[str, str]]
) -> None:
    destination = parse("s3://bucket/backup")
    assert isinstance(destination, LocationPath)
    request = _Request(parse(source), destination, "rename")
    assert request.body(item_type) == {
        "source": {"type": "local", "locationId": "local-0", "path": side},
        "destination": {"type": "s3", "locationId": "bucket", "path": "backup"},
        "items": items,
        "conflictResolution": "rename",
    }


def test_imports_have_no_items() -> None:
    destination = parse("local-0:models")
    assert isinstance(destination, LocationPath)
    body = _Request(parse("hf://org/repo@v2/unet"), destination, "skip").body("directory")
    assert body["source"] == {
        "type": "huggingface",
        "repo": "org/repo",
        "revision": "v2",
        "repoType": "model",
        "files": ["unet"],
    }
    assert "items" not in body
    body = _Request(parse("https://h/w.bin"), destination, "skip").body("directory")
    assert body["source"] == {"type": "url", "urls": ["https://h/w.bin"]}


def test_local_files_of_a_directory_and_its_contents(tmp_path: Path) -> None:
    root = tmp_path / "ckpt"
    (root / "sub").mkdir(parents=True)
    (root / "b.bin").write_bytes(b"b")
    (root / "sub" / "a.bin").write_bytes(b"a")
    (root / "link").symlink_to(root / "b.bin")
    named = local_files(LocalPath(root))
    assert [name for _, name in named] == ["ckpt/b.bin", "ckpt/sub/a.bin"]
    contents = local_files(LocalPath(root, contents=True))
    assert [name for _, name in contents] == ["b.bin", "sub/a.bin"]
    assert local_files(LocalPath(root / "b.bin")) == [(root / "b.bin", "b.bin")]
