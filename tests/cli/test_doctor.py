"""`whp doctor`'s Label Studio check against a real server (the same check as `whp studio status`),
and loopback traffic that never goes through a proxy."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.cli.doctor import check_label_studio
from pipeline.review.connection import API_KEY_KEY, URL_KEY


def test_doctor_finds_the_server_healthy_and_the_key_accepted(studio_server, monkeypatch, tmp_path: Path):
    studio_server.use(monkeypatch)
    check = check_label_studio(tmp_path)
    assert (check.status, check.detail) == ("ok", f"{studio_server.url} healthy, key accepted")


def test_doctor_reports_a_refused_key_without_showing_it(studio_server, monkeypatch, tmp_path: Path):
    monkeypatch.setenv(URL_KEY, studio_server.url)
    monkeypatch.setenv(API_KEY_KEY, "not-the-server-token-0042")
    check = check_label_studio(tmp_path)
    assert check.status == "fail"
    assert check.detail == f"{studio_server.url} refuses {API_KEY_KEY} (HTTP 401)"
    assert "0042" not in check.detail + check.fix


class FakeProxy:
    """A listening HTTP proxy on 127.0.0.1 that records what reaches it and answers 502."""

    def __init__(self) -> None:
        self.connections: list[bytes] = []
        self._socket = socket.create_server(("127.0.0.1", 0))
        self._socket.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._socket.getsockname()[1]}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._socket.accept()
            except TimeoutError:
                continue
            with connection:
                connection.settimeout(2.0)
                try:
                    received = connection.recv(65536)
                    connection.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                except OSError:
                    received = b""
                self.connections.append(received)

    def __enter__(self) -> FakeProxy:
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        self._thread.join()
        self._socket.close()


def test_loopback_never_goes_through_a_proxy(studio_server, review_root: Path, monkeypatch):
    """With every proxy variable pointing at a listening proxy, doctor and the review commands
    talk to the local server directly: the proxy receives nothing, the API key least of all."""
    import httpx

    runner = CliRunner()
    with FakeProxy() as proxy:
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
            monkeypatch.setenv(name, proxy.url)
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        # The proxy works: a client that trusts the environment sends it the request, key and all.
        with httpx.Client(timeout=5.0) as trusting:
            assert trusting.get(f"{studio_server.url}/health", headers={"Authorization": "Token canary-4711"}).status_code == 502
        assert len(proxy.connections) == 1 and b"canary-4711" in proxy.connections[0]
        proxy.connections.clear()

        studio_server.use(monkeypatch)
        sdk = studio_server.client()
        for project in sdk.projects.list():
            if project.title.startswith("whp-"):
                sdk.projects.delete(id=project.id)
        pushed = runner.invoke(app, ["review", "push", "anchors", "-C", str(review_root)])
        assert pushed.exit_code == 0, pushed.output
        shown = runner.invoke(app, ["review", "status", "anchors", "--format", "json", "-C", str(review_root)])
        assert shown.exit_code == 0, shown.output
        assert json.loads(shown.stdout)["tasks"] == 3
        doctor = runner.invoke(app, ["doctor", "-C", str(review_root)], env={"COLUMNS": "250"})
        assert f"{studio_server.url} healthy, key accepted" in doctor.stdout, doctor.stdout
    assert not any(studio_server.api_key.encode() in received for received in proxy.connections)
    assert proxy.connections == []
