"""Stage `retain_blocks`: whole-document tokenization, seeded splits, spread caps, rejects."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pandas as pd
import pytest

from pipeline import retain_blocks
from pipeline.core.sampling import assign_split, spread_sample
from pipeline.errors import DatasetValidationError
from pipeline.models import load_tokenizer
from pipeline.params import parse_params
from pipeline.store import read_dataset, read_manifest, validate_frame, write_dataset
from schemas.corpus import DOCUMENTS
from schemas.retain import RETAIN_BLOCKS
from tests.conftest import SMALL_FORGET, SMALL_RETAIN, TINY_TEXT

BOOKS = {
    "retain:a.txt": " ".join(TINY_TEXT) * 12,
    "retain:b.txt": SMALL_RETAIN * 10,
    "retain:c.txt": "Hi.",  # fewer tokens than blocks.min_block_tokens
    "forget:lantern.txt": SMALL_FORGET * 4,
}


def _params(**retain) -> object:
    return parse_params({
        "corpus": {"forget": ["corpora/forget"], "retain": ["corpora/retain"]},
        "blocks": {"block_size": 32, "min_block_tokens": 8},
        "retain_blocks": {"heldout_fraction": 0.25, "seed": 0} | retain,
    })


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_model_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("retain")
    shutil.copytree(tiny_model_dir, root / "models" / "baseline")
    rows = [{"doc_id": doc_id, "corpus": doc_id.split(":")[0], "source": doc_id.split(":")[1], "record": 0,
             "title": "", "text": text, "n_chars": len(text), "sha256": hashlib.sha256(text.encode()).hexdigest()}
            for doc_id, text in BOOKS.items()]
    write_dataset(pd.DataFrame(rows), DOCUMENTS, stage="ingest", root=root)
    return root


def _run(project: Path, **retain) -> pd.DataFrame:
    retain_blocks.run(_params(**retain), root=project)
    return read_dataset("retain_blocks", project)


def test_blocks_are_each_retain_documents_whole_tokenization_cut_in_order(project: Path):
    frame = _run(project)
    tokenizer = load_tokenizer(project / "models" / "baseline")
    rejects = read_dataset("retain_blocks_rejects", project)
    assert set(frame["doc_id"]) == {"retain:a.txt", "retain:b.txt"}  # never the forget book
    for doc_id in ("retain:a.txt", "retain:b.txt"):
        ids = tokenizer(BOOKS[doc_id], add_special_tokens=False)["input_ids"]
        doc = frame[frame["doc_id"] == doc_id].sort_values("index")
        short = sum(int(r.record) for r in rejects.itertuples() if r.source == doc_id)
        assert [t for block in doc["input_ids"] for t in block] == ids[: len(ids) - short]
        assert doc["token_start"].tolist() == [32 * i for i in doc["index"]]
        first = doc.iloc[0]
        assert first["char_start"] == 0
        assert tokenizer(BOOKS[doc_id][first["char_start"]:first["char_end"]], add_special_tokens=False)["input_ids"] == first["input_ids"]
    assert all(8 <= len(b) <= 32 for b in frame["input_ids"])
    assert (frame["block_id"] == frame["doc_id"] + "@" + frame["index"].astype(str)).all()


def test_short_last_blocks_are_rejected_with_their_reason(project: Path):
    frame = _run(project, heldout_fraction=0.0)
    tokenizer = load_tokenizer(project / "models" / "baseline")
    rejects = read_dataset("retain_blocks_rejects", project)
    short_note = len(tokenizer(BOOKS["retain:c.txt"], add_special_tokens=False)["input_ids"])
    assert rejects[rejects["source"] == "retain:c.txt"]["location"].tolist() == ["retain:c.txt@0"]
    assert rejects[rejects["source"] == "retain:c.txt"]["record"].tolist() == [str(short_note)]
    assert "retain:c.txt" not in set(frame["doc_id"])
    for doc_id in ("retain:a.txt", "retain:b.txt"):
        tail = len(tokenizer(BOOKS[doc_id], add_special_tokens=False)["input_ids"]) % 32
        refused = rejects[rejects["source"] == doc_id]
        if 0 < tail < 8:
            assert refused["record"].tolist() == [str(tail)]
            assert "blocks.min_block_tokens (8)" in refused["reason"].iloc[0]
        else:
            assert refused.empty
            assert len(frame[frame["doc_id"] == doc_id]["input_ids"].iloc[-1]) == tail or tail == 0


def test_split_is_a_seeded_function_of_the_block_id(project: Path):
    first = _run(project)
    again = _run(project)
    assert first.equals(again)
    assert set(first["split"]) == {"train", "heldout"}
    for row in first.itertuples():
        assert row.split == assign_split(row.block_id, heldout_fraction=0.25, seed=0)
    other_seed = _run(project, seed=7)
    assert other_seed["split"].tolist() != first["split"].tolist()
    assert set(_run(project, heldout_fraction=0.0)["split"]) == {"train"}
    assert set(_run(project, heldout_fraction=1.0)["split"]) == {"heldout"}


def test_the_split_of_a_block_does_not_depend_on_the_caps(project: Path):
    everything = _run(project).set_index("block_id")["split"]
    capped = _run(project, max_train_blocks=3, max_heldout_blocks=2)
    assert capped["split"].value_counts().to_dict() == {"train": 3, "heldout": 2}
    assert all(everything[row.block_id] == row.split for row in capped.itertuples())


def test_caps_spread_over_documents_and_grow_as_supersets(project: Path):
    small = _run(project, max_train_blocks=4, max_heldout_blocks=0)
    assert small["doc_id"].value_counts().to_dict() == {"retain:a.txt": 2, "retain:b.txt": 2}
    assert set(small["split"]) == {"train"}
    larger = _run(project, max_train_blocks=7, max_heldout_blocks=0)
    assert set(small["block_id"]) < set(larger["block_id"])
    assert larger.sort_values(["doc_id", "index"]).index.tolist() == larger.index.tolist()  # document order


def test_manifest_records_the_block_sizes_and_params(project: Path):
    _run(project, max_train_blocks=5)
    used = read_manifest("retain_blocks", project)["params"]
    assert used["blocks"] == {"block_size": 32, "min_block_tokens": 8}
    assert used["retain_blocks"]["max_train_blocks"] == 5


def test_spread_sample_alternates_documents_even_when_one_is_longer():
    blocks = [{"doc_id": d, "block_id": f"{d}@{i}", "index": i} for d, n in (("x", 10), ("y", 2)) for i in range(n)]
    chosen = spread_sample(blocks, 6, seed=0)
    assert [b["doc_id"] for b in chosen].count("y") == 2
    assert len(chosen) == 6
    assert spread_sample(blocks, None, seed=0) == sorted(blocks, key=lambda b: (b["doc_id"], b["index"]))


def test_contract_refuses_a_bad_split_and_an_empty_block():
    row = {"block_id": "retain:a@0", "doc_id": "retain:a", "index": 0, "token_start": 0, "char_start": 0,
           "char_end": 10, "input_ids": [1, 2], "split": "test"}
    with pytest.raises(DatasetValidationError, match="split"):
        validate_frame(pd.DataFrame([row]), RETAIN_BLOCKS)
    with pytest.raises(DatasetValidationError, match="input_ids"):
        validate_frame(pd.DataFrame([row | {"split": "train", "input_ids": []}]), RETAIN_BLOCKS)
