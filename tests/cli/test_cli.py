"""`whp query`, `whp datasets` and `whp doctor` on real pipeline outputs."""

from __future__ import annotations

import csv
import io
import json
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline import ingest
from pipeline.cli import app
from pipeline.params import load_params
from pipeline.store import dataset_dir, read_dataset

runner = CliRunner()


@pytest.fixture()
def built(small_project: Path) -> Path:
    """The small project with the ingest datasets written (without DVC, for speed)."""
    ingest.run(load_params(small_project / "params.yaml"), root=small_project)
    return small_project


def whp(*args: str, input: str | None = None):
    return runner.invoke(app, list(args), input=input)


def test_query_json_counts_match_the_dataset(built: Path):
    result = whp("query", "-C", str(built), "--format", "json",
                 "select corpus, count(*) as n from passages group by corpus order by corpus")
    assert result.exit_code == 0, result.output
    expected = read_dataset("passages", built)["corpus"].value_counts().sort_index()
    assert [(r["corpus"], r["n"]) for r in json.loads(result.stdout)] == list(expected.items())


def test_query_from_file_as_csv_joins_documents_and_passages(built: Path, tmp_path: Path):
    sql = tmp_path / "q.sql"
    sql.write_text(
        "select p.passage_id, substr(d.text, p.char_start + 1, p.char_end - p.char_start) = p.text as same\n"
        "from passages p join documents d using (doc_id) order by 1;"
    )
    result = whp("query", "-C", str(built), "--format", "csv", "--file", str(sql))
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == len(read_dataset("passages", built))
    assert {row["same"] for row in rows} == {"True"}


def test_interactive_prompt_runs_statements_until_quit(built: Path):
    result = whp("query", "-C", str(built), "--format", "csv",
                 input="select count(*) as n\nfrom documents;\n.quit\nselect 'never';\n")
    assert result.exit_code == 0, result.output
    assert "n\r\n2\r\n" in result.stdout or "n\n2\n" in result.stdout
    assert "never" not in result.stdout


@pytest.mark.parametrize("statement", [
    "copy passages to 'stolen.csv'",
    "attach 'other.db'",
    "install httpfs",
    "select * from read_csv('/etc/passwd')",
])
def test_query_is_read_only(built: Path, statement: str):
    before = sorted(p.name for p in (built / "data").rglob("*"))
    result = whp("query", "-C", str(built), statement)
    assert result.exit_code == 1
    assert "error" in result.output.lower()
    assert sorted(p.name for p in (built / "data").rglob("*")) == before
    assert not (built / "stolen.csv").exists()


def test_query_invalid_sql_is_a_clear_error(built: Path):
    result = whp("query", "-C", str(built), "select nope from passages")
    assert result.exit_code == 1
    assert "nope" in result.output


def test_datasets_lists_every_dataset_with_its_manifest(built: Path):
    result = whp("datasets", "-C", str(built), "--format", "json", "--verify")
    assert result.exit_code == 0, result.output
    entries = {e["dataset"]: e for e in json.loads(result.stdout)}
    assert set(entries) == {"documents", "documents_rejects", "passages", "passages_rejects"}
    passages = read_dataset("passages", built)
    assert entries["passages"]["rows"] == len(passages)
    assert entries["passages"]["columns"] == list(passages.columns)
    assert entries["passages"]["stage"] == "ingest"
    assert all(e["verified"] for e in entries.values())


def test_datasets_verify_catches_a_tampered_part(built: Path):
    part = next(dataset_dir("documents", built).glob("part-*.parquet"))
    part.write_bytes(part.read_bytes() + b"tampered")
    result = whp("datasets", "-C", str(built), "--format", "json", "--verify")
    assert result.exit_code == 1
    entries = {e["dataset"]: e for e in json.loads(result.stdout)}
    assert entries["documents"]["verified"] is False and entries["passages"]["verified"] is True


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_doctor_reports_bad_params_and_unreachable_label_studio(built: Path, monkeypatch):
    (built / "params.yaml").write_text((built / "params.yaml").read_text() + "typo_section: 1\n")
    monkeypatch.setenv("LABEL_STUDIO_URL", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "test-token")
    result = runner.invoke(app, ["doctor", "-C", str(built)], env={"COLUMNS": "250"})
    assert result.exit_code == 1
    assert "typo_section" in result.stdout
    assert "unreachable" in result.stdout


def test_doctor_passes_on_a_ready_project_and_reads_env_file(built: Path, monkeypatch):
    # LABEL_STUDIO_URL only in the ignored .env, without a token: doctor must read .env and flag it.
    (built / ".env").write_text("LABEL_STUDIO_URL=http://127.0.0.1:1\n")
    result = runner.invoke(app, ["doctor", "-C", str(built)], env={"COLUMNS": "250"})
    assert result.exit_code == 1
    assert "LABEL_STUDIO_API_KEY is not set" in result.stdout
    (built / ".env").unlink()
    result = runner.invoke(app, ["doctor", "-C", str(built)], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.stdout
    assert "FAIL" not in result.stdout
