"""Review against a real Label Studio server: push, reviewers' annotations through the SDK, pull,
status, and the failures (bad span, server down)."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
from label_studio_sdk import LabelStudio
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.review.projects import PROJECTS, ReviewError
from pipeline.review.records import load_corrections, load_decisions
from pipeline.review.remote import find_project
from pipeline.review.sync import pull, push, status
from pipeline.review.tasks import read_tasks
from pipeline.store import read_manifest
from tests.conftest import (
    BLOCK_A as A, BLOCK_B as B, TINY_TEXT, train_tiny_tokenizer, write_block_inputs, write_review_dictionary,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def root(review_root: Path) -> Path:
    return review_root


@pytest.fixture()
def client(studio_server) -> LabelStudio:
    """The server's client, with no review project (``whp-anchors``, ...) left by an earlier test."""
    sdk = studio_server.client()
    titles = {project.title for project in PROJECTS.values()}
    for project in sdk.projects.list():
        if project.title in titles:
            sdk.projects.delete(id=project.id)
    return sdk


def server_tasks(client: LabelStudio) -> dict[str, Any]:
    pid = find_project(client, "whp-anchors")
    return {t.data["key"]: t for t in client.tasks.list(project=pid, fields="task_only")}


def labels_state(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / "labels").rglob("*")) if p.is_file()}


def region(task, term: str, label: str, *, rid: str, text: str | None = None) -> dict:
    start = task.data["text"].index(term)
    return {"id": rid, "from_name": "kind", "to_name": "text", "type": "labels",
            "value": {"start": start, "end": start + len(term), "text": text or term, "labels": [label]}}


def pre_annotation(root: Path, key: str) -> list[dict]:
    return json.loads(json.dumps(read_tasks(root / "labels/anchors/tasks.jsonl")[key]["predictions"][0]["result"]))


def relabel(result: list[dict], term: str, label: str) -> list[dict]:
    for item in result:
        if item["type"] == "labels" and item["value"]["text"] == term:
            item["value"]["labels"] = [label]
    return result


def reviewer(client: LabelStudio, name: str) -> int:
    email = f"{name}@example.org"
    for user in client.users.list():
        if user.email == email:
            return user.id
    return client.users.create(username=name, email=email, password="review-secret-1").id


def test_push_annotate_pull(root, client):
    counts = push("anchors", root, client)
    assert (counts["created"], counts["updated"], counts["unchanged"]) == (3, 0, 0)
    tasks = server_tasks(client)
    assert set(tasks) == {"forget:canon.txt#0", "forget:canon.txt#1", "forget:canon.txt#3"}
    first = tasks["forget:canon.txt#0"]
    version = read_manifest("dictionary", root)["content_sha256"][:12]
    [prediction] = client.predictions.list(task=first.id)
    assert prediction.model_version == version
    assert client.projects.get(id=counts["project_id"]).model_version == version

    # A reviewer widens Holmes to "Sherlock Holmes", adds nothing else, leaves the rest.
    result = [r for r in pre_annotation(root, first.data["key"]) if r["value"]["text"] != "Holmes"
              and not (r["type"] == "textarea" and r["value"]["start"] == 9)]
    result.append(region(first, "Sherlock Holmes", "person", rid="s1"))
    client.annotations.create(id=first.id, result=result)
    second = tasks["forget:canon.txt#1"]
    client.annotations.create(id=second.id, result=relabel(pre_annotation(root, second.data["key"]), "Toby",
                                                              "not an anchor"))
    client.annotations.create(id=tasks["forget:canon.txt#3"].id, result=[], was_cancelled=True)

    summary = pull("anchors", root, client)
    assert summary["annotated"] == 2 and summary["cancelled"] == 1 and summary["conflicts"] == []
    corrections = load_corrections(root / "labels/anchors/corrections.jsonl")
    decided = {(c.action, c.anchor, c.new_anchor, c.task) for c in corrections}
    assert ("change_span", "Holmes", "Sherlock Holmes", "forget:canon.txt#0") in decided
    assert ("reject", "Toby", None, "forget:canon.txt#1") in decided
    assert ("accept", "Watson", None, "forget:canon.txt#0") in decided
    snapshot = root / summary["snapshot"]
    assert {c.source for c in corrections} == {snapshot.name}
    assert len(json.loads(snapshot.read_text())) == 3
    admin = client.users.whoami().email
    assert {c.reviewer for c in corrections} == {admin}


def test_linguistic_push_annotate_pull(root, client):
    """Uncertain generic labels -> tasks on the server (twice: no duplicates) -> a reviewer's
    verdicts through the API -> pull -> decisions the dataset stage can apply."""
    write_block_inputs(root, confidence={A: [0.9, 0.1, 0.2, 0.9, 0.9, 0.9], B: [0.9, 0.9, 0.9, 0.9, 0.9, 0.3]})
    train_tiny_tokenizer(root / "models" / "baseline", TINY_TEXT * 5)
    assert push("linguistic", root, client)["created"] == 2
    assert push("linguistic", root, client)["unchanged"] == 2
    pid = find_project(client, "whp-linguistic")
    tasks = {t.data["key"]: t for t in client.tasks.list(project=pid, fields="task_only")}
    assert set(tasks) == {f"{A}:1", f"{B}:5"} and tasks[f"{A}:1"].data["positions"] == [1, 2]
    client.annotations.create(id=tasks[f"{A}:1"].id, result=[
        {"from_name": "verdict", "to_name": "continuation", "type": "choices", "value": {"choices": ["incorrect"]}},
        {"from_name": "fix", "to_name": "continuation", "type": "textarea", "value": {"text": ["river"]}}])
    client.annotations.create(id=tasks[f"{B}:5"].id, result=[
        {"from_name": "verdict", "to_name": "continuation", "type": "choices", "value": {"choices": ["correct"]}}])

    summary = pull("linguistic", root, client)
    assert summary["decisions"] == {"incorrect": 1, "correct": 1} and summary["conflicts"] == []
    decisions = {d.key: d for d in load_decisions(root / summary["output"])}
    fixed = decisions[f"{A}:1"]
    assert (fixed.verdict, fixed.positions, fixed.targets, fixed.alpha) == ("incorrect", [1, 2], [6, 7], 5.0)
    assert fixed.fix.strip() == "river" and fixed.source == Path(summary["snapshot"]).name
    assert decisions[f"{B}:5"].verdict == "correct"
    assert status("linguistic", root, client)["problems"] == []


def test_pushing_twice_creates_no_duplicates_and_a_changed_task_is_updated(root, client):
    push("anchors", root, client)
    ids = {key: task.id for key, task in server_tasks(client).items()}
    again = push("anchors", root, client)
    assert (again["created"], again["updated"], again["unchanged"]) == (0, 0, 3)
    assert {key: task.id for key, task in server_tasks(client).items()} == ids

    # A reviewer accepts task #1 as proposed, then the dictionary changes (new translations).
    task = server_tasks(client)["forget:canon.txt#1"]
    client.annotations.create(id=task.id, result=pre_annotation(root, "forget:canon.txt#1"))
    version = write_review_dictionary(root, holmes=["Jim", "Ted"])
    changed = push("anchors", root, client)
    assert (changed["created"], changed["updated"], changed["unchanged"]) == (0, 3, 0)
    tasks = server_tasks(client)
    assert {key: t.id for key, t in tasks.items()} == ids
    assert all(t.data["dictionary_version"] == version for t in tasks.values())
    for t in tasks.values():
        [prediction] = client.predictions.list(task=t.id)
        assert prediction.model_version == version
    boxes = [r["value"]["text"] for r in client.predictions.list(task=ids["forget:canon.txt#1"])[0].result
             if r["type"] == "textarea"]
    assert ["Jim | Ted"] in boxes

    # The annotation was made on the old pre-annotation: it accepts, it does not retranslate.
    summary = pull("anchors", root, client)
    assert summary["decisions"] == {"accept": 2}
    assert push("anchors", root, client)["unchanged"] == 3


def test_two_reviewers_in_conflict_are_listed_by_status(root, client):
    push("anchors", root, client)
    task = server_tasks(client)["forget:canon.txt#1"]
    ann, bob = reviewer(client, "ann"), reviewer(client, "bob")
    client.annotations.create(id=task.id, completed_by=ann,
                              result=relabel(pre_annotation(root, task.data["key"]), "Toby", "not an anchor"))
    client.annotations.create(id=task.id, completed_by=bob, result=pre_annotation(root, task.data["key"]))
    report = status("anchors", root, client)
    assert report["annotated"] == 1 and report["annotations"] == 2 and report["problems"] == []
    assert report["conflicts"] == [{"task": "forget:canon.txt#1", "anchor": "Toby", "aspect": "decision",
                                    "votes": {"reject": ["ann@example.org"], "accept": ["bob@example.org"]}}]
    [pair] = report["agreement"]["pairs"]
    assert pair["agreement"] == pytest.approx(0.5)  # Holmes agreed, Toby not
    summary = pull("anchors", root, client)
    assert [(c.action, c.anchor) for c in load_corrections(root / summary["output"])] == [("accept", "Holmes")]


def test_a_bad_span_fails_the_pull_and_leaves_labels_untouched(root, client):
    push("anchors", root, client)
    (root / "labels/anchors/corrections.jsonl").write_text(
        '{"action": "accept", "anchor": "Holmes", "reviewer": "lead", "created_at": "2026-11-01T00:00:00Z"}\n')
    task = server_tasks(client)["forget:canon.txt#0"]
    bad = region(task, "Watson", "person", rid="w1", text="Watsun")  # the server takes it as it is
    annotation = client.annotations.create(id=task.id, result=[bad])
    before = labels_state(root)
    with pytest.raises(ReviewError) as caught:
        pull("anchors", root, client)
    message = str(caught.value)
    assert f"task forget:canon.txt#0 annotation {annotation.id}" in message
    assert "span text 'Watsun' differs from the passage" in message
    assert labels_state(root) == before


def test_the_configurations_are_accepted_by_the_server(client):
    for name in PROJECTS:
        config = (REPO / "labels" / name / "config.xml").read_text(encoding="utf-8")
        created = client.projects.create(title=f"whp-config-{name}", label_config=config)
        client.projects.delete(id=created.id)


def test_cli_push_and_status(root, studio_server, client, monkeypatch):
    monkeypatch.setenv("LABEL_STUDIO_URL", studio_server.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", studio_server.api_key)
    runner = CliRunner()
    pushed = runner.invoke(app, ["review", "push", "anchors", "-C", str(root)])
    assert pushed.exit_code == 0, pushed.output
    assert "3 created, 0 updated, 0 unchanged" in pushed.output
    shown = runner.invoke(app, ["review", "status", "anchors", "--format", "json", "--project", str(root)])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["tasks"] == 3
    later = runner.invoke(app, ["review", "pull", "linguistic", "-C", str(root)])
    assert later.exit_code == 1 and "no project 'whp-linguistic'" in later.output


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_server_that_is_down_is_a_clear_error(root, monkeypatch):
    url = f"http://127.0.0.1:{free_port()}"
    down = LabelStudio(base_url=url, api_key="not-a-real-key", timeout=5)
    before = labels_state(root)
    for action in (push, pull):  # status exports as pull does
        with pytest.raises(ReviewError, match=f"cannot reach Label Studio at {url}"):
            action("anchors", root, down)
    assert labels_state(root) == before
    monkeypatch.setenv("LABEL_STUDIO_URL", url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "not-a-real-key")
    result = CliRunner().invoke(app, ["review", "push", "anchors", "-C", str(root)])
    assert result.exit_code == 1
    assert "unreachable" in result.output and "not-a-real-key" not in result.output


def test_review_round_trip_through_dvc_repro(small_project: Path, client):
    """push -> a reviewer rejects a term and renames another in Label Studio -> pull ->
    dvc repro -> the dictionary carries both corrections, with provenance."""
    import subprocess
    import sys

    from pipeline.store import read_dataset

    def repro() -> None:
        result = subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=small_project, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr

    repro()
    before = read_dataset("dictionary", small_project)
    assert {"Fenwick", "Quillby"} <= set(before["anchor"])
    push("anchors", small_project, client)
    tasks = server_tasks(client)
    key = next(k for k, t in tasks.items() if "Fenwick" in t.data["text"] and "Quillby" in t.data["text"])
    result = relabel(pre_annotation(small_project, key), "Fenwick", "not an anchor")
    client.annotations.create(id=tasks[key].id, result=result)
    pull("anchors", small_project, client)
    repro()

    after = read_dataset("dictionary", small_project)
    assert "Fenwick" not in set(after["anchor"])
    rejects = read_dataset("dictionary_rejects", small_project)
    assert rejects["record"].tolist() == ["Fenwick"]
    quillby = after.set_index("anchor").loc["Quillby"]
    assert quillby["status"] == "accepted"
    assert " accept (" in quillby["review"][0] and "corrections.jsonl:" in quillby["review"][0]


# --- review work is never lost ----------------------------------------------------------------


def predictions_by_key(client: LabelStudio) -> dict[str, list]:
    return {key: client.predictions.list(task=task.id) for key, task in server_tasks(client).items()}


def test_a_reset_server_loses_no_review_work(root, studio_server, client, monkeypatch):
    """annotate, pull, reset the project (its tasks deleted, pushed again without annotations),
    push, pull: the pull refuses and labels/ keeps every record; --force lets them go."""
    push("anchors", root, client)
    task = server_tasks(client)["forget:canon.txt#1"]
    client.annotations.create(id=task.id, result=relabel(pre_annotation(root, task.data["key"]), "Toby",
                                                            "not an anchor"))
    pull("anchors", root, client)
    corrections = root / "labels/anchors/corrections.jsonl"
    pulled = corrections.read_text()
    assert [(c.action, c.anchor) for c in load_corrections(corrections)] == [("accept", "Holmes"), ("reject", "Toby")]

    for gone in server_tasks(client).values():  # a reset: the tasks and their annotations are gone
        client.tasks.delete(id=str(gone.id))
    assert push("anchors", root, client)["created"] == 3
    before = labels_state(root)
    studio_server.use(monkeypatch)
    refused = CliRunner().invoke(app, ["review", "pull", "anchors", "-C", str(root)], env={"COLUMNS": "250"})
    assert refused.exit_code == 1, refused.output
    assert "2 record(s) of labels/anchors/corrections.jsonl would vanish" in refused.output
    assert "task forget:canon.txt#1: action reject 'Toby' by" in refused.output
    assert "no annotation of the task by" in refused.output and "--force" in refused.output
    assert labels_state(root) == before and corrections.read_text() == pulled

    forced = CliRunner().invoke(app, ["review", "pull", "anchors", "--force", "-C", str(root)])
    assert forced.exit_code == 0, forced.output
    assert load_corrections(corrections) == []


def fail_after(monkeypatch, target, name: str, calls: int):
    """``target.name`` works ``calls`` times, then raises the SDK's HTTP error (an injected fault)."""
    from label_studio_sdk.core.api_error import ApiError

    real, done = getattr(target, name), []

    def call(**kwargs):
        done.append(kwargs)
        if len(done) > calls:
            raise ApiError(status_code=503, body="injected fault")
        return real(**kwargs)

    monkeypatch.setattr(target, name, call)


def assert_every_task_shows_its_pre_annotation(root: Path, client: LabelStudio, version: str) -> None:
    tracked = read_tasks(root / "labels/anchors/tasks.jsonl")
    for key, found in predictions_by_key(client).items():
        [prediction] = found
        assert prediction.model_version == version
        assert prediction.result == tracked[key]["predictions"][0]["result"]


def test_push_creates_before_it_deletes_and_repairs_a_half_done_push(root, client, monkeypatch):
    """A push that dies while it replaces pre-annotations leaves no task without one, and the
    next push gives every task exactly the pre-annotation of tasks.jsonl."""
    push("anchors", root, client)
    old = read_manifest("dictionary", root)["content_sha256"][:12]
    version = write_review_dictionary(root, holmes=["Jim", "Ted"])
    fail_after(monkeypatch, client.predictions, "create", calls=1)  # the second task's never arrives
    with pytest.raises(ReviewError, match="updating task .* failed: HTTP 503"):
        push("anchors", root, client)
    monkeypatch.undo()
    half = predictions_by_key(client)
    assert all(half.values()), "a task lost its pre-annotation"
    assert sorted(p.model_version for found in half.values() for p in found) == sorted([version, old, old])
    # One task done, one with its new data but the old pre-annotation, one not reached.
    again = push("anchors", root, client)
    assert (again["created"], again["updated"], again["repaired"], again["unchanged"]) == (0, 1, 1, 1)
    assert_every_task_shows_its_pre_annotation(root, client, version)

    # Dying between creating and deleting leaves a task with both; the next push cleans it.
    version = write_review_dictionary(root, holmes=["Kit", "Lou"])
    fail_after(monkeypatch, client.predictions, "delete", calls=0)
    with pytest.raises(ReviewError, match="failed: HTTP 503"):
        push("anchors", root, client)
    monkeypatch.undo()
    assert sorted(len(found) for found in predictions_by_key(client).values()) == [1, 1, 2]
    assert push("anchors", root, client)["repaired"] == 1
    assert_every_task_shows_its_pre_annotation(root, client, version)

    # A task left without any pre-annotation (what the old push could leave) is repaired too.
    first = server_tasks(client)["forget:canon.txt#0"]
    for prediction in client.predictions.list(task=first.id):
        client.predictions.delete(id=prediction.id)
    assert push("anchors", root, client)["repaired"] == 1
    assert_every_task_shows_its_pre_annotation(root, client, version)
    assert push("anchors", root, client)["unchanged"] == 3
