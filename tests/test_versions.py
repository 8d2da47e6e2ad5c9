"""Dataset versions: real git tags and real DVC (repro, push, dvc.api) in a small project.

The versioned dataset here is ``passages`` (built by ``dvc repro ingest`` in seconds); the code
is the same for the training dataset, ``dataset``.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.errors import PipelineError
from pipeline.store import read_dataset, read_manifest
from pipeline.versions import (
    DatasetIntegrityError, DatasetVersionError, VersionNotFoundError, read_manifest_at, read_version, resolve, tag,
    versions,
)
from tests.conftest import run

DVC = [sys.executable, "-m", "dvc"]
# What `dvc remote add -d local <url>` writes, without a DVC start-up.
REMOTE_CONFIG = "[core]\n    remote = local\n['remote \"local\"']\n    url = {url}\n"


def _commit(root: Path, message: str) -> str:
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-q", "-m", message], root)
    return run(["git", "rev-parse", "HEAD"], root).stdout.strip()


def _set_max_chars(root: Path, value: int) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["ingest"]["max_passage_chars"] = value
    (root / "params.yaml").write_text(yaml.safe_dump(params))


@pytest.fixture()
def project(small_project: Path) -> Path:
    """The small project with a committed default remote inside it, as the real project has."""
    (small_project / ".dvc" / "config").write_text(REMOTE_CONFIG.format(url="../dvc-remote"))
    _commit(small_project, "default DVC remote")
    return small_project


def test_two_tagged_versions_read_back_from_cache_and_remote(project: Path):
    run([*DVC, "repro", "ingest"], project)
    v1_commit = _commit(project, "passages at 400 chars")
    v1_rows = read_dataset("passages", project)
    v1_manifest = read_manifest("passages", project)
    v1_bytes = (project / "data" / "passages" / "part-00000.parquet").read_bytes()

    assert tag("v1", root=project, dataset="passages", message="first cut") == "dataset/v1"
    with pytest.raises(DatasetVersionError, match="already exists"):
        tag("v1", root=project, dataset="passages")

    _set_max_chars(project, 60)
    with pytest.raises(DatasetVersionError, match="not up to date.*dvc repro"):
        tag("v2", root=project, dataset="passages")
    run([*DVC, "repro", "ingest"], project)
    with pytest.raises(DatasetVersionError, match=r"uncommitted changes in dvc\.lock.*git commit"):
        tag("v2", root=project, dataset="passages")
    _commit(project, "passages at 60 chars")
    tag("v2", root=project, dataset="passages")

    listed = versions(root=project, dataset="passages")
    assert [v["version"] for v in listed] == ["v1", "v2", "workspace"]
    v1, v2, workspace = listed
    assert v1["commit"] == v1_commit and v1["message"] == "first cut"
    assert (v1["content_sha256"], v1["rows"]) == (v1_manifest["content_sha256"], v1_manifest["rows"])
    assert v2["content_sha256"] != v1["content_sha256"] and v2["rows"] > v1["rows"]
    assert workspace["content_sha256"] == v2["content_sha256"]
    assert "error" not in v1 and "error" not in v2
    # The tag message alone (git show) says what the version holds.
    message = run(["git", "tag", "-l", "--format=%(contents)", "dataset/v1"], project).stdout
    assert f"Content-SHA256: {v1_manifest['content_sha256']}" in message and f"Rows: {len(v1_rows)}" in message

    # The workspace holds v2; v1 comes from the DVC cache, then (cache gone too) from the remote.
    assert read_manifest_at("v1", root=project, dataset="passages")["params"]["ingest"]["max_passage_chars"] == 400
    pd.testing.assert_frame_equal(read_version("v1", root=project, dataset="passages"), v1_rows)
    shutil.rmtree(project / "data" / "passages")
    pd.testing.assert_frame_equal(read_version("dataset/v1", root=project, dataset="passages"), v1_rows)
    shutil.rmtree(project / ".dvc" / "cache")
    pd.testing.assert_frame_equal(read_version(v1_commit, root=project, dataset="passages"), v1_rows)
    assert read_version("v1", root=project, dataset="passages", columns=["text"]).columns.tolist() == ["text"]

    result = CliRunner().invoke(app, ["dataset", "versions", "--format", "json", "-d", "passages", "-C", str(project)])
    assert result.exit_code == 0, result.output
    assert [(v["version"], v["rows"]) for v in json.loads(result.stdout)] == [
        ("v1", v1["rows"]), ("v2", v2["rows"]), ("workspace", v2["rows"])
    ]
    result = CliRunner().invoke(app, ["dataset", "show", "v1", "--format", "json", "-d", "passages",
                                      "-C", str(project)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["content_sha256"] == v1_manifest["content_sha256"]

    # A remote copy with one bit flipped is an error, never silently different training data.
    remote_files = (project / "dvc-remote").rglob("*")
    v1_part = next(p for p in remote_files if p.is_file() and p.read_bytes() == v1_bytes)
    v1_part.chmod(0o644)
    v1_part.write_bytes(v1_bytes[:-1] + bytes([v1_bytes[-1] ^ 1]))
    with pytest.raises(DatasetIntegrityError, match="part-00000.parquet has sha256"):
        read_version("v1", root=project, dataset="passages")


def test_tag_refuses_a_project_without_a_committed_remote(small_project: Path):
    with pytest.raises(DatasetVersionError, match="no default DVC remote.*dvc remote add -d"):
        tag("v1", root=small_project, dataset="passages")
    (small_project / ".dvc" / "config").write_text(REMOTE_CONFIG.format(url="../elsewhere"))
    with pytest.raises(DatasetVersionError, match=r"uncommitted changes in \.dvc/config"):
        tag("v1", root=small_project, dataset="passages")
    assert run(["git", "tag", "-l"], small_project).stdout == ""


def test_tag_refuses_a_dataset_never_built_and_a_reserved_name(project: Path):
    with pytest.raises(PipelineError, match="no manifest.*dvc repro"):
        tag("v1", root=project, dataset="passages")
    with pytest.raises(DatasetVersionError, match="not a usable version name"):
        tag("workspace", root=project, dataset="passages")
    with pytest.raises(DatasetVersionError, match="not a usable version name"):
        tag("a b", root=project, dataset="passages")


def test_resolve_tags_revisions_and_the_workspace(small_project: Path):
    head = run(["git", "rev-parse", "HEAD"], small_project).stdout.strip()
    run(["git", "tag", "-a", "dataset/v1", "-m", "v1"], small_project)
    assert resolve("v1", root=small_project) == head
    assert resolve("dataset/v1", root=small_project) == head
    assert resolve(head[:10], root=small_project) == head
    assert resolve("HEAD", root=small_project) == head
    assert resolve(None, root=small_project) == resolve("workspace", root=small_project) == "workspace"
    with pytest.raises(VersionNotFoundError, match=r"unknown dataset version 'v9'.*known versions: v1"):
        resolve("v9", root=small_project)

    result = CliRunner().invoke(app, ["dataset", "show", "v9", "-C", str(small_project)])
    assert result.exit_code == 1
    assert "known versions: v1" in result.stderr


def test_a_pinned_version_that_does_not_exist_is_a_clear_error(small_project: Path):
    from pipeline.params import parse_params
    from pipeline.versions import VersionNotFoundError, read_pinned

    params = parse_params({"corpus": {"forget": ["x.txt"]}, "finetune": {"dataset": "v404"}})
    with pytest.raises(VersionNotFoundError, match="v404"):
        read_pinned(params, root=small_project)


def test_tag_without_a_git_identity_pushes_nothing_and_tags_nothing(project: Path, tmp_path: Path, monkeypatch):
    run([*DVC, "repro", "ingest"], project)
    _commit(project, "passages")
    for key in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.gitconfig
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    run(["git", "config", "user.useConfigOnly", "true"], project)  # no guessing from the host name
    remote = project / "dvc-remote"

    with pytest.raises(DatasetVersionError, match=r"no identity to sign the tag.*nothing was pushed.*git config user\.email"):
        tag("v1", root=project, dataset="passages")
    assert not remote.exists() or not any(p.is_file() for p in remote.rglob("*"))
    assert run(["git", "tag", "-l"], project).stdout == ""
    result = CliRunner().invoke(app, ["dataset", "tag", "v1", "-d", "passages", "-C", str(project)])
    assert result.exit_code == 1 and "git config user.name" in " ".join(result.stderr.split())

    run(["git", "config", "user.name", "Reviewer"], project)
    run(["git", "config", "user.email", "reviewer@example.invalid"], project)
    assert tag("v1", root=project, dataset="passages") == "dataset/v1"
    assert any(p.is_file() for p in remote.rglob("*"))


def test_a_truncated_manifest_at_a_version_is_an_error_naming_it(project: Path):
    run([*DVC, "repro", "ingest"], project)
    _commit(project, "passages")
    path = project / "data" / "manifests" / "passages.json"
    path.write_text(path.read_text()[:40])
    with pytest.raises(PipelineError, match=r"data/manifests/passages\.json: not a valid manifest \(truncated.*dvc checkout"):
        read_manifest_at(None, root=project, dataset="passages")
    run([*DVC, "commit", "-f", "ingest"], project)  # the truncated file becomes a committed version's
    _commit(project, "truncated manifest committed")
    with pytest.raises(PipelineError, match=r"data/manifests/passages\.json at HEAD: not a valid manifest"):
        read_manifest_at("HEAD", root=project, dataset="passages")
    [workspace] = versions(root=project, dataset="passages")  # listed, with what is wrong
    assert workspace["version"] == "workspace" and workspace["rows"] is None
    assert "passages.json: not a valid manifest" in workspace["error"]
