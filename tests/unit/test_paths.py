import pytest

from streamer._errors import InvalidPath
from streamer._paths import clean_base, clean_relative, renamed


@pytest.mark.parametrize(
    ("raw", "clean"),
    [("/datasets", "datasets"), ("models/", "models"), ("", ""), ("/", ""), ("a//./b/", "a/b")],
)
def test_base_paths_are_location_relative(raw: str, clean: str) -> None:
    assert clean_base(raw) == clean


@pytest.mark.parametrize("raw", ["..", "a/../b", "a/..", "x\x00y", "a\\b", "a/" + "x" * 256])
def test_hostile_paths_are_refused(raw: str) -> None:
    with pytest.raises(InvalidPath):
        clean_base(raw)
    with pytest.raises(InvalidPath):
        clean_relative(raw)


def test_item_paths_must_be_relative() -> None:
    assert clean_relative("weights/") == "weights"
    with pytest.raises(InvalidPath, match="relative"):
        clean_relative("/etc/passwd")


@pytest.mark.parametrize(
    ("path", "n", "expected"),
    [
        ("a/model.bin", 1, "a/model (1).bin"),
        ("x.tar.gz", 2, "x.tar (2).gz"),
        ("README", 3, "README (3)"),
        (".env", 1, ".env (1)"),
    ],
)
def test_rename_candidates(path: str, n: int, expected: str) -> None:
    assert renamed(path, n) == expected
