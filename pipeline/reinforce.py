"""Stage ``reinforce``: the baseline fine-tuned further on the forget blocks -> ``models/reinforced``.

docs/algorithm.md step 2: the reinforced model learns the forget corpus itself, so its logits rise
exactly where knowledge of the corpus helps; step 6 compares them with the baseline's. It is
trained with next-token cross-entropy on every position of the *original* block ids (not the
translations, and not the blocks' ``loss_mask``, which concerns the generic labels).

Outputs: ``models/reinforced`` (Hugging Face folder: weights in float32, the baseline's tokenizer,
``whp_model.json`` provenance), written to a temporary folder and renamed when complete, and
the loss curve ``plots/reinforce_loss.csv`` (one row per optimiser step). Checkpoints go to
``models/.reinforce-checkpoints``: a crashed or killed run resumes there on the next run and
they are removed after success.

Run: ``python -m pipeline.reinforce`` (``dvc repro reinforce``); on several GPUs
``accelerate launch --num_processes N -m pipeline.reinforce``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from pipeline.paths import BASELINE, PROVENANCE, REINFORCED
from pipeline.stage import run_stage
from pipeline.errors import DatasetNotFoundError, DatasetValidationError
from pipeline.models import load_model, load_tokenizer, pick_device, weights_hash
from pipeline.params import Params, section_dict
from pipeline.store import publish_folder, read_dataset, read_manifest
from pipeline.training import BlockBatches, TrainSettings, causal_lm_loss, train
from schemas.blocks import BLOCKS

STAGE = "reinforce"
PARAMS = ("reinforce",)
CHECKPOINTS = Path("models/.reinforce-checkpoints")
LOSS_LOG = Path("plots/reinforce_loss.csv")


def run(params: Params, *, root: Path = Path(".")) -> dict:
    """Train the reinforced model and write it; returns steps, final loss, tokens/s and device."""
    settings = TrainSettings.from_section(params.reinforce)
    blocks = read_dataset(BLOCKS.name, root, columns=["block_id", "input_ids"])
    if blocks.empty:
        raise DatasetValidationError(f"dataset {BLOCKS.name!r} has no blocks: nothing to reinforce on")
    baseline = root / BASELINE
    tokenizer = load_tokenizer(baseline)
    device = pick_device()
    model = load_model(baseline, dtype="float32", device=device)
    base_weights = weights_hash(baseline)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    batches = BlockBatches(blocks["input_ids"].tolist(), pad_id=pad_id)

    output = root / REINFORCED
    output.parent.mkdir(parents=True, exist_ok=True)
    # A fixed name, not mkdtemp: under `accelerate launch` every process must agree on it
    # (only the main one writes there).
    tmp = output.with_name(f".{output.name}.tmp")
    try:
        result = train(
            model, batches, loss_fn=causal_lm_loss, settings=settings, output_dir=tmp,
            checkpoint_dir=root / CHECKPOINTS, device=device, log_path=root / LOSS_LOG,
            resume_key=base_weights,
        )
        summary = {
            "steps": result.steps, "final_loss": f"{result.final_loss:.4f}",
            "tokens_per_s": f"{result.tokens_per_s:.0f}", "device": result.device,
            "resumed_from": result.resumed_from,
        }
        if not result.is_main_process:
            return summary
        tokenizer.save_pretrained(tmp)
        base_provenance = _read_json(baseline / PROVENANCE)
        provenance = {
            "base_model": BASELINE.as_posix(),
            "base_source": base_provenance.get("source"),
            "base_weights_sha256": base_weights,
            "params": section_dict(params, *PARAMS),
            "blocks": len(batches),
            "block_tokens": int(blocks["input_ids"].map(len).sum()),
            "blocks_content_sha256": _blocks_hash(root),
            "objective": "next-token cross-entropy on every position of the original block ids",
            "steps": result.steps,
            "final_loss": result.final_loss,
            "device": result.device,
            "world_size": result.world_size,
            "precision": result.precision,
            "dtype": "float32",
            "tokens_per_s": result.tokens_per_s,
            "train_seconds": result.seconds,
            "resumed_from_step": result.resumed_from,
            "loss_log": LOSS_LOG.as_posix(),
        }
        (tmp / PROVENANCE).write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
        publish_folder(tmp, output)
    except BaseException:
        # The checkpoints stay: the next run resumes from them.
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(root / CHECKPOINTS, ignore_errors=True)
    return summary


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _blocks_hash(root: Path) -> str | None:
    try:
        return read_manifest(BLOCKS.name, root).get("content_sha256")
    except DatasetNotFoundError:  # provenance only; the blocks themselves were read
        return None


if __name__ == "__main__":
    run_stage(STAGE, run)
