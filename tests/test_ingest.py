"""pipeline/ingest.py: corpora -> documents, passages and their rejects, on tiny inline corpora."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from pipeline.errors import CorpusError, ParamsError
from pipeline.ingest import run
from pipeline.params import Params, parse_params
from pipeline.store import dataset_dir, list_datasets, manifest_path, read_dataset, read_manifest, verify_dataset
from pipeline.core.text import normalise

DATASETS = ["documents", "documents_rejects", "passages", "passages_rejects"]
MAX_CHARS = 120
MIN_CHARS = 3

WRAPPED = (
    "    It was the best of times, it was the worst of times, it was the age of\n"
    "    wisdom, it was the age of foolishness, it was the epoch of belief. It was\n"
    "    the epoch of incredulity, it was the season of Light! It was the season of\n"
    "    Darkness, it was the spring of hope; it was the winter of despair.\n"
)
FORGET_TXT = (
    "\ufeffTHE ADVENTURES\n\n"
    "CONTENTS\n  I. A Scandal\n  II. The League\n\n"
    + WRAPPED
    + "\n\n* * *\n\nOk\n\nTo Sherlock Holmes she is always the woman."
)
RETAIN_MD = "---\ntitle: Notes\n---\n# Chapter 1\n\nIt is a truth universally acknowledged.\n"
RETAIN_TXT = "Call me Ishmael.\n\nSome years ago, never mind how long precisely.\n"
JSONL_LINES = [
    json.dumps({"text": "First record.\n\nIts second paragraph."}),
    '{"text": "broken json',
    json.dumps({"text": "Third record, caf\u00e9."}),
]
BAD_JSONL_LINE = 2


def build_corpora(root: Path) -> None:
    (root / "corpora" / "forget").mkdir(parents=True)
    (root / "corpora" / "retain" / "part2").mkdir(parents=True)
    (root / "corpora" / "forget" / "book.txt").write_text(FORGET_TXT, encoding="utf-8")
    (root / "corpora" / "forget" / "records.jsonl").write_text("\n".join(JSONL_LINES) + "\n", encoding="utf-8")
    (root / "corpora" / "retain" / "part2" / "notes.md").write_text(RETAIN_MD, encoding="utf-8")
    (root / "corpora" / "retain" / "moby.txt").write_text(RETAIN_TXT, encoding="utf-8")
    (root / "corpora" / "retain" / "cover.png").write_bytes(b"\x89PNG\x00not a corpus file")


def make_params(forget=("corpora/forget/book.txt", "corpora/forget/records.jsonl"), retain=("corpora/retain",),
                **ingest) -> Params:
    settings = {"min_passage_chars": MIN_CHARS, "max_passage_chars": MAX_CHARS} | ingest
    return parse_params({"corpus": {"forget": list(forget), "retain": list(retain)}, "ingest": settings})


def part_bytes(root: Path) -> dict[str, list[bytes]]:
    return {name: [p.read_bytes() for p in sorted(dataset_dir(name, root).glob("part-*.parquet"))] for name in DATASETS}


@pytest.fixture
def ingested(tmp_path):
    build_corpora(tmp_path)
    summary = run(make_params(), root=tmp_path)
    frames = {name: read_dataset(name, root=tmp_path) for name in DATASETS}
    return tmp_path, summary, frames


# --- outputs --------------------------------------------------------------------------------


def test_writes_the_four_datasets_with_valid_manifests(ingested):
    root, summary, frames = ingested
    assert list_datasets(root) == sorted(DATASETS)
    for name in DATASETS:
        assert summary[name] == len(frames[name])
        manifest = read_manifest(name, root)
        assert manifest["rows"] == len(frames[name])
        assert manifest["stage"] == "ingest"
        assert manifest["params"]["ingest"]["max_passage_chars"] == MAX_CHARS
        assert manifest["params"]["normalisation"] == "normalise_v1"
        assert verify_dataset(name, root)


def test_documents_hold_the_normalised_text_of_every_source(ingested):
    root, _, frames = ingested
    docs = frames["documents"].set_index("doc_id")
    assert docs.loc["forget:book.txt", "text"] == normalise(FORGET_TXT)
    assert docs.loc["retain:moby.txt", "text"] == normalise(RETAIN_TXT)
    # Markdown front matter is gone, the heading stays.
    md_text = docs.loc["retain:part2/notes.md", "text"]
    assert md_text == normalise(RETAIN_MD.split("---\n", 2)[2])
    assert "title: Notes" not in md_text
    for doc_id, row in docs.iterrows():
        assert row["n_chars"] == len(row["text"])
        assert row["sha256"] == hashlib.sha256(row["text"].encode("utf-8")).hexdigest()
        assert row["corpus"] == doc_id.split(":", 1)[0]
    assert not docs["text"].str.startswith("\ufeff").any()


def test_doc_ids_follow_the_naming_rules(ingested):
    _, _, frames = ingested
    docs = frames["documents"]
    good_lines = [n for n in range(1, len(JSONL_LINES) + 1) if n != BAD_JSONL_LINE]
    expected = (
        ["forget:book.txt"]                                         # file source: file name
        + [f"forget:records.jsonl:{n}" for n in good_lines]         # JSONL: ':<line>'
        + ["retain:moby.txt", "retain:part2/notes.md"]              # folder: path inside the folder
    )
    assert sorted(docs["doc_id"]) == sorted(expected)
    assert docs["doc_id"].is_unique
    jsonl = docs[docs["doc_id"].str.startswith("forget:records.jsonl:")]
    assert [int(d.rsplit(":", 1)[1]) for d in jsonl["doc_id"]] == jsonl["record"].tolist() == good_lines
    assert (docs.loc[~docs["doc_id"].isin(jsonl["doc_id"]), "record"] == 0).all()
    for line, text in zip(good_lines, jsonl["text"]):
        assert text == normalise(json.loads(JSONL_LINES[line - 1])["text"])


def test_every_passage_is_a_slice_of_its_document(ingested):
    _, _, frames = ingested
    docs = frames["documents"].set_index("doc_id")
    passages = frames["passages"]
    assert len(passages) > len(docs)
    for row in passages.itertuples():
        doc = docs.loc[row.doc_id]
        assert doc["text"][row.char_start:row.char_end] == row.text
        assert row.corpus == doc["corpus"]
        assert 0 < len(row.text) <= MAX_CHARS
        assert row.sha256 == hashlib.sha256(row.text.encode("utf-8")).hexdigest()


def test_long_paragraph_is_split_and_nothing_is_lost(ingested):
    _, _, frames = ingested
    doc = frames["documents"].set_index("doc_id").loc["forget:book.txt", "text"]
    passages = frames["passages"]
    rejected = frames["passages_rejects"]
    pieces = passages.loc[passages["doc_id"] == "forget:book.txt", "text"].tolist()
    refused = rejected.loc[rejected["source"] == "forget:book.txt", "record"].tolist()
    assert len(normalise(WRAPPED)) > MAX_CHARS
    # Kept and refused pieces together hold every non-space character of the document.
    assert sorted("".join(pieces + refused).replace(" ", "").replace("\n", "")) == sorted(
        doc.replace(" ", "").replace("\n", "")
    )
    # The wrapped paragraph was unwrapped, then cut into pieces that rebuild it; where a
    # sentence end fell inside the window, the cut is there.
    paragraph = normalise(WRAPPED)
    wrapped_pieces = [p for p in pieces if p in paragraph]
    assert len(wrapped_pieces) > 1
    assert " ".join(wrapped_pieces) == paragraph
    assert any(p.endswith(("!", ".")) for p in wrapped_pieces[:-1])


def test_passage_ids_are_unique_and_ordered_by_index(ingested):
    _, _, frames = ingested
    passages = frames["passages"]
    assert passages["passage_id"].is_unique
    for doc_id, group in passages.groupby("doc_id", sort=False):
        assert group["index"].tolist() == list(range(len(group)))
        assert group["passage_id"].tolist() == [f"{doc_id}#{i}" for i in group["index"]]
        assert group["char_start"].is_monotonic_increasing
        assert (group["char_start"].iloc[1:].to_numpy() >= group["char_end"].iloc[:-1].to_numpy()).all()
    # Every document has passages, and every passage has a document.
    assert set(passages["doc_id"]) == set(frames["documents"]["doc_id"])


def test_bad_jsonl_line_is_in_documents_rejects(ingested):
    root, _, frames = ingested
    rejects = frames["documents_rejects"]
    assert len(rejects) == 1
    row = rejects.iloc[0]
    assert row["location"] == f"line {BAD_JSONL_LINE}"
    assert "invalid JSON" in row["reason"]
    assert row["record"] == JSONL_LINES[BAD_JSONL_LINE - 1]
    assert row["source"].endswith("corpora/forget/records.jsonl")


def test_separator_and_short_paragraphs_are_in_passages_rejects(ingested):
    _, _, frames = ingested
    docs = frames["documents"].set_index("doc_id")
    rejects = frames["passages_rejects"]
    by_record = {r.record: r for r in rejects.itertuples()}
    assert set(by_record) == {"* * *", "Ok"}
    assert by_record["* * *"].reason == "no letter or digit"
    assert "min_passage_chars" in by_record["Ok"].reason and str(MIN_CHARS) in by_record["Ok"].reason
    for r in rejects.itertuples():
        start, end = map(int, re.fullmatch(r"chars (\d+)-(\d+)", r.location).groups())
        assert docs.loc[r.source, "text"][start:end] == r.record
    assert not frames["passages"]["text"].isin(["* * *", "Ok"]).any()


def test_the_png_in_the_retain_folder_is_ignored(ingested):
    _, _, frames = ingested
    assert not frames["documents"]["doc_id"].str.contains("cover").any()


# --- normalisation through ingest -----------------------------------------------------------


def test_crlf_input_gives_the_same_documents_text_as_lf(tmp_path):
    text = "Title\n\n" + WRAPPED + "\n\nThe end.\n"
    (tmp_path / "lf.txt").write_bytes(text.encode("utf-8"))
    (tmp_path / "crlf.txt").write_bytes(text.replace("\n", "\r\n").encode("utf-8"))
    run(make_params(forget=["lf.txt"], retain=["crlf.txt"]), root=tmp_path)
    docs = read_dataset("documents", root=tmp_path).set_index("doc_id")
    assert docs.loc["forget:lf.txt", "text"] == docs.loc["retain:crlf.txt", "text"]
    assert "\r" not in docs.loc["retain:crlf.txt", "text"]
    passages = read_dataset("passages", root=tmp_path)
    lf = passages.loc[passages["doc_id"] == "forget:lf.txt", ["char_start", "char_end", "text"]]
    crlf = passages.loc[passages["doc_id"] == "retain:crlf.txt", ["char_start", "char_end", "text"]]
    assert lf.values.tolist() == crlf.values.tolist()


def test_ingest_settings_are_applied(tmp_path):
    (tmp_path / "a.txt").write_text(WRAPPED, encoding="utf-8")
    run(make_params(forget=["a.txt"], retain=[], unwrap_lines=False, max_passage_chars=1000), root=tmp_path)
    text = read_dataset("documents", root=tmp_path)["text"].iloc[0]
    assert text == "\n".join(line.strip() for line in WRAPPED.strip().split("\n"))
    assert read_dataset("passages", root=tmp_path)["text"].tolist() == [text]


# --- failures -------------------------------------------------------------------------------


def test_non_utf8_file_stops_the_run_and_keeps_the_previous_datasets(tmp_path):
    build_corpora(tmp_path)
    params = make_params()
    run(params, root=tmp_path)
    before_manifests = {name: manifest_path(name, tmp_path).read_bytes() for name in DATASETS}
    before_hashes = {name: read_manifest(name, tmp_path)["content_sha256"] for name in DATASETS}
    before_parts = part_bytes(tmp_path)

    bad = tmp_path / "corpora" / "retain" / "latin1.txt"
    head = "Une phrase en fran".encode("utf-8")
    bad.write_bytes(head + b"\xe7ais.\n")
    with pytest.raises(CorpusError) as info:
        run(params, root=tmp_path)
    message = str(info.value)
    assert str(bad) in message
    assert f"byte offset {len(head)}" in message

    assert {name: read_manifest(name, tmp_path)["content_sha256"] for name in DATASETS} == before_hashes
    assert {name: manifest_path(name, tmp_path).read_bytes() for name in DATASETS} == before_manifests
    assert part_bytes(tmp_path) == before_parts
    assert not list((tmp_path / "data").glob(".*tmp-*"))


def test_non_utf8_file_on_a_fresh_project_writes_nothing(tmp_path):
    (tmp_path / "bad.txt").write_bytes(b"caf\xe9\n")
    with pytest.raises(CorpusError, match=r"bad\.txt: not valid UTF-8 at byte offset 3"):
        run(make_params(forget=["bad.txt"], retain=[]), root=tmp_path)
    assert list_datasets(tmp_path) == []
    assert not any(manifest_path(name, tmp_path).exists() for name in DATASETS)


def test_missing_corpus_path_is_named(tmp_path):
    build_corpora(tmp_path)
    with pytest.raises(CorpusError, match=r"corpora/retain/missing\.txt: corpus path does not exist"):
        run(make_params(retain=["corpora/retain", "corpora/retain/missing.txt"]), root=tmp_path)
    assert list_datasets(tmp_path) == []


def test_the_same_file_listed_twice_is_an_error_naming_the_doc_id(tmp_path):
    build_corpora(tmp_path)
    params = make_params(forget=["corpora/forget/book.txt", "corpora/forget"], retain=[])
    with pytest.raises(CorpusError, match=r"document id 'forget:book\.txt' is also produced by"):
        run(params, root=tmp_path)


def test_a_file_cannot_be_both_forgotten_and_retained(tmp_path):
    build_corpora(tmp_path)
    params = parse_params({"corpus": {"forget": ["corpora"], "retain": ["corpora/retain/moby.txt"]}})
    with pytest.raises((ParamsError, CorpusError), match=r"moby\.txt"):
        run(params, root=tmp_path)


# --- determinism ----------------------------------------------------------------------------


def test_running_twice_gives_byte_identical_parquet(tmp_path):
    build_corpora(tmp_path)
    params = make_params()
    run(params, root=tmp_path)
    first = part_bytes(tmp_path)
    hashes = {name: read_manifest(name, tmp_path)["content_sha256"] for name in DATASETS}
    run(params, root=tmp_path)
    assert part_bytes(tmp_path) == first
    assert all(first[name] for name in DATASETS)
    assert {name: read_manifest(name, tmp_path)["content_sha256"] for name in DATASETS} == hashes


def test_source_column_is_the_path_as_listed_in_params(tmp_path):
    build_corpora(tmp_path)
    run(make_params(), root=tmp_path)
    docs = read_dataset("documents", root=tmp_path).set_index("doc_id")
    assert docs.loc["forget:book.txt", "source"] == "corpora/forget/book.txt"
    assert docs.loc["retain:part2/notes.md", "source"] == "corpora/retain/part2/notes.md"
    assert read_dataset("documents_rejects", root=tmp_path)["source"].tolist() == ["corpora/forget/records.jsonl"]


def test_same_corpora_in_two_locations_give_identical_datasets(tmp_path):
    # Consequence of the bug above: moving the project changes every dataset's bytes.
    one, two = tmp_path / "one", tmp_path / "elsewhere" / "two"
    for root in (one, two):
        root.mkdir(parents=True)
        build_corpora(root)
        run(make_params(), root=root)
    assert part_bytes(one) == part_bytes(two)


# --- an omnibus file split into its works -------------------------------------------------------

OMNIBUS = """THE COLLECTED TALES

Table of contents

   The Grey Lantern
   The Brass Key
   The Lost Chapter



THE GREY LANTERN

Inspector Brackwell came to Fenwick Street that evening.

THE BRASS KEY

Contents of the drawer: one brass key.
"""


def test_split_contents_makes_one_document_per_work_and_loses_nothing(tmp_path):
    (tmp_path / "corpora").mkdir()
    (tmp_path / "corpora" / "tales.txt").write_text(OMNIBUS, encoding="utf-8")
    params = parse_params({"corpus": {"forget": [{"path": "corpora/tales.txt", "split": "contents"}]}})
    summary = run(params, root=tmp_path)
    documents = read_dataset("documents", tmp_path)
    assert documents["doc_id"].tolist() == [
        "forget:tales.txt:00-contents", "forget:tales.txt:01-the-grey-lantern", "forget:tales.txt:02-the-brass-key"]
    assert documents["title"].tolist() == ["Contents", "The Grey Lantern", "The Brass Key"]
    assert documents["text"].iloc[0].startswith("THE COLLECTED TALES\n\nTable of contents")
    assert documents["text"].iloc[2] == "THE BRASS KEY\n\nContents of the drawer: one brass key."
    rejects = read_dataset("documents_rejects", tmp_path)
    assert rejects[["reason", "record"]].values.tolist() == [["title never found as a heading line", "The Lost Chapter"]]
    assert summary["documents"] == 3
    passages = read_dataset("passages", tmp_path)
    assert set(passages["doc_id"]) == set(documents["doc_id"])


def test_split_contents_on_a_file_without_contents_names_the_file_and_the_fix(tmp_path):
    (tmp_path / "corpora").mkdir()
    (tmp_path / "corpora" / "plain.txt").write_text("A story.\n\nNo contents here.\n", encoding="utf-8")
    params = parse_params({"corpus": {"forget": [{"path": "corpora/plain.txt", "split": "contents"}]}})
    with pytest.raises(CorpusError, match=r"plain\.txt: split: contents: no table of contents.*split: none"):
        run(params, root=tmp_path)


def test_an_unsplit_file_has_an_empty_title(ingested):
    _, _, frames = ingested
    assert set(frames["documents"]["title"]) == {""}
