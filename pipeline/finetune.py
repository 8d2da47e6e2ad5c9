"""Stage ``finetune``: the baseline fine-tuned on the generic targets -> ``models/unlearned``.

docs/algorithm.md step 8. The training rows come from the dataset version that ``finetune.dataset``
pins, read through :func:`pipeline.versions.read_pinned`: a version that does not exist is a
:class:`~pipeline.versions.VersionNotFoundError` listing the known ones, and bytes that do not
hash to that version's manifest are a :class:`~pipeline.versions.DatasetIntegrityError`;
nothing is trained then. With the default pin ``workspace`` that is this checkout's
``data/dataset`` (the ``dvc.yaml`` dependency); with a tag (``v1``) the rows are read from the
DVC cache or remote at that tag and the workspace ``data/dataset`` is *not* what is trained on
(it stays a declared dependency for the workspace default; a tag never moves, and changing the
pin changes the ``finetune`` params, so DVC reruns the stage either way).

Objective (:class:`pipeline.core.losses.UnlearningLoss`), per forget micro-batch:

* the generic-target term on every position with ``loss_mask`` 1: ``finetune.label_type``
  ``soft`` (default: KL from the stored top-k generic distribution to the model, the top-k
  renormalised or the rest of its mass kept as one outcome, ``soft_tail``;
  WHP+ found soft targets fabricate less, and the reference run here lost less retain
  perplexity with them: 45.8 vs 67.3), ``hard`` (cross-entropy to the generic argmax, the
  paper) or ``mixed`` (``hard + soft_weight * soft``);
* the retain term on retain-corpus blocks (``data/retain_blocks``, split ``train``):
  ``retain.kind`` ``kl`` (default: KL(baseline || model) over the full vocabulary, with a
  frozen copy of the baseline: bf16 on a GPU, sharded like the trained model or, with
  ``retain.offload``, in CPU RAM; with LoRA the trained model with its adapters off, no
  copy), ``lm`` (next-token cross-entropy) or ``none``, times
  ``retain.weight``. It enters as its mean per retain position times the micro-batch's forget
  positions, so a step's logged loss is ``mean forget loss + weight * mean retain loss``.

Position convention: ``labels[i]`` / ``top_ids[i]`` are the targets of the prediction made
*at* position ``i`` (the token after ``i``), taken from the models' outputs at ``i``; they line
up with the logits at ``i`` without a shift (see :mod:`pipeline.core.losses`).

Retain pairing: forget block ``i`` (of ``N``) is always paired with retain block
``floor(i * R / N)`` of the ``R`` retain blocks used (``retain.max_blocks`` of them at most,
evenly spread over the ``train`` split in ``(doc_id, index)`` order), so every retain block
is used when ``R <= N`` and ``N`` evenly spaced ones otherwise. The pairing depends on the
block index only, never on the step, so a resumed run sees exactly the same micro-batches.

Outputs: ``models/unlearned`` (Hugging Face folder: float32 weights, the baseline's tokenizer
files copied as they are, ``README.md`` model card with the dataset version and content hash,
params and training figures, and ``whp_model.json`` provenance), written to a temporary folder
and renamed when complete; ``plots/dvclive/finetune`` (DVCLive, one point per optimiser step:
``loss`` = ``forget_loss`` + ``retain.weight`` x ``retain_loss``, each logged, the learning rate,
``tokens`` and ``tokens_per_s``, which count forget tokens: the retain blocks are processed in
addition). Checkpoints go to ``models/.finetune-checkpoints``; a killed run resumes there (same
dataset hash, baseline weights, loss params and settings) and they are removed after success.

With ``finetune.lora`` set, low-rank adapters are trained and merged into the published model
(:mod:`pipeline.lora`); ``finetune.gradient_checkpointing`` trades compute for activation memory.

Run: ``python -m pipeline.finetune`` (``dvc repro finetune``); with ``launch.config`` set it
re-executes itself under ``accelerate launch`` (DDP, FSDP or DeepSpeed ZeRO-3,
:mod:`pipeline.sharding`; ``finetune.batch_size`` must be a multiple of ``N * micro_batch_size``).
On a GPU the passes run in bf16, on a CPU in float32.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from pipeline.batches import BlockBatches
from pipeline.core.losses import UnlearningLoss
from pipeline.core.sampling import evenly_spaced
from pipeline.errors import DatasetValidationError
from pipeline.launch import relaunch_if_configured
from pipeline.lora import AdaptersOff, run_key, trainable_model
from pipeline.models import load_model, load_tokenizer, trained_layers, weights_hash
from pipeline.params import Params, section_dict
from pipeline.paths import BASELINE, PROVENANCE, UNLEARNED
from pipeline.sharding import Processes
from pipeline.stage import run_stage
from pipeline.store import read_dataset
from pipeline.training_log import publish_log
from pipeline.training import TrainSettings, publish_trained, train
from pipeline.versions import read_manifest_at, read_pinned, resolve

STAGE = "finetune"
PARAMS = ("finetune",)
CHECKPOINTS = Path("models/.finetune-checkpoints")
LOG_WORK = Path("models/.finetune-log")  # the log while training; published at the end
TRAINING_LOG = Path("plots/dvclive/finetune")
RETAIN_DATASET = "retain_blocks"
_FORGET_COLUMNS = {
    "hard": ["block_id", "input_ids", "labels", "loss_mask"],
    "soft": ["block_id", "input_ids", "loss_mask", "top_ids", "top_probs"],
    "mixed": ["block_id", "input_ids", "labels", "loss_mask", "top_ids", "top_probs"],
}


def retain_partner(index: int, *, n_forget: int, n_retain: int) -> int:
    """The retain block paired with forget block ``index``: ``floor(index * n_retain / n_forget)``."""
    return index * n_retain // n_forget


class RetainPairedBatches:
    """Forget micro-batches (a :class:`~pipeline.batches.BlockBatches`) with their paired
    retain blocks added as ``retain_input_ids`` / ``retain_attention_mask`` ``[b, t']``
    (right-padded; one retain block per forget block, :func:`retain_partner`)."""

    def __init__(self, forget: BlockBatches, retain_ids: Sequence[Sequence[int]], *, pad_id: int = 0) -> None:
        if not len(retain_ids):
            raise ValueError("no retain blocks to pair with")
        self.forget = forget
        self.retain = BlockBatches(retain_ids, pad_id=pad_id)

    def __len__(self) -> int:
        return len(self.forget)

    def __call__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        batch = self.forget(indices)
        partners = [retain_partner(i, n_forget=len(self.forget), n_retain=len(self.retain)) for i in indices]
        retain = self.retain(partners)
        batch["retain_input_ids"] = retain["input_ids"]
        batch["retain_attention_mask"] = retain["attention_mask"]
        return batch

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(f"{self.forget.fingerprint}:{self.retain.fingerprint}".encode()).hexdigest()


def forget_batches(frame: pd.DataFrame, *, label_type: str, pad_id: int) -> BlockBatches:
    """Micro-batches of the training rows with the fields ``label_type`` needs."""
    fields = {name: frame[name].tolist() for name in ("labels", "top_ids", "top_probs") if name in _FORGET_COLUMNS[label_type]}
    return BlockBatches(frame["input_ids"].tolist(), loss_mask=frame["loss_mask"].tolist(), per_position=fields,
                        pad_id=pad_id)


def read_retain_blocks(root: Path, *, max_blocks: int | None) -> pd.DataFrame:
    """The ``train`` split of ``retain_blocks`` in ``(doc_id, index)`` order, at most
    ``max_blocks`` of them evenly spread; an error when none is left."""
    frame = read_dataset(RETAIN_DATASET, root, columns=["block_id", "doc_id", "index", "input_ids", "split"])
    frame = frame[frame["split"] == "train"].sort_values(["doc_id", "index"], kind="stable").reset_index(drop=True)
    if frame.empty:
        raise DatasetValidationError(
            f"dataset {RETAIN_DATASET!r} has no 'train' blocks for the retain term: add retain corpora "
            "(corpus.retain), raise retain_blocks.max_train_blocks, or set finetune.retain.kind: none"
        )
    return frame.iloc[evenly_spaced(len(frame), max_blocks)].reset_index(drop=True)


def run(params: Params, *, root: Path = Path("."), max_steps_this_run: int | None = None) -> dict:
    """Fine-tune the baseline on the pinned dataset and write ``models/unlearned``.

    Args:
        params: the validated params (reads ``finetune`` only).
        root: the project root.
        max_steps_this_run: stop after this many optimiser steps, leaving a checkpoint and no
            model (tests of resume; the next call continues).

    Returns:
        A summary: steps, final loss, tokens/s, device, the step resumed from, and the dataset hash.
    """
    section = params.finetune
    settings = TrainSettings.from_section(section)
    # Reads and hash-checks the pinned version first: a missing pin or tampered bytes stop here.
    frame = read_pinned(params, root=root, columns=_FORGET_COLUMNS[section.label_type])
    if frame.empty:
        raise DatasetValidationError(f"dataset version {section.dataset!r} has no blocks: nothing to fine-tune on")
    manifest = read_manifest_at(section.dataset, root=root)
    revision = resolve(section.dataset, root=root)

    baseline = root / BASELINE
    tokenizer = load_tokenizer(baseline)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    batches = forget_batches(frame, label_type=section.label_type, pad_id=pad_id)
    retain = section.retain
    uses_retain = retain.kind != "none" and retain.weight > 0
    retain_frame = read_retain_blocks(root, max_blocks=retain.max_blocks) if uses_retain else None
    if retain_frame is not None:
        batches = RetainPairedBatches(batches, retain_frame["input_ids"].tolist(), pad_id=pad_id)

    processes = Processes.start()  # before loading: a sharded launch loads the weights sharded
    # On the CPU (DeepSpeed: already partitioned on the GPUs): train() places it.
    model = trainable_model(baseline, section.lora, key="finetune.lora", load_device=processes.load_device,
                            frozen_dtype=processes.frozen_dtype, seed=settings.seed, train_layers=section.train_layers)
    # for the provenance, read before training wraps the model
    layers = trained_layers(model) if section.train_layers is not None else None
    base_weights = weights_hash(baseline)
    reference = None
    if uses_retain and retain.kind == "kl":
        reference = AdaptersOff(model) if section.lora is not None else processes.frozen(
            load_model(baseline, dtype=processes.frozen_dtype, device=processes.load_device), offload=retain.offload)
    loss_fn = UnlearningLoss(
        label_type=section.label_type, soft_weight=section.soft_weight, soft_tail=section.soft_tail,
        retain_kind=retain.kind if uses_retain else "none", retain_weight=retain.weight if uses_retain else 0.0,
        reference=reference,
    )
    objective = {
        "label_type": section.label_type, "soft_weight": section.soft_weight,
        **({"soft_tail": section.soft_tail} if section.label_type != "hard" else {}),
        # offload changes where the baseline's weights wait, not what is computed
        "retain": retain.model_dump(mode="json", exclude={"offload"}) if uses_retain else {"kind": "none"},
    }
    resume_key = run_key(hashlib.sha256(json.dumps({
        "dataset_sha256": manifest["content_sha256"], "baseline_sha256": base_weights, "objective": objective,
    }, sort_keys=True).encode()).hexdigest(), section.lora, section.train_layers)

    result = train(
        model, batches, loss_fn=_WithTerms(loss_fn), settings=settings, checkpoint_dir=root / CHECKPOINTS,
        log_dir=root / LOG_WORK, resume_key=resume_key, max_steps_this_run=max_steps_this_run, processes=processes,
    )
    if processes.is_main:
        publish_log(root / LOG_WORK, root / TRAINING_LOG)
    publish_trained(model, result, target=root / UNLEARNED, baseline=baseline, base_weights=base_weights,
                    checkpoint_dir=root / CHECKPOINTS, card=model_card, processes=processes, lora=section.lora, facts={
                        "dataset": {
                            "version": section.dataset, "commit": None if revision == "workspace" else revision,
                            "content_sha256": manifest["content_sha256"], "rows": manifest["rows"],
                        },
                        "params": section_dict(params, *PARAMS),
                        "objective": objective,
                        "blocks": len(frame),
                        "block_tokens": int(frame["input_ids"].map(len).sum()),
                        # loss_mask is int8 on disk: a Python sum of int8 scalars would overflow.
                        "trained_positions": int(sum(np.asarray(m, dtype=np.int64).sum() for m in frame["loss_mask"])),
                        "retain_blocks": None if retain_frame is None else len(retain_frame),
                        "retain_block_ids": None if retain_frame is None else retain_frame["block_id"].tolist(),
                        "training_log": TRAINING_LOG.as_posix(),
                        "trained_layers": layers,
                    })
    processes.close()
    return result.summary() | {"dataset_sha256": manifest["content_sha256"][:12]}


class _WithTerms:
    """The objective as :func:`pipeline.training.train` calls it: with its logged terms, and
    the positions it counts."""

    def __init__(self, loss: UnlearningLoss) -> None:
        self.loss = loss
        self.positions = loss.positions

    def __call__(self, model, batch):
        return self.loss.with_terms(model, batch)


def model_card(provenance: dict) -> str:
    """The model card (``README.md``, Hugging Face layout: YAML front matter, then Markdown)."""
    data, objective = provenance["dataset"], provenance["objective"]
    retain = objective["retain"]
    retain_text = (
        "none" if retain["kind"] == "none"
        else f"`{retain['kind']}` x {retain['weight']} on {provenance['retain_blocks']} retain blocks"
    )
    front = yaml.safe_dump({
        "library_name": "transformers", "pipeline_tag": "text-generation",
        "tags": ["unlearning", "whos-harry-potter", "generic-labels"],
    }, sort_keys=False)
    resumed = provenance["resumed_from_step"]
    lora = provenance.get("lora")
    adapted = (
        f"LoRA r={lora['r']}, alpha={lora['alpha']}, dropout={lora['dropout']} on "
        f"{', '.join(f'`{m}`' for m in lora['target_modules'])}, merged into the weights" if lora
        else "every weight (full fine-tune)"
    )
    layers = provenance.get("trained_layers")
    if layers:
        adapted = (f"{'LoRA adapters' if lora else 'the weights'} of the bottom {layers['trained']} of "
                   f"{layers['of']} decoder layers (`finetune.train_layers`); the layers above, the final "
                   f"norm and the embeddings frozen" + (f" ({adapted})" if lora else ""))
    commit = f"`{data['commit']}`" if data["commit"] else "none: the workspace `data/dataset` of this checkout"
    return "\n".join([
        "---", front.rstrip(), "---", "",
        "# Unlearned model",
        "",
        f"The baseline (`{provenance['base_model']}`, from {provenance['base_source'] or 'unknown source'}) fine-tuned "
        "on generic targets of the forget corpus (Who's Harry Potter, Eldan & Russinovich 2023; "
        "see docs/algorithm.md step 8), by the `finetune` stage of this project.",
        "",
        "## Training data",
        "",
        "| | |", "|---|---|",
        f"| dataset version (`finetune.dataset`) | `{data['version']}` |",
        f"| commit | {commit} |",
        f"| content sha256 | `{data['content_sha256']}` |",
        f"| blocks | {provenance['blocks']} ({provenance['block_tokens']} tokens, "
        f"{provenance['trained_positions']} trained positions) |",
        f"| baseline weights sha256 | `{provenance['base_weights_sha256']}` |",
        "",
        "## Objective",
        "",
        f"- generic targets: `{objective['label_type']}`"
        + (f" (hard + {objective['soft_weight']} x soft)" if objective["label_type"] == "mixed" else "")
        + (f", the mass outside the top-k: `{objective['soft_tail']}`" if "soft_tail" in objective else ""),
        f"- retain term: {retain_text}",
        f"- trained: {adapted}",
        "",
        "## Parameters",
        "",
        "```yaml", yaml.safe_dump(provenance["params"], sort_keys=False).rstrip(), "```",
        "",
        "## Training",
        "",
        "| | |", "|---|---|",
        f"| optimiser steps | {provenance['steps']} |",
        f"| final loss (nats/position) | {provenance['final_loss']:.4f} |",
        f"| forget tokens/s | {provenance['tokens_per_s']:.0f} |",
        f"| training time | {provenance['train_seconds']:.0f} s"
        + (f" (this run, resumed from step {resumed})" if resumed else "") + " |",
        f"| device | {provenance['device']} x {provenance['world_size']} ({provenance['precision']}, "
        f"{provenance['strategy']}{', gradient checkpointing' if provenance['gradient_checkpointing'] else ''}) |",
        "",
        f"Training log (DVCLive): `{provenance['training_log']}` (`dvc plots show`). Provenance: `{PROVENANCE}`.",
        "",
    ])


if __name__ == "__main__":
    relaunch_if_configured("pipeline.finetune")
    run_stage(STAGE, run)
