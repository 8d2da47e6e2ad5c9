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
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tqdm import tqdm

from pipeline.core.jsonl import JsonError, parse_json
from pipeline.review import anchors, evaluation, linguistic
from pipeline.review.projects import (
    BATCH_SIZE, MAX_TASKS, SNAPSHOTS_DIR, ReviewError, ReviewProject, Workflow, review_project,
)
from pipeline.review.tasks import (
    data_sha256, earlier_versions, model_version, read_tasks, studio_task, task_record, write_tasks,
)
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
        _canonical({k: v for k, v in r.items() if k != "source"}): r["source"]
        for r in previous if _SNAPSHOT_NAME.match(str(r.get("source") or ""))
    }
    merged = []
    for record in pulled:
        record = dict(record)
        record["source"] = earlier.get(_canonical({k: v for k, v in record.items() if k != "source"}), record["source"])
        merged.append(record)
    return kept + merged


def _canonical(record: Mapping[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, ensure_ascii=False)


# --------------------------------------------------------------------------------------------
# The server


def _base_url(client: Any) -> str:
    wrapper = getattr(client, "_client_wrapper", None)
    try:
        return str(wrapper.get_base_url())
    except AttributeError:
        return "the Label Studio server"


@contextmanager
def _server(client: Any, what: str) -> Iterator[None]:
    """Turn the SDK's transport and HTTP errors into a :class:`ReviewError` (no credentials)."""
    import httpx
    from label_studio_sdk.core.api_error import ApiError

    url = _base_url(client)
    try:
        yield
    except ApiError as exc:
        body = exc.body if isinstance(exc.body, str) else json.dumps(exc.body, default=str)
        hint = " (check LABEL_STUDIO_API_KEY)" if exc.status_code in (401, 403) else ""
        raise ReviewError(f"Label Studio at {url}: {what} failed: HTTP {exc.status_code}{hint}: {body[:500]}") from None
    except httpx.HTTPError as exc:
        raise ReviewError(
            f"cannot reach Label Studio at {url} ({what}): {type(exc).__name__}: {exc or 'no answer'}; "
            "is the server running? (`whp studio status`, `whp studio start`)"
        ) from None


def _find_project(client: Any, title: str) -> Any | None:
    with _server(client, f"listing projects to find {title!r}"):
        found = [p for p in client.projects.list(title=title) if p.title == title]
    if len(found) > 1:
        raise ReviewError(f"Label Studio has {len(found)} projects titled {title!r} (ids {[p.id for p in found]}): "
                          "delete or rename all but one")
    return found[0] if found else None


def find_project(client: Any, title: str) -> int | None:
    """The id of the server project titled exactly ``title`` (``None`` if there is none)."""
    found = _find_project(client, title)
    return None if found is None else found.id


def _ensure_project(client: Any, project: ReviewProject, config: str) -> tuple[int, str | None]:
    """The project's id and model version, created or its configuration brought up to date."""
    found = _find_project(client, project.title)
    if found is None:
        with _server(client, f"creating project {project.title!r}"):
            created = client.projects.create(title=project.title, label_config=config,
                                             description=f"whp review: {project.name} (labels/{project.name})")
        return created.id, None
    if found.label_config != config:
        with _server(client, f"updating the configuration of {project.title!r}"):
            client.projects.update(id=found.id, label_config=config)
    return found.id, found.model_version or None


def _server_tasks(client: Any, pid: int) -> dict[str, tuple[int, str, int]]:
    """key -> (task id, data hash, annotations) of the project's tasks."""
    found: dict[str, tuple[int, str, int]] = {}
    with _server(client, "listing tasks"):
        for task in client.tasks.list(project=pid, fields="task_only"):
            data = task.data or {}
            key = data.get("key")
            if not isinstance(key, str):
                raise ReviewError(f"task {task.id} of project {pid} has no data.key: not pushed by `whp review push`; "
                                  "delete it in Label Studio")
            if key in found:
                raise ReviewError(f"task key {key!r} is on two tasks of project {pid} (ids {found[key][0]} and "
                                  f"{task.id}): delete one in Label Studio")
            done = (task.total_annotations or 0) + (task.cancelled_annotations or 0)
            found[key] = (task.id, data_sha256(data), done)
    return found


def push(project: str, root: Path | str, client: Any, *, max_tasks: int = MAX_TASKS,
         batch_size: int = BATCH_SIZE) -> dict[str, Any]:
    """Create or update the server project ``whp-<project>`` and its tasks, idempotently by key.

    A new key is imported (in batches of ``batch_size``), an unchanged task (same data hash) is
    skipped, a changed one is updated in place (data and pre-annotation). When a changed task
    already has annotations, ``tasks.jsonl`` keeps the version they were made on (``earlier``)
    so that pull compares them with what their reviewers saw. The project's model version
    (which pre-annotations Label Studio shows) becomes the tasks' ``model_version``.

    Returns:
        ``{"project_id", "created", "updated", "unchanged", "untracked"}``: counts of tasks
        imported, updated, left as they were; ``untracked`` lists keys on the server that
        ``tasks.jsonl`` does not describe (pull will refuse them).
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

    pid, current_version = _ensure_project(client, spec, config)
    on_server = _server_tasks(client, pid)
    records: dict[str, dict[str, Any]] = {}
    create, update, unchanged = [], [], []
    for record in built:
        key = record["key"]
        old = tracked.get(key)
        if key not in on_server:
            create.append(record)
        elif on_server[key][1] == record["data_sha256"]:
            unchanged.append(key)
            if old is not None and old["data_sha256"] == record["data_sha256"] and old.get("earlier"):
                record["earlier"] = old["earlier"]
        else:
            update.append(record)
            if on_server[key][2] and old is not None and old["data_sha256"] == on_server[key][1]:
                record["earlier"] = earlier_versions(old)
        records[key] = record
    untracked = []
    for key, (_, sha, _) in on_server.items():
        if key not in records:
            if key in tracked and tracked[key]["data_sha256"] == sha:
                records[key] = tracked[key]
            else:
                untracked.append(key)
    # Written before the server changes: after a push that fails halfway, the file still
    # describes every task that may be there (pull checks each task's data against it).
    write_tasks(tasks_path, records)

    progress = tqdm(total=len(create) + len(update), desc=f"push {spec.title}", unit="task")
    with progress:
        for start in range(0, len(create), batch_size):
            batch = create[start:start + batch_size]
            with _server(client, f"importing tasks {start + 1}-{start + len(batch)} of {len(create)}"):
                client.projects.import_tasks(id=pid, request=[studio_task(r) for r in batch])
            progress.update(len(batch))
        for record in update:
            task_id = on_server[record["key"]][0]
            with _server(client, f"updating task {record['key']}"):
                client.tasks.update(id=str(task_id), data=record["data"])
                for old_prediction in client.predictions.list(task=task_id):
                    client.predictions.delete(id=old_prediction.id)
                for prediction in record.get("predictions", []):
                    client.predictions.create(task=task_id, result=prediction["result"],
                                              model_version=prediction.get("model_version"))
            progress.update(1)
    # Label Studio pre-labels with the predictions of the project's model version only (and
    # refuses a version no prediction has yet): set it once the predictions are there.
    versions = {model_version(r) for r in built} - {None}
    if len(versions) == 1 and versions != {current_version}:
        with _server(client, f"setting the model version of {spec.title!r}"):
            client.projects.update(id=pid, model_version=versions.pop())
    return {"project_id": pid, "created": len(create), "updated": len(update), "unchanged": len(unchanged),
            "untracked": sorted(untracked)}


def _export(client: Any, spec: ReviewProject) -> tuple[bytes, Any, dict[int, str]]:
    pid = find_project(client, spec.title)
    if pid is None:
        raise ReviewError(f"Label Studio at {_base_url(client)} has no project {spec.title!r}: "
                          f"run `whp review push {spec.name}` first")
    with _server(client, f"exporting {spec.title!r}"):
        raw = b"".join(client.projects.exports.download_sync(id=pid, export_type="JSON", download_all_tasks=True))
    try:
        export = parse_json(raw, source=f"the export of {spec.title!r}")
    except JsonError as exc:
        raise ReviewError(f"malformed export: {exc}") from None
    users: dict[int, str] = {}
    try:
        with _server(client, "listing users"):
            users = {u.id: u.email for u in client.users.list() if getattr(u, "email", None)}
    except ReviewError:
        pass  # reviewers are then named by their ids
    return raw, export, users


def _problems_error(spec: ReviewProject, problems: Sequence[str], action: str) -> ReviewError:
    head = f"{action} {spec.title}: {len(problems)} problem(s) in the export; nothing was written"
    lines = [f"  - {p}" for p in problems[:_MAX_LISTED]]
    if len(problems) > _MAX_LISTED:
        lines.append(f"  ... and {len(problems) - _MAX_LISTED} more")
    return ReviewError("\n".join([head, *lines]))


def pull(project: str, root: Path | str, client: Any, *, now: datetime | None = None) -> dict[str, Any]:
    """Export the project, validate everything, then write the snapshot and the normalised file.

    Returns:
        :meth:`Review.summary` plus ``snapshot`` and ``output`` (paths relative to ``root``) and
        ``records`` (lines written, hand-written ones included).
    """
    spec, workflow = _project(project)
    root = Path(root)
    folder = spec.folder(root)
    tracked = read_tasks(spec.tasks_path(root))
    raw, export, users = _export(client, spec)
    snapshots = folder / SNAPSHOTS_DIR
    name = _snapshot_name(snapshots, now or datetime.now(timezone.utc))
    review = workflow.normalise(export, tracked, source=name, users=users)
    if review.problems:
        raise _problems_error(spec, review.problems, "pull")
    output = spec.output_path(root)
    previous = [r.raw for r in workflow.record.read(output)]
    task = spec.task_field
    lost = sorted({r[task] for r in previous if _SNAPSHOT_NAME.match(str(r.get("source") or ""))
                   and r.get(task) and r[task] not in review.task_keys})
    if lost:
        raise ReviewError(f"pull {spec.title}: {output.relative_to(root)} holds pulled decisions on {len(lost)} task(s) "
                          f"that are not on {_base_url(client)} ({', '.join(lost[:5])}{', ...' if len(lost) > 5 else ''}): "
                          "a different or reset server? Pull from the server that holds them, or remove those "
                          "lines by hand; nothing was written")
    records = merge_corrections(previous, review.records)
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
    _, export, users = _export(client, spec)
    review = workflow.normalise(export, tracked, source="status", users=users)
    summary = {"project": spec.title, "tracked": len(tracked), **review.summary(), "problems": review.problems}
    if workflow.report is not None:
        summary.update(workflow.report(review.records))
    return summary
