"""generic_labels: several alphas in one pass, the formula on real forwards, shard resume."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from pipeline import generic_labels
from pipeline.core.generic import gather_aligned, generic_logits, suppress_used_translations
from pipeline.models import load_model
from pipeline.store import dataset_dir, read_dataset

ALPHAS = (2.5, 5.0)


def _run(root: Path, reinforced: Path, **kwargs) -> generic_labels.LabelRun:
    return generic_labels.compute(
        root, alphas=ALPHAS, top_k=4, batch_size=2, shard_blocks=2,
        baseline_dir=root / "models" / "baseline", reinforced_dir=reinforced, **kwargs,
    )


@pytest.mark.parametrize("boost_context, boost_space", [("original", "logprob"), ("translated", "logit")])
def test_one_row_per_block_and_alpha_with_targets_from_the_formula(
    built: Path, reinforced_dir: Path, tmp_path: Path, boost_context: str, boost_space: str,
):
    root = built
    if (boost_context, boost_space) != ("original", "logprob"):  # not the default: leave the shared project alone
        root = tmp_path / "copy"
        shutil.copytree(built, root)
    result = _run(root, reinforced_dir, boost_context=boost_context, boost_space=boost_space)
    assert result.complete
    labels = read_dataset("generic_labels", root)
    blocks = read_dataset("blocks", root).set_index("block_id")
    assert result.tokens == blocks["input_ids"].map(len).sum() and result.tokens_per_s > 0
    assert len(labels) == len(blocks) * len(ALPHAS)
    row = labels[labels["alpha"] == 5.0].iloc[0]
    block = blocks.loc[row["block_id"]]
    base = load_model(root / "models" / "baseline", dtype="float32", device="cpu")
    reinf = load_model(reinforced_dir, dtype="float32", device="cpu")
    with torch.no_grad():
        v_reinf = reinf(torch.tensor([list(block["input_ids"])])).logits[0]
        v_original = base(torch.tensor([list(block["input_ids"])])).logits[0]
        v_base = gather_aligned(base(torch.tensor([list(block["translated_ids"])])).logits[0], list(block["alignment"]))
    reference = v_original if boost_context == "original" else None
    v = suppress_used_translations(generic_logits(v_base, v_reinf, 5.0, reference=reference, space=boost_space),
                                   list(block["alignment"]), list(block["used_positions"]), list(block["used_token_ids"]))
    kept = [i for i, j in enumerate(block["alignment"]) if j >= 0]  # dropped positions are masked anyway
    assert [row["target"][i] for i in kept] == v.argmax(-1)[kept].tolist()
    assert len(row["top_ids"][0]) == 4 and row["top_ids"][0][0] == row["target"][0]
    assert all(abs(c - p[0]) < 1e-6 for c, p in zip(row["confidence"], row["top_probs"]))


def test_the_boost_settings_key_the_resumable_shards():
    inputs = {"blocks": "h", "alphas": [5.0], "top_k": 4}
    keys = {generic_labels.shard_key({**inputs, "boost": {"context": c, "space": s}}, 0, ["b0"])
            for c in ("original", "translated") for s in ("logprob", "logit")}
    assert len(keys) == 4  # a shard computed under other settings is never resumed


def test_interrupted_run_resumes_to_identical_output(built: Path, reinforced_dir: Path, tmp_path: Path):
    copy = tmp_path / "copy"
    shutil.copytree(built, copy)
    shutil.rmtree(dataset_dir("generic_labels", copy), ignore_errors=True)
    stopped = _run(copy, reinforced_dir, max_shards_this_run=1)  # "killed" after one shard
    assert not stopped.complete and stopped.shards == 1
    assert (copy / generic_labels.WORK / "shard-00000.parquet").exists()
    resumed = _run(copy, reinforced_dir)
    assert resumed.complete
    n_blocks = len(read_dataset("blocks", copy))
    assert resumed.shards == -(-n_blocks // 2) - 1  # the first shard is not computed again
    _run(built, reinforced_dir)
    ours = sorted(dataset_dir("generic_labels", copy).glob("part-*.parquet"))
    theirs = sorted(dataset_dir("generic_labels", built).glob("part-*.parquet"))
    assert [p.read_bytes() for p in ours] == [p.read_bytes() for p in theirs]
    assert not (copy / generic_labels.WORK).exists()


def test_dataset_stage_joins_labels_with_provenance_and_hf_features(built: Path, reinforced_dir: Path):
    from datasets import load_dataset

    from pipeline import dataset
    from pipeline.params import load_params
    from schemas.dataset import IGNORE

    _run(built, reinforced_dir)
    dataset.run(load_params(built / "params.yaml"), root=built)
    frame = read_dataset("dataset", built)
    blocks = read_dataset("blocks", built).set_index("block_id")
    labels = read_dataset("generic_labels", built)
    labels = labels[labels["alpha"] == 5.0].set_index("block_id")
    passages = read_dataset("passages", built).set_index("passage_id")
    assert len(frame) == len(blocks)
    for row in frame.itertuples():
        mask = blocks.loc[row.block_id, "loss_mask"]
        assert row.labels == [t if m else IGNORE for t, m in zip(labels.loc[row.block_id, "target"], mask)]
        for pid in row.passage_ids:
            assert passages.loc[pid, "char_start"] < row.char_end and passages.loc[pid, "char_end"] > row.char_start
    loaded = load_dataset("parquet", data_files=str(dataset_dir("dataset", built) / "*.parquet"), split="train",
                          cache_dir=str(built / ".hf-cache"))
    assert loaded.features["top_probs"].feature.feature.dtype == "float32"
    assert loaded.features["labels"].feature.dtype == "int32"
    assert loaded[0]["labels"] == frame.iloc[0]["labels"]
    assert "| blocks | %d |" % len(frame) in (built / dataset.CARD).read_text()


def test_show_block_prints_original_translation_and_target(built: Path, reinforced_dir: Path):
    from typer.testing import CliRunner

    from pipeline import dataset
    from pipeline.cli import app
    from pipeline.params import load_params

    _run(built, reinforced_dir)
    dataset.run(load_params(built / "params.yaml"), root=built)
    block = read_dataset("blocks", built).iloc[0]
    runner = CliRunner()
    result = runner.invoke(app, ["show", "block", block["block_id"], "-C", str(built), "--limit", "64"],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert block["block_id"] in result.output
    reasons = {r for r in block["drop_reasons"][:64] if r}
    assert all(reason in result.output for reason in reasons)
    missing = runner.invoke(app, ["show", "block", "nope@0", "-C", str(built)])
    assert missing.exit_code == 1 and "no block 'nope@0'" in missing.output
