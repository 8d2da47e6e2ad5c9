"""The registry of the three review projects: names, Label Studio titles, files under ``labels/``.

A leaf: what each project *does* (build tasks, normalise an export, read its records) lives in
:mod:`pipeline.review.anchors`, :mod:`pipeline.review.linguistic` and
:mod:`pipeline.review.evaluation`; :mod:`pipeline.review.sync` joins the two.

Files under ``labels/<project>/`` (tracked in git):

* ``config.xml``: the Label Studio labelling configuration;
* ``tasks.jsonl``: our copy of every task on the server (:mod:`pipeline.review.tasks`);
* ``snapshots/<UTC time>.json``: each pulled export, byte for byte as the server sent it (task
  data, annotations, user ids: no credentials);
* the normalised file (:attr:`ReviewProject.output`): ``corrections.jsonl`` (anchors),
  ``decisions.jsonl`` (linguistic), ``grades.jsonl`` (evaluation), formats in
  :mod:`pipeline.review.records`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError

LABELS_DIR = "labels"
TASKS_FILE = "tasks.jsonl"
CONFIG_FILE = "config.xml"
SNAPSHOTS_DIR = "snapshots"
TITLE_PREFIX = "whp-"
MAX_TASKS = 200
"""Default of ``review.max_tasks``: tasks pushed at most (anchors: passages with most anchors)."""
BATCH_SIZE = 50
"""Default of ``review.batch_size``: tasks per import request (SQLite locks under big imports)."""


class ReviewError(PipelineError):
    """The review server or its export cannot be used; the message names task, annotation, problem."""


@dataclass(frozen=True)
class ReviewProject:
    """One review project: where its files are and how its records are keyed.

    ``output`` is the normalised file :func:`pipeline.review.sync.pull` writes (inside
    ``labels/<name>/``); ``task_field`` names the record field holding the task key;
    ``decision_field`` the field the summaries count (``action``, ``verdict``, ``grade``).
    """

    name: str
    output: str
    task_field: str
    decision_field: str

    @property
    def title(self) -> str:
        """The project's title on the server (``whp-<name>``)."""
        return TITLE_PREFIX + self.name

    def folder(self, root: Path | str) -> Path:
        return Path(root) / LABELS_DIR / self.name

    def config_path(self, root: Path | str) -> Path:
        return self.folder(root) / CONFIG_FILE

    def tasks_path(self, root: Path | str) -> Path:
        return self.folder(root) / TASKS_FILE

    def output_path(self, root: Path | str) -> Path:
        return self.folder(root) / self.output


@dataclass(frozen=True)
class Workflow:
    """What a project does, given by its module (``anchors.WORKFLOW``, ...).

    ``build_tasks(root, *, max_tasks)`` returns task records (``{"data": {"key", ...},
    "predictions": [...], ...}``; keys other than ``data`` and ``predictions`` stay in
    ``tasks.jsonl``); ``normalise(export, tasks, *, source, users)`` returns a
    :class:`pipeline.review.voting.Review`; ``record`` is the output file's format (a
    :class:`pipeline.review.records.ReviewRecord` subclass: ``problems(record)``, the reader);
    ``report(records)`` (optional) adds figures computed over the whole file to the summary.
    """

    build_tasks: Callable[..., list[dict[str, Any]]]
    normalise: Callable[..., Any]
    record: Any
    report: Callable[[Sequence[Mapping[str, Any]]], dict[str, Any]] | None = None


PROJECTS: dict[str, ReviewProject] = {
    project.name: project for project in (
        ReviewProject("anchors", "corrections.jsonl", task_field="task", decision_field="action"),
        ReviewProject("linguistic", "decisions.jsonl", task_field="key", decision_field="verdict"),
        ReviewProject("evaluation", "grades.jsonl", task_field="key", decision_field="grade"),
    )
}


def review_project(name: str) -> ReviewProject:
    """The registered project called ``name``; an unknown name is a :class:`ReviewError`."""
    try:
        return PROJECTS[name]
    except KeyError:
        raise ReviewError(f"unknown review project {name!r} (known: {', '.join(PROJECTS)})") from None
