"""The managed Label Studio server: start, health, token, status, errors, credentials, stop.

Two real servers at most: the session's shared one (tests/studio.py) and one lifecycle start/stop
in a temporary project.
"""

from __future__ import annotations

import json
import socket
import stat
import subprocess
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.review import credentials, studio
from pipeline.review.connection import API_KEY_KEY, URL_KEY, StudioError
from tests.studio import free_loopback_port, studio_venv

runner = CliRunner()
SETTINGS = (credentials.USERNAME_KEY, credentials.PASSWORD_KEY, API_KEY_KEY, URL_KEY)


@pytest.fixture()
def no_studio_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """No Label Studio settings from the developer's environment; the shared server venv."""
    for key in SETTINGS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv(studio.VENV_KEY, str(studio_venv()))


def health(url: str) -> int | None:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
            return response.status
    except OSError:
        return None


# --- the shared server -------------------------------------------------------------------------


def test_server_is_healthy_and_accepts_its_token(studio_server):
    assert studio_server.url.startswith("http://127.0.0.1:")
    assert health(studio_server.url) == 200
    assert isinstance(list(studio_server.client().projects.list()), list)
    state = studio.status(studio_server.root, api_key=studio_server.api_key)
    assert (state.running, state.healthy, state.token_accepted, state.url) == (True, True, True, studio_server.url)


def test_client_from_settings_uses_the_configured_server(studio_server, monkeypatch, tmp_path: Path):
    studio_server.use(monkeypatch)
    assert isinstance(list(studio.client(tmp_path).projects.list()), list)


def test_wrong_token_is_refused_naming_the_url_not_the_token(studio_server, monkeypatch, tmp_path: Path):
    wrong = "not-the-right-token-4711"
    monkeypatch.setenv(URL_KEY, studio_server.url)
    monkeypatch.setenv(API_KEY_KEY, wrong)
    with pytest.raises(StudioError) as caught:
        studio.client(tmp_path)
    message = str(caught.value)
    assert studio_server.url in message and "LABEL_STUDIO_API_KEY" in message
    assert wrong not in message and studio_server.api_key not in message
    assert studio.status(studio_server.root, api_key=wrong).token_accepted is False


# --- no server needed --------------------------------------------------------------------------


def test_closed_port_is_unreachable(tmp_path: Path):
    url = f"http://127.0.0.1:{free_loopback_port()}"
    with pytest.raises(StudioError, match="unreachable") as caught:
        studio.client(tmp_path, url=url, api_key="some-token-123456")
    assert url in str(caught.value) and "whp studio start" in str(caught.value)
    assert "some-token-123456" not in str(caught.value)


def test_no_server_configured(tmp_path: Path, no_studio_settings):
    with pytest.raises(StudioError, match="no Label Studio server"):
        studio.client(tmp_path)


def test_stop_tolerates_a_stale_record(tmp_path: Path):
    gone = subprocess.Popen(["true"])
    gone.wait()
    studio.studio_dir(tmp_path).mkdir()
    studio.record_path(tmp_path).write_text(json.dumps({"pid": gone.pid, "port": 1, "url": "http://127.0.0.1:1"}))
    assert studio.status(tmp_path).running is False
    assert studio.stop(tmp_path) is False
    assert not studio.record_path(tmp_path).exists()


# --- one real start/stop in a fresh project ----------------------------------------------------


def test_lifecycle_busy_port_generated_credentials_masked_output(tmp_path: Path, no_studio_settings):
    root = tmp_path / "project"
    root.mkdir()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        started = runner.invoke(app, ["studio", "start", "-C", str(root), "--port", str(taken), "--timeout", "300"])
    try:
        assert started.exit_code == 0, started.output
        record = json.loads(studio.record_path(root).read_text())
        assert record["port"] != taken
        url = f"http://127.0.0.1:{record['port']}"
        assert f"port {taken} is busy" in started.output and url in started.output
        assert health(url) == 200

        env_file = root / ".env"
        assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
        creds = credentials.credentials(root)
        assert creds is not None and creds.username == "reviewer@whp.local"

        shown = runner.invoke(app, ["studio", "status", "-C", str(root)])
        assert shown.exit_code == 0, shown.output
        assert url in shown.output
        for output in (started.output, shown.output):
            for secret in (creds.password, creds.api_key):
                assert secret not in output
                assert "********" + secret[-4:] in output
        for path in (studio.record_path(root), studio.log_path(root)):
            assert creds.api_key not in path.read_text() and creds.password not in path.read_text()

        # Without LABEL_STUDIO_URL the client finds the managed server through its record.
        assert isinstance(list(studio.client(root).projects.list()), list)
        again = studio.start(root)
        assert (again.url, again.pid) == (url, record["pid"])
    finally:
        stopped = runner.invoke(app, ["studio", "stop", "-C", str(root)])
    assert stopped.exit_code == 0, stopped.output
    state = studio.status(root)
    assert not state.running and not state.healthy and state.url is None
    assert health(url) is None
    assert runner.invoke(app, ["studio", "status", "-C", str(root)]).exit_code == 1
