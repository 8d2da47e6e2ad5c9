"""generic_labels: several alphas in one pass, the formula on real forwards, shard resume."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from pipeline import generic_labels
from pipeline.generic import gather_aligned, generic_logits, suppress_used_translations
from pipeline.models import load_model
from pipeline.store import dataset_dir, read_dataset
from tests.test_blocks import built  # noqa: F401  (module fixture: a small project up to blocks)

ALPHAS = (2.5, 5.0)


@pytest.fixture(scope="module")
def reinforced_dir(built: Path, tmp_path_factory) -> Path:  # noqa: F811
    """A stand-in reinforced model: the baseline with perturbed weights (any other model works)."""
    folder = tmp_path_factory.mktemp("reinforced")
    model = load_model(built / "models" / "baseline", dtype="float32", device="cpu")
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(folder)
    return folder


def _run(root: Path, reinforced: Path, **kwargs) -> bool:
    return generic_labels.compute(
        root, alphas=ALPHAS, top_k=4, batch_size=2, shard_blocks=2,
        baseline_dir=root / "models" / "baseline", reinforced_dir=reinforced, **kwargs,
    )


def test_one_row_per_block_and_alpha_with_targets_from_the_formula(built: Path, reinforced_dir: Path):  # noqa: F811
    assert _run(built, reinforced_dir)
    labels = read_dataset("generic_labels", built)
    blocks = read_dataset("blocks", built).set_index("block_id")
    assert len(labels) == len(blocks) * len(ALPHAS)
    row = labels[labels["alpha"] == 5.0].iloc[0]
    block = blocks.loc[row["block_id"]]
    base = load_model(built / "models" / "baseline", dtype="float32", device="cpu")
    reinf = load_model(reinforced_dir, dtype="float32", device="cpu")
    with torch.no_grad():
        v_reinf = reinf(torch.tensor([list(block["input_ids"])])).logits[0]
        v_base = gather_aligned(base(torch.tensor([list(block["translated_ids"])])).logits[0], list(block["alignment"]))
    v = suppress_used_translations(generic_logits(v_base, v_reinf, 5.0), list(block["alignment"]),
                                   list(block["used_positions"]), list(block["used_token_ids"]))
    kept = [i for i, j in enumerate(block["alignment"]) if j >= 0]  # dropped positions are masked anyway
    assert [row["target"][i] for i in kept] == v.argmax(-1)[kept].tolist()
    assert len(row["top_ids"][0]) == 4 and row["top_ids"][0][0] == row["target"][0]
    assert all(abs(c - p[0]) < 1e-6 for c, p in zip(row["confidence"], row["top_probs"]))


def test_interrupted_run_resumes_to_identical_output(built: Path, reinforced_dir: Path, tmp_path: Path):  # noqa: F811
    copy = tmp_path / "copy"
    shutil.copytree(built, copy)
    shutil.rmtree(dataset_dir("generic_labels", copy), ignore_errors=True)
    assert _run(copy, reinforced_dir, max_shards_this_run=1) is False  # "killed" after one shard
    assert (copy / generic_labels.WORK / "shard-00000.parquet").exists()
    assert _run(copy, reinforced_dir) is True
    _run(built, reinforced_dir)
    ours = sorted(dataset_dir("generic_labels", copy).glob("part-*.parquet"))
    theirs = sorted(dataset_dir("generic_labels", built).glob("part-*.parquet"))
    assert [p.read_bytes() for p in ours] == [p.read_bytes() for p in theirs]
    assert not (copy / generic_labels.WORK).exists()
