"""The dataset stage applying the linguistic review's decisions: dropped and fixed positions,
stale and superseded decisions, errors naming file and line, provenance in manifest and card."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest

from pipeline import dataset
from pipeline.review.decisions import DecisionsError, apply_decisions, load_decisions
from pipeline.params import parse_params
from pipeline.store import manifest_path, read_dataset, read_manifest
from schemas.dataset import IGNORE
from tests.conftest import BLOCK_A as A, BLOCK_B as B, BLOCK_TARGETS as TARGETS, TINY_TEXT, train_tiny_tokenizer
from tests.conftest import write_block_inputs as write_inputs



def decision(key_block: str, positions: list[int], verdict: str, *, created: str = "2026-11-27T10:00:00Z",
             **fields) -> dict:
    record = {"key": f"{key_block}:{positions[0]}", "block_id": key_block, "positions": positions,
              "verdict": verdict, "reviewer": "ann", "created_at": created}
    record.update(fields)
    return record


def write_decisions(path: Path, *records: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def frame() -> pd.DataFrame:
    return pd.DataFrame({
        "block_id": [A, B],
        "labels": [list(TARGETS[A]), list(TARGETS[B])],
        "loss_mask": [[1] * 6, [1, 1, 1, 1, 1, 0]],
        "top_ids": [[[t, 1, 2] for t in TARGETS[A]], [[t, 1, 2] for t in TARGETS[B]]],
        "top_probs": [[[0.4, 0.3, 0.2]] * 6, [[0.4, 0.3, 0.2]] * 6],
        "confidence": [[0.4] * 6, [0.4] * 6],
    })


def test_incorrect_positions_are_dropped_or_take_the_fix_as_a_one_hot_target(tmp_path):
    path = write_decisions(
        tmp_path / "decisions.jsonl",
        decision(A, [1, 2], "incorrect"),
        decision(A, [4, 5], "incorrect", fix=" mat", alpha=5.0, targets=[9, 10]),
        decision(B, [0], "correct"),
        decision(B, [1], "incorrect", targets=[99]),                       # stale: targets changed
        decision(B, [2], "incorrect", alpha=2.5),                          # stale: another alpha
        decision(B, [5], "incorrect"),                                     # stale: not trained on
        decision(B, [3], "incorrect", created="2026-11-27T09:00:00Z"),
        decision(B, [3], "unsure", created="2026-11-27T11:00:00Z"),        # supersedes the line above
    )
    loads = []

    def encoder():
        loads.append(1)
        return lambda text: {" mat": [42, 7]}[text]

    before = frame()
    after, outcome = apply_decisions(before, load_decisions(path), targets=TARGETS, alpha=5.0, encode=encoder)
    a = after.set_index("block_id").loc[A]
    assert a["labels"] == [5, IGNORE, IGNORE, 8, 42, IGNORE]
    assert a["loss_mask"] == [1, 0, 0, 1, 1, 0]
    assert a["top_ids"][4] == [42, 9, 1] and a["top_probs"][4] == [1.0, 0.0, 0.0] and a["confidence"][4] == 1.0
    assert a["top_ids"][3] == [8, 1, 2]  # untouched positions keep their soft targets
    b = after.set_index("block_id").loc[B]
    assert b["labels"] == TARGETS[B] and b["loss_mask"] == [1, 1, 1, 1, 1, 0]
    assert (outcome.decisions, outcome.applied, outcome.incorrect, outcome.superseded) == (8, 4, 2, 1)
    assert (outcome.dropped, outcome.fixed) == (3, 1) and loads == [1]
    assert [s.split(": ", 1)[0] for s in outcome.stale] == [f"{path}:4", f"{path}:5", f"{path}:6"]
    assert "the generic targets changed since the review ([99] then, [12] now)" in outcome.stale[0]
    assert before["labels"][0] == TARGETS[A]  # the input frame is not modified


def test_a_later_decision_on_an_overlapping_task_wins_position_by_position(tmp_path):
    path = write_decisions(tmp_path / "d.jsonl",
                           decision(A, [2, 3], "incorrect", fix=" mat", created="2026-11-27T12:00:00Z"),
                           decision(A, [1, 2], "incorrect", created="2026-11-27T10:00:00Z"))
    after, outcome = apply_decisions(frame(), load_decisions(path), targets=TARGETS, alpha=5.0,
                                     encode=lambda: lambda text: [42])
    assert after["labels"][0] == [5, IGNORE, 42, IGNORE, 9, 10] and (outcome.dropped, outcome.fixed) == (2, 1)


def test_decisions_on_missing_blocks_or_positions_are_errors_naming_file_and_line(tmp_path):
    path = write_decisions(tmp_path / "d.jsonl", decision(A, [1], "correct"),
                           decision("forget:z.txt@9", [0], "correct"), decision(A, [3, 6], "incorrect"))
    with pytest.raises(DecisionsError) as caught:
        apply_decisions(frame(), load_decisions(path), targets=TARGETS, alpha=5.0)
    message = str(caught.value)
    assert f"{path}:2: block 'forget:z.txt@9' is not in the dataset" in message
    assert f"{path}:3: position 6 is outside block '{A}' (6 positions)" in message
    assert f"{path}:1" not in message


# --- the stage on disk --------------------------------------------------------------------


def test_the_stage_applies_the_decisions_with_provenance(tmp_path):
    root = tmp_path
    write_inputs(root)
    tokenizer = train_tiny_tokenizer(root / "models" / "baseline", TINY_TEXT * 5)
    params = parse_params({"corpus": {"forget": ["corpora/forget"]}, "dataset": {"alpha": 5.0}})
    empty = dataset.run(params, root=root)  # no decisions file: nothing changes
    assert (empty["review_dropped"], empty["review_fixed"]) == (0, 0)
    provenance = read_manifest("dataset", root)["params"]["linguistic_review"]
    assert provenance["sha256"] == hashlib.sha256(b"").hexdigest() and provenance["applied"] == 0

    path = write_decisions(root / dataset.DECISIONS, decision(A, [1, 2], "incorrect"),
                           decision(B, [3, 4], "incorrect", fix=" river", targets=[14, 15]),
                           decision(B, [0], "unsure"))
    summary = dataset.run(params, root=root)
    assert (summary["review_dropped"], summary["review_fixed"], summary["review_stale"]) == (3, 1, 0)
    rows = read_dataset("dataset", root).set_index("block_id")
    river = tokenizer.encode(" river", add_special_tokens=False)[0]
    assert rows.loc[A, "labels"] == [5, IGNORE, IGNORE, 8, 9, 10] and rows.loc[A, "loss_mask"] == [1, 0, 0, 1, 1, 1]
    assert rows.loc[B, "labels"] == [11, 12, 13, river, IGNORE, 16]
    assert list(rows.loc[B, "top_ids"][3]) == [river, 14]
    assert list(rows.loc[B, "top_probs"][3]) == pytest.approx([1.0, 0.0])
    provenance = read_manifest("dataset", root)["params"]["linguistic_review"]
    assert provenance["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (provenance["path"], provenance["dropped_positions"], provenance["fixed_positions"]) == (
        "labels/linguistic/decisions.jsonl", 3, 1)
    card = (root / dataset.CARD).read_text()
    assert f"| linguistic review sha256 | `{provenance['sha256']}` |" in card
    assert "| positions changed by the review: dropped / fixed | 3 / 1 |" in card

    before = read_manifest("dataset", root)["content_sha256"]
    write_decisions(root / dataset.DECISIONS, decision(A, [7], "incorrect"))
    with pytest.raises(DecisionsError, match=r"labels/linguistic/decisions.jsonl:1: position 7 is outside block"):
        dataset.run(params, root=root)
    assert read_manifest("dataset", root)["content_sha256"] == before


def test_the_card_counts_trained_positions_without_small_integer_overflow():
    import numpy as np

    n = 300  # more than an int8 holds: the stored loss masks are int8 arrays
    frame = pd.DataFrame({
        "block_id": ["b"], "doc_id": ["d"], "input_ids": [np.arange(n)], "labels": [np.arange(n)],
        "loss_mask": [np.ones(n, dtype=np.int8)], "confidence": [np.full(n, 0.5)], "alpha": [5.0],
        "dictionary_sha256": ["0" * 64], "corrections_sha256": ["0" * 64],
    })
    assert "| trained positions | 300 (100.0%) |" in dataset.card(frame, {"inputs": {"blocks": "f" * 64}})


def test_the_card_and_manifest_carry_what_the_block_selection_covers(tmp_path):
    write_inputs(tmp_path)
    train_tiny_tokenizer(tmp_path / "models" / "baseline", TINY_TEXT * 5)
    selection = {"method": "anchors", "requested": 50, "candidates": 40, "selected": 40, "anchors": 12,
                 "anchors_in_candidates": 10, "anchors_covered": 9, "anchor_weight_share": 0.8125,
                 "anchor_weight_share_reachable": 0.9, "anchor_occurrences": 70, "anchor_occurrences_covered": 70,
                 "documents": 3, "documents_covered": 3, "note": "blocks.max_blocks asks for 50 blocks but ..."}
    manifest = json.loads(manifest_path("blocks", tmp_path).read_text())
    manifest["params"]["selection"] = selection  # what the blocks stage records
    manifest_path("blocks", tmp_path).write_text(json.dumps(manifest))
    dataset.run(parse_params({"corpus": {"forget": ["corpora/forget"]}, "dataset": {"alpha": 5.0}}), root=tmp_path)
    assert read_manifest("dataset", tmp_path)["params"]["block_selection"] == selection
    card = (tmp_path / dataset.CARD).read_text()
    assert "| training blocks chosen by | `anchors`: 40 of 40 candidate blocks (blocks.max_blocks: 50) |" in card
    assert "| anchors covered | 9 of 12 (81.2% of the anchor weight) |" in card
    assert "| documents covered | 3 of 3 |" in card and "| note | blocks.max_blocks asks for 50 blocks but ... |" in card
