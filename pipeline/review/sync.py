"""Push tasks to Label Studio, pull the reviewers' work, see where it stands.

Push is idempotent by the stable key ``data.key`` (anchors: the passage id; linguistic:
``<block_id>:<first position>``; evaluation: ``<model>:<probe_id>``): a new key is imported (in
batches), an unchanged one (same ``data_sha256``) is skipped, a changed one is updated in place
(data and pre-annotation; anchors' ``data`` holds the dictionary version, so a new dictionary
updates every task). Label Studio pre-labels only with the predictions of the project's model
version, so push sets it to the tasks' version. Tasks no longer selected stay on the server (and
in ``tasks.jsonl``); push never deletes.

Each annotation is compared with the pre-annotation its reviewer saw: Label Studio stores it
with the annotation (``prediction``), and its ``model_version`` selects the version in
``tasks.jsonl`` (the current one, or one kept in ``earlier``). Tasks without pre-annotation
(linguistic, evaluation) carry no version: their annotations are read against the task's
current data, so a task updated by push after it was annotated is judged as if the reviewer had
seen the new data (a linguistic decision records the targets of that data; the ``dataset``
stage skips it when the labels change later).

Pull validates the whole export before writing anything: every span's ``text`` must equal
``data.text[start:end]`` (the server does not check offsets), every key must be in
``tasks.jsonl`` with the same data, every label must be in the configuration. Any problem is one
:class:`ReviewError` listing task key, annotation id and problem, and ``labels/`` is untouched.
The normalised file is then rewritten: records without a snapshot as ``source`` (written by
hand) are kept first, as they were; a pulled record that an earlier pull already wrote keeps
that pull's ``source``, so a pull changes only the lines whose decisions changed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tqdm import tqdm

from pipeline.review import anchors, evaluation, linguistic
from pipeline.review.projects import (
    BATCH_SIZE, MAX_TASKS, SNAPSHOTS_DIR, ReviewError, ReviewProject, Workflow, review_project,
)
from pipeline.review.remote import (
    base_url, canonical, download_export, ensure_project, replace_predictions, server_call, server_tasks,
)
from pipeline.review.tasks import earlier_versions, model_version, read_tasks, studio_task, task_record, write_tasks
from pipeline.review.voting import Review
from pipeline.store import atomic_write_text

WORKFLOWS: dict[str, Workflow] = {"anchors": anchors.WORKFLOW, "linguistic": linguistic.WORKFLOW,
                                  "evaluation": evaluation.WORKFLOW}
"""What each registered project (:data:`pipeline.review.projects.PROJECTS`) does."""

_SNAPSHOT_NAME = re.compile(r"^\d{8}T\d{6}Z(-\d+)?\.json$")
_MAX_LISTED = 40


def _project(name: str) -> tuple[ReviewProject, Workflow]:
    spec = review_project(name)
    return spec, WORKFLOWS[spec.name]


def _snapshot_name(folder: Path, now: datetime) -> str:
    base = now.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    name, number = f"{base}.json", 1
    while (folder / name).exists():
        number += 1
        name = f"{base}-{number}.json"
    return name


def merge_corrections(previous: Sequence[Mapping[str, Any]], pulled: Sequence[Mapping[str, Any]]) -> list[dict]:
    """The new corrections file: hand-written records (``source`` not a snapshot) as they were,
    then the pulled ones; a pulled record identical to an earlier pulled one but for ``source``
    keeps the earlier ``source`` (so a pull changes only the lines whose decisions changed)."""
    kept = [dict(r) for r in previous if not _SNAPSHOT_NAME.match(str(r.get("source") or ""))]
    earlier = {
        canonical({k: v for k, v in r.items() if k != "source"}): r["source"]
        for r in previous if _SNAPSHOT_NAME.match(str(r.get("source") or ""))
    }
    merged = []
    for record in pulled:
        record = dict(record)
        record["source"] = earlier.get(canonical({k: v for k, v in record.items() if k != "source"}), record["source"])
        merged.append(record)
    return kept + merged


def _pulled(record: Mapping[str, Any]) -> bool:
    return bool(_SNAPSHOT_NAME.match(str(record.get("source") or "")))


def vanishing_records(previous: Sequence[Mapping[str, Any]], merged: Sequence[Mapping[str, Any]], review: Review, *,
                      task_field: str) -> list[tuple[Mapping[str, Any], str]]:
    """The records an earlier pull wrote that the new file would lose with their reviewers' work.

    A pulled record absent from ``merged`` is review work that changed (a reviewer's new
    annotation, a tie now) while its reviewers still have annotations of the task on the server;
    it is *lost* when its task is not on the server, or one of its reviewers has no annotation of
    it there any more (a reset server, tasks deleted and pushed again, another server). Records
    are compared, not task keys: a task pushed again after a reset has its key, not its work.

    Returns:
        ``[(record, why), ...]`` in file order.
    """
    kept = {canonical({k: v for k, v in r.items() if k != "source"}) for r in merged if _pulled(r)}
    lost = []
    for record in previous:
        if not _pulled(record) or canonical({k: v for k, v in record.items() if k != "source"}) in kept:
            continue
        task = record.get(task_field)
        if task not in review.task_keys:
            lost.append((record, "its task is not on the server"))
            continue
        gone = [r for r in str(record.get("reviewer", "")).split(", ") if r not in review.annotators.get(task, set())]
        if gone:
            lost.append((record, f"no annotation of the task by {', '.join(gone)} on the server"))
    return lost


def _vanishing_error(spec: ReviewProject, lost: Sequence[tuple[Mapping[str, Any], str]], output: Path,
                     url: str) -> ReviewError:
    lines = [f"pull {spec.title}: {len(lost)} record(s) of {output} would vanish, their reviewers' work is not on "
             f"{url} (a reset server, or another one?); nothing was written:"]
    for record, why in lost[:_MAX_LISTED]:
        decided = record.get(spec.decision_field)
        about = f" {record['anchor']!r}" if "anchor" in record else ""
        lines.append(f"  - task {record.get(spec.task_field)}: {spec.decision_field} {decided}{about} by "
                     f"{record.get('reviewer')} at {record.get('created_at')} (pulled in {record.get('source')}): {why}")
    if len(lost) > _MAX_LISTED:
        lines.append(f"  ... and {len(lost) - _MAX_LISTED} more")
    lines.append(f"Pull from the server that holds that work, or `whp review pull {spec.name} --force` to let those "
                 f"records go (git and {SNAPSHOTS_DIR}/ keep them)")
    return ReviewError("\n".join(lines))


def push(project: str, root: Path | str, client: Any, *, max_tasks: int = MAX_TASKS,
         batch_size: int = BATCH_SIZE) -> dict[str, Any]:
    """Create or update the server project ``whp-<project>`` and its tasks, idempotently by key.

    A new key is imported (in batches of ``batch_size``), an unchanged task (same data hash and
    the same pre-annotations) is skipped, a changed one is updated in place (data and
    pre-annotation: the new predictions are created before the old ones are deleted); a task
    whose data is right but whose pre-annotations are not (a push that failed halfway) is
    *repaired*. When a changed task already has annotations, ``tasks.jsonl`` keeps the version
    they were made on (``earlier``) so that pull compares them with what their reviewers saw.
    The project's model version (which pre-annotations Label Studio shows) becomes the tasks'
    ``model_version``.

    Returns:
        ``{"project_id", "created", "updated", "repaired", "unchanged", "untracked"}``: counts of
        tasks imported, updated, given back their pre-annotations, left as they were;
        ``untracked`` lists keys on the server that ``tasks.jsonl`` does not describe (pull will
        refuse them).
    """
    spec, workflow = _project(project)
    root = Path(root)
    config_path = spec.config_path(root)
    try:
        config = config_path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ReviewError(f"{config_path}: cannot read the review configuration: {exc.strerror}") from None
    built = [task_record(task) for task in workflow.build_tasks(root, max_tasks=max_tasks)]
    tasks_path = spec.tasks_path(root)
    tracked = read_tasks(tasks_path)

    pid, current_version = ensure_project(client, spec, config)
    on_server = server_tasks(client, pid)
    records: dict[str, dict[str, Any]] = {}
    create, update, repair, unchanged = [], [], [], []
    for record in built:
        key = record["key"]
        old, there = tracked.get(key), on_server.get(key)
        if there is None:
            create.append(record)
        elif there.data_sha256 == record["data_sha256"]:
            (unchanged if there.shows(record) else repair).append(record)
            if old is not None and old["data_sha256"] == record["data_sha256"] and old.get("earlier"):
                record["earlier"] = old["earlier"]
        else:
            update.append(record)
            if there.annotations and old is not None and old["data_sha256"] == there.data_sha256:
                record["earlier"] = earlier_versions(old)
        records[key] = record
    untracked = []
    for key, there in on_server.items():
        if key not in records:
            if key in tracked and tracked[key]["data_sha256"] == there.data_sha256:
                records[key] = tracked[key]
            else:
                untracked.append(key)
    # Written before the server changes: after a push that fails halfway, the file still
    # describes every task that may be there (pull checks each task's data against it).
    write_tasks(tasks_path, records)

    progress = tqdm(total=len(create) + len(update) + len(repair), desc=f"push {spec.title}", unit="task")
    with progress:
        for start in range(0, len(create), batch_size):
            batch = create[start:start + batch_size]
            with server_call(client, f"importing tasks {start + 1}-{start + len(batch)} of {len(create)}"):
                client.projects.import_tasks(id=pid, request=[studio_task(r) for r in batch])
            progress.update(len(batch))
        for record in update + repair:
            there = on_server[record["key"]]
            with server_call(client, f"updating task {record['key']}"):
                if there.data_sha256 != record["data_sha256"]:
                    client.tasks.update(id=str(there.id), data=record["data"])
                replace_predictions(client, there, record)
            progress.update(1)
    # Label Studio pre-labels with the predictions of the project's model version only (and
    # refuses a version no prediction has yet): set it once the predictions are there.
    versions = {model_version(r) for r in built} - {None}
    if len(versions) == 1 and versions != {current_version}:
        with server_call(client, f"setting the model version of {spec.title!r}"):
            client.projects.update(id=pid, model_version=versions.pop())
    return {"project_id": pid, "created": len(create), "updated": len(update), "repaired": len(repair),
            "unchanged": len(unchanged), "untracked": sorted(untracked)}


def _problems_error(spec: ReviewProject, problems: Sequence[str], action: str) -> ReviewError:
    head = f"{action} {spec.title}: {len(problems)} problem(s) in the export; nothing was written"
    lines = [f"  - {p}" for p in problems[:_MAX_LISTED]]
    if len(problems) > _MAX_LISTED:
        lines.append(f"  ... and {len(problems) - _MAX_LISTED} more")
    return ReviewError("\n".join([head, *lines]))


def pull(project: str, root: Path | str, client: Any, *, now: datetime | None = None,
         force: bool = False) -> dict[str, Any]:
    """Export the project, validate everything, then write the snapshot and the normalised file.

    Refuses (nothing written) when records an earlier pull wrote would vanish although their
    reviewers' work is not on the server any more (:func:`vanishing_records`: a reset or another
    server), unless ``force``.

    Returns:
        :meth:`Review.summary` plus ``snapshot`` and ``output`` (paths relative to ``root``) and
        ``records`` (lines written, hand-written ones included).
    """
    spec, workflow = _project(project)
    root = Path(root)
    folder = spec.folder(root)
    tracked = read_tasks(spec.tasks_path(root))
    raw, export, users = download_export(client, spec)
    snapshots = folder / SNAPSHOTS_DIR
    name = _snapshot_name(snapshots, now or datetime.now(timezone.utc))
    review = workflow.normalise(export, tracked, source=name, users=users)
    if review.problems:
        raise _problems_error(spec, review.problems, "pull")
    output = spec.output_path(root)
    previous = [r.raw for r in workflow.record.read(output)]
    records = merge_corrections(previous, review.records)
    lost = vanishing_records(previous, records, review, task_field=spec.task_field)
    if lost and not force:
        raise _vanishing_error(spec, lost, output.relative_to(root), base_url(client))
    for number, record in enumerate(records, start=1):
        if problems := workflow.record.problems(record):  # a bug here, never the reviewers' fault
            raise ReviewError(f"pull {spec.title}: record {number} would be invalid ({'; '.join(problems)}): {record}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:  # pragma: no cover - json.loads above decoded it
        raise ReviewError(f"malformed export: {exc}") from None
    atomic_write_text(snapshots / name, text)
    atomic_write_text(output, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    summary = review.summary()
    summary.update(snapshot=str((snapshots / name).relative_to(root)), output=str(output.relative_to(root)),
                   records=len(records))
    if workflow.report is not None:
        summary.update(workflow.report(records))
    return summary


def status(project: str, root: Path | str, client: Any) -> dict[str, Any]:
    """Where the review stands, from a fresh export (nothing written).

    Returns:
        ``{"project", "tasks", "tracked", "annotated", "annotations", "cancelled", "reviewers",
        "conflicts", "agreement", "decisions", "problems"}`` (conflicts, agreement and decisions
        only for projects with a normaliser; ``problems``: what pull would refuse).
    """
    spec, workflow = _project(project)
    root = Path(root)
    tracked = read_tasks(spec.tasks_path(root))
    _, export, users = download_export(client, spec)
    review = workflow.normalise(export, tracked, source="status", users=users)
    summary = {"project": spec.title, "tracked": len(tracked), **review.summary(), "problems": review.problems}
    if workflow.report is not None:
        summary.update(workflow.report(review.records))
    return summary
