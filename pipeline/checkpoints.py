"""Training checkpoints: one file per optimiser step, written atomically, resumed exactly.

A checkpoint ``step-XXXXXXXX.pt`` holds what :func:`pipeline.training.train` needs to continue
as if never stopped: the weights, the optimiser and scheduler state, the RNG states of torch,
numpy and Python (:func:`rng_state`), the data position and the log so far.

Crash safety: a checkpoint is written to a temporary file, flushed and fsynced, renamed into
place, and the rename made durable by an fsync of the folder, so a checkpoint file is either
complete or absent. A kill during the write leaves a temporary file (full-size for a large
model): :func:`remove_stale_temporaries` deletes those at the start of the next run. The two
latest checkpoints are kept, so a latest one that cannot be read (a disk error, a truncated
copy) is skipped with a warning for the one before (:func:`load_latest`).
"""

from __future__ import annotations

import os
import pickle
import random
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
_TEMPORARY = ".step-*.pt.tmp-*"
_REQUIRED = ("identity", "step", "examples_seen", "last_loss", "model", "optimizer", "scheduler", "rng", "log")


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
    """``(step, path)`` of the checkpoints in ``folder``, oldest first."""
    found = []
    for path in folder.glob("step-*.pt") if folder.is_dir() else []:
        try:
            found.append((int(path.stem.removeprefix("step-")), path))
        except ValueError:
            continue
    return sorted(found)


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files of checkpoint writes that never finished (a kill during
    ``torch.save``); returns what was removed. Call before any process writes a checkpoint."""
    removed = sorted(folder.glob(_TEMPORARY)) if folder.is_dir() else []
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


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
        with tmp.open("wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(folder)
    for _, path in list_checkpoints(folder)[:-keep]:
        path.unlink(missing_ok=True)
    return final


def _warn(message: str) -> None:
    tqdm.write(message, file=sys.stderr)  # between, not through, the progress bar's lines


def load_latest(
    folder: Path, *, remove_unreadable: bool = True, warn: Callable[[str], None] = _warn,
) -> tuple[dict[str, Any], Path] | None:
    """The newest checkpoint that loads and holds every field :func:`pipeline.training.train`
    needs, with its path; None when there is none.

    A newer one that does not load (truncated, corrupt, half of its fields) is skipped with a
    warning naming it and the reason, and deleted when ``remove_unreadable`` (only one process
    of a multi-process run should delete): left in place it would count as one of the
    :data:`KEEP` latest and push a good checkpoint out.
    """
    for step, path in reversed(list_checkpoints(folder)):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            missing = [key for key in _REQUIRED if key not in state] if isinstance(state, dict) else list(_REQUIRED)
            if missing:
                raise ValueError(f"missing {', '.join(missing)}")
        except (OSError, EOFError, RuntimeError, ValueError, KeyError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
            warn(f"train: skipping unreadable checkpoint {path} ({type(exc).__name__}: {str(exc)[:200]}); "
                 "trying the one before")
            if remove_unreadable:
                path.unlink(missing_ok=True)
            continue
        return state, path
    return None
