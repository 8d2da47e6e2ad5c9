"""Training checkpoints: one per optimiser step, written atomically, resumed exactly.

A checkpoint holds what :func:`pipeline.training.train` needs to continue as if never stopped:
the weights, the optimiser and scheduler state, the RNG states, the data position and the log
so far. Two layouts:

* ``step-XXXXXXXX.pt``, one file (:func:`write_checkpoint`), from one process or the main
  process of a DDP run: the trained weights, optimiser, scheduler, the RNG states of torch,
  numpy and Python (:func:`rng_state`), and the run's fields;
* ``step-XXXXXXXX/``, a folder (:func:`write_sharded_checkpoint`), from the processes of a
  sharded run (FSDP, DeepSpeed): what accelerate's ``save_state`` writes (each process its
  shards of the weights and optimiser, the scheduler, every process's RNG states) and
  ``whp_state.pt``, the run's fields (``layout: sharded``).

Crash safety: a checkpoint is written under a temporary name, flushed and fsynced, renamed
into place, and the rename made durable by an fsync of the folder, so a checkpoint is either
complete or absent. A kill during the write leaves a temporary file or folder (full-size for a
large model): :func:`remove_stale_temporaries` deletes those at the start of the next run. The
two latest checkpoints are kept, so a latest one that cannot be read (a disk error, a
truncated copy) is skipped with a warning for the one before (:func:`load_latest`).
"""

from __future__ import annotations

import os
import pickle
import random
import shutil
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

CHECKPOINT_PATTERN = "step-{:08d}.pt"
KEEP = 2
"""Checkpoints kept: the latest and the one before, the fallback when the latest is unreadable."""
SHARDED_STATE = "whp_state.pt"
"""The run's fields in a sharded checkpoint folder (beside accelerate's files)."""
_TEMPORARY = ".step-*.tmp-*"
_REQUIRED = ("identity", "step", "examples_seen", "last_loss", "log")
_REQUIRED_PLAIN = ("model", "optimizer", "scheduler", "rng")


def rng_state() -> dict[str, Any]:
    key, pos, has_gauss, cached = np.random.get_state()[1:]
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": [torch.from_numpy(key.astype(np.int64)), pos, has_gauss, cached],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate(state["python"])
    key, pos, has_gauss, cached = state["numpy"]
    np.random.set_state(("MT19937", key.numpy().astype(np.uint32), pos, has_gauss, cached))


def list_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of the checkpoints (files and folders) in ``folder``, oldest first."""
    found = []
    for path in folder.glob("step-*") if folder.is_dir() else []:
        if not (path.suffix == ".pt" or path.is_dir()):
            continue
        try:
            found.append((int(path.stem.removeprefix("step-")), path))
        except ValueError:
            continue
    return sorted(found)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files and folders of checkpoint writes that never finished (a kill
    during ``torch.save`` or ``save_state``); returns what was removed. Call before any process
    writes a checkpoint."""
    removed = sorted(folder.glob(_TEMPORARY)) if folder.is_dir() else []
    for path in removed:
        _remove(path)
    return removed


def remove_checkpoints(folder: Path) -> None:
    """Delete every checkpoint in ``folder`` (those of another run)."""
    for _, path in list_checkpoints(folder):
        _remove(path)


def _fsync_folder(folder: Path) -> None:
    # A rename is durable only once the folder's entry is on disk (POSIX); Windows cannot
    # open a folder for this and has no need to.
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_checkpoint(folder: Path, step: int, state: dict[str, Any], *, keep: int = KEEP) -> Path:
    """Write ``state`` as step ``step``'s checkpoint (temporary file, fsync, rename, fsync of
    the folder), then drop all but the ``keep`` (at least 1) latest checkpoints."""
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / CHECKPOINT_PATTERN.format(step)
    tmp = folder / f".{final.name}.tmp-{os.getpid()}"
    try:
        _save_synced(state, tmp)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(folder)
    _keep_latest(folder, keep)
    return final


def _save_synced(state: dict[str, Any], path: Path) -> None:
    with path.open("wb") as handle:
        torch.save(state, handle)
        handle.flush()
        os.fsync(handle.fileno())


def _keep_latest(folder: Path, keep: int) -> None:
    for _, path in list_checkpoints(folder)[:-keep]:
        _remove(path)


def write_sharded_checkpoint(
    folder: Path, step: int, state: dict[str, Any], *, save_state: Callable[[Path], None], is_main: bool,
    barrier: Callable[[], None], keep: int = KEEP,
) -> Path:
    """Write step ``step``'s checkpoint as a folder, every process together: ``save_state``
    (accelerate's, each process its shards) into a temporary folder, then ``state`` (the run's
    fields) as its ``whp_state.pt``, fsynced, and the folder renamed into place by the main
    process; then all but the ``keep`` latest are dropped. Every process must call it (the
    processes share the filesystem)."""
    final = folder / CHECKPOINT_PATTERN.format(step).removesuffix(".pt")
    tmp = folder / f".{final.name}.tmp-sharded"  # one name for all processes
    if is_main:
        _remove(tmp)
        tmp.mkdir(parents=True)
    barrier()
    save_state(tmp)
    barrier()  # every shard is written
    if is_main:
        _save_synced(state | {"layout": "sharded"}, tmp / SHARDED_STATE)
        for path in tmp.rglob("*"):  # accelerate does not fsync its files
            if path.is_file():
                with path.open("rb") as handle:
                    os.fsync(handle.fileno())
        _remove(final)
        os.replace(tmp, final)
        _fsync_folder(folder)
        _keep_latest(folder, keep)
    barrier()
    return final


def _warn(message: str) -> None:
    tqdm.write(message, file=sys.stderr)  # between, not through, the progress bar's lines


def load_latest(
    folder: Path, *, remove_unreadable: bool = True, warn: Callable[[str], None] = _warn,
) -> tuple[dict[str, Any], Path] | None:
    """The newest checkpoint that loads and holds every field :func:`pipeline.training.train`
    needs, with its path; None when there is none. For a sharded checkpoint (a folder) that is
    its ``whp_state.pt`` (the shards are loaded by accelerate's ``load_state``).

    A newer one that does not load (truncated, corrupt, half of its fields) is skipped with a
    warning naming it and the reason, and deleted when ``remove_unreadable`` (only one process
    of a multi-process run should delete): left in place it would count as one of the
    :data:`KEEP` latest and push a good checkpoint out.
    """
    for step, path in reversed(list_checkpoints(folder)):
        try:
            sharded = path.is_dir()
            state = torch.load(path / SHARDED_STATE if sharded else path, map_location="cpu", weights_only=True)
            required = _REQUIRED + (() if sharded else _REQUIRED_PLAIN)
            missing = [key for key in required if key not in state] if isinstance(state, dict) else list(required)
            if missing:
                raise ValueError(f"missing {', '.join(missing)}")
        except (OSError, EOFError, RuntimeError, ValueError, KeyError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
            warn(f"train: skipping unreadable checkpoint {path} ({type(exc).__name__}: {str(exc)[:200]}); "
                 "trying the one before")
            if remove_unreadable:
                _remove(path)
            continue
        return state, path
    return None
