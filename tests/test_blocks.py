"""Stage `blocks`: whole-document tokenization, the choice of training blocks, translation and
alignment, on a small book and on hand-made documents and dictionaries."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pandas as pd
import pytest

from pipeline import blocks
from pipeline.core.alignment import DROPPED
from pipeline.core.anchor_match import AnchorMatcher
from pipeline.errors import DatasetValidationError
from pipeline.models import load_tokenizer
from pipeline.params import load_params, parse_params
from pipeline.sql import connect, run_query
from pipeline.store import read_dataset, read_manifest, write_dataset
from schemas.anchors import DICTIONARY
from schemas.corpus import DOCUMENTS
from tests.conftest import SMALL_RETAIN


def test_blocks_are_the_whole_document_tokenization_cut_in_order(built: Path):
    tokenizer = load_tokenizer(built / "models" / "baseline")
    doc = read_dataset("documents", built).query("corpus == 'forget'").iloc[0]
    ids = tokenizer(doc["text"], add_special_tokens=False)["input_ids"]
    frame = read_dataset("blocks", built).sort_values("index")
    joined = [t for block in frame["input_ids"] for t in block]
    rejected = read_dataset("blocks_rejects", built)
    short = sum(int(r) for r in rejected["record"])
    assert joined == ids[: len(ids) - short]
    assert all(len(b) == 64 for b in frame["input_ids"].iloc[:-1])
    assert frame["token_start"].tolist() == [64 * i for i in frame["index"]]
    assert tokenizer.bos_token_id is None or tokenizer.bos_token_id not in joined[1:]


def test_translation_replaces_every_anchor_and_alignment_is_consistent(built: Path):
    anchors = read_dataset("dictionary", built)["anchor"].tolist()
    matcher = AnchorMatcher(anchors)
    for row in read_dataset("blocks", built).itertuples():
        assert not [s for s in matcher.find(row.translated_text) if s.anchor in row.anchors]
        assert len(row.alignment) == len(row.input_ids) == len(row.loss_mask)
        for i, j in enumerate(row.alignment):
            assert (j == DROPPED) == (row.loss_mask[i] == 0) == bool(row.drop_reasons[i])
            if j != DROPPED:
                assert 0 <= j < len(row.translated_ids)
        kept = [j for j in row.alignment if j != DROPPED]
        assert kept == sorted(kept)  # alignment is monotone
        # rule 2: at most one entry per translation, each the translated token at its position
        assert len(row.used_positions) == len(row.used_token_ids) <= len(row.anchors)
        assert [row.translated_ids[p] for p in row.used_positions] == list(row.used_token_ids)


def test_worlds_are_seeded_per_block_and_recorded(built: Path):
    frame = read_dataset("blocks", built)
    n_worlds = len(read_dataset("dictionary", built)["translations"].iloc[0])
    assert set(frame["world"]) <= set(range(n_worlds))
    assert read_manifest("blocks", built)["params"]["dictionary_sha256"] == read_manifest("dictionary", built)["content_sha256"]


def _rebuilt(built: Path, root: Path, blocks_params: str) -> Path:
    """A copy of the built project at ``root`` whose blocks are rebuilt with more ``blocks:`` keys."""
    shutil.copytree(built, root)
    text = (root / "params.yaml").read_text().replace("min_block_tokens: 16", "min_block_tokens: 16\n" + blocks_params)
    (root / "params.yaml").write_text(text)
    blocks.run(load_params(root / "params.yaml"), root=root)
    return root


def test_select_first_keeps_the_first_blocks_exactly(built: Path, tmp_path: Path):
    _rebuilt(built, tmp_path / "p", "  max_blocks: 2\n  select: first")
    capped, every = read_dataset("blocks", tmp_path / "p"), read_dataset("blocks", built)
    assert capped["block_id"].tolist() == every["block_id"].tolist()[:2]
    # A block is built the same whatever else is chosen (its world is seeded by its id).
    pd.testing.assert_frame_equal(capped, every.iloc[:2])
    candidates = read_dataset("block_candidates", tmp_path / "p")
    assert candidates["block_id"].tolist() == every["block_id"].tolist()  # every block stays identifiable
    assert candidates["selected"].tolist() == [True, True] + [False] * (len(every) - 2)
    assert candidates["rank"].tolist()[:3] == [1, 2, 0]


def test_name_prefixes_leave_the_loss_and_only_they(built: Path, tmp_path: Path):
    kept, dropped = read_dataset("blocks", _rebuilt(built, tmp_path / "p", "  drop_name_prefixes: false")), \
        read_dataset("blocks", built)
    documents = read_dataset("documents", built).set_index("doc_id")["text"]
    tokenizer = load_tokenizer(built / "models" / "baseline")
    words = set()
    for without, row in zip(kept.itertuples(), dropped.itertuples()):
        assert "name prefix" not in without.drop_reasons
        offsets = tokenizer(documents[row.doc_id], add_special_tokens=False,
                            return_offsets_mapping=True)["offset_mapping"][row.token_start:]
        for i, (before, after) in enumerate(zip(without.drop_reasons, row.drop_reasons)):
            if after == "name prefix":
                assert before == "" and without.loss_mask[i] == 1 and row.loss_mask[i] == 0
                start, end = offsets[i]
                text = documents[row.doc_id]
                assert text[end] == " " and text[end + 1].isupper()  # another capitalised word follows
                words.add(text[:end].split()[-1])
            else:
                assert before == after
    assert words and all(word[0].isupper() for word in words)
    assert dropped["loss_mask"].map(sum).sum() < kept["loss_mask"].map(sum).sum()


# --- the choice of training blocks, on hand-made documents and dictionaries -------------------

FILLER = "The weather was mild and the road was long. " * 12
STORY_A = FILLER + "\n\n" + "Brackwell met Quillby at the Lantern. Quillby laughed; Brackwell did not. " * 2
STORY_B = "Fenwick wrote a letter. " * 3 + "\n\n" + FILLER


def _choice_project(root: Path, tiny_model_dir: Path, *, anchors: list[tuple[str, int, float | None]]) -> Path:
    """documents (two forget stories, one retain), a dictionary with ``anchors`` (anchor,
    forget_count, score), and the baseline: what the blocks stage reads."""
    shutil.copytree(tiny_model_dir, root / "models" / "baseline")
    texts = {"forget:a.txt": STORY_A, "forget:b.txt": STORY_B, "retain:c.txt": SMALL_RETAIN}
    write_dataset(pd.DataFrame([
        {"doc_id": doc, "corpus": doc.split(":")[0], "source": doc.split(":")[1], "record": 0, "title": "", "text": text,
         "n_chars": len(text), "sha256": hashlib.sha256(text.encode()).hexdigest()}
        for doc, text in texts.items()
    ]), DOCUMENTS, stage="ingest", root=root)
    write_dataset(pd.DataFrame([
        {"anchor": anchor, "kind": "person", "translations": [f"Person{i}a", f"Person{i}b"], "variants": [anchor],
         "rank": i + 1, "score": score, "forget_count": count, "status": "proposed", "proposed_by": ["log_odds"],
         "proposer": "offline", "review": []}
        for i, (anchor, count, score) in enumerate(anchors)
    ], columns=list(DICTIONARY.model.to_schema().columns)), DICTIONARY, stage="dictionary", root=root)
    return root


def _block_params(**blocks_section):
    return parse_params({"corpus": {"forget": ["unused.txt"]},
                         "blocks": {"block_size": 24, "min_block_tokens": 4} | blocks_section})


ANCHORS = [("Brackwell", 4, 3.0), ("Quillby", 4, 2.0), ("Fenwick", 3, None), ("Moriarty", 9, 5.0)]


@pytest.fixture()
def choice(tmp_path: Path, tiny_model_dir: Path) -> Path:
    return _choice_project(tmp_path, tiny_model_dir, anchors=ANCHORS)


def _anchors_of(frame: pd.DataFrame) -> set[str]:
    return {a for anchors in frame["anchors"] for a in anchors}


def test_anchors_selection_takes_the_blocks_that_hold_the_anchors(choice: Path):
    summary = blocks.run(_block_params(max_blocks=2, select="anchors"), root=choice)
    candidates = read_dataset("block_candidates", choice)
    chosen = read_dataset("blocks", choice)
    holding = candidates[candidates["anchors"].map(len) > 0]
    # The anchors sit at the end of story a and the start of story b, never in the first blocks.
    assert not set(holding["block_id"]) & {"forget:a.txt@0", "forget:a.txt@1"}
    assert _anchors_of(chosen) == {"Brackwell", "Quillby", "Fenwick"} == _anchors_of(holding)
    assert set(chosen["doc_id"]) == {"forget:a.txt", "forget:b.txt"}
    # `blocks` holds exactly the selected candidates, in block order; the rest stay listed.
    assert chosen["block_id"].tolist() == candidates[candidates["selected"]]["block_id"].tolist()
    assert sorted(candidates["rank"][candidates["selected"]]) == [1, 2]
    assert candidates["gain"][candidates["selected"]].gt(0).all() and candidates["gain"][~candidates["selected"]].isna().all()

    selection = read_manifest("blocks", choice)["params"]["selection"]
    assert selection == read_manifest("block_candidates", choice)["params"]["selection"]
    assert (selection["method"], selection["requested"], selection["selected"]) == ("anchors", 2, 2)
    assert selection["candidates"] == len(candidates) > 2 and "note" not in selection
    # Moriarty is in the dictionary but in no block: 3 of 4 anchors, all the reachable weight.
    assert (selection["anchors"], selection["anchors_in_candidates"], selection["anchors_covered"]) == (4, 3, 3)
    assert selection["anchor_weight_share_reachable"] == 1.0 > selection["anchor_weight_share"] > 0.5
    assert (selection["documents"], selection["documents_covered"]) == (2, 2)
    assert summary["anchors_covered"] == 3

    first = blocks.run(_block_params(max_blocks=2, select="first"), root=choice)
    assert read_dataset("blocks", choice)["block_id"].tolist() == ["forget:a.txt@0", "forget:a.txt@1"]
    assert first["anchors_covered"] == 0


def test_the_sql_in_the_docs_lists_the_anchors_no_selected_block_covers(choice: Path):
    blocks.run(_block_params(max_blocks=1, select="anchors"), root=choice)
    sql = ("select anchor from dictionary where anchor not in "
           "(select unnest(anchors) from block_candidates where selected) order by anchor")
    _, batches = run_query(connect(choice), sql)
    rows = [row for batch in batches for row in batch]
    covered = _anchors_of(read_dataset("blocks", choice))
    assert [r[0] for r in rows] == sorted({a for a, *_ in ANCHORS} - covered)
    assert "Moriarty" in [r[0] for r in rows] and covered


def test_more_blocks_than_exist_gives_all_of_them_and_says_so(choice: Path):
    blocks.run(_block_params(max_blocks=500, select="anchors"), root=choice)
    candidates = read_dataset("block_candidates", choice)
    assert candidates["selected"].all() and len(read_dataset("blocks", choice)) == len(candidates)
    selection = read_manifest("blocks", choice)["params"]["selection"]
    assert selection["selected"] == selection["candidates"] == len(candidates)
    assert f"asks for 500 blocks but the forget corpus has {len(candidates)}" in selection["note"]


def test_an_empty_dictionary_is_a_clear_error_for_anchors_only(tmp_path: Path, tiny_model_dir: Path):
    root = _choice_project(tmp_path, tiny_model_dir, anchors=[])
    with pytest.raises(DatasetValidationError, match=r"'dictionary'.*no anchors.*blocks.select: first or spread"):
        blocks.run(_block_params(max_blocks=2, select="anchors"), root=root)
    assert not (root / "data" / "blocks").exists()
    summary = blocks.run(_block_params(max_blocks=3, select="spread"), root=root)
    assert summary["blocks"] == 3 and summary["anchors_covered"] == 0
    assert set(read_dataset("blocks", root)["doc_id"]) == {"forget:a.txt", "forget:b.txt"}
