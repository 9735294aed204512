"""Config: defaults, strictness, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamer._config import ensure_location_dirs, from_mapping, load
from streamer._errors import ConfigError


def test_defaults_without_a_file() -> None:
    config = load(None)
    assert config.server.host_port == ("127.0.0.1", 8080)
    assert config.auth.enabled and config.auth.tokens == []
    assert config.state_dir == "./state"
    assert config.transfers.max_concurrent == 2
    assert config.transfers.retention_hours == 168
    assert [(loc.id, loc.path) for loc in config.locations.local] == [("local-0", "./data")]


def test_full_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text(
        "server: {bind: '[::1]:9000'}\n"
        "auth: {enabled: true, tokens: [abcdefghijklmnopqrstuvwxyz]}\n"
        f"state_dir: {tmp_path}/s\n"
        "transfers: {max_concurrent: 8, retention_hours: 1}\n"
        "locations: {local: [{id: a, path: /x}, {id: b, path: /y}]}\n"
    )
    config = load(str(path))
    assert config.server.host_port == ("::1", 9000)
    assert [loc.id for loc in config.locations.local] == ["a", "b"]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"sever": {}}, "unknown key 'sever'"),
        ({"server": {"bnd": "x"}}, "unknown key 'server.bnd'"),
        (
            {"locations": {"local": [{"id": "a", "path": "p", "root": 1}]}},
            "locations.local[0].root",
        ),
        ({"transfers": {"max_concurrent": "4"}}, "transfers.max_concurrent"),
        ({"transfers": {"max_concurrent": 65}}, "transfers.max_concurrent"),
        ({"auth": {"enabled": "yes"}}, "auth.enabled"),
        ({"server": {"bind": "8080"}}, "server.bind"),
        ({"locations": {"local": [{"id": "../x", "path": "p"}]}}, "locations.local[0].id"),
        (
            {"locations": {"local": [{"id": "a", "path": "p"}, {"id": "a", "path": "q"}]}},
            "duplicate",
        ),
        ({"auth": {"tokens": ["short"]}}, "auth.tokens[0]"),
    ],
)
def test_bad_config_names_the_key(raw: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        from_mapping(raw)


def test_unreadable_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load(str(tmp_path / "missing.yml"))
    (tmp_path / "bad.yml").write_text("server: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load(str(tmp_path / "bad.yml"))


def test_location_dirs_are_created_or_reported(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    config = from_mapping(
        {"locations": {"local": [{"id": "a", "path": str(tmp_path / "new/dir")}]}}
    )
    ensure_location_dirs(config)
    assert (tmp_path / "new/dir").is_dir()
    blocked = from_mapping(
        {"locations": {"local": [{"id": "b", "path": str(tmp_path / "file/x")}]}}
    )
    with pytest.raises(ConfigError, match=r"locations.local\[b\]"):
        ensure_location_dirs(blocked)
