"""The review projects on the Label Studio server, through the SDK (``label-studio-sdk``): the
SDK's errors as :class:`ReviewError`, projects by title, tasks with their predictions, exports.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pipeline.core.jsonl import JsonError, parse_json
from pipeline.review.projects import ReviewError, ReviewProject
from pipeline.review.tasks import data_sha256


def canonical(value: Any) -> str:
    """``value`` as canonical JSON (sorted keys): what comparisons of records and results use."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def base_url(client: Any) -> str:
    wrapper = getattr(client, "_client_wrapper", None)
    try:
        return str(wrapper.get_base_url())
    except AttributeError:
        return "the Label Studio server"


@contextmanager
def server_call(client: Any, what: str) -> Iterator[None]:
    """Turn the SDK's transport and HTTP errors into a :class:`ReviewError` (no credentials)."""
    import httpx
    from label_studio_sdk.core.api_error import ApiError

    url = base_url(client)
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
    with server_call(client, f"listing projects to find {title!r}"):
        found = [p for p in client.projects.list(title=title) if p.title == title]
    if len(found) > 1:
        raise ReviewError(f"Label Studio has {len(found)} projects titled {title!r} (ids {[p.id for p in found]}): "
                          "delete or rename all but one")
    return found[0] if found else None


def find_project(client: Any, title: str) -> int | None:
    """The id of the server project titled exactly ``title`` (``None`` if there is none)."""
    found = _find_project(client, title)
    return None if found is None else found.id


def ensure_project(client: Any, project: ReviewProject, config: str) -> tuple[int, str | None]:
    """The project's id and model version, created or its configuration brought up to date."""
    found = _find_project(client, project.title)
    if found is None:
        with server_call(client, f"creating project {project.title!r}"):
            created = client.projects.create(title=project.title, label_config=config,
                                             description=f"whp review: {project.name} (labels/{project.name})")
        return created.id, None
    if found.label_config != config:
        with server_call(client, f"updating the configuration of {project.title!r}"):
            client.projects.update(id=found.id, label_config=config)
    return found.id, found.model_version or None


@dataclass
class ServerTask:
    """One task of the project on the server: its id, data hash, annotations (cancelled ones
    too), and its predictions as ``[(prediction id, fingerprint)]``."""

    id: int
    data_sha256: str
    annotations: int
    predictions: list[tuple[int, str]] = field(default_factory=list)

    def shows(self, record: Mapping[str, Any]) -> bool:
        """The task holds exactly the pre-annotations of ``record`` (a ``tasks.jsonl`` record)."""
        return sorted(f for _, f in self.predictions) == sorted(map(_fingerprint, record.get("predictions", [])))


def _fingerprint(prediction: Any) -> str:
    """A prediction's ``model_version`` and ``result`` (a dict of ours, or the SDK's object)."""
    if not isinstance(prediction, Mapping):
        prediction = {"model_version": prediction.model_version, "result": prediction.result}
    return canonical({"model_version": prediction.get("model_version"), "result": prediction.get("result") or []})


def server_tasks(client: Any, pid: int) -> dict[str, ServerTask]:
    """key -> the project's task on the server, with its predictions."""
    found: dict[str, ServerTask] = {}
    with server_call(client, "listing tasks"):
        for task in client.tasks.list(project=pid, fields="task_only"):
            data = task.data or {}
            key = data.get("key")
            if not isinstance(key, str):
                raise ReviewError(f"task {task.id} of project {pid} has no data.key: not pushed by `whp review push`; "
                                  "delete it in Label Studio")
            if key in found:
                raise ReviewError(f"task key {key!r} is on two tasks of project {pid} (ids {found[key].id} and "
                                  f"{task.id}): delete one in Label Studio")
            done = (task.total_annotations or 0) + (task.cancelled_annotations or 0)
            found[key] = ServerTask(task.id, data_sha256(data), done)
    by_id = {task.id: task for task in found.values()}
    with server_call(client, "listing predictions"):
        for prediction in client.predictions.list(project=pid):
            if prediction.task in by_id:
                by_id[prediction.task].predictions.append((prediction.id, _fingerprint(prediction)))
    return found


def replace_predictions(client: Any, task: ServerTask, record: Mapping[str, Any]) -> None:
    # The new pre-annotations first, the old ones after: a failure in between leaves the task
    # with both (never without any), and the next push sees the difference and repairs it.
    for prediction in record.get("predictions", []):
        client.predictions.create(task=task.id, result=prediction["result"],
                                  model_version=prediction.get("model_version"))
    for prediction_id, _ in task.predictions:
        client.predictions.delete(id=prediction_id)


def download_export(client: Any, spec: ReviewProject) -> tuple[bytes, Any, dict[int, str]]:
    pid = find_project(client, spec.title)
    if pid is None:
        raise ReviewError(f"Label Studio at {base_url(client)} has no project {spec.title!r}: "
                          f"run `whp review push {spec.name}` first")
    with server_call(client, f"exporting {spec.title!r}"):
        raw = b"".join(client.projects.exports.download_sync(id=pid, export_type="JSON", download_all_tasks=True))
    try:
        export = parse_json(raw, source=f"the export of {spec.title!r}")
    except JsonError as exc:
        raise ReviewError(f"malformed export: {exc}") from None
    users: dict[int, str] = {}
    try:
        with server_call(client, "listing users"):
            users = {u.id: u.email for u in client.users.list() if getattr(u, "email", None)}
    except ReviewError:
        pass  # reviewers are then named by their ids
    return raw, export, users
