"""Stage `dictionary`: the reviewed overlay through the stage, and the anchor metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline import anchor_candidates, anchor_translations, baseline_model, dictionary, ingest
from pipeline.core.anchor_match import AnchorMatcher
from pipeline.review.corrections import CorrectionsError
from pipeline.params import DictionaryParams, load_params
from pipeline.store import read_dataset, read_manifest
from tests.conftest import build_small_project, train_tiny_tokenizer


@pytest.fixture(scope="module")
def anchored(tmp_path_factory, tiny_model_dir: Path) -> Path:
    """The small project up to anchor_translations (stages called directly, no DVC)."""
    return build_small_project(
        tmp_path_factory.mktemp("anchored"), tiny_model_dir, forget_copies=2,
        extra_params="dictionary:\n  gold: null\n  corrections: labels/anchors/corrections.jsonl\n",
        stages=(ingest, baseline_model, anchor_candidates, anchor_translations),
    )


def _corrections(root: Path, *lines: dict) -> None:
    path = root / "labels" / "anchors" / "corrections.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")


def test_without_corrections_the_dictionary_is_the_proposal(anchored: Path):
    (anchored / "labels" / "anchors" / "corrections.jsonl").unlink(missing_ok=True)
    dictionary.run(load_params(anchored / "params.yaml"), root=anchored)
    result = read_dataset("dictionary", anchored)
    candidates = read_dataset("anchor_candidates", anchored)
    translations = read_dataset("anchor_translations", anchored).set_index("anchor")["translations"]
    assert result["anchor"].tolist() == candidates.sort_values("rank")["anchor"].tolist()
    assert set(result["status"]) == {"proposed"}
    for row in result.itertuples():
        assert row.translations == translations[row.anchor]
        assert row.review == []
    assert {"Brackwell", "Fenwick", "Quillby"} <= set(result["anchor"])  # another book, no code change
    metrics = json.loads((anchored / "metrics" / "anchors.json").read_text())
    assert metrics["anchors"] == len(result)
    assert sum(metrics["by_kind"].values()) == len(result)
    assert 0 < metrics["coverage"] < 1


def test_corrections_are_applied_with_provenance(anchored: Path):
    _corrections(
        anchored,
        {"action": "reject", "anchor": "Fenwick", "reviewer": "ann@example.org",
         "created_at": "2026-11-27T10:00:00Z", "note": "too generic"},
        {"action": "add", "anchor": "Kandahar", "kind": "place", "reviewer": "bob@example.org",
         "created_at": "2026-11-27T10:01:00Z"},
        {"action": "change_translation", "anchor": "Brackwell", "translations": ["Hartley"],
         "reviewer": "ann@example.org", "created_at": "2026-11-27T10:02:00Z"},
    )
    dictionary.run(load_params(anchored / "params.yaml"), root=anchored)
    result = read_dataset("dictionary", anchored).set_index("anchor")
    n = len(result["translations"].iloc[0])
    assert "Fenwick" not in result.index
    rejects = read_dataset("dictionary_rejects", anchored)
    assert rejects["record"].tolist() == ["Fenwick"]
    assert "ann@example.org" in rejects["reason"].iloc[0] and "too generic" in rejects["reason"].iloc[0]
    added = result.loc["Kandahar"]
    assert added["status"] == "added" and added["proposed_by"] == ["review"]
    assert len(added["translations"]) == n and "Kandahar" not in added["translations"]
    assert added["forget_count"] == 2  # counted in the forget text by the matcher
    changed = result.loc["Brackwell"]
    assert changed["translations"] == ["Hartley"] * n and changed["proposer"] == "review"
    assert changed["review"][0].startswith("2026-11-27T10:02:00Z ann@example.org change_translation (")
    metrics = json.loads((anchored / "metrics" / "anchors.json").read_text())
    assert metrics["corrections_applied"] == 3 and metrics["rejected_by_review"] == 1
    assert metrics["by_status"]["added"] == 1


def test_malformed_corrections_fail_and_leave_the_dictionary_as_it_was(anchored: Path):
    _corrections(anchored)
    dictionary.run(load_params(anchored / "params.yaml"), root=anchored)
    before = read_manifest("dictionary", anchored)["content_sha256"]
    _corrections(
        anchored,
        {"action": "reject", "anchor": "Fenwick", "reviewer": "ann@example.org", "created_at": "2026-11-27T10:00:00Z"},
        {"action": "explode", "anchor": "Quillby", "reviewer": "ann@example.org", "created_at": "2026-11-27T10:00:00Z"},
    )
    with pytest.raises(CorrectionsError, match=r"corrections.jsonl:2: .*explode"):
        dictionary.run(load_params(anchored / "params.yaml"), root=anchored)
    assert read_manifest("dictionary", anchored)["content_sha256"] == before
    assert "Fenwick" in set(read_dataset("dictionary", anchored)["anchor"])


def test_token_coverage_counts_tokens_overlapping_anchors(tmp_path: Path):
    tokenizer = train_tiny_tokenizer(tmp_path, ["Quillby met Fenwick at the hall."] * 50)
    text = "Quillby met Fenwick at the hall."
    share, total = dictionary.token_coverage([text], AnchorMatcher(["Quillby"]), tokenizer)
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    expected = sum(1 for start, end in offsets if start < len("Quillby"))
    assert total == len(offsets)
    assert share == expected / total


def test_every_gold_list_is_scored_in_the_metrics(anchored: Path):
    (anchored / "labels" / "anchors" / "corrections.jsonl").unlink(missing_ok=True)
    gold = anchored / "gold_lantern.csv"
    gold.write_text(
        "# The invented lantern story's names, written by hand.\nterm,kind,tier\n"
        "Inspector Brackwell,person,core\nMr. Quillby,person,core\nMoonrise,person,core\nFenwick Street,place,valid\n",
        encoding="utf-8",
    )
    params = load_params(anchored / "params.yaml").model_copy(
        update={"dictionary": DictionaryParams(gold=[str(gold.relative_to(anchored))], precision_at=3)}
    )
    summary = dictionary.run(params, root=anchored)
    scores = json.loads((anchored / "metrics" / "anchors.json").read_text())["gold"]["gold_lantern"]
    assert scores["core_terms"] == 3
    assert scores["missed"] == ["Moonrise"]  # no such name in the story
    assert scores["recall"] == round(2 / 3, 4) == summary["recall_gold_lantern"]
    assert "precision_at_3" in scores
