"""pipeline/anchor_candidates.py: the stage on a small invented novel and a reference book.

The stage runs once per module (spaCy is loaded once for it, once more for the determinism
check); most tests read its outputs. Selection rules are also tested on hand-made evidence.
"""

from __future__ import annotations

import re
import shutil
from collections import Counter
from pathlib import Path

import pytest

from pipeline import anchor_candidates, ingest
from pipeline.core.anchor_selection import NER_KINDS
from pipeline.core.anchor_match import AnchorMatcher
from pipeline.errors import CorpusError
from pipeline.params import parse_params
from pipeline.store import dataset_dir, read_dataset, read_manifest, validate_frame, verify_dataset
from schemas.anchors import ANCHOR_CANDIDATES, KINDS
from schemas.rejects import rejects_contract
from tests.conftest import HEADING, HEADING_KEY, reference_book, FORGET_TEXT, HARRY_STORY, HARRY_REFERENCE

MIN_COUNT = 3
REFERENCE_TEXT = reference_book()


def make_params(retain: bool = True, **anchors):
    settings = {"min_count": MIN_COUNT, "ner_processes": 1} | anchors
    corpus = {"forget": ["corpora/forget/ravensmoor.txt"], "retain": ["corpora/retain"] if retain else []}
    return parse_params({"corpus": corpus, "anchors": settings})


def build_project(root: Path, retain: bool = True) -> None:
    (root / "corpora" / "forget").mkdir(parents=True)
    (root / "corpora" / "retain").mkdir(parents=True)
    (root / "corpora" / "forget" / "ravensmoor.txt").write_text(FORGET_TEXT, encoding="utf-8")
    if retain:
        (root / "corpora" / "retain" / "meadows.txt").write_text(REFERENCE_TEXT, encoding="utf-8")
    ingest.run(make_params(retain), root=root)


def part_bytes(root: Path, name: str) -> list[bytes]:
    return [p.read_bytes() for p in sorted(dataset_dir(name, root).glob("part-*.parquet"))]


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    root = tmp_path_factory.mktemp("anchors")
    build_project(root)
    summary = anchor_candidates.run(make_params(), root=root)
    candidates = read_dataset("anchor_candidates", root)
    rejects = read_dataset("anchor_candidates_rejects", root)
    passages = read_dataset("passages", root)
    return root, summary, candidates, rejects, passages


@pytest.fixture(scope="module")
def by_anchor(stage):
    return stage[2].set_index("anchor")


@pytest.fixture(scope="module")
def reject_reasons(stage):
    rejects = stage[3]
    return dict(zip(rejects["location"], rejects["reason"]))


# --- what is (and is not) a candidate ---------------------------------------------------------


def test_the_recurring_invented_names_are_candidates(by_anchor):
    for name in ("Quillby", "Hester Vane", "Jasper Hope", "Ravensmoor Hall"):
        assert name in by_anchor.index, name
        assert by_anchor.loc[name, "kind"] in KINDS
        assert "log_odds" in by_anchor.loc[name, "signals"]
        assert by_anchor.loc[name, "reference_count"] == 0
        assert by_anchor.loc[name, "capitalised_ratio"] == 1.0


def test_kind_follows_ner_then_the_rules(by_anchor):
    for anchor, row in by_anchor.iterrows():
        assert row["kind"] in KINDS
        if "heading" in row["signals"]:
            continue
        if row["ner_labels"]:
            counts = {label: int(n) for label, n in (item.rsplit(":", 1) for item in row["ner_labels"])}
            top = max(counts.items(), key=lambda item: (item[1], item[0]))[0]
            assert row["kind"] == NER_KINDS.get(top, "other"), anchor
        elif anchor == "Ravensmoor Hall":
            assert row["kind"] == "place"  # "... Hall": a place word ends it
        elif anchor == "Quillby":
            assert row["kind"] == "person"  # seen as "Mr. Quillby"


def test_a_recurring_heading_is_a_work_title(by_anchor, stage):
    assert HEADING_KEY in by_anchor.index
    row = by_anchor.loc[HEADING_KEY]
    assert "heading" in row["signals"]
    assert row["kind"] == "work_title"
    assert HEADING in row["variants"]
    assert row["forget_count"] == 2
    # Generic headings never are.
    assert not any(a.upper().startswith("CHAPTER") for a in by_anchor.index)


def test_a_place_common_in_the_reference_is_rejected_for_it(by_anchor, reject_reasons):
    assert "Canterbury" not in by_anchor.index
    assert "reference corpora" in reject_reasons["Canterbury"]
    # "London" is frequent in general English too; that rule comes first.
    assert "London" not in by_anchor.index
    assert "London" in reject_reasons
    assert re.search(r"general English|reference corpora", reject_reasons["London"])


def test_sentence_start_ordinary_words_are_not_candidates(by_anchor):
    for word in ("Then", "However", "There", "The", "In", "It", "I"):
        assert word not in by_anchor.index
    assert not [a for a in by_anchor.index if a.split(" ")[0] in {"Then", "However", "There", "In"}]


def test_a_surname_that_is_an_ordinary_word(by_anchor, reject_reasons, stage):
    assert "Jasper Hope" in by_anchor.index
    assert "Hope" not in by_anchor.index
    assert "Hope" in reject_reasons
    # Lower-case "hope" (several times in the book) is not counted as the name.
    assert by_anchor.loc["Jasper Hope", "forget_count"] == FORGET_TEXT.count("Jasper Hope")
    assert "hope" in FORGET_TEXT


def test_possessives_are_variants_not_keys(by_anchor, reject_reasons):
    assert "Quillby's" in by_anchor.loc["Quillby", "variants"]
    keys = list(by_anchor.index) + list(reject_reasons)
    assert not [k for k in keys if k.endswith(("'s", "’s", "'", "’"))]


def test_title_variant_is_recorded_and_the_title_form_is_rejected(by_anchor, reject_reasons):
    assert "Mr. Quillby" in by_anchor.loc["Quillby", "variants"]
    assert "Mr. Quillby" not in by_anchor.index
    assert reject_reasons["Mr. Quillby"].startswith("made only of other anchors (Quillby)")


def test_name_parts_seen_only_inside_a_longer_name_are_rejected(by_anchor, reject_reasons):
    for part, whole in (("Hester", "Hester Vane"), ("Vane", "Hester Vane"), ("Jasper", "Jasper Hope")):
        assert part not in by_anchor.index
        assert reject_reasons[part] == f"only occurs inside longer anchors ({whole})"
    assert reject_reasons["Hall"] == "a generic place word"
    assert reject_reasons["Mr"] == "a title or connector only, not a name"


# --- the rows ---------------------------------------------------------------------------------


def test_ranks_follow_the_score(stage):
    candidates = stage[2]
    assert list(candidates["rank"]) == list(range(1, len(candidates) + 1))
    order = sorted(zip(-candidates["score"], candidates["anchor"]))
    assert [a for _, a in order] == list(candidates["anchor"])


def test_counts_are_what_the_matcher_finds(stage):
    _, _, candidates, _, passages = stage
    matcher = AnchorMatcher(candidates["anchor"])
    for corpus, column in (("forget", "forget_count"), ("retain", "reference_count")):
        found = Counter(
            span.anchor for text in passages.loc[passages["corpus"] == corpus, "text"] for span in matcher.find(text)
        )
        assert dict(zip(candidates["anchor"], candidates[column])) == {a: found.get(a, 0) for a in candidates["anchor"]}


def test_example_passages_are_forget_passages_that_contain_the_anchor(stage):
    _, _, candidates, _, passages = stage
    texts = dict(zip(passages["passage_id"], passages["text"]))
    corpus = dict(zip(passages["passage_id"], passages["corpus"]))
    for row in candidates.itertuples():
        assert 1 <= len(row.example_passages) <= 3
        assert len(set(row.example_passages)) == len(row.example_passages)
        for passage_id in row.example_passages:
            assert corpus[passage_id] == "forget"
            assert AnchorMatcher([row.anchor]).find(texts[passage_id]), (row.anchor, passage_id)


def test_variants_are_surface_forms_found_in_the_text(stage):
    candidates = stage[2]
    for row in candidates.itertuples():
        assert row.anchor in row.variants
        assert row.variants == sorted(set(row.variants))
        # The key is always listed (a heading key may only be seen in UPPER CASE); every other
        # variant was seen.
        for variant in set(row.variants) - {row.anchor}:
            assert variant in FORGET_TEXT, variant


def test_signals_and_ner_labels(stage):
    candidates = stage[2]
    for row in candidates.itertuples():
        assert row.signals and row.signals == sorted(row.signals)
        for signal in row.signals:
            assert signal in {"log_odds", "heading"} or re.fullmatch(r"ner:[A-Z_]+", signal)
        labels = {item.rsplit(":", 1)[0] for item in row.ner_labels}
        assert labels == {s[4:] for s in row.signals if s.startswith("ner:")}
        assert all(int(item.rsplit(":", 1)[1]) >= 1 for item in row.ner_labels)


def test_rejects_have_reasons_and_are_disjoint_from_candidates(stage):
    _, summary, candidates, rejects, _ = stage
    assert len(rejects) > 0
    assert (rejects["reason"].str.len() > 0).all()
    assert (rejects["source"] == "passages").all()
    assert rejects["location"].is_unique
    assert not set(rejects["location"]) & set(candidates["anchor"])
    for row in rejects.itertuples():
        assert row.record.startswith(f"{row.location} (forget ")
    assert summary["candidates"] == len(candidates)
    assert summary["rejected"] == len(rejects)
    assert sum(v for k, v in summary.items() if k.startswith("kind_")) == len(candidates)


# --- contract, manifest, determinism, errors --------------------------------------------------


def test_outputs_validate_against_the_contracts(stage):
    root, _, candidates, rejects, _ = stage
    validate_frame(candidates, ANCHOR_CANDIDATES)
    validate_frame(rejects, rejects_contract(ANCHOR_CANDIDATES))
    for name in ("anchor_candidates", "anchor_candidates_rejects"):
        manifest = read_manifest(name, root)
        assert manifest["stage"] == "anchor_candidates"
        assert manifest["params"]["anchors"]["min_count"] == MIN_COUNT
        assert verify_dataset(name, root)


def test_a_second_run_writes_byte_identical_parquet(stage, tmp_path):
    root = stage[0]
    before = {name: part_bytes(root, name) for name in ("anchor_candidates", "anchor_candidates_rejects")}
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)  # rerun elsewhere: the module's outputs stay as they were
    anchor_candidates.run(make_params(), root=copy)
    for name, parts in before.items():
        assert parts and part_bytes(copy, name) == parts, name


def test_no_reference_corpus_is_an_error(tmp_path):
    build_project(tmp_path, retain=False)
    with pytest.raises(CorpusError, match="retain"):
        anchor_candidates.run(make_params(retain=False), root=tmp_path)
    assert not dataset_dir("anchor_candidates", tmp_path).exists()


# --- a protagonist with a common first name (real spaCy, a tiny hand-made novel) ---------------



@pytest.fixture(scope="module")
def harry(tmp_path_factory):
    root = tmp_path_factory.mktemp("harry")
    (root / "corpora" / "forget").mkdir(parents=True)
    (root / "corpora" / "retain").mkdir(parents=True)
    forget = "\n\n".join(HARRY_STORY[i % len(HARRY_STORY)] for i in range(48)) + "\n"
    reference = "\n\n".join(HARRY_REFERENCE[i % len(HARRY_REFERENCE)] for i in range(36)) + "\n"
    (root / "corpora" / "forget" / "harry.txt").write_text(forget, encoding="utf-8")
    (root / "corpora" / "retain" / "village.txt").write_text(reference, encoding="utf-8")
    params = parse_params({
        "corpus": {"forget": ["corpora/forget/harry.txt"], "retain": ["corpora/retain"]},
        "anchors": {"min_count": MIN_COUNT, "ner_processes": 1},
    })
    ingest.run(params, root=root)
    anchor_candidates.run(params, root=root)
    candidates = read_dataset("anchor_candidates", root).set_index("anchor")
    rejects = read_dataset("anchor_candidates_rejects", root)
    return candidates, dict(zip(rejects["location"], rejects["reason"]))


def test_a_protagonist_with_a_common_first_name_is_mined(harry):
    candidates, _ = harry
    # "Harry" (zipf 4.72) and "Elizabeth" (4.47) are common English first names, but here far
    # more frequent than in general English, and spaCy calls them persons.
    for name, gender in (("Harry", "male"), ("Elizabeth", "female")):
        assert name in candidates.index, name
        assert candidates.loc[name, "kind"] == "person"
        assert candidates.loc[name, "gender"] == gender
    assert "Greyholt" in candidates.index and candidates.loc["Greyholt", "gender"] == ""


def test_a_weekday_is_never_an_anchor(harry):
    candidates, reasons = harry
    assert "Monday" not in candidates.index
    assert reasons["Monday"] in {"a weekday, month or feast", "capitalised only at sentence starts: an ordinary word"}
