"""`whp query`, `whp datasets` and `whp doctor` on real pipeline outputs."""

from __future__ import annotations

import csv
import io
import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline import ingest
from pipeline.cli import app
from pipeline.params import load_params
from pipeline.store import ManifestError, dataset_dir, read_dataset, read_manifest
from tests.conftest import REPO

runner = CliRunner()


@pytest.fixture()
def built(small_project: Path) -> Path:
    """The small project with the ingest datasets written (without DVC, for speed)."""
    ingest.run(load_params(small_project / "params.yaml"), root=small_project)
    return small_project


def whp(*args: str, input: str | None = None):
    return runner.invoke(app, list(args), input=input, env={"COLUMNS": "400"})  # no wrapped paths


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


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_a_truncated_part_breaks_only_its_own_dataset(built: Path):
    _truncate(next(dataset_dir("documents", built).glob("part-*.parquet")))
    ok = whp("query", "-C", str(built), "--format", "json", "select count(*) as n from passages")
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout) == [{"n": len(read_dataset("passages", built))}]
    assert "dataset 'documents' cannot be read" in " ".join(ok.stderr.split())  # a warning, once

    bad = whp("query", "-C", str(built), "select count(*) from documents")
    assert bad.exit_code == 1
    message = " ".join(bad.stderr.split())
    assert "dataset 'documents' cannot be read" in message and "dvc checkout ingest" in message
    assert "dvc repro ingest" in message


def test_a_part_damaged_inside_names_its_dataset_when_read(built: Path):
    """A part whose footer survives binds fine; reading its pages fails, and says which dataset."""
    part = next(dataset_dir("passages", built).glob("part-*.parquet"))
    data = bytearray(part.read_bytes())
    for offset in range(8, len(data) // 2):  # the column pages, before the footer
        data[offset] = 0xAB
    part.write_bytes(bytes(data))
    result = whp("query", "-C", str(built), "select max(length(text)) from passages")
    assert result.exit_code == 1
    message = " ".join(result.stderr.split())
    assert "dataset 'passages' cannot be read" in message and "dvc checkout ingest" in message


@pytest.mark.parametrize("path", [".tmp/secret.csv", "data/manifests/passages.json", "data/.transactions/x.csv",
                                  "params.yaml"])
def test_query_reads_nothing_but_the_dataset_folders(built: Path, monkeypatch, path: str):
    # DuckDB's default spill folder, `.tmp` under the working folder, is readable unless closed.
    monkeypatch.chdir(built)
    (built / ".tmp").mkdir(exist_ok=True)
    (built / ".tmp" / "secret.csv").write_text("secret\n42\n")
    (built / "data" / ".transactions").mkdir(exist_ok=True)
    (built / "data" / ".transactions" / "x.csv").write_text("a\n1\n")
    for target in (path, str(built / path)):
        reader = "read_text" if path.endswith((".json", ".yaml")) else "read_csv"
        result = whp("query", "-C", str(built), f"select * from {reader}('{target}')")
        assert result.exit_code == 1, (target, result.stdout)
        assert "42" not in result.stdout and "Permission" in result.stderr


def test_query_limit_stops_after_n_rows_in_every_format(built: Path):
    sql = "select i from range(100000) t(i)"
    csv_out = whp("query", "-C", str(built), "--format", "csv", "--limit", "7", sql)
    assert csv_out.stdout.split() == ["i", *map(str, range(7))]
    as_json = whp("query", "-C", str(built), "--format", "json", "-n", "3", sql)
    assert json.loads(as_json.stdout) == [{"i": 0}, {"i": 1}, {"i": 2}]
    table = runner.invoke(app, ["query", "-C", str(built), sql], env={"COLUMNS": "120"})
    assert table.exit_code == 0
    assert "1000 row(s); more not shown" in " ".join(table.stdout.split())
    empty = whp("query", "-C", str(built), "--format", "json", "select 1 as x where false")
    assert json.loads(empty.stdout) == []


def test_query_streams_a_large_result_in_bounded_memory(built: Path, tmp_path: Path):
    """300,000 rows of 1,000 characters (286 MiB of text, more as Python objects): printed as they
    are fetched, they raise the process's peak memory by a small fraction of that (2-core CPU,
    loaded: +51 MiB over `select 1`; holding the result, as `whp query` used to, adds the lot)."""
    rows, width = 300_000, 1000
    # A wrapper whose only child is the CLI: its RUSAGE_CHILDREN is the CLI's peak memory.
    wrapper = tmp_path / "measure.py"
    wrapper.write_text(
        "import resource, subprocess, sys\n"
        "child = subprocess.Popen([sys.executable, '-m', 'pipeline.cli', *sys.argv[1:]], stdout=subprocess.PIPE)\n"
        "lines = sum(chunk.count(b'\\n') for chunk in iter(lambda: child.stdout.read(1 << 20), b''))\n"
        "child.wait()\n"
        "print(child.returncode, lines, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)\n"
    )

    def peak(sql: str) -> tuple[int, int, int]:
        done = subprocess.run([sys.executable, str(wrapper), "query", "-C", str(built), "--format", "csv", sql],
                              cwd=REPO, capture_output=True, text=True, timeout=900)
        code, lines, mib = map(int, done.stdout.split())
        assert code == 0, done.stderr
        return lines, mib

    _, baseline = peak("select 1")
    lines, large = peak(f"select i, repeat('x', {width}) as pad from range({rows}) t(i)")
    assert lines == rows + 1
    assert large - baseline < 150, f"peak {large} MiB against {baseline} MiB for {rows * width >> 20} MiB of rows"


def test_datasets_names_a_truncated_manifest_and_fails(built: Path):
    manifest = built / "data" / "manifests" / "passages.json"
    _truncate(manifest, 0.3)
    result = whp("datasets", "-C", str(built), "--format", "json")
    assert result.exit_code == 1
    entries = {e["dataset"]: e for e in json.loads(result.stdout)}
    assert entries["documents"]["rows"] == 2 and entries["passages"]["rows"] is None
    message = " ".join(result.stderr.split())
    assert "data/manifests/passages.json: not a valid manifest (truncated or not JSON" in message
    assert "dvc checkout" in message
    with pytest.raises(ManifestError, match=r"passages\.json: not a valid manifest"):
        read_manifest("passages", built)
    manifest.write_text(json.dumps({"dataset": "passages", "rows": 3}))
    with pytest.raises(ManifestError, match=r"missing or mistyped: stage, bytes, columns, content_sha256, files"):
        read_manifest("passages", built)


def test_datasets_verify_fails_when_a_dataset_folder_is_gone(built: Path):
    shutil.rmtree(dataset_dir("passages_rejects", built))
    listed = whp("datasets", "-C", str(built), "--format", "json")
    assert "passages_rejects" in {e["dataset"] for e in json.loads(listed.stdout)}
    result = whp("datasets", "-C", str(built), "--format", "json", "--verify")
    assert result.exit_code == 1
    entries = {e["dataset"]: e for e in json.loads(result.stdout)}
    assert entries["passages_rejects"]["verified"] is False and entries["passages"]["verified"] is True
    assert "data/passages_rejects is missing: restore it with `dvc checkout ingest`" in " ".join(result.stderr.split())


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
