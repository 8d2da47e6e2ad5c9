"""Stage ``generic_labels``: generic targets for every block, for several alphas in one pass.

docs/algorithm.md steps 6-7. Per batch of blocks: the reinforced model reads the original ids, the
baseline reads the translated ids; per block the baseline's logits are gathered at ``j(i)``,
``v_generic = v_base - alpha * ReLU(v_reinf - v_base)`` is formed for each alpha, consistency
rule 2 sets each used translation's first token to the position's mean logit, and only the
argmax, the top-k ids and probabilities and the confidence are kept
(:mod:`pipeline.core.generic`). At most one batch of full-vocabulary logits is in memory, none on
disk. Work is done in shards of ``generic_labels.shard_blocks`` blocks, each written atomically
to a work folder keyed by the inputs' hashes, so an interrupted run resumes at the first
missing shard and produces identical output.

Run: ``python -m pipeline.generic_labels`` (``dvc repro generic_labels``).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from pipeline.stage import run_stage
from pipeline.core.padding import right_pad
from pipeline.core.generic import block_labels, gather_aligned, used_translation_entries
from pipeline.models import load_model, pick_device
from pipeline.paths import BASELINE, REINFORCED
from pipeline.params import Params
from pipeline.store import DatasetWriter, atomic_write_text, read_dataset, read_manifest
from schemas.labels import GENERIC_LABELS

STAGE = "generic_labels"
PARAMS = ("generic_labels",)
WORK = Path("data/.generic_labels-work")


@torch.no_grad()
def label_batch(blocks: pd.DataFrame, baseline, reinforced, *, alphas: Sequence[float], top_k: int, pad_id: int = 0) -> list[dict]:
    """Rows of ``generic_labels`` for a batch of ``blocks`` (columns of schemas/blocks.py).

    Logits: reinforced ``[b, n, V]`` on the original ids, baseline ``[b, m, V]`` on the
    translated ids; autocast to bf16 on CUDA.
    """
    device = next(reinforced.parameters()).device
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    original, original_mask = right_pad(blocks["input_ids"].tolist(), pad_id)
    translated, translated_mask = right_pad(blocks["translated_ids"].tolist(), pad_id)
    with autocast:
        reinforced_logits = reinforced(input_ids=original.to(device), attention_mask=original_mask.to(device)).logits
        baseline_logits = baseline(input_ids=translated.to(device), attention_mask=translated_mask.to(device)).logits
    rows = []
    for b, block in enumerate(blocks.itertuples(index=False)):
        n, m = len(block.input_ids), len(block.translated_ids)
        base_v = gather_aligned(baseline_logits[b, :m].float(), list(block.alignment))
        entries = used_translation_entries(block.alignment, block.used_positions, block.used_token_ids)
        per_alpha = block_labels(base_v, reinforced_logits[b, :n].float(), alphas=alphas, entries=entries, top_k=top_k)
        for alpha, labels in zip(alphas, per_alpha):
            rows.append({
                "block_id": block.block_id, "alpha": float(alpha),
                "target": labels["target"].tolist(), "top_ids": labels["top_ids"].tolist(),
                "top_probs": _rounded(labels["top_probs"]), "confidence": _rounded(labels["confidence"]),
            })
    return rows


def _rounded(probabilities: torch.Tensor) -> list:
    """Six decimals: enough for a soft target, and half the Parquet size of raw float32 bits."""
    return np.round(probabilities.cpu().numpy().astype(np.float64), 6).tolist()


def shard_key(inputs: dict, shard: int, block_ids: Sequence[str]) -> str:
    """What a finished shard was computed from; a shard with another key is recomputed."""
    text = json.dumps({"inputs": inputs, "shard": shard, "blocks": list(block_ids)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def compute(
    root: Path, *, alphas: Sequence[float], top_k: int, batch_size: int, shard_blocks: int,
    baseline_dir: Path, reinforced_dir: Path, max_shards_this_run: int | None = None,
) -> bool:
    """Compute (or resume) every shard; return True when all are done, then write the dataset."""
    blocks = read_dataset("blocks", root, columns=[
        "block_id", "input_ids", "translated_ids", "alignment", "used_positions", "used_token_ids"])
    inputs = {
        "blocks": read_manifest("blocks", root)["content_sha256"], "alphas": list(alphas), "top_k": top_k,
        "baseline": (baseline_dir / "config.json").read_text(), "reinforced": _folder_hash(reinforced_dir),
    }
    work = root / WORK
    work.mkdir(parents=True, exist_ok=True)
    device = pick_device()
    baseline = reinforced = None
    done_this_run = 0
    shards = range(0, len(blocks), shard_blocks)
    for number, start in enumerate(tqdm(shards, desc="generic labels", unit="shard")):
        part = blocks.iloc[start:start + shard_blocks]
        key = shard_key(inputs, number, part["block_id"].tolist())
        path, marker = work / f"shard-{number:05d}.parquet", work / f"shard-{number:05d}.key"
        if path.exists() and marker.exists() and marker.read_text() == key:
            continue
        if max_shards_this_run is not None and done_this_run >= max_shards_this_run:
            return False
        if baseline is None:
            baseline = load_model(baseline_dir, dtype="float32", device=device)
            reinforced = load_model(reinforced_dir, dtype="float32", device=device)
        rows = []
        for b in range(0, len(part), batch_size):
            rows += label_batch(part.iloc[b:b + batch_size], baseline, reinforced, alphas=alphas, top_k=top_k)
        tmp = path.with_suffix(".tmp")
        pd.DataFrame(rows).to_parquet(tmp, index=False)
        tmp.replace(path)
        atomic_write_text(marker, key)
        done_this_run += 1
    with DatasetWriter(GENERIC_LABELS, stage=STAGE, params={"inputs": {k: v for k, v in inputs.items() if k != "baseline"}},
                       root=root) as writer:
        for number, _ in enumerate(shards):
            writer.write(pq.read_table(work / f"shard-{number:05d}.parquet").to_pandas())
    shutil.rmtree(work, ignore_errors=True)
    return True


def _folder_hash(folder: Path) -> str:
    provenance = folder / "whp_model.json"
    text = provenance.read_text() if provenance.exists() else (folder / "config.json").read_text()
    return hashlib.sha256(text.encode()).hexdigest()


def run(params: Params, *, root: Path = Path(".")) -> dict:
    settings = params.generic_labels
    compute(
        root, alphas=settings.alphas, top_k=settings.top_k, batch_size=settings.batch_size,
        shard_blocks=settings.shard_blocks, baseline_dir=root / BASELINE, reinforced_dir=root / REINFORCED,
    )
    labels = read_manifest("generic_labels", root)
    return {"rows": labels["rows"], "alphas": len(settings.alphas), "top_k": settings.top_k}


if __name__ == "__main__":
    run_stage(STAGE, run)
