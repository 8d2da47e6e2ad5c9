"""Stage `blocks`: whole-document tokenization, blocks, translation and alignment on a small book."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipeline import anchor_candidates, anchor_translations, baseline_model, blocks, dictionary, ingest
from pipeline.core.alignment import DROPPED
from pipeline.core.anchor_match import AnchorMatcher
from pipeline.models import load_tokenizer
from pipeline.params import load_params
from pipeline.store import read_dataset, read_manifest
from tests.conftest import REPO, SMALL_FORGET, SMALL_RETAIN


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_model_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("blocks")
    (root / "corpora").mkdir()
    (root / "corpora" / "lantern.txt").write_text(SMALL_FORGET * 6, encoding="utf-8")
    (root / "corpora" / "fortune.txt").write_text(SMALL_RETAIN, encoding="utf-8")
    shutil.copytree(REPO / "labels", root / "labels")
    (root / "params.yaml").write_text(
        "corpus:\n  forget: [corpora/lantern.txt]\n  retain: [corpora/fortune.txt]\n"
        f"baseline:\n  source: {tiny_model_dir}\n"
        "anchors:\n  min_count: 2\n  ner_processes: 1\n"
        "dictionary:\n  gold: null\n"
        "blocks:\n  block_size: 64\n  min_block_tokens: 16\n",
        encoding="utf-8",
    )
    params = load_params(root / "params.yaml")
    for stage in (ingest, baseline_model, anchor_candidates, anchor_translations, dictionary, blocks):
        stage.run(params, root=root)
    return root


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
        assert len(row.used_positions) == len(row.anchors) == len(row.used_token_ids)


def test_worlds_are_seeded_per_block_and_recorded(built: Path):
    frame = read_dataset("blocks", built)
    n_worlds = len(read_dataset("dictionary", built)["translations"].iloc[0])
    assert set(frame["world"]) <= set(range(n_worlds))
    assert read_manifest("blocks", built)["params"]["dictionary_sha256"] == read_manifest("dictionary", built)["content_sha256"]


def test_max_blocks_keeps_the_first_blocks(built: Path, tmp_path: Path):
    shutil.copytree(built, tmp_path / "p")
    text = (tmp_path / "p" / "params.yaml").read_text().replace("min_block_tokens: 16", "min_block_tokens: 16\n  max_blocks: 2")
    (tmp_path / "p" / "params.yaml").write_text(text)
    blocks.run(load_params(tmp_path / "p" / "params.yaml"), root=tmp_path / "p")
    assert read_dataset("blocks", tmp_path / "p")["block_id"].tolist() == read_dataset("blocks", built)["block_id"].tolist()[:2]
