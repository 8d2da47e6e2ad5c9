"""`whp doctor`'s Label Studio check against a real server: the same check as `whp studio status`."""

from __future__ import annotations

from pathlib import Path

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
