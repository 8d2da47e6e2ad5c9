"""A real Label Studio server for the tests that need one, shared by the whole test session.

The fixture ``studio_server`` (tests/conftest.py) starts it; usage in a test module::

    def test_review_round_trip(studio_server, tmp_path):
        ls = studio_server.client()                    # label_studio_sdk.LabelStudio
        project = ls.projects.create(title="t", label_config=...)

    def test_through_the_pipeline(studio_server, monkeypatch):
        studio_server.use(monkeypatch)                 # LABEL_STUDIO_URL / _API_KEY for this test
        ...                                            # code calling pipeline.review.studio.client(root)

The server is started once per session (by the first test that asks; later ones share it)
through :func:`pipeline.review.studio.start`, on a free 127.0.0.1 port, with its data in a temporary
folder and fixed test credentials given to the server directly (no ``.env`` is written). It is
stopped when the session ends. Its venv is ``WHP_STUDIO_VENV`` if set, else ``<repo>/.studio/venv``,
installed on first use (``make studio-venv`` does it ahead; about 1 GB, 1-3 minutes).
A first start runs the migrations: expect about a minute before the first test that uses it.
Tests share one server: create your own project per test and do not rely on the project list.
"""

from __future__ import annotations

import atexit
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.review import studio
from pipeline.review.connection import API_KEY_KEY, URL_KEY
from pipeline.review.credentials import Credentials

REPO = Path(__file__).resolve().parents[1]
TEST_CREDENTIALS = Credentials(
    username="tests@whp.local", password="whp-tests-password-1", api_key="whp-tests-token-0123456789abcdef"
)
START_TIMEOUT_S = 300.0  # a loaded two-core CI machine runs the first start's migrations slowly


@dataclass(frozen=True)
class StudioServer:
    """A running test server: ``url`` (``http://127.0.0.1:<port>``), its ``api_key``, its project ``root``."""

    url: str
    api_key: str
    root: Path
    credentials: Credentials

    def client(self):
        """A checked ``label_studio_sdk.LabelStudio`` client for this server."""
        return studio.client(self.root, url=self.url, api_key=self.api_key)

    def environ(self) -> dict[str, str]:
        """``LABEL_STUDIO_URL`` and ``LABEL_STUDIO_API_KEY`` for this server."""
        return {URL_KEY: self.url, API_KEY_KEY: self.api_key}

    def use(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Point ``pipeline.review.studio.client()`` (and anything reading the settings) at this server for one test."""
        for key, value in self.environ().items():
            monkeypatch.setenv(key, value)


def free_loopback_port() -> int:
    """A port nothing listens on now, chosen by the OS (so parallel test sessions do not collide)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def studio_venv() -> Path:
    configured = os.environ.get(studio.VENV_KEY)
    return Path(configured).resolve() if configured else REPO / studio.STUDIO_DIR / "venv"


def start_test_server(root: Path) -> StudioServer:
    """Start a server for the tests with its data under ``root`` (stop it with ``studio.stop(root)``)."""
    port = free_loopback_port()
    state = studio.start(root, port=port, creds=TEST_CREDENTIALS, venv=studio_venv(), timeout=START_TIMEOUT_S)
    assert state.url is not None
    atexit.register(studio.stop, root)  # an interrupted session must not leave a server behind
    return StudioServer(url=state.url, api_key=TEST_CREDENTIALS.api_key, root=root, credentials=TEST_CREDENTIALS)
