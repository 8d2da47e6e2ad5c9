"""pipeline/review/credentials.py: the local server's account and token, generated into an ignored .env."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pipeline.review import credentials, studio
from pipeline.review.connection import API_KEY_KEY, URL_KEY, StudioError


@pytest.fixture()
def no_studio_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """No Label Studio settings from the developer's environment."""
    for key in (credentials.USERNAME_KEY, credentials.PASSWORD_KEY, API_KEY_KEY, URL_KEY):
        monkeypatch.delenv(key, raising=False)


def test_no_new_credentials_for_an_existing_server_database(tmp_path: Path, no_studio_settings):
    studio.data_dir(tmp_path).mkdir(parents=True)
    (studio.data_dir(tmp_path) / "label_studio.sqlite3").write_bytes(b"")
    with pytest.raises(StudioError, match="already holds a Label Studio account"):
        credentials.ensure_credentials(tmp_path, server_data=studio.data_dir(tmp_path))
    assert not (tmp_path / ".env").exists()


def test_secrets_never_go_to_a_env_file_git_tracks(tmp_path: Path, no_studio_settings):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    with pytest.raises(StudioError, match="not ignored by git"):
        credentials.ensure_credentials(tmp_path, server_data=studio.data_dir(tmp_path))
    (tmp_path / ".gitignore").write_text(".env\n")
    creds = credentials.ensure_credentials(tmp_path, server_data=studio.data_dir(tmp_path))
    assert 6 <= len(creds.api_key) <= 40 and creds.api_key not in repr(creds)


def test_mask_keeps_only_the_last_four():
    assert credentials.mask("abcdef123456") == "********3456"
    assert credentials.mask("abc") == "********"
    assert credentials.mask(None) == "(not set)"
