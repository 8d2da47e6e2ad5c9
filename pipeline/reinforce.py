"""Stage ``reinforce``: the baseline fine-tuned further on the forget blocks -> ``models/reinforced``.

docs/algorithm.md step 2: the reinforced model learns the forget corpus itself, so its logits rise
exactly where knowledge of the corpus helps; step 6 compares them with the baseline's. It is
trained with next-token cross-entropy on every position of the *original* block ids (not the
translations, and not the blocks' ``loss_mask``, which concerns the generic labels).

Outputs: ``models/reinforced`` (Hugging Face folder: weights in float32, the baseline's tokenizer,
``whp_model.json`` provenance), written to a temporary folder and renamed when complete
(:func:`pipeline.training.publish_trained`), and the training log ``plots/dvclive/reinforce``
(DVCLive: loss, learning rate, tokens and tokens/s per optimiser step; ``dvc plots show``).
Checkpoints go to ``models/.reinforce-checkpoints``: a crashed or killed run resumes there on
the next run and they are removed after success.

Run: ``python -m pipeline.reinforce`` (``dvc repro reinforce``); on several GPUs
``accelerate launch --num_processes N -m pipeline.reinforce``.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import DatasetNotFoundError, DatasetValidationError
from pipeline.models import load_model, load_tokenizer, pick_device, weights_hash
from pipeline.params import Params, section_dict
from pipeline.paths import BASELINE, REINFORCED
from pipeline.stage import run_stage
from pipeline.store import read_dataset, read_manifest
from pipeline.training_log import publish_log
from pipeline.training import BlockBatches, TrainSettings, causal_lm_loss, publish_trained, train
from schemas.blocks import BLOCKS

STAGE = "reinforce"
PARAMS = ("reinforce",)
CHECKPOINTS = Path("models/.reinforce-checkpoints")
LOG_WORK = Path("models/.reinforce-log")  # the log while training; published at the end
TRAINING_LOG = Path("plots/dvclive/reinforce")


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

    result = train(
        model, batches, loss_fn=causal_lm_loss, settings=settings, checkpoint_dir=root / CHECKPOINTS, device=device,
        log_dir=root / LOG_WORK, resume_key=base_weights,
    )
    publish_log(root / LOG_WORK, root / TRAINING_LOG)
    publish_trained(model, result, target=root / REINFORCED, baseline=baseline, base_weights=base_weights,
                    checkpoint_dir=root / CHECKPOINTS, facts={
                        "params": section_dict(params, *PARAMS),
                        "blocks": len(batches),
                        "block_tokens": int(blocks["input_ids"].map(len).sum()),
                        "blocks_content_sha256": _blocks_hash(root),
                        "objective": "next-token cross-entropy on every position of the original block ids",
                        "training_log": TRAINING_LOG.as_posix(),
                    })
    return result.summary()


def _blocks_hash(root: Path) -> str | None:
    try:
        return read_manifest(BLOCKS.name, root).get("content_sha256")
    except DatasetNotFoundError:  # provenance only; the blocks themselves were read
        return None


if __name__ == "__main__":
    run_stage(STAGE, run)
