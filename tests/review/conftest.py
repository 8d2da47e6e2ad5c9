"""Helpers shared by the review tests: one anchors task (a passage, a four-entry dictionary),
annotations and exports built from it, a stand-in Label Studio client for pull, the labels state."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace

import pandas as pd

from pipeline.review.anchors import anchor_tasks, normalise_anchor_export
from pipeline.review.tasks import task_record

REPO = Path(__file__).resolve().parents[2]
TEXT = "Sherlock Holmes met Watson and Mycroft in Baker Street. Holmes smiled at Toby."
KEY = "forget:canon.txt#3"
VERSION = "0123456789ab"
DICTIONARY = pd.DataFrame({
    "anchor": ["Holmes", "Watson", "Baker Street", "Toby"],
    "kind": ["person", "person", "place", "other"],
    "translations": [["Jon", "Tom"], ["Ann", "Bo"], ["Mill Lane", "Oak Row"], ["Rex", "Max"]],
})


def passages(*rows: tuple[str, str, str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["passage_id", "corpus", "text"])


def the_task() -> dict:
    [task] = anchor_tasks(passages((KEY, "forget", TEXT)), DICTIONARY, max_tasks=10, dictionary_version=VERSION)
    return task


def tracked() -> dict:
    task = the_task()
    return {KEY: task_record(task)}


def at(term: str, nth: int = 0) -> tuple[int, int]:
    start = -1
    for _ in range(nth + 1):
        start = TEXT.index(term, start + 1)
    return start, start + len(term)


def span(term: str, label: str, *, nth: int = 0, rid: str | None = None) -> dict:
    start, end = at(term, nth)
    return {"id": rid or f"r{start}", "from_name": "kind", "to_name": "text", "type": "labels",
            "value": {"start": start, "end": end, "text": term, "labels": [label]}}


def box(region: dict, text: str) -> dict:
    value = region["value"]
    return {"id": region["id"], "from_name": "translation", "to_name": "text", "type": "textarea",
            "value": {"start": value["start"], "end": value["end"], "text": [text]}}


def proposed_result() -> list[dict]:
    """What a reviewer who changes nothing submits: the pre-annotation itself."""
    return copy.deepcopy(the_task()["predictions"][0]["result"])


def edit(result: list[dict], term: str, *, label: str | None = None, translation: str | None = None,
         nth: int = 0, drop: bool = False) -> list[dict]:
    """The result with the pre-annotated region of ``term`` relabelled, retranslated or dropped."""
    start, _ = at(term, nth)
    rid = next(r["id"] for r in result if r["type"] == "labels" and r["value"]["start"] == start)
    out = []
    for item in result:
        if item["id"] == rid:
            if drop:
                continue
            item = copy.deepcopy(item)
            if item["type"] == "labels" and label:
                item["value"]["labels"] = [label]
            if item["type"] == "textarea" and translation is not None:
                item["value"]["text"] = [translation]
        out.append(item)
    return out


def annotation(aid: int, reviewer, result: list[dict], *, created: str = "2026-11-27T10:00:00Z",
               cancelled: bool = False) -> dict:
    completed_by = {"id": reviewer, "email": f"{reviewer}@example.org"} if isinstance(reviewer, str) else reviewer
    return {"id": aid, "completed_by": completed_by, "result": result, "was_cancelled": cancelled,
            "created_at": created, "updated_at": created, "task": 1, "project": 1}


def export(*annotations: dict, key: str = KEY, data: dict | None = None) -> list[dict]:
    return [{"id": 1, "data": data or the_task()["data"], "annotations": list(annotations), "predictions": [7],
             "drafts": [], "created_at": "2026-11-27T09:00:00Z"}]


def normalise(exported, **kwargs):
    return normalise_anchor_export(exported, kwargs.pop("tasks", tracked()), source="20261127T120000Z.json", **kwargs)


def decisions(review) -> set[tuple]:
    return {(r["action"], r["anchor"], r.get("new_anchor"), r.get("kind"), tuple(r.get("translations") or ()))
            for r in review.records}


class StandInStudio:
    """Just enough of ``label_studio_sdk.LabelStudio`` for pull: one project and its export
    (records, or the raw bytes the server sends)."""

    def __init__(self, exported: list[dict] | bytes, title: str = "whp-anchors"):
        raw = exported if isinstance(exported, bytes) else json.dumps(exported).encode()
        self.projects = SimpleNamespace(
            list=lambda title=None: [SimpleNamespace(id=5, title=title)],
            exports=SimpleNamespace(download_sync=lambda id, **_: iter([raw[:10], raw[10:]])),
        )
        self.users = SimpleNamespace(list=lambda: [SimpleNamespace(id=9, email="dan@example.org")])


def labels_state(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / "labels").rglob("*")) if p.is_file()}


# --- corrections files ----------------------------------------------------------------------

ANN = "ann@example.org"
BOB = "bob@example.org"


def minute(number: int) -> str:
    """A time on 2026-11-27 at 10:<number> UTC."""
    return f"2026-11-27T10:{number:02d}:00Z"


def correction(action: str, anchor: str, at_minute: int, reviewer: str = ANN, **fields) -> dict:
    """A corrections record made at 10:<at_minute>."""
    return {"action": action, "anchor": anchor, "reviewer": reviewer, "created_at": minute(at_minute), **fields}


def write_lines(tmp_path: Path, lines: list, name: str = "corrections.jsonl") -> Path:
    """``lines`` (records, or raw text) as a JSON Lines file under ``tmp_path``."""
    path = tmp_path / name
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines),
                    encoding="utf-8")
    return path
