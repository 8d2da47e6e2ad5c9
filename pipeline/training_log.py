"""The per-step training log, written with DVCLive for ``dvc plots``.

One folder per training stage (``plots/dvclive/<stage>/``) in DVCLive's layout:
``plots/metrics/<name>.tsv`` (columns ``step`` and ``<name>``, one row per optimiser step) and
``metrics.json`` (the latest value of each). ``dvc.yaml`` declares these files under its
top-level ``plots:``; the stage declares the folder as an output, so DVCLive is used with
``dvcyaml=False`` and no experiment of its own.

The rows also travel in every checkpoint (:mod:`pipeline.checkpoints`): a resumed run rewrites
the folder from them before it continues, so the steps an interrupted run logged after its last
checkpoint (they are redone) appear once, and a folder deleted meanwhile (``dvc repro`` removes
a stage's outputs before running it) comes back whole.
"""

from __future__ import annotations

import csv
import shutil
import tempfile
from pathlib import Path
from typing import Any

from dvclive import Live

from pipeline.store import publish_folder

METRICS_DIR = Path("plots") / "metrics"
"""Where, inside a log folder, DVCLive writes the ``<name>.tsv`` files."""
NOT_LOGGED = ("step",)
"""Record fields that are the step itself, not a metric."""


class _FilesOnlyLive(Live):
    """DVCLive writing its files and nothing else.

    The stage is already a DVC stage (its outputs and ``dvc.yaml``'s ``plots:`` are declared
    by hand), so DVCLive needs no repository, experiment, ``dvc.yaml`` or Studio connection of
    its own. Its repository probe is skipped because it fails in a git repository without
    commits (``SCMError: Empty git repo``, dvclive 3.49), where ``dvc repro`` itself works.
    """

    def _init_dvc(self) -> None:
        pass

    def _init_studio(self) -> None:
        self._studio_events_to_skip |= {"start", "data", "done"}


class TrainingLog:
    """The log of one training run: ``rows`` (one dict per optimiser step, with ``step``) and,
    when ``folder`` is given, their DVCLive files, rewritten from ``rows`` at the start.

    Args:
        folder: the log folder (e.g. ``plots/dvclive/finetune``), or None to keep rows only
            (the processes of a multi-process run other than the main one).
        rows: the steps logged before (a checkpoint's), replayed into a fresh folder.
    """

    def __init__(self, folder: Path | None, rows: list[dict[str, Any]]) -> None:
        self.rows: list[dict[str, Any]] = []
        # resume=False: DVCLive clears the folder's earlier files; what is kept is replayed.
        self._live = None if folder is None else _FilesOnlyLive(
            dir=str(folder), resume=False, report=None, save_dvc_exp=False, dvcyaml=False,
        )
        for row in rows:
            self.append(row)

    def append(self, record: dict[str, Any]) -> None:
        """Log one optimiser step (``record["step"]``, 1-based, and its metrics)."""
        self.rows.append(dict(record))
        if self._live is None:
            return
        self._live.step = int(record["step"])
        for name, value in record.items():
            if name not in NOT_LOGGED:
                self._live.log_metric(name, value)
        self._live.make_summary()

    def close(self) -> None:
        if self._live is not None:
            self._live.end()


def read_training_log(folder: Path) -> list[dict[str, float]]:
    """The steps of a DVCLive log folder as records (``{"step": 1.0, "loss": ..., ...}``),
    one per step, in step order: what :class:`TrainingLog` wrote."""
    steps: dict[int, dict[str, float]] = {}
    for path in sorted((folder / METRICS_DIR).glob("*.tsv")):
        with path.open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle, delimiter="\t"):
                steps.setdefault(int(row["step"]), {"step": float(row["step"])})[path.stem] = float(row[path.stem])
    return [steps[step] for step in sorted(steps)]


def publish_log(work: Path, target: Path) -> None:
    """Publish the log a run wrote in ``work`` as ``target`` (``plots/dvclive/<stage>``) through
    the store, so that it lands with the stage's other outputs or not at all: a killed run leaves
    the published log as it was (a resumed run rebuilds ``work`` from its checkpoint). The main
    process alone calls it."""
    if not work.is_dir():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    shutil.copytree(work, tmp, dirs_exist_ok=True)
    publish_folder(tmp, target)
    shutil.rmtree(work, ignore_errors=True)
