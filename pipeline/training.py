"""The one training loop, for the reinforced model and for the unlearning fine-tune.

:func:`train` runs AdamW with linear warmup and decay over micro-batches of token blocks, with
gradient accumulation, clipping, checkpoints it resumes from (:mod:`pipeline.checkpoints`), a
tqdm bar and a per-step DVCLive log (:mod:`pipeline.training_log`: the loss and its named
terms, learning rate, tokens/s); :func:`publish_trained` then writes the model.
What is learnt is the caller's ``loss_fn`` (:data:`causal_lm_loss` for the reinforced model;
hard-label cross-entropy, soft-label KL or retain terms for the fine-tune), and what is fed is
the caller's ``batches_fn`` (usually a :class:`pipeline.batches.BlockBatches`).

Precision: the trained weights (and so the optimiser's master copy) stay float32; on a GPU the
forward and backward passes run in bf16 (the loop's autocast, or the launch config's mixed
precision), on a CPU in float32. Memory savers: ``gradient_checkpointing``, LoRA
(:mod:`pipeline.lora`, applied by the stage), sharding (below).

Determinism: the data order is a seeded permutation per epoch, a pure function of
``(seed, step)``. A run interrupted after step k and resumed from its checkpoint computes what an
uninterrupted run computes (same weights, same loss log), because the checkpoint holds the
weights, the optimiser and scheduler state, the RNG states and the data-order position.

Several processes (:mod:`pipeline.sharding`): under ``accelerate launch`` (DDP, FSDP2 or
DeepSpeed ZeRO-3, from the launch config) or ``torchrun``, each process takes every N-th block
of each optimiser batch, each micro-batch's loss is scaled by N / (the step's token count, all
processes) before its backward, and only the main process writes the log, single-file
checkpoints and (:func:`publish_trained`) the model; sharded runs write their checkpoints and
gather their weights together. ``batch_size`` must be a multiple of ``N * micro_batch_size``.
Alone (``python -m ...``), the loop needs neither accelerate's config nor its launcher, and
computes what it always did (the gradient of the summed loss, rescaled after accumulation).
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from pipeline.batches import Batch, BatchesFn, step_indices
from pipeline.checkpoints import (
    load_latest, remove_checkpoints, remove_stale_temporaries, rng_state, set_rng_state, write_checkpoint,
    write_sharded_checkpoint,
)
from pipeline.lora import describe as describe_lora
from pipeline.lora import merged_model
from pipeline.models import publish_model, read_provenance
from pipeline.paths import BASELINE
from pipeline.sharding import Processes
from pipeline.training_log import TrainingLog

LossFn = Callable[[torch.nn.Module, Batch], tuple]
"""``(loss_sum, n_tokens)`` or ``(loss_sum, n_tokens, {term name: float})``, see :func:`train`;
launched, it also needs ``positions(batch) -> n_tokens`` (the count without the model)."""

LOG_FIELDS = ("step", "epoch", "loss", "learning_rate", "tokens", "tokens_per_s")
"""What every step's log record holds; a loss with named terms adds one field per term after ``loss``."""

# Settings that change how the work is split, not what is computed: a checkpoint written
# under other values of these still resumes (a smaller micro-batch after running out of memory).
_EXECUTION_ONLY = ("checkpoint_every", "micro_batch_size", "gradient_checkpointing")


@dataclass(frozen=True)
class TrainSettings:
    """Optimiser and schedule of one training run (``batch_size`` and ``micro_batch_size`` in
    blocks; ``epochs`` may be fractional)."""

    learning_rate: float
    epochs: float
    batch_size: int
    micro_batch_size: int
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    checkpoint_every: int = 50
    seed: int = 0
    max_grad_norm: float = 1.0
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.micro_batch_size < 1 or self.batch_size % self.micro_batch_size:
            raise ValueError(
                f"batch_size ({self.batch_size}) must be a positive multiple of micro_batch_size "
                f"({self.micro_batch_size})"
            )
        if self.epochs <= 0 or self.learning_rate <= 0 or not 0 <= self.warmup_ratio < 1 or self.checkpoint_every < 1:
            raise ValueError(f"invalid training settings: {self}")

    @classmethod
    def from_section(cls, section: Any, **overrides: Any) -> "TrainSettings":
        """Settings from a params section (e.g. ``params.reinforce``) holding these field names."""
        values = section.model_dump() if hasattr(section, "model_dump") else dict(section)
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names}, **overrides)

    def total_steps(self, n_examples: int) -> int:
        """Optimiser steps of the run: ``ceil(epochs * n_examples / batch_size)``."""
        # round() first: 0.3 * 10 is 3.0000000000000004 in floating point, which must not give 4.
        return max(1, math.ceil(round(self.epochs * n_examples / self.batch_size, 9)))

    def warmup_steps(self, n_examples: int) -> int:
        return math.ceil(self.warmup_ratio * self.total_steps(n_examples))


@dataclass(frozen=True)
class TrainResult:
    """What a call of :func:`train` did; rates and counts cover this call only (not a resumed
    run's earlier part)."""

    steps: int
    """Optimiser steps done in total, earlier runs included."""
    total_steps: int
    completed: bool
    """False when ``max_steps_this_run`` stopped the run early (a checkpoint holds the rest)."""
    resumed_from: int
    """Step of the checkpoint this call started from (0: a fresh start)."""
    final_loss: float | None
    """Mean token loss of the last optimiser step."""
    tokens: int
    """Input tokens (padding excluded) processed in this call, all processes together."""
    seconds: float
    tokens_per_s: float
    device: str
    precision: str
    """``fp32`` (CPU), ``bf16-autocast`` (GPU, the loop's own) or ``bf16-mixed`` (the launch config's)."""
    world_size: int = 1
    is_main_process: bool = True
    strategy: str = "single"
    """``single``, ``ddp``, ``fsdp`` or ``deepspeed`` (:class:`pipeline.sharding.Processes`)."""
    gradient_checkpointing: bool = False

    def summary(self) -> dict[str, Any]:
        """What a training stage prints when it ends."""
        summary = {"steps": self.steps, "final_loss": f"{self.final_loss:.4f}", "tokens_per_s": f"{self.tokens_per_s:.0f}",
                   "device": self.device, "resumed_from": self.resumed_from}
        return summary if self.completed else summary | {"completed": False}

    def provenance(self) -> dict[str, Any]:
        """The run's facts for a model's ``whp_model.json``."""
        return {
            "steps": self.steps, "final_loss": self.final_loss, "device": self.device, "world_size": self.world_size,
            "precision": self.precision, "dtype": "float32", "tokens_per_s": self.tokens_per_s,
            "train_seconds": self.seconds, "resumed_from_step": self.resumed_from, "strategy": self.strategy,
            "gradient_checkpointing": self.gradient_checkpointing,
        }


class CausalLMLoss:
    """Summed next-token cross-entropy over a micro-batch, and the number of tokens it sums
    (:data:`causal_lm_loss`, the reinforced model's objective).

    Position ``i`` predicts token ``i + 1`` of the block; it counts when both tokens are real
    (``attention_mask``) and, if the batch has one, ``loss_mask[i]`` is 1. The sum (not the
    mean) lets :func:`train` average over every token of the accumulated batch. Logits are
    cast to float32 before the softmax (they are bf16 under autocast).
    """

    @staticmethod
    def _counted(batch: Batch) -> torch.Tensor:
        attention = batch["attention_mask"]
        keep = attention[:, :-1].bool() & attention[:, 1:].bool()  # [b, t - 1]
        if "loss_mask" in batch:
            keep &= batch["loss_mask"][:, :-1].bool()
        return keep

    def __call__(self, model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, int]:
        """``(loss_sum, n_tokens)``: a scalar tensor with a gradient, in nats; an int."""
        input_ids = batch["input_ids"]
        logits = model(input_ids=input_ids, attention_mask=batch["attention_mask"], use_cache=False).logits
        keep = self._counted(batch)
        loss_sum = F.cross_entropy(logits[:, :-1][keep].float(), input_ids[:, 1:][keep], reduction="sum")
        return loss_sum, int(keep.sum())

    def positions(self, batch: Batch) -> int:
        """The ``n_tokens`` a call returns for ``batch``, without running the model."""
        return int(self._counted(batch).sum())


causal_lm_loss = CausalLMLoss()


class LinearWarmupDecay:
    """LR factor at optimiser step ``s``: ``(s + 1) / (warmup + 1)`` during warmup, then linear
    decay ``(total - s) / (total - warmup)``; never 0, so no step is wasted. A class, not a
    lambda, so that the scheduler's state can be saved."""

    def __init__(self, total_steps: int, warmup_steps: int) -> None:
        self.total_steps = total_steps
        self.warmup_steps = min(warmup_steps, total_steps - 1)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        return max(0.0, (self.total_steps - step) / (self.total_steps - self.warmup_steps))


def _resume_identity(settings: TrainSettings, batches_fn: BatchesFn, resume_key: str | None) -> dict[str, Any]:
    kept = {k: v for k, v in dataclasses.asdict(settings).items() if k not in _EXECUTION_ONLY}
    return {
        "settings": kept,
        "n_examples": len(batches_fn),
        "data": getattr(batches_fn, "fingerprint", None),
        "resume_key": resume_key,
    }


def _optimizer(model: torch.nn.Module, settings: TrainSettings, *, fused: bool) -> torch.optim.AdamW:
    decay, no_decay = [], []
    for param in model.parameters():  # parameters() yields tied weights once
        if param.requires_grad:
            # Norm gains (1-D) are not decayed: shrinking them towards 0 is not regularisation.
            # (A ZeRO-3 partitioned parameter is an empty tensor; ds_shape is its shape.)
            (decay if len(getattr(param, "ds_shape", param.shape)) >= 2 else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=settings.learning_rate, fused=fused)


def _frozen_names(model: torch.nn.Module) -> set[str]:
    return {name for name, p in model.named_parameters(remove_duplicate=False) if not p.requires_grad}


def _trained_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What a single-file checkpoint keeps of the model: its whole state, less frozen weights
    (LoRA's base: the baseline folder has them)."""
    frozen = _frozen_names(model)
    return {name: value for name, value in model.state_dict().items() if name not in frozen}


def _load_trained_state(model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) - _frozen_names(model):
        raise ValueError(f"{path}: weights do not fit the model (missing {sorted(set(missing))[:3]}, "
                         f"unexpected {sorted(unexpected)[:3]})")


def train(
    model: torch.nn.Module,
    batches_fn: BatchesFn,
    *,
    loss_fn: LossFn = causal_lm_loss,
    settings: TrainSettings,
    checkpoint_dir: Path | str,
    device: torch.device | str | None = None,
    log_dir: Path | str | None = None,
    resume_key: str | None = None,
    max_steps_this_run: int | None = None,
    on_step: Callable[[dict[str, Any]], None] | None = None,
    progress: bool = True,
    processes: Processes | None = None,
) -> TrainResult:
    """Train ``model`` in place; resume from ``checkpoint_dir`` if it holds a checkpoint of the
    same run. The caller saves the trained ``model`` (:func:`publish_trained`).

    Args:
        model: a causal LM whose trained parameters are float32 (autocast or the launch
            config's mixed precision supplies bf16 on a GPU); frozen ones (LoRA's base) may be
            bf16. Under a sharded launch it is placed and sharded here, not moved by the caller.
        batches_fn: examples to train on (:class:`BatchesFn`, e.g. :class:`BlockBatches`).
        loss_fn: ``loss_fn(model, micro_batch) -> (loss_sum, n_tokens)``; the step's loss is
            the sum over its micro-batches (and processes) divided by their total token count.
            It may return a third element, named terms of the loss (``{"forget_loss": x}``:
            floats summed over the same positions, no gradient), logged per step the same way.
            Launched, it also needs ``loss_fn.positions(micro_batch)``: the loss is scaled by the
            step's total before each backward, as DeepSpeed owns the gradients after it.
        settings: optimiser, schedule, batch sizes, checkpoint interval, seed, gradient
            checkpointing (``model.gradient_checkpointing_enable``, unless the FSDP config
            checkpoints activations itself).
        checkpoint_dir: checkpoints (:mod:`pipeline.checkpoints`): alone or under DDP one file
            per step (``step-XXXXXXXX.pt``: trained weights, optimiser, scheduler, step, RNG
            states, data position); sharded, one folder per step (accelerate's ``save_state``,
            each process its shards, and ``whp_state.pt``). The two latest are kept.
            Temporary files of a write that was killed are removed first; an unreadable latest
            checkpoint is skipped (with a warning) for the one before. A checkpoint of another
            run (other settings, data, ``resume_key`` or layout) is discarded, not resumed.
        device: where to train (default: GPU if present); ignored when launched.
        log_dir: the DVCLive folder of the per-step log (:data:`LOG_FIELDS` and the loss's
            terms; :class:`pipeline.training_log.TrainingLog`), rewritten on a fresh start and
            on resume up to the checkpoint's step, then continued; main process only.
        resume_key: extra identity of the run, e.g. a hash of the starting weights.
        max_steps_this_run: stop (with a checkpoint) after this many optimiser steps.
        on_step: called with each step's log record after it is logged and checkpointed.
        progress: show a tqdm bar (main process only).
        processes: the launch (:meth:`Processes.start`, called before loading the model);
            default: started here.
    """
    n_examples = len(batches_fn)
    if n_examples == 0:
        raise ValueError("nothing to train on: batches_fn has no examples")
    processes = processes if processes is not None else Processes.start(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("nothing to train: no parameter of the model requires a gradient")
    not_fp32 = sorted({str(p.dtype) for p in trainable if p.dtype != torch.float32})
    if not_fp32 and processes.strategy != "deepspeed":  # ZeRO-3 init loads 16-bit weights: it keeps the masters
        raise ValueError(f"train() needs float32 weights, got {', '.join(not_fp32)} (load with dtype='float32')")
    device = processes.device
    per_process = settings.batch_size // processes.world_size
    if settings.batch_size % (processes.world_size * settings.micro_batch_size):
        raise ValueError(
            f"batch_size ({settings.batch_size}) must be a multiple of processes ({processes.world_size}) "
            f"x micro_batch_size ({settings.micro_batch_size})"
        )
    positions = getattr(loss_fn, "positions", None)
    if processes.accelerator is not None and positions is None:
        raise ValueError("a launched run needs loss_fn.positions(batch): the count of positions the loss sums")
    total_steps = settings.total_steps(n_examples)
    checkpoint_dir = Path(checkpoint_dir)

    checkpointing = settings.gradient_checkpointing or processes.plugin_checkpoints_activations
    if settings.gradient_checkpointing and not processes.plugin_checkpoints_activations:
        # Non-reentrant: no input needs requires_grad (LoRA's frozen embeddings), and a frozen
        # forward under no_grad (the LoRA run's baseline) simply runs.
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x's name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if not processes.sharded:
        model.to(device)  # sharded: the plugin places the shards
    optimizer = _optimizer(model, settings, fused=device.type == "cuda" and not processes.sharded)
    trained, optimizer = processes.prepare(
        model, optimizer, micro_batch_size=settings.micro_batch_size,
        accumulation=per_process // settings.micro_batch_size, max_grad_norm=settings.max_grad_norm,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, LinearWarmupDecay(total_steps, settings.warmup_steps(n_examples))
    )
    if processes.sharded:
        processes.register(scheduler)
    identity = _resume_identity(settings, batches_fn, resume_key)
    start, last_loss, logged = 0, None, []
    if processes.is_main:
        for stale in remove_stale_temporaries(checkpoint_dir):
            tqdm.write(f"train: removed {stale} (a checkpoint write that never finished)", file=sys.stderr)
    processes.barrier()  # no process may list the folder while the main one is clearing it
    latest = load_latest(checkpoint_dir, remove_unreadable=processes.is_main)
    processes.barrier()
    if latest is not None:
        state, path = latest
        layout = "sharded" if processes.sharded else "plain"
        if state["identity"] == json.loads(json.dumps(identity)) and state.get("layout", "plain") == layout:
            if processes.sharded:
                processes.load_state(path)
            else:
                _load_trained_state(model, state["model"], path)
                optimizer.load_state_dict(state["optimizer"])
                scheduler.load_state_dict(state["scheduler"])
                set_rng_state(state["rng"])
            start, last_loss, logged = state["step"], state["last_loss"], state["log"]
            if state["examples_seen"] != start * settings.batch_size:
                raise ValueError(f"{path}: data position does not match its step")
            if processes.is_main:
                tqdm.write(f"train: resuming from {path} (step {start} of {total_steps})", file=sys.stderr)
        else:
            if processes.is_main:
                tqdm.write(f"train: discarding {path} (written by a run with other settings, data or layout)",
                           file=sys.stderr)
                remove_checkpoints(checkpoint_dir)
            processes.barrier()
        del state, latest  # the checkpoint's copy of the weights: do not hold it through training
    if start == 0:
        torch.manual_seed(settings.seed)
    log = TrainingLog(Path(log_dir) if log_dir and processes.is_main else None, logged)
    stop = total_steps if max_steps_this_run is None else min(total_steps, start + max_steps_this_run)

    # disable= only when asked: passing False would override TQDM_DISABLE from the environment.
    quiet = {} if progress and processes.is_main else {"disable": True}
    bar = tqdm(total=total_steps, initial=start, desc="train", unit="step", dynamic_ncols=True, **quiet)
    run_tokens, run_seconds = 0, 0.0
    try:
        for step in range(start, stop):
            started = time.perf_counter()
            trained.train()
            mine = step_indices(step, n_examples=n_examples, batch_size=settings.batch_size, seed=settings.seed)
            mine = mine[processes.rank::processes.world_size]
            chunks = [mine[i:i + settings.micro_batch_size] for i in range(0, per_process, settings.micro_batch_size)]
            micro_batches = [batches_fn(chunk) for chunk in chunks]
            optimizer.zero_grad(set_to_none=True)
            scale, counts = None, []
            if processes.accelerator is not None:  # the step's positions, all processes, before any backward
                counts = [positions(batch) for batch in micro_batches]
                step_positions = processes.sum(torch.tensor([float(sum(counts))], dtype=torch.float64, device=device))
                scale = processes.loss_scale(step_positions.item())
            totals = torch.zeros(3, dtype=torch.float64)  # loss sum, loss tokens, input tokens
            term_sums: dict[str, float] = {}
            for k, micro_batch in enumerate(micro_batches):
                batch = {name: t.to(device, non_blocking=True) for name, t in micro_batch.items()}
                with processes.accumulating(trained, last=k == len(chunks) - 1):
                    with processes.autocast():
                        loss_sum, n_tokens, *terms = loss_fn(trained, batch)
                    if scale is None:
                        loss_sum.float().backward()
                    elif n_tokens != counts[k]:
                        raise RuntimeError(f"loss_fn counted {n_tokens} positions, its positions() {counts[k]}")
                    else:
                        processes.backward(loss_sum.float() * scale)
                totals += torch.tensor([loss_sum.item(), n_tokens, int(batch["attention_mask"].sum())], dtype=torch.float64)
                for name, value in (terms[0] if terms else {}).items():
                    term_sums[name] = term_sums.get(name, 0.0) + float(value)
            names = sorted(term_sums)
            totals = torch.cat([totals, torch.tensor([term_sums[n] for n in names], dtype=torch.float64)])
            totals = processes.sum(totals.to(device)).cpu()
            loss_sum_all, tokens_all, inputs_all, *term_totals = totals.tolist()
            if scale is None:
                # The gradient so far is of the *sum*: rescale it to the mean over every token of
                # the optimiser batch (launched, the loss was scaled before its backward instead).
                rescale = processes.world_size / max(tokens_all, 1.0)
                for param in model.parameters():
                    if param.grad is not None:
                        param.grad.mul_(rescale)
                torch.nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
            else:
                processes.clip(trained, settings.max_grad_norm)
            learning_rate = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            seconds = time.perf_counter() - started
            last_loss = loss_sum_all / max(tokens_all, 1.0)
            run_tokens += int(inputs_all)
            run_seconds += seconds
            record = {
                "step": step + 1,
                "epoch": round((step + 1) * settings.batch_size / n_examples, 6),
                "loss": last_loss,
                **{name: total / max(tokens_all, 1.0) for name, total in zip(names, term_totals)},
                "learning_rate": learning_rate,
                "tokens": int(inputs_all),
                "tokens_per_s": round(inputs_all / seconds, 1) if seconds > 0 else 0.0,
            }
            log.append(record)
            bar.update(1)
            bar.set_postfix(loss=f"{last_loss:.4f}", tok_s=f"{record['tokens_per_s']:.0f}")
            done = step + 1
            if done % settings.checkpoint_every == 0 or done in (stop, total_steps):
                meta = {"identity": identity, "step": done, "examples_seen": done * settings.batch_size,
                        "last_loss": last_loss}
                if processes.sharded:
                    write_sharded_checkpoint(checkpoint_dir, done, meta | {"log": log.rows}, save_state=processes.save_state,
                                             is_main=processes.is_main, barrier=processes.barrier)
                else:
                    if processes.is_main:
                        write_checkpoint(checkpoint_dir, done, meta | {
                            "model": _trained_state(model),
                            "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(),
                            "rng": rng_state(),
                            "log": log.rows,
                        })
                    processes.barrier()
            if on_step is not None:
                on_step(record)
    finally:
        bar.close()
        log.close()
    model.eval()
    completed = stop == total_steps
    processes.barrier()
    return TrainResult(
        steps=stop, total_steps=total_steps, completed=completed, resumed_from=start, final_loss=last_loss,
        tokens=run_tokens, seconds=round(run_seconds, 3),
        tokens_per_s=round(run_tokens / run_seconds, 1) if run_seconds > 0 else 0.0,
        device=str(device), precision=processes.precision, world_size=processes.world_size,
        is_main_process=processes.is_main, strategy=processes.strategy, gradient_checkpointing=checkpointing,
    )


def publish_trained(
    model: torch.nn.Module,
    result: TrainResult,
    *,
    target: Path,
    baseline: Path,
    base_weights: str,
    facts: dict[str, Any],
    checkpoint_dir: Path,
    card: Callable[[dict[str, Any]], str] | None = None,
    processes: Processes | None = None,
    lora: Any = None,
) -> dict[str, Any] | None:
    """After :func:`train`: publish a completed run's model, then remove its checkpoints.

    Every process calls it: a sharded model's weights are first gathered on the main process
    (:meth:`Processes.full_state_dict`). Only the main process of a completed run writes
    (:func:`pipeline.models.publish_model`): the weights (float32; with ``lora``, the adapters
    merged into the baseline, :func:`pipeline.lora.merged_model`), the baseline's tokenizer
    files, and ``whp_model.json`` = the baseline's identity, the stage's ``facts``, the run's
    figures (:meth:`TrainResult.provenance`) and the LoRA settings; ``card(provenance)``, if
    given, becomes the folder's ``README.md``. The checkpoints go only once the model is in
    place: a crash before leaves them for the next run to resume.

    Returns:
        The provenance written, or None when nothing was (another process, or an unfinished run).
    """
    if not result.completed:
        return None
    weights = processes.full_state_dict() if processes is not None and processes.sharded else None
    if not result.is_main_process:
        return None
    if lora is not None:
        model = merged_model(weights if weights is not None else model.state_dict(), baseline=baseline, lora=lora)
        weights = None
    provenance = {
        "base_model": BASELINE.as_posix(),
        "base_source": read_provenance(baseline).get("source"),
        "base_weights_sha256": base_weights,
    } | facts | result.provenance() | {"lora": describe_lora(lora)}
    files = {"README.md": card(provenance)} if card is not None else None
    publish_model(target, model=model, tokenizer=baseline, provenance=provenance, files=files, state_dict=weights)
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    return provenance
