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

With ``reinforce.lora`` set, low-rank adapters are trained instead of every weight and merged
into the published model (:mod:`pipeline.lora`); ``reinforce.gradient_checkpointing`` trades
compute for activation memory.

Run: ``python -m pipeline.reinforce`` (``dvc repro reinforce``); with ``launch.config`` set it
re-executes itself under ``accelerate launch`` (DDP, FSDP or DeepSpeed ZeRO-3, :mod:`pipeline.sharding`);
by hand: ``accelerate launch --config_file configs/accelerate/<x>.yaml -m pipeline.reinforce``.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.batches import BlockBatches
from pipeline.errors import DatasetNotFoundError, DatasetValidationError
from pipeline.launch import relaunch_if_configured
from pipeline.lora import run_key, trainable_model
from pipeline.models import load_tokenizer, trained_layers, weights_hash
from pipeline.params import Params, section_dict
from pipeline.paths import BASELINE, REINFORCED
from pipeline.sharding import Processes
from pipeline.stage import run_stage
from pipeline.store import read_dataset, read_manifest
from pipeline.training_log import publish_log
from pipeline.training import TrainSettings, causal_lm_loss, publish_trained, train
from schemas.blocks import BLOCKS

STAGE = "reinforce"
PARAMS = ("reinforce",)
CHECKPOINTS = Path("models/.reinforce-checkpoints")
LOG_WORK = Path("models/.reinforce-log")  # the log while training; published at the end
TRAINING_LOG = Path("plots/dvclive/reinforce")


def run(params: Params, *, root: Path = Path(".")) -> dict:
    """Train the reinforced model and write it; returns steps, final loss, tokens/s and device."""
    section = params.reinforce
    settings = TrainSettings.from_section(section)
    blocks = read_dataset(BLOCKS.name, root, columns=["block_id", "input_ids"])
    if blocks.empty:
        raise DatasetValidationError(f"dataset {BLOCKS.name!r} has no blocks: nothing to reinforce on")
    baseline = root / BASELINE
    tokenizer = load_tokenizer(baseline)
    processes = Processes.start()  # before loading: a sharded launch loads the weights sharded
    # On the CPU (DeepSpeed: already partitioned on the GPUs): train() places it.
    model = trainable_model(baseline, section.lora, key="reinforce.lora", load_device=processes.load_device,
                            frozen_dtype=processes.frozen_dtype, seed=settings.seed, train_layers=section.train_layers)
    # for the provenance, read before training wraps the model
    layers = trained_layers(model) if section.train_layers is not None else None
    base_weights = weights_hash(baseline)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    batches = BlockBatches(blocks["input_ids"].tolist(), pad_id=pad_id)

    result = train(
        model, batches, loss_fn=causal_lm_loss, settings=settings, checkpoint_dir=root / CHECKPOINTS,
        log_dir=root / LOG_WORK, resume_key=run_key(base_weights, section.lora, section.train_layers),
        processes=processes,
    )
    if processes.is_main:
        publish_log(root / LOG_WORK, root / TRAINING_LOG)
    publish_trained(model, result, target=root / REINFORCED, baseline=baseline, base_weights=base_weights,
                    checkpoint_dir=root / CHECKPOINTS, processes=processes, lora=section.lora, facts={
                        "params": section_dict(params, *PARAMS),
                        "blocks": len(batches),
                        "block_tokens": int(blocks["input_ids"].map(len).sum()),
                        "blocks_content_sha256": _blocks_hash(root),
                        "objective": "next-token cross-entropy on every position of the original block ids",
                        "training_log": TRAINING_LOG.as_posix(),
                        "trained_layers": layers,
                    })
    processes.close()
    return result.summary()


def _blocks_hash(root: Path) -> str | None:
    try:
        return read_manifest(BLOCKS.name, root).get("content_sha256")
    except DatasetNotFoundError:  # provenance only; the blocks themselves were read
        return None


if __name__ == "__main__":
    relaunch_if_configured("pipeline.reinforce")
    run_stage(STAGE, run)
