"""Training checkpoints: one file per optimiser step, written atomically, resumed exactly.

A checkpoint ``step-XXXXXXXX.pt`` holds what :func:`pipeline.training.train` needs to continue
as if never stopped: the weights, the optimiser and scheduler state, the RNG states of torch,
numpy and Python (:func:`rng_state`), the data position and the log so far.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_PATTERN = "step-{:08d}.pt"


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
    found = []
    for path in folder.glob("step-*.pt") if folder.is_dir() else []:
        try:
            found.append((int(path.stem.removeprefix("step-")), path))
        except ValueError:
            continue
    return sorted(found)


def write_checkpoint(folder: Path, step: int, state: dict[str, Any]) -> None:
    """Write through a temporary file and a rename, then drop older checkpoints."""
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
    for older, path in list_checkpoints(folder):
        if older != step:
            path.unlink(missing_ok=True)
