"""The ``linguistic`` review (docs/algorithm.md, Human review, review 2): which generic labels
reviewers check, and the normaliser that turns their verdicts into decisions.

Tasks. A position ``i`` of a forget block is *uncertain* when it is trained on (``loss_mask``
1) and its generic label at ``dataset.alpha`` has a confidence below
``review.linguistic.threshold``. The uncertain positions of a block at most
``review.linguistic.gap`` positions apart share one task, which covers at most
``review.linguistic.span`` positions (first to last). A task shows

* ``translated``: the translated block up to and including token ``j(first)``, its last
  ``context_tokens`` tokens (``…`` in front when cut): what the baseline had read when it
  predicted the task's first target;
* ``continuation``: the generic targets of the trained positions ``first..last``, decoded one
  token at a time and joined, the uncertain ones between ``⟦`` and ``⟧``;
* ``actual``: the translated text's own tokens there (``j(first)+1 .. j(last)+1``), to compare;
* ``uncertain``: each uncertain position with its target token and confidence.

Its key is ``<block_id>:<first position>``; tasks are ordered by their least confident
position (then key) and cut at ``review.max_tasks``.

Reviewers judge ``correct``/``incorrect``/``unsure`` (the ``verdict`` control) and may type a
fix (the ``fix`` text box). An annotation must choose exactly one verdict; anything else is a
problem naming task and annotation. Each reviewer's latest annotation is their vote
(:mod:`pipeline.review.voting`); the fix is voted among the reviewers of the winning
``incorrect`` verdict (no fix is a vote too); a tie leaves the fix out (the positions are then
dropped) and is listed as a conflict. Pulled into ``labels/linguistic/decisions.jsonl`` (format:
:class:`pipeline.review.records.LinguisticDecision`), which the ``dataset`` stage applies
(:mod:`pipeline.review.decisions`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.errors import DatasetNotFoundError
from pipeline.paths import BASELINE
from pipeline.review.export import Annotation, choice_parser
from pipeline.review.projects import MAX_TASKS, ReviewError, Workflow
from pipeline.review.records import VERDICTS, LinguisticDecision, task_key
from pipeline.review.voting import Conflict, Review, majority, normalise_choices, voters
from pipeline.store import read_dataset

VERDICT_CONTROL = "verdict"
FIX_CONTROL = "fix"
MARK = ("⟦", "⟧")
ELLIPSIS = "…"
END_OF_BLOCK = "(end of block)"

Decode = Callable[[list[int]], str]


# --------------------------------------------------------------------------------------------
# Tasks


def uncertain_positions(confidence: Sequence[float], loss_mask: Sequence[int], *, threshold: float) -> list[int]:
    """Trained positions whose confidence is below ``threshold`` ([n] -> ascending positions)."""
    conf = np.asarray(confidence, dtype=float)
    mask = np.asarray(loss_mask, dtype=int)
    return np.flatnonzero((mask == 1) & (conf < threshold)).tolist()


def group_positions(positions: Sequence[int], *, gap: int, span: int) -> list[list[int]]:
    """Ascending positions cut into groups: a position joins the current group when it is at
    most ``gap`` after the group's last one and within ``span`` positions of its first one."""
    groups: list[list[int]] = []
    for position in positions:
        if groups and position - groups[-1][-1] <= gap and position - groups[-1][0] < span:
            groups[-1].append(position)
        else:
            groups.append([position])
    return groups


def linguistic_tasks(
    blocks: pd.DataFrame, labels: pd.DataFrame, *, decode: Decode, alpha: float, threshold: float, gap: int,
    span: int, context_tokens: int, max_tasks: int,
) -> list[dict[str, Any]]:
    """Review tasks for the uncertain generic labels (rules in the module docstring).

    Args:
        blocks: ``blocks`` rows (``block_id``, ``translated_ids`` [m], ``alignment`` [n],
            ``loss_mask`` [n]).
        labels: ``generic_labels`` rows at ``alpha`` (``block_id``, ``target`` [n],
            ``confidence`` [n]).
        decode: token ids -> text (the baseline's tokenizer).

    Returns:
        One dict per task, ``{"data": {...}}``, the least confident first.
    """
    by_block = labels.set_index("block_id")
    found = []
    for block in blocks.itertuples(index=False):
        if block.block_id not in by_block.index:
            continue
        row = by_block.loc[block.block_id]
        targets = [int(t) for t in row["target"]]
        confidence = [float(c) for c in row["confidence"]]
        mask = [int(m) for m in block.loss_mask]
        alignment = [int(j) for j in block.alignment]
        translated = [int(t) for t in block.translated_ids]
        trained = [m == 1 and j >= 0 for m, j in zip(mask, alignment)]
        uncertain = uncertain_positions(confidence, trained, threshold=threshold)
        for positions in group_positions(uncertain, gap=gap, span=span):
            found.append((min(confidence[p] for p in positions), task_key(block.block_id, positions[0]),
                          _task_data(block.block_id, positions, targets, confidence, trained, alignment,
                                     translated, decode=decode, alpha=alpha, context_tokens=context_tokens)))
    found.sort(key=lambda item: (item[0], item[1]))
    return [{"data": data} for _, _, data in found[:max_tasks]]


def _task_data(block_id: str, positions: list[int], targets: list[int], confidence: list[float], trained: list[bool],
               alignment: list[int], translated: list[int], *, decode: Decode, alpha: float,
               context_tokens: int) -> dict[str, Any]:
    first, last = positions[0], positions[-1]
    end = alignment[first] + 1
    start = max(0, end - context_tokens)
    context = (ELLIPSIS if start > 0 else "") + decode(translated[start:end])
    marked = set(positions)
    pieces = []
    for p in range(first, last + 1):
        if trained[p]:
            token = decode([targets[p]])
            pieces.append(f"{MARK[0]}{token}{MARK[1]}" if p in marked else token)
    actual = decode(translated[end:alignment[last] + 2])
    if alignment[last] + 1 >= len(translated):
        actual += END_OF_BLOCK
    details = "; ".join(f"{p}: {json.dumps(decode([targets[p]]), ensure_ascii=False)} p={confidence[p]:.3f}"
                        for p in positions)
    return {
        "key": task_key(block_id, first), "block_id": block_id, "positions": positions, "alpha": alpha,
        "targets": [targets[p] for p in positions], "confidence": [round(confidence[p], 4) for p in positions],
        "translated": context, "continuation": "".join(pieces), "actual": actual, "uncertain": details,
    }


def fix_text(typed: str | None, context: str) -> str | None:
    """A reviewer's fix as the exact text that follows ``context`` (``None`` when blank).

    Blanks around it are stripped; it gets one leading space when the reviewer typed one, or
    when it starts with a letter or digit and the context ends with neither a blank nor an
    opening bracket or quote (a reviewer types ``said``, meaning the next word).
    """
    if typed is None or not typed.strip():
        return None
    text = typed.strip()
    if typed[0].isspace():
        return " " + text
    if text[0].isalnum() and context and not context[-1].isspace() and context[-1] not in "([{\"'“‘":
        return " " + text
    return text


# --------------------------------------------------------------------------------------------
# Label Studio


def _settings(root: Path):
    """``(dataset.alpha, review.linguistic)`` of the project (defaults without a params.yaml)."""
    from pipeline.params import DatasetParams, LinguisticReviewParams, load_params

    path = root / "params.yaml"
    if path.is_file():
        params = load_params(path)
        return params.dataset.alpha, params.review.linguistic
    return DatasetParams().alpha, LinguisticReviewParams()


def build_linguistic_tasks(root: Path, *, max_tasks: int = MAX_TASKS) -> list[dict[str, Any]]:
    """:func:`linguistic_tasks` on the project's ``blocks`` and ``generic_labels`` at
    ``dataset.alpha``, decoded with ``models/baseline``'s tokenizer."""
    root = Path(root)
    alpha, settings = _settings(root)
    try:
        labels = read_dataset("generic_labels", root, columns=["block_id", "alpha", "target", "confidence"])
        blocks = read_dataset("blocks", root, columns=["block_id", "translated_ids", "alignment", "loss_mask"])
    except DatasetNotFoundError as exc:
        raise ReviewError(f"review project 'linguistic': no data yet: run the generic_labels stage "
                          f"(`dvc repro generic_labels`): {exc}") from None
    labels = labels[labels["alpha"] == alpha]
    if labels.empty:
        raise ReviewError(f"review project 'linguistic': generic_labels has no labels at dataset.alpha={alpha} "
                          "(add it to generic_labels.alphas and run `dvc repro generic_labels`)")
    from pipeline.models import load_tokenizer  # imports torch: only once there is data

    tokenizer = load_tokenizer(root / BASELINE)
    return linguistic_tasks(blocks, labels, decode=lambda ids: tokenizer.decode(ids), alpha=alpha,
                            threshold=settings.threshold, gap=settings.gap, span=settings.span,
                            context_tokens=settings.context_tokens, max_tasks=max_tasks)


def _decision_record(key: str, verdict: str, deciders: list[str],
                     annotations: Mapping[str, Annotation]) -> tuple[dict[str, Any], list[Conflict]]:
    data = annotations[deciders[0]].pushed["data"]
    record: dict[str, Any] = {"key": key, "block_id": data["block_id"], "positions": list(data["positions"]),
                              "alpha": data["alpha"], "targets": list(data["targets"]), "verdict": verdict}
    conflicts = []
    if verdict == "incorrect":  # the fix is voted among the reviewers of the verdict
        fixes = {r: fix_text(annotations[r].answer.text, annotations[r].pushed["data"]["translated"]) for r in deciders}
        won_fix = majority(fixes)
        if won_fix is None:
            conflicts.append(Conflict(key, "", "fix", voters(fixes, lambda f: "no fix" if f is None else repr(f))))
        elif won_fix[0] is not None:
            record["fix"] = won_fix[0]
    return record, conflicts


def normalise_linguistic_export(
    export: Any, tasks: Mapping[str, Mapping[str, Any]], *, source: str, users: Mapping[int, str] | None = None,
) -> Review:
    """The decisions records of a linguistic export (module docstring), with conflicts and agreement."""
    return normalise_choices(export, tasks, source=source, users=users,
                             parse=choice_parser(VERDICT_CONTROL, VERDICTS, FIX_CONTROL), decide=_decision_record,
                             decision_field="verdict")


WORKFLOW = Workflow(build_tasks=build_linguistic_tasks, normalise=normalise_linguistic_export,
                    record=LinguisticDecision)
