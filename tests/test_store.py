"""pipeline/store.py: validated, atomic, deterministic dataset writes and reads."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from pipeline.errors import DatasetNotFoundError, DatasetValidationError
from pipeline.store import (
    DatasetWriter,
    dataset_dir,
    list_datasets,
    manifest_path,
    read_dataset,
    read_manifest,
    verify_dataset,
    write_dataset,
    write_rejects,
)
from schemas.corpus import DOCUMENTS, PASSAGES
from schemas.rejects import RejectSchema

REPO = Path(__file__).resolve().parents[1]
PARAMS = {"ingest": {"max_passage_chars": 2000}, "note": "test"}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def documents(texts: dict[str, str], corpus: str = "forget") -> pd.DataFrame:
    rows = [
        {"doc_id": f"{corpus}:{name}", "corpus": corpus, "source": f"corpora/{name}", "record": 0,
         "title": "", "text": text, "n_chars": len(text), "sha256": sha(text)}
        for name, text in texts.items()
    ]
    return pd.DataFrame(rows, columns=list(DOCUMENTS.model.to_schema().columns))


def passages(doc_id: str, text: str) -> pd.DataFrame:
    rows, start = [], 0
    for index, para in enumerate(text.split("\n\n")):
        start = text.index(para, start)
        rows.append({"passage_id": f"{doc_id}#{index}", "doc_id": doc_id, "corpus": "forget", "index": index,
                     "char_start": start, "char_end": start + len(para), "text": para, "sha256": sha(para)})
        start += len(para)
    return pd.DataFrame(rows)


V1 = {"a.txt": "Version one, first document.", "b.txt": "Version one, second document.\n\nWith two paragraphs."}
V2 = {"a.txt": "Version two.", "c.txt": "A third document."}


def part_files(root: Path, name: str) -> list[Path]:
    return sorted(dataset_dir(name, root).glob("part-*.parquet"))


def temporaries(root: Path, name: str) -> list[Path]:
    """Hidden entries next to a dataset (staged versions, backups) and transaction records."""
    return sorted([*(root / "data").glob(f".{name}.*"), *(root / "data" / "manifests").glob(f".{name}.*"),
                   *(root / "data").glob(".transactions/*")])


def assert_same_rows(read: pd.DataFrame, written: pd.DataFrame) -> None:
    assert list(read.columns) == list(written.columns)
    assert read.astype(object).values.tolist() == written.astype(object).values.tolist()


# --- round trip and manifest ----------------------------------------------------------------


def test_write_then_read_round_trips_rows(tmp_path):
    frame = documents(V1)
    write_dataset(frame, DOCUMENTS, stage="ingest", params=PARAMS, root=tmp_path)
    back = read_dataset("documents", root=tmp_path)
    assert_same_rows(back, frame)
    assert back["record"].tolist() == [0, 0]
    assert read_dataset("documents", root=tmp_path, columns=["doc_id"])["doc_id"].tolist() == frame["doc_id"].tolist()


def test_passages_round_trip_and_offsets_survive(tmp_path):
    text = V1["b.txt"]
    frame = passages("forget:b.txt", text)
    write_dataset(frame, PASSAGES, stage="ingest", root=tmp_path)
    back = read_dataset("passages", root=tmp_path)
    assert_same_rows(back, frame)
    for row in back.itertuples():
        assert text[row.char_start:row.char_end] == row.text


def test_identical_data_gives_byte_identical_parquet_and_same_content_hash(tmp_path):
    first, second = tmp_path / "one", tmp_path / "two"
    write_dataset(documents(V1), DOCUMENTS, stage="ingest", params=PARAMS, root=first)
    write_dataset(documents(V1), DOCUMENTS, stage="ingest", params=PARAMS, root=second)
    files_1, files_2 = part_files(first, "documents"), part_files(second, "documents")
    assert [p.name for p in files_1] == [p.name for p in files_2] == ["part-00000.parquet"]
    assert files_1[0].read_bytes() == files_2[0].read_bytes()
    assert read_manifest("documents", first)["content_sha256"] == read_manifest("documents", second)["content_sha256"]

    # Rewriting in place also reproduces the same bytes.
    before = files_1[0].read_bytes()
    write_dataset(documents(V1), DOCUMENTS, stage="ingest", params=PARAMS, root=first)
    assert part_files(first, "documents")[0].read_bytes() == before


def test_different_data_gives_a_different_content_hash(tmp_path):
    write_dataset(documents(V1), DOCUMENTS, stage="ingest", root=tmp_path)
    first = read_manifest("documents", tmp_path)["content_sha256"]
    write_dataset(documents(V2), DOCUMENTS, stage="ingest", root=tmp_path)
    assert read_manifest("documents", tmp_path)["content_sha256"] != first


def test_manifest_describes_the_dataset(tmp_path):
    frame = documents(V1)
    write_dataset(frame, DOCUMENTS, stage="ingest", params=PARAMS, root=tmp_path)
    path = manifest_path("documents", tmp_path)
    assert path == tmp_path / "data" / "manifests" / "documents.json"
    manifest = json.loads(path.read_text(encoding="utf-8"))
    assert manifest == read_manifest("documents", tmp_path)

    parts = part_files(tmp_path, "documents")
    assert manifest["dataset"] == "documents"
    assert manifest["stage"] == "ingest"
    assert manifest["rows"] == len(frame)
    assert manifest["bytes"] == sum(p.stat().st_size for p in parts)
    assert [c["name"] for c in manifest["columns"]] == list(frame.columns)
    assert all(c["type"] for c in manifest["columns"])
    assert manifest["schema"] == {"contract": DOCUMENTS.model.__name__, "version": DOCUMENTS.version}
    assert manifest["params"] == PARAMS
    assert isinstance(manifest["code_revision"], str) and manifest["code_revision"]
    assert len(manifest["content_sha256"]) == 64
    assert [(f["path"], f["sha256"]) for f in manifest["files"]] == [
        (p.name, hashlib.sha256(p.read_bytes()).hexdigest()) for p in parts
    ]
    assert verify_dataset("documents", tmp_path) is True


def test_verify_dataset_detects_a_tampered_part(tmp_path):
    write_dataset(documents(V1), DOCUMENTS, stage="ingest", root=tmp_path)
    assert verify_dataset("documents", tmp_path) is True
    part = part_files(tmp_path, "documents")[0]
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0xFF
    part.write_bytes(bytes(data))
    assert verify_dataset("documents", tmp_path) is False


def test_verify_dataset_detects_an_extra_part(tmp_path):
    write_dataset(documents(V1), DOCUMENTS, stage="ingest", root=tmp_path)
    part = part_files(tmp_path, "documents")[0]
    (part.parent / "part-00001.parquet").write_bytes(part.read_bytes())
    assert verify_dataset("documents", tmp_path) is False


def test_manifest_lives_outside_the_dataset_folder(tmp_path):
    write_dataset(documents(V1), DOCUMENTS, stage="ingest", root=tmp_path)
    assert sorted(p.name for p in dataset_dir("documents", tmp_path).iterdir()) == ["part-00000.parquet"]


# --- validation -----------------------------------------------------------------------------


def test_all_violations_are_reported_at_once_and_nothing_is_written(tmp_path):
    frame = documents({"a.txt": "Alpha text.", "b.txt": "Beta text.", "c.txt": "Gamma text."})
    frame.loc[0, "corpus"] = "forgotten"                       # not in {forget, retain}
    frame.loc[2, "doc_id"] = frame.loc[1, "doc_id"]            # duplicate doc_id
    frame.loc[1, "sha256"] = sha("something else")             # well-formed but wrong hash
    frame.loc[2, "n_chars"] = -4                               # negative

    with pytest.raises(DatasetValidationError) as info:
        write_dataset(frame, DOCUMENTS, stage="ingest", root=tmp_path)
    message = str(info.value)

    assert message.startswith("dataset 'documents'")
    assert re.search(r"corpus row 0: isin.*'forgotten'", message)
    assert re.search(r"doc_id row 2: field_uniqueness.*'forget:b\.txt'", message)
    assert re.search(r"row 1: sha256 is not the hash of text", message)
    assert re.search(r"n_chars row 2: greater_than_or_equal_to\(1\).*'-4'", message)
    assert re.search(r"row 2: n_chars is not len\(text\)", message)
    count = int(message.split(": ", 1)[1].split(" schema violation")[0])
    assert count >= 5
    assert count == sum(1 for line in message.splitlines() if line.startswith("  - "))

    assert not dataset_dir("documents", tmp_path).exists()
    assert not manifest_path("documents", tmp_path).exists()
    assert temporaries(tmp_path, "documents") == []
    assert list_datasets(tmp_path) == []


def test_frame_wide_check_failures_do_not_hide_other_violations(tmp_path):
    n_docs = 8
    frame = documents({f"d{i}.txt": f"Document number {i}." for i in range(n_docs)})
    frame["sha256"] = [sha(f"not the text {i}") for i in range(n_docs)]
    frame.loc[n_docs - 1, "corpus"] = "forgotten"
    with pytest.raises(DatasetValidationError) as info:
        write_dataset(frame, DOCUMENTS, stage="ingest", root=tmp_path)
    message = str(info.value)
    # The column check on `corpus` must be listed, not only the wide-check noise.
    assert re.search(rf"corpus row {n_docs - 1}: isin.*'forgotten'", message)
    for i in range(n_docs):
        assert re.search(rf"row {i}: sha256 is not the hash of text", message)


def test_a_missing_column_and_an_extra_column_are_refused(tmp_path):
    frame = documents(V1).drop(columns=["n_chars"]).assign(surprise=1)
    with pytest.raises(DatasetValidationError) as info:
        write_dataset(frame, DOCUMENTS, stage="ingest", root=tmp_path)
    assert "n_chars" in str(info.value)
    assert "surprise" in str(info.value)
    assert not dataset_dir("documents", tmp_path).exists()


def test_failed_validation_keeps_the_previous_version(tmp_path):
    good = documents(V1)
    write_dataset(good, DOCUMENTS, stage="ingest", root=tmp_path)
    manifest = read_manifest("documents", tmp_path)
    bad = documents(V2)
    bad.loc[0, "n_chars"] = 0
    with pytest.raises(DatasetValidationError, match=r"n_chars"):
        write_dataset(bad, DOCUMENTS, stage="ingest", root=tmp_path)
    assert_same_rows(read_dataset("documents", root=tmp_path), good)
    assert read_manifest("documents", tmp_path) == manifest


# --- atomic writes --------------------------------------------------------------------------


def test_exception_inside_the_writer_keeps_the_previous_version(tmp_path):
    v1 = documents(V1)
    write_dataset(v1, DOCUMENTS, stage="ingest", root=tmp_path)
    manifest_v1 = manifest_path("documents", tmp_path).read_bytes()

    with pytest.raises(RuntimeError, match="simulated crash"):
        with DatasetWriter(DOCUMENTS, stage="ingest", root=tmp_path) as writer:
            writer.write(documents(V2))
            staged = [p for p in temporaries(tmp_path, "documents") if p.is_dir()]
            assert [p.name for p in staged[0].iterdir()] == ["part-00000.parquet"]  # staged, not published
            raise RuntimeError("simulated crash")

    assert_same_rows(read_dataset("documents", root=tmp_path), v1)
    assert manifest_path("documents", tmp_path).read_bytes() == manifest_v1
    assert verify_dataset("documents", tmp_path) is True
    assert temporaries(tmp_path, "documents") == []


def test_a_writer_killed_mid_write_leaves_the_previous_version_and_the_next_read_cleans_up(tmp_path):
    script = textwrap.dedent(
        f"""
        import hashlib, os, sys
        sys.path.insert(0, {str(REPO)!r})
        import pandas as pd
        from pipeline.store import DatasetWriter, write_dataset
        from schemas.corpus import DOCUMENTS

        def frame(texts):
            return pd.DataFrame([
                {{"doc_id": "forget:" + k, "corpus": "forget", "source": k, "record": 0, "title": "", "text": v,
                  "n_chars": len(v), "sha256": hashlib.sha256(v.encode()).hexdigest()}}
                for k, v in texts.items()
            ])

        write_dataset(frame({V1!r}), DOCUMENTS, stage="ingest")
        with DatasetWriter(DOCUMENTS, stage="ingest") as writer:
            writer.write(frame({V2!r}))
            os._exit(1)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    stale = temporaries(tmp_path, "documents")
    assert any(list(p.glob("part-*.parquet")) for p in stale)  # the staged folder, left by the kill
    assert any(p.name.endswith(".lock") for p in stale)       # and its transaction's record

    # Version 1 is intact, readable and matches its manifest; the read rolled the dead writer back.
    assert_same_rows(read_dataset("documents", root=tmp_path), documents(V1).assign(source=list(V1)))
    assert temporaries(tmp_path, "documents") == []
    assert verify_dataset("documents", tmp_path) is True
    assert read_manifest("documents", tmp_path)["rows"] == len(V1)
    assert list_datasets(tmp_path) == ["documents"]
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["documents", "manifests"]


def test_writer_outside_its_block_refuses_to_write(tmp_path):
    writer = DatasetWriter(DOCUMENTS, stage="ingest", root=tmp_path)
    with pytest.raises(RuntimeError, match=r"outside its `with` block"):
        writer.write(documents(V1))


# --- multi-part, empty and rejects ----------------------------------------------------------


def test_multi_part_write_reads_back_all_rows_in_order(tmp_path):
    first = documents(V1)
    second = documents(V2, corpus="retain")
    with DatasetWriter(DOCUMENTS, stage="ingest", params=PARAMS, root=tmp_path) as writer:
        writer.write(first)
        writer.write(second)
    assert [p.name for p in part_files(tmp_path, "documents")] == ["part-00000.parquet", "part-00001.parquet"]
    back = read_dataset("documents", root=tmp_path)
    assert_same_rows(back, pd.concat([first, second], ignore_index=True))
    manifest = read_manifest("documents", tmp_path)
    assert manifest["rows"] == len(first) + len(second)
    assert [f["rows"] for f in manifest["files"]] == [len(first), len(second)]
    assert verify_dataset("documents", tmp_path) is True


def test_a_bad_second_part_discards_the_whole_write(tmp_path):
    bad = documents(V2)
    bad.loc[0, "sha256"] = "not-a-hash"
    with pytest.raises(DatasetValidationError, match=r"part 1"):
        with DatasetWriter(DOCUMENTS, stage="ingest", root=tmp_path) as writer:
            writer.write(documents(V1))
            writer.write(bad)
    assert not dataset_dir("documents", tmp_path).exists()
    assert temporaries(tmp_path, "documents") == []


def test_empty_write_still_creates_a_dataset_with_the_columns(tmp_path):
    with DatasetWriter(PASSAGES, stage="ingest", root=tmp_path):
        pass
    back = read_dataset("passages", root=tmp_path)
    assert len(back) == 0
    assert list(back.columns) == list(PASSAGES.model.to_schema().columns)
    assert read_manifest("passages", tmp_path)["rows"] == 0


def test_write_rejects_without_rejects_writes_an_empty_dataset_with_four_columns(tmp_path):
    write_rejects([], DOCUMENTS, stage="ingest", root=tmp_path)
    name = f"{DOCUMENTS.name}_rejects"
    back = read_dataset(name, root=tmp_path)
    columns = list(RejectSchema.to_schema().columns)
    assert len(columns) == 4
    assert list(back.columns) == columns
    assert len(back) == 0
    manifest = read_manifest(name, tmp_path)
    assert manifest["rows"] == 0
    assert [c["name"] for c in manifest["columns"]] == columns
    assert name in list_datasets(tmp_path)


def test_write_rejects_keeps_rows_and_truncates_long_records(tmp_path):
    long_record = "x" * 1200
    rejects = [
        {"source": "corpora/a.jsonl", "location": "line 3", "reason": "invalid JSON", "record": long_record},
        {"source": "corpora/a.jsonl", "location": "line 7", "reason": "no field 'text'", "record": '{"a": 1}'},
    ]
    write_rejects(rejects, PASSAGES, stage="ingest", root=tmp_path)
    back = read_dataset("passages_rejects", root=tmp_path)
    assert back["location"].tolist() == ["line 3", "line 7"]
    assert back["record"].tolist() == [long_record[:500], '{"a": 1}']


def test_write_rejects_refuses_an_empty_reason(tmp_path):
    with pytest.raises(DatasetValidationError, match=r"reason"):
        write_rejects([{"source": "s", "location": "line 1", "reason": "", "record": "r"}], DOCUMENTS,
                      stage="ingest", root=tmp_path)


# --- reading and listing --------------------------------------------------------------------


def test_reading_a_missing_dataset_mentions_dvc_repro(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"'passages'.*dvc repro"):
        read_dataset("passages", root=tmp_path)
    with pytest.raises(DatasetNotFoundError, match=r"'passages'.*dvc repro"):
        read_manifest("passages", root=tmp_path)


def test_list_datasets_lists_written_datasets_and_ignores_temporaries(tmp_path):
    assert list_datasets(tmp_path) == []
    write_dataset(documents(V1), DOCUMENTS, stage="ingest", root=tmp_path)
    write_rejects([], PASSAGES, stage="ingest", root=tmp_path)
    # A hidden temporary folder holding a part, and a folder without parts, are not datasets.
    hidden = tmp_path / "data" / ".passages.tmp-abc123"
    hidden.mkdir()
    part = part_files(tmp_path, "documents")[0]
    (hidden / "part-00000.parquet").write_bytes(part.read_bytes())
    (tmp_path / "data" / "scratch").mkdir()
    assert list_datasets(tmp_path) == ["documents", "passages_rejects"]
