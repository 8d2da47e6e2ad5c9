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

Several processes (GPUs): rank ``r`` of ``N`` computes the shards numbered ``r`` modulo ``N``,
each process on its own GPU, and the main process merges all shards in order once every rank
has finished: the dataset's bytes are those one process writes. The shards go through the work
folder, so the processes must share a filesystem (one machine, or a shared project folder).

Run: ``python -m pipeline.generic_labels`` (``dvc repro generic_labels``); on N processes
``accelerate launch --config_file configs/accelerate/ddp.yaml -m pipeline.generic_labels``,
``torchrun --nproc_per_node N -m pipeline.generic_labels``, or ``launch.config`` in params.yaml
(:mod:`pipeline.launch`).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from pipeline.stage import run_stage
from pipeline.core.padding import right_pad
from pipeline.core.generic import block_labels, gather_aligned, used_translation_entries
from pipeline.launch import Ranks, process_group, relaunch_if_configured
from pipeline.models import load_model
from pipeline.paths import BASELINE, REINFORCED
from pipeline.params import Params
from pipeline.store import DatasetWriter, atomic_write_text, read_dataset, read_manifest
from schemas.labels import GENERIC_LABELS

STAGE = "generic_labels"
# Not `launch`: how many processes compute the labels changes no byte of them (pipeline.launch
# reads it before the stage runs), so changing it must not rerun the stage.
PARAMS = ("generic_labels",)
WORK = Path("data/.generic_labels-work")


@torch.no_grad()
def label_batch(
    blocks: pd.DataFrame, baseline, reinforced, *, alphas: Sequence[float], top_k: int, pad_id: int = 0,
    boost_context: str = "original", boost_space: str = "logprob",
) -> list[dict]:
    """Rows of ``generic_labels`` for a batch of ``blocks`` (columns of schemas/blocks.py).

    Logits: reinforced ``[b, n, V]`` on the original ids, baseline ``[b, m, V]`` on the
    translated ids and, for ``boost_context="original"``, ``[b, n, V]`` on the original ids;
    autocast to bf16 on CUDA.
    """
    device = next(reinforced.parameters()).device
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    original, original_mask = right_pad(blocks["input_ids"].tolist(), pad_id)
    translated, translated_mask = right_pad(blocks["translated_ids"].tolist(), pad_id)
    with autocast:
        reinforced_logits = reinforced(input_ids=original.to(device), attention_mask=original_mask.to(device)).logits
        baseline_logits = baseline(input_ids=translated.to(device), attention_mask=translated_mask.to(device)).logits
        # The boost compares the two models on the same text unless asked otherwise: one more
        # baseline forward, on the original ids.
        original_logits = (baseline(input_ids=original.to(device), attention_mask=original_mask.to(device)).logits
                           if boost_context == "original" else None)
    rows = []
    for b, block in enumerate(blocks.itertuples(index=False)):
        n, m = len(block.input_ids), len(block.translated_ids)
        base_v = gather_aligned(baseline_logits[b, :m].float(), list(block.alignment))
        entries = used_translation_entries(block.alignment, block.used_positions, block.used_token_ids)
        reference = None if original_logits is None else original_logits[b, :n].float()
        per_alpha = block_labels(base_v, reinforced_logits[b, :n].float(), alphas=alphas, entries=entries, top_k=top_k,
                                 reference=reference, space=boost_space)
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


@dataclass(frozen=True)
class Shard:
    """Shard ``number``: ``blocks`` rows ``[start, start + shard_blocks)``, its file and its key."""

    number: int
    blocks: pd.DataFrame
    key: str
    path: Path

    @property
    def marker(self) -> Path:
        return self.path.with_suffix(".key")

    def is_done(self) -> bool:
        return self.path.exists() and self.marker.exists() and self.marker.read_text() == self.key


@dataclass(frozen=True)
class LabelRun:
    """What a call of :func:`compute` did; figures cover this call (all ranks) only."""

    complete: bool
    """All shards done and the dataset written (on the main rank; other ranks: their shards done)."""
    shards: int
    """Shards computed in this call, all ranks together."""
    tokens: int
    """Block positions labelled in this call, all ranks together (each read by both models)."""
    seconds: float
    """Wall time of the labelling, models loaded (the slowest rank)."""

    @property
    def tokens_per_s(self) -> float:
        return round(self.tokens / self.seconds, 1) if self.seconds > 0 else 0.0


def compute(
    root: Path, *, alphas: Sequence[float], top_k: int, batch_size: int, shard_blocks: int,
    baseline_dir: Path, reinforced_dir: Path, max_shards_this_run: int | None = None, ranks: Ranks = Ranks(),
    boost_context: str = "original", boost_space: str = "logprob",
) -> LabelRun:
    """Compute (or resume) every shard, then write the dataset.

    Under a launcher (``ranks.world_size`` N > 1) rank ``r`` computes the shards whose number is
    ``r`` modulo N; after a barrier the main rank computes whatever is still missing (nothing,
    unless ``max_shards_this_run`` stopped a rank) and merges the shards in order, as one
    process does: the bytes written do not depend on N. ``max_shards_this_run`` (per rank)
    simulates a run killed midway (tests): then nothing is merged and ``complete`` is False.
    """
    blocks = read_dataset("blocks", root, columns=[
        "block_id", "input_ids", "translated_ids", "alignment", "used_positions", "used_token_ids"])
    inputs = {
        "blocks": read_manifest("blocks", root)["content_sha256"], "alphas": list(alphas), "top_k": top_k,
        "boost": {"context": boost_context, "space": boost_space},
        "baseline": (baseline_dir / "config.json").read_text(), "reinforced": _folder_hash(reinforced_dir),
    }
    work = root / WORK
    work.mkdir(parents=True, exist_ok=True)
    shards = []
    for number, start in enumerate(range(0, len(blocks), shard_blocks)):
        part = blocks.iloc[start:start + shard_blocks]
        key = shard_key(inputs, number, part["block_id"].tolist())
        shards.append(Shard(number, part, key, work / f"shard-{number:05d}.parquet"))
    labeller = _Labeller(baseline_dir, reinforced_dir, alphas=alphas, top_k=top_k, batch_size=batch_size,
                         device=ranks.device(), boost={"boost_context": boost_context, "boost_space": boost_space})
    suffix = f" [rank {ranks.rank}/{ranks.world_size}]" if ranks.distributed else ""
    labeller.run([s for s in shards if ranks.owns(s.number)], budget=max_shards_this_run,
                 desc=f"generic labels{suffix}", position=ranks.rank)
    ranks.barrier()
    if ranks.is_main:  # the shards a stopped rank left (none in a normal run)
        labeller.run(shards, budget=None if max_shards_this_run is None else max_shards_this_run - labeller.shards,
                     desc="generic labels (rest)", position=0)
    shards_done, tokens = ranks.total([labeller.shards, labeller.tokens])
    (seconds,) = ranks.total([labeller.seconds], op="max")
    complete = all(s.is_done() for s in shards) if ranks.is_main else True
    if ranks.is_main and complete:
        with DatasetWriter(GENERIC_LABELS, stage=STAGE, root=root,
                           params={"inputs": {k: v for k, v in inputs.items() if k != "baseline"}}) as writer:
            for shard in shards:
                writer.write(pq.read_table(shard.path).to_pandas())
        shutil.rmtree(work, ignore_errors=True)
    return LabelRun(complete=complete, shards=int(shards_done), tokens=int(tokens), seconds=round(seconds, 3))


class _Labeller:
    """Computes shards with both models, loaded on first use; counts what it did."""

    def __init__(self, baseline_dir: Path, reinforced_dir: Path, *, alphas: Sequence[float], top_k: int,
                 batch_size: int, device: torch.device, boost: dict) -> None:
        self.dirs, self.boost = (baseline_dir, reinforced_dir), boost
        self.alphas, self.top_k, self.batch_size, self.device = alphas, top_k, batch_size, device
        self.models: tuple | None = None
        self.shards, self.tokens, self.seconds = 0, 0, 0.0

    def run(self, shards: Sequence[Shard], *, budget: int | None, desc: str, position: int) -> None:
        """Compute the shards of ``shards`` that are not done, at most ``budget`` of them."""
        todo = [s for s in shards if not s.is_done()]
        if budget is not None:
            todo = todo[:max(budget, 0)]
        if not todo:
            return
        if self.models is None:
            self.models = tuple(load_model(d, dtype="float32", device=self.device) for d in self.dirs)
        baseline, reinforced = self.models
        started = time.perf_counter()
        for shard in tqdm(todo, desc=desc, unit="shard", position=position):
            rows = []
            for b in range(0, len(shard.blocks), self.batch_size):
                rows += label_batch(shard.blocks.iloc[b:b + self.batch_size], baseline, reinforced,
                                    alphas=self.alphas, top_k=self.top_k, **self.boost)
            tmp = shard.path.with_suffix(".tmp")
            pd.DataFrame(rows).to_parquet(tmp, index=False)
            tmp.replace(shard.path)
            atomic_write_text(shard.marker, shard.key)
            self.shards += 1
            self.tokens += int(shard.blocks["input_ids"].map(len).sum())
        self.seconds += time.perf_counter() - started


def _folder_hash(folder: Path) -> str:
    provenance = folder / "whp_model.json"
    text = provenance.read_text() if provenance.exists() else (folder / "config.json").read_text()
    return hashlib.sha256(text.encode()).hexdigest()


def run(params: Params, *, root: Path = Path(".")) -> dict:
    settings = params.generic_labels
    with process_group() as ranks:
        result = compute(
            root, alphas=settings.alphas, top_k=settings.top_k, batch_size=settings.batch_size,
            shard_blocks=settings.shard_blocks, baseline_dir=root / BASELINE, reinforced_dir=root / REINFORCED,
            ranks=ranks, boost_context=settings.boost_context, boost_space=settings.boost_space,
        )
    if not ranks.is_main:
        return {"rank": ranks.rank, "processes": ranks.world_size}
    labels = read_manifest("generic_labels", root)
    return {
        "rows": labels["rows"], "alphas": len(settings.alphas), "top_k": settings.top_k, "shards": result.shards,
        "tokens": result.tokens, "tokens_per_s": result.tokens_per_s, "processes": ranks.world_size,
    }


if __name__ == "__main__":
    relaunch_if_configured("pipeline.generic_labels")
    run_stage(STAGE, run)
