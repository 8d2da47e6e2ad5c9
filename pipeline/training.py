"""The one training loop, for the reinforced model and for the unlearning fine-tune.

:func:`train` runs AdamW with linear warmup and decay over micro-batches of token blocks, with
gradient accumulation, clipping, checkpoints it resumes from (:mod:`pipeline.checkpoints`), a
tqdm bar and a per-step DVCLive log (:mod:`pipeline.training_log`: the loss and its named
terms, learning rate, tokens/s); :func:`publish_trained` then writes the model.
What is learnt is the caller's ``loss_fn`` (:func:`causal_lm_loss` for the reinforced model;
hard-label cross-entropy, soft-label KL or retain terms for the fine-tune), and what is fed is
the caller's ``batches_fn`` (usually a :class:`BlockBatches`).

Precision: the weights (and so the optimiser's master copy) stay float32; on a GPU the forward
and backward passes run under bf16 autocast, on a CPU in float32.

Determinism: the data order is a seeded permutation per epoch, a pure function of
``(seed, step)``. A run interrupted after step k and resumed from its checkpoint computes what an
uninterrupted run computes (same weights, same loss log), because the checkpoint holds the
weights, the optimiser and scheduler state, the RNG states and the data-order position.

Several GPUs: ``accelerate launch --num_processes N -m pipeline.reinforce`` starts N processes;
:func:`train` sees ``WORLD_SIZE > 1`` and then uses :class:`accelerate.Accelerator` (DDP): each
process takes every N-th block of each optimiser batch, gradients are summed across processes
and divided by the global token count, and only the main process writes checkpoints, the log
and (:func:`publish_trained`) the model. ``batch_size`` must then be a multiple of ``N * micro_batch_size``. A single
process (``python -m ...``) needs neither accelerate's config nor its launcher.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from pipeline.checkpoints import (
    list_checkpoints, load_latest, remove_stale_temporaries, rng_state, set_rng_state, write_checkpoint,
)
from pipeline.models import pick_device, publish_model, read_provenance
from pipeline.paths import BASELINE
from pipeline.training_log import TrainingLog

Batch = dict[str, torch.Tensor]
LossFn = Callable[[torch.nn.Module, Batch], tuple]
"""``(loss_sum, n_tokens)`` or ``(loss_sum, n_tokens, {term name: float})``, see :func:`train`."""

LOG_FIELDS = ("step", "epoch", "loss", "learning_rate", "tokens", "tokens_per_s")
"""What every step's log record holds; a loss with named terms adds one field per term after ``loss``."""

# Settings that change how the work is split, not what is computed: a checkpoint written
# under other values of these still resumes (a smaller micro-batch after running out of memory).
_EXECUTION_ONLY = ("checkpoint_every", "micro_batch_size")


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
    """``bf16-autocast`` (GPU) or ``fp32`` (CPU)."""
    world_size: int = 1
    is_main_process: bool = True

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
            "train_seconds": self.seconds, "resumed_from_step": self.resumed_from,
        }


class BatchesFn(Protocol):
    """What :func:`train` draws micro-batches from: ``len()`` examples, and a micro-batch (a
    dict of tensors with at least ``input_ids`` and ``attention_mask`` ``[batch, seq]``) for any
    list of example indices."""

    def __len__(self) -> int: ...

    def __call__(self, indices: Sequence[int]) -> Batch: ...


class BlockBatches:
    """Right-padded micro-batches of token blocks, built by block index.

    Args:
        input_ids: one list of token ids per block (lengths may differ).
        loss_mask: optional, one 0/1 per position: 1 where the prediction *made at* that position
            (of the next token) is trained on, the convention of the ``blocks`` dataset.
        per_position: optional further per-position fields, e.g. ``labels`` ``[n]`` or
            ``topk_ids`` ``[n, k]`` for the unlearning fine-tune; padded with zeros.
        pad_id: the id written into padding (never attended to, never trained on).

    A micro-batch is ``{"input_ids": [b, t] int64, "attention_mask": [b, t] int64,
    "loss_mask": [b, t] int64 (if given), <per_position>: [b, t, ...]}`` with ``t`` the longest
    block of the micro-batch; padding has ``attention_mask`` 0 and ``loss_mask`` 0.
    """

    def __init__(
        self,
        input_ids: Sequence[Sequence[int]],
        *,
        loss_mask: Sequence[Sequence[int]] | None = None,
        per_position: Mapping[str, Sequence[Any]] | None = None,
        pad_id: int = 0,
    ) -> None:
        self._fields: dict[str, list[torch.Tensor]] = {
            "input_ids": [torch.as_tensor(list(ids), dtype=torch.long) for ids in input_ids]
        }
        lengths = [len(ids) for ids in self._fields["input_ids"]]
        if any(n == 0 for n in lengths):
            raise ValueError(f"empty block at index {lengths.index(0)}")
        extra = dict(per_position or {})
        if loss_mask is not None:
            extra["loss_mask"] = loss_mask
        for name, values in extra.items():
            if name in ("input_ids", "attention_mask"):
                raise ValueError(f"per_position field {name!r} is reserved")
            tensors = [torch.as_tensor(np.asarray(v)) for v in values]
            if name == "loss_mask":
                tensors = [t.to(torch.long) for t in tensors]
            if len(tensors) != len(lengths) or any(t.shape[0] != n for t, n in zip(tensors, lengths)):
                raise ValueError(f"{name}: needs one entry per position of every block")
            self._fields[name] = tensors
        self.pad_id = pad_id
        self._fingerprint: str | None = None

    def __len__(self) -> int:
        return len(self._fields["input_ids"])

    def __call__(self, indices: Sequence[int]) -> Batch:
        ids = [self._fields["input_ids"][i] for i in indices]
        batch = {
            "input_ids": torch.nn.utils.rnn.pad_sequence(ids, batch_first=True, padding_value=self.pad_id),
            "attention_mask": torch.nn.utils.rnn.pad_sequence(
                [torch.ones(len(t), dtype=torch.long) for t in ids], batch_first=True
            ),
        }
        for name, tensors in self._fields.items():
            if name != "input_ids":
                batch[name] = torch.nn.utils.rnn.pad_sequence([tensors[i] for i in indices], batch_first=True)
        return batch

    @property
    def fingerprint(self) -> str:
        """Hash of every block's content: a checkpoint only resumes on the same data."""
        if self._fingerprint is None:
            digest = hashlib.sha256()
            for name in sorted(self._fields):
                digest.update(name.encode())
                for tensor in self._fields[name]:
                    digest.update(str(tuple(tensor.shape)).encode())
                    digest.update(tensor.contiguous().numpy().tobytes())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint


def causal_lm_loss(model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, int]:
    """Summed next-token cross-entropy over a micro-batch, and the number of tokens it sums.

    Position ``i`` predicts token ``i + 1`` of the block; it counts when both tokens are real
    (``attention_mask``) and, if the batch has one, ``loss_mask[i]`` is 1. The sum (not the
    mean) lets :func:`train` average over every token of the accumulated batch. Logits are
    cast to float32 before the softmax (they are bf16 under autocast).

    Returns:
        ``(loss_sum, n_tokens)``: a scalar tensor with a gradient, in nats; an int.
    """
    input_ids, attention = batch["input_ids"], batch["attention_mask"]
    logits = model(input_ids=input_ids, attention_mask=attention, use_cache=False).logits  # [b, t, vocab]
    keep = attention[:, :-1].bool() & attention[:, 1:].bool()  # [b, t - 1]
    if "loss_mask" in batch:
        keep &= batch["loss_mask"][:, :-1].bool()
    loss_sum = F.cross_entropy(logits[:, :-1][keep].float(), input_ids[:, 1:][keep], reduction="sum")
    return loss_sum, int(keep.sum())


def step_indices(step: int, *, n_examples: int, batch_size: int, seed: int) -> list[int]:
    """Example indices of optimiser step ``step`` (0-based): positions
    ``[step * batch_size, (step + 1) * batch_size)`` of the stream made of one seeded
    permutation of ``range(n_examples)`` per epoch (a batch may straddle two epochs)."""
    start = step * batch_size
    indices = []
    for position in range(start, start + batch_size):
        epoch, offset = divmod(position, n_examples)
        indices.append(int(_epoch_order(n_examples, seed, epoch)[offset]))
    return indices


_ORDER_CACHE: dict[tuple[int, int, int], np.ndarray] = {}


def _epoch_order(n_examples: int, seed: int, epoch: int) -> np.ndarray:
    key = (n_examples, seed, epoch)
    if key not in _ORDER_CACHE:
        if len(_ORDER_CACHE) > 64:
            _ORDER_CACHE.clear()
        _ORDER_CACHE[key] = np.random.default_rng([seed, epoch]).permutation(n_examples)
    return _ORDER_CACHE[key]


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


class _Processes:
    """One process, or the processes of ``accelerate launch`` (then through an Accelerator)."""

    def __init__(self, device: torch.device | str | None) -> None:
        self.accelerator = None
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            from accelerate import Accelerator

            # Autocast is ours (bf16 on GPU only); accelerate only places, wraps and reduces.
            # cpu=True is what makes accelerate use gloo across CPU processes (tests, no GPU).
            self.accelerator = Accelerator(mixed_precision="no", cpu=not torch.cuda.is_available())
            self.device = self.accelerator.device
            self.world_size = self.accelerator.num_processes
            self.rank = self.accelerator.process_index
        else:
            self.device = torch.device(device) if device is not None else pick_device()
            self.world_size, self.rank = 1, 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        return self.accelerator.prepare_model(model) if self.accelerator else model

    def no_sync(self, model: torch.nn.Module, sync: bool):
        if self.accelerator is None or sync:
            return contextlib.nullcontext()
        return self.accelerator.no_sync(model)

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        return self.accelerator.reduce(values, reduction="sum") if self.accelerator else values

    def barrier(self) -> None:
        if self.accelerator:
            self.accelerator.wait_for_everyone()


def _resume_identity(settings: TrainSettings, batches_fn: BatchesFn, resume_key: str | None) -> dict[str, Any]:
    kept = {k: v for k, v in dataclasses.asdict(settings).items() if k not in _EXECUTION_ONLY}
    return {
        "settings": kept,
        "n_examples": len(batches_fn),
        "data": getattr(batches_fn, "fingerprint", None),
        "resume_key": resume_key,
    }


def _optimizer(model: torch.nn.Module, settings: TrainSettings, device: torch.device) -> torch.optim.AdamW:
    decay, no_decay = [], []
    for param in model.parameters():  # parameters() yields tied weights once
        if param.requires_grad:
            # Norm gains (1-D) are not decayed: shrinking them towards 0 is not regularisation.
            (decay if param.ndim >= 2 else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=settings.learning_rate, fused=device.type == "cuda")


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
) -> TrainResult:
    """Train ``model`` in place; resume from ``checkpoint_dir`` if it holds a checkpoint of the
    same run. The caller saves the trained ``model`` (:func:`publish_trained`).

    Args:
        model: a causal LM with float32 weights (autocast supplies bf16 on a GPU).
        batches_fn: examples to train on (:class:`BatchesFn`, e.g. :class:`BlockBatches`).
        loss_fn: ``loss_fn(model, micro_batch) -> (loss_sum, n_tokens)``; the step's loss is
            the sum over its micro-batches (and processes) divided by their total token count.
            It may return a third element, named terms of the loss (``{"forget_loss": x}``:
            floats summed over the same positions, no gradient), logged per step the same way.
        settings: optimiser, schedule, batch sizes, checkpoint interval, seed.
        checkpoint_dir: checkpoints (``step-XXXXXXXX.pt``: weights, optimiser, scheduler, step,
            RNG states, data position; :mod:`pipeline.checkpoints`); the two latest are kept.
            Temporary files of a write that was killed are removed first; an unreadable latest
            checkpoint is skipped (with a warning) for the one before. A checkpoint of another
            run (other settings, data or ``resume_key``) is discarded, not resumed.
        device: where to train (default: GPU if present); ignored under ``accelerate launch``.
        log_dir: the DVCLive folder of the per-step log (:data:`LOG_FIELDS` and the loss's
            terms; :class:`pipeline.training_log.TrainingLog`), rewritten on a fresh start and
            on resume up to the checkpoint's step, then continued; main process only.
        resume_key: extra identity of the run, e.g. a hash of the starting weights.
        max_steps_this_run: stop (with a checkpoint) after this many optimiser steps.
        on_step: called with each step's log record after it is logged and checkpointed.
        progress: show a tqdm bar (main process only).
    """
    n_examples = len(batches_fn)
    if n_examples == 0:
        raise ValueError("nothing to train on: batches_fn has no examples")
    not_fp32 = sorted({str(p.dtype) for p in model.parameters() if p.dtype != torch.float32})
    if not_fp32:
        raise ValueError(f"train() needs float32 weights, got {', '.join(not_fp32)} (load with dtype='float32')")
    processes = _Processes(device)
    device = processes.device
    per_process = settings.batch_size // processes.world_size
    if settings.batch_size % (processes.world_size * settings.micro_batch_size):
        raise ValueError(
            f"batch_size ({settings.batch_size}) must be a multiple of processes ({processes.world_size}) "
            f"x micro_batch_size ({settings.micro_batch_size})"
        )
    use_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    precision = "bf16-autocast" if use_bf16 else "fp32"
    total_steps = settings.total_steps(n_examples)
    checkpoint_dir = Path(checkpoint_dir)

    model.to(device)
    optimizer = _optimizer(model, settings, device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, LinearWarmupDecay(total_steps, settings.warmup_steps(n_examples))
    )
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
        if state["identity"] == json.loads(json.dumps(identity)):
            model.load_state_dict(state["model"])
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
                tqdm.write(f"train: discarding {path} (written by a run with other settings or data)", file=sys.stderr)
                for _, older in list_checkpoints(checkpoint_dir):
                    older.unlink(missing_ok=True)
            processes.barrier()
        del state, latest  # the checkpoint's copy of the weights: do not hold it through training
    if start == 0:
        torch.manual_seed(settings.seed)
    log = TrainingLog(Path(log_dir) if log_dir and processes.is_main else None, logged)
    stop = total_steps if max_steps_this_run is None else min(total_steps, start + max_steps_this_run)

    trained = processes.wrap(model)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if use_bf16 else contextlib.nullcontext
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
            optimizer.zero_grad(set_to_none=True)
            totals = torch.zeros(3, dtype=torch.float64)  # loss sum, loss tokens, input tokens
            term_sums: dict[str, float] = {}
            for k, chunk in enumerate(chunks):
                batch = {name: t.to(device, non_blocking=True) for name, t in batches_fn(chunk).items()}
                with processes.no_sync(trained, sync=k == len(chunks) - 1), autocast():
                    loss_sum, n_tokens, *terms = loss_fn(trained, batch)
                loss_sum.float().backward()
                totals += torch.tensor([loss_sum.item(), n_tokens, int(batch["attention_mask"].sum())], dtype=torch.float64)
                for name, value in (terms[0] if terms else {}).items():
                    term_sums[name] = term_sums.get(name, 0.0) + float(value)
            names = sorted(term_sums)
            totals = torch.cat([totals, torch.tensor([term_sums[n] for n in names], dtype=torch.float64)])
            totals = processes.sum(totals.to(device)).cpu()
            loss_sum_all, tokens_all, inputs_all, *term_totals = totals.tolist()
            # The gradient so far is of the *sum* (DDP: its mean over processes): rescale it to the
            # mean over every token of the optimiser batch.
            scale = processes.world_size / max(tokens_all, 1.0)
            for param in model.parameters():
                if param.grad is not None:
                    param.grad.mul_(scale)
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
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
                if processes.is_main:
                    write_checkpoint(checkpoint_dir, done, {
                        "identity": identity,
                        "step": done,
                        "examples_seen": done * settings.batch_size,
                        "last_loss": last_loss,
                        "model": model.state_dict(),
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
        device=str(device), precision=precision, world_size=processes.world_size,
        is_main_process=processes.is_main,
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
) -> dict[str, Any] | None:
    """After :func:`train`: publish a completed run's model, then remove its checkpoints.

    Only the main process of a completed run writes (:func:`pipeline.models.publish_model`):
    the weights, the baseline's tokenizer files, and ``whp_model.json`` = the baseline's
    identity, the stage's ``facts`` and the run's figures (:meth:`TrainResult.provenance`);
    ``card(provenance)``, if given, becomes the folder's ``README.md``. The checkpoints go only
    once the model is in place: a crash before leaves them for the next run to resume.

    Returns:
        The provenance written, or None when nothing was (another process, or an unfinished run).
    """
    if not (result.completed and result.is_main_process):
        return None
    provenance = {
        "base_model": BASELINE.as_posix(),
        "base_source": read_provenance(baseline).get("source"),
        "base_weights_sha256": base_weights,
    } | facts | result.provenance()
    files = {"README.md": card(provenance)} if card is not None else None
    publish_model(target, model=model, tokenizer=baseline, provenance=provenance, files=files)
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    return provenance
