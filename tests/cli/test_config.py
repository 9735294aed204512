"""Where the client finds its node: flags, then environment, then client.yml."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from streamer.client.config import (
    DEFAULT_SERVER,
    ClientConfig,
    ClientConfigError,
    config_path,
    resolve,
    save,
)


def test_path_respects_xdg_config_home(tmp_path: Path) -> None:
    assert config_path({"XDG_CONFIG_HOME": str(tmp_path)}) == tmp_path / "streamer/client.yml"
    assert config_path({"HOME": str(tmp_path)}) == tmp_path / ".config/streamer/client.yml"


def test_flags_win_over_environment_over_file(tmp_path: Path) -> None:
    path = tmp_path / "client.yml"
    save(ClientConfig("http://file:1", "file-token"), path)
    env = {"STREAMER_URL": "http://env:2", "STREAMER_TOKEN": "env-token"}
    assert resolve("http://flag:3", "flag-token", env=env, path=path) == ClientConfig(
        "http://flag:3", "flag-token"
    )
    assert resolve(env=env, path=path) == ClientConfig("http://env:2", "env-token")
    assert resolve(env={}, path=path) == ClientConfig("http://file:1", "file-token")
    assert resolve(env={}, path=tmp_path / "none.yml") == ClientConfig(DEFAULT_SERVER, None)


def test_saved_file_is_private_and_replaced_whole(tmp_path: Path) -> None:
    path = tmp_path / "fresh" / "streamer" / "client.yml"
    save(ClientConfig("http://a:1", "t1"), path)
    save(ClientConfig("http://b:2", "t2"), path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert resolve(env={}, path=path) == ClientConfig("http://b:2", "t2")
    assert [p.name for p in path.parent.iterdir()] == ["client.yml"]


@pytest.mark.parametrize("text", ["[1, 2]", "server: [x]", "other: key", "server: 'a\n"])
def test_a_malformed_file_is_an_error_naming_it(tmp_path: Path, text: str) -> None:
    path = tmp_path / "client.yml"
    path.write_text(text)
    with pytest.raises(ClientConfigError, match=r"client\.yml"):
        resolve(env={}, path=path)
