"""pipeline/review/connection.py: which servers are reached without a proxy (the proxy itself is
tested with a real server in tests/cli/test_doctor.py)."""

from __future__ import annotations

import pytest

from pipeline.review.connection import http_client, is_loopback


@pytest.mark.parametrize(("url", "loopback"), [
    ("http://127.0.0.1:8080", True), ("http://127.8.9.10/", True), ("http://[::1]:8080", True),
    ("http://localhost:8080", True), ("http://LOCALHOST.:1", True), ("http://studio.localhost", True),
    ("http://10.0.0.5:8080", False), ("https://labels.example.org", False), ("http://127.0.0.1.nip.io", False),
])
def test_loopback_servers_are_recognised(url: str, loopback: bool):
    assert is_loopback(url) is loopback


def test_the_sdk_client_ignores_proxy_settings_only_for_loopback(monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    with http_client("http://127.0.0.1:8080", timeout=1.0) as local, \
            http_client("http://labels.example.org", timeout=1.0) as remote:
        assert local.trust_env is False and remote.trust_env is True
        assert local.timeout.read == 1.0 and local.follow_redirects
