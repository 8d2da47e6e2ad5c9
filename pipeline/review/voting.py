"""Several reviewers (pure): majority rule, conflicts, agreement, and the normalised review.

Each reviewer has one vote per task (their latest annotation of it; cancelled ones are skipped).
Anchors: one vote per task and anchor, the value ``(action, new_anchor, kind)``; a reviewer who
annotated the task but said nothing on the anchor votes "no decision" (so a term one of two
reviewers added is a tie). The value with strictly more votes than any other wins; the
translation is then voted among the reviewers of the winning decision ("as proposed" is a vote
too). One-verdict projects (linguistic, evaluation): one vote per task, the chosen value.

A tie is left out of the output file and reported as a :class:`Conflict` for adjudication (write
the adjudicated record by hand: records without a snapshot as ``source`` are kept by every pull);
a winning "no decision" writes nothing. A record decided by several reviewers names them all
(``reviewer``: ``"ann@x, bob@y"``), takes the latest ``created_at`` among them and notes
``majority k of n reviewers``. Anchor votes are counted per task: decisions on one anchor in
different tasks are separate records, applied in time order by the ``dictionary`` stage.

Agreement, over reviewer pairs and the tasks both annotated: the items are the anchors either
decided (a missing decision counting as "no decision") or the tasks' verdicts; percent agreement
is pooled over all pairs, Cohen's kappa is computed per pair and averaged over the pairs where it
is defined (``None`` when a pair's expected agreement is 1).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import combinations
from typing import Any

from pipeline.review.export import Annotation, Export, ParseResult, read_export

SEPARATOR = " | "
"""Between translations in a text box."""
NONE = ("none",)
"""The vote of a reviewer who annotated a task but said nothing about an anchor."""

Decide = Callable[[str, str, list[str], Mapping[str, Annotation]], tuple[dict[str, Any], list["Conflict"]]]
"""``(task key, winning choice, its reviewers, reviewer -> latest annotation) -> (record, conflicts)``:
a one-verdict project's record of a decided task, before its provenance."""


@dataclass(frozen=True)
class Decision:
    """A reviewer's decision on one anchor of one task; ``translations`` only when edited."""

    action: str
    new_anchor: str | None = None
    kind: str | None = None
    translations: tuple[str, ...] | None = None

    @property
    def entry(self) -> tuple[str, ...]:
        """The voted value, translations aside."""
        return (self.action, self.new_anchor or "", self.kind or "")


@dataclass(frozen=True)
class Conflict:
    """A tie between reviewers on one task (``aspect``: decision, translation, verdict, fix, grade).

    ``votes`` maps each voted value (``"accept"``, ``"change_span -> Sherlock Holmes"``,
    ``"no decision"``, ``"translations: A | B"``, ``"translations as proposed"``) to its reviewers.
    """

    task: str
    anchor: str
    aspect: str
    votes: dict[str, list[str]]

    def as_dict(self) -> dict[str, Any]:
        return {"task": self.task, "anchor": self.anchor, "aspect": self.aspect, "votes": self.votes}


@dataclass
class Review:
    """What an export says, normalised: the records of the output file and the review figures."""

    records: list[dict[str, Any]] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    agreement: dict[str, Any] = field(default_factory=dict)
    tasks: int = 0
    annotated: int = 0
    annotations: int = 0
    cancelled: int = 0
    reviewers: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    task_keys: set[str] = field(default_factory=set)
    annotators: dict[str, set[str]] = field(default_factory=dict)
    """Task key -> the reviewers with an annotation of it on the server (:attr:`Export.annotators`)."""
    decision_field: str = "action"
    """The record field counted in the summary's ``decisions`` (``verdict``, ``grade`` elsewhere)."""

    def summary(self) -> dict[str, Any]:
        anchors = self.decision_field == "action"
        return {
            "tasks": self.tasks, "annotated": self.annotated, "annotations": self.annotations,
            "cancelled": self.cancelled, "reviewers": self.reviewers,
            "decisions": dict(Counter(str(r[self.decision_field]) for r in self.records)),
            "conflicts": [c.as_dict() for c in self.conflicts], "agreement": self.agreement,
            "disagreements": disagreements(self.records) if anchors else [],
        }


def disagreements(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Anchors decided differently in different tasks: ``[{"anchor", "decisions": {decision:
    [tasks]}}]``. Not conflicts (each task has its majority), but the ``dictionary`` stage applies
    them in time order and refuses one that no longer fits: adjudicate them in Label Studio."""
    by_anchor: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for record in records:
        if record["action"] != "change_translation":
            value = (record["action"], record.get("new_anchor") or "", record.get("kind") or "")
            by_anchor[record["anchor"]][describe(value)].add(record["task"])
    return [{"anchor": anchor, "decisions": {d: sorted(tasks) for d, tasks in sorted(found.items())}}
            for anchor, found in sorted(by_anchor.items()) if len(found) > 1]


def describe(value: tuple[str, ...]) -> str:
    """An anchor vote as text: ``"change_span -> Sherlock Holmes (person)"``, ``"no decision"``."""
    if value == NONE:
        return "no decision"
    action, new_anchor, kind = value
    text = action + (f" -> {new_anchor}" if new_anchor else "")
    return text + (f" ({kind})" if kind and action != "accept" else "")


def _describe_translations(value: tuple[str, ...] | None) -> str:
    return "translations as proposed" if value is None else "translations: " + SEPARATOR.join(value)


def majority(votes: Mapping[str, Any]) -> tuple[Any, list[str]] | None:
    """The value with strictly more votes than any other and its voters (sorted); ``None`` on a tie.

    ``votes``: reviewer -> voted value (hashable).
    """
    counts = Counter(votes.values())
    ranked = counts.most_common()
    if not ranked or (len(ranked) > 1 and ranked[0][1] == ranked[1][1]):
        return None
    winner = ranked[0][0]
    return winner, sorted(r for r, v in votes.items() if v == winner)


def voters(votes: Mapping[str, Any], describe_value: Callable[[Any], str]) -> dict[str, list[str]]:
    """A conflict's ``votes``: each value described, with its reviewers (sorted)."""
    grouped: dict[str, list[str]] = defaultdict(list)
    for reviewer, value in sorted(votes.items()):
        grouped[describe_value(value)].append(reviewer)
    return dict(grouped)


def provenance(record: dict[str, Any], who: Sequence[str], annotations: Mapping[str, Annotation], *,
               reviewers: int, source: str, **more: Any) -> dict[str, Any]:
    """``record`` with ``reviewer`` (the voters), ``created_at`` (their latest), ``more``,
    ``note`` (the majority, with several reviewers) and ``source`` added, in that order."""
    latest = max((annotations[r] for r in who), key=lambda a: a.moment).created_at
    record.update(reviewer=", ".join(who), created_at=latest, **more)
    if reviewers > 1:
        record["note"] = f"majority {len(who)} of {reviewers} reviewers"
    record["source"] = source
    return record


def latest_annotations(annotations: Sequence[Annotation]) -> dict[str, dict[str, Annotation]]:
    """task -> reviewer -> their latest annotation of the task (a reviewer's vote)."""
    latest: dict[str, dict[str, Annotation]] = defaultdict(dict)
    for annotation in annotations:
        mine = latest[annotation.task].get(annotation.reviewer)
        if mine is None or (annotation.moment, str(annotation.id)) > (mine.moment, str(mine.id)):
            latest[annotation.task][annotation.reviewer] = annotation
    return latest


def resolve_task(
    key: str, decisions: Mapping[str, Mapping[str, Decision]], annotations: Mapping[str, Annotation], *,
    source: str,
) -> tuple[list[dict[str, Any]], list[Conflict]]:
    """The corrections records and conflicts of one anchors task (majority rule, module docstring).

    Args:
        decisions: reviewer -> anchor -> decision (every reviewer who annotated the task).
        annotations: reviewer -> their annotation of the task (for ``created_at``).
    """
    reviewers = sorted(decisions)
    records: list[dict[str, Any]] = []
    conflicts: list[Conflict] = []
    for anchor in sorted({anchor for found in decisions.values() for anchor in found}):
        votes = {r: decisions[r][anchor].entry if anchor in decisions[r] else NONE for r in reviewers}
        won = majority(votes)
        if won is None:
            conflicts.append(Conflict(key, anchor, "decision", voters(votes, describe)))
            continue
        value, deciders = won
        if value == NONE:
            continue
        decision = decisions[deciders[0]][anchor]
        translations: tuple[str, ...] | None = None
        translators = deciders
        if decision.action != "reject":
            edits = {r: decisions[r][anchor].translations for r in deciders}
            won_edit = majority(edits)
            if won_edit is None:
                conflicts.append(Conflict(key, anchor, "translation", voters(edits, _describe_translations)))
            else:
                translations, translators = won_edit

        def record(action: str, who: list[str], **fields: Any) -> dict[str, Any]:
            found: dict[str, Any] = {"action": action, "anchor": anchor}
            found.update({name: list(v) if isinstance(v, tuple) else v for name, v in fields.items() if v is not None})
            return provenance(found, who, annotations, reviewers=len(reviewers), source=source, task=key)

        if decision.action in ("change_span", "add"):
            records.append(record(decision.action, deciders, new_anchor=decision.new_anchor, kind=decision.kind,
                                  translations=translations))
            continue
        records.append(record(decision.action, deciders, kind=decision.kind))
        if translations is not None:
            records.append(record("change_translation", translators, translations=translations))
    return records, conflicts


def cohen_kappa(pairs: Sequence[tuple[Any, Any]]) -> float | None:
    """Cohen's kappa of two raters over ``[(value_a, value_b), ...]``; ``None`` when undefined
    (no items, or an expected agreement of 1)."""
    if not pairs:
        return None
    n = len(pairs)
    observed = sum(a == b for a, b in pairs) / n
    first, second = Counter(a for a, _ in pairs), Counter(b for _, b in pairs)
    expected = sum(first[v] * second[v] for v in first) / (n * n)
    if expected >= 1:
        return None
    return (observed - expected) / (1 - expected)


def agreement(decisions: Mapping[str, Mapping[str, Mapping[str, Decision]]]) -> dict[str, Any]:
    """Inter-annotator agreement on the anchor decision values (rule in the module docstring).

    Args:
        decisions: task -> reviewer -> anchor -> decision.

    Returns:
        ``{"pairs": [{"reviewers": [a, b], "items", "agreement", "kappa"}], "items",
        "percent_agreement", "kappa"}``: agreement is a fraction (0-1), ``None`` when no task has
        two reviewers; ``kappa`` is the mean over the pairs where it is defined.
    """
    def items(a: str, b: str) -> list[tuple[Any, Any]]:
        found = []
        for by_reviewer in decisions.values():
            if a in by_reviewer and b in by_reviewer:
                for anchor in sorted(set(by_reviewer[a]) | set(by_reviewer[b])):
                    found.append(tuple(by_reviewer[r][anchor].entry if anchor in by_reviewer[r] else NONE
                                       for r in (a, b)))
        return found

    return pooled_agreement(sorted({r for by_reviewer in decisions.values() for r in by_reviewer}), items)


def pooled_agreement(reviewers: Sequence[str], items: Callable[[str, str], list[tuple[Any, Any]]]) -> dict[str, Any]:
    """Percent agreement pooled over reviewer pairs and Cohen's kappa averaged over the pairs
    (shape of :func:`agreement`); ``items(a, b)`` gives the pair's ``(value_a, value_b)`` items."""
    pairs, agreed, total = [], 0, 0
    for a, b in combinations(reviewers, 2):
        found = items(a, b)
        if not found:
            continue
        same = sum(x == y for x, y in found)
        agreed, total = agreed + same, total + len(found)
        pairs.append({"reviewers": [a, b], "items": len(found), "agreement": same / len(found),
                      "kappa": cohen_kappa(found)})
    kappas = [p["kappa"] for p in pairs if p["kappa"] is not None]
    return {"pairs": pairs, "items": total, "percent_agreement": agreed / total if total else None,
            "kappa": sum(kappas) / len(kappas) if kappas else None}


def normalise_choices(
    export: Any, tasks: Mapping[str, Mapping[str, Any]], *, source: str, users: Mapping[int, str] | None,
    parse: ParseResult, decide: Decide, decision_field: str,
) -> Review:
    """A one-verdict project's export normalised: per task, the choice with a strict majority
    (a tie is a conflict on ``decision_field``), its record by ``decide`` with the provenance
    added; sorted by time then key, with the agreement on the chosen values."""
    parsed = read_export(export, tasks, users=users, parse_result=parse)
    latest = latest_annotations(parsed.annotations)
    review = started_review(parsed, decision_field=decision_field)
    for key in sorted(latest):
        votes = {r: a.answer.choice for r, a in latest[key].items()}
        won = majority(votes)
        if won is None:
            review.conflicts.append(Conflict(key, "", decision_field, voters(votes, str)))
            continue
        choice, deciders = won
        record, conflicts = decide(key, choice, deciders, latest[key])
        review.records.append(provenance(record, deciders, latest[key], reviewers=len(votes), source=source))
        review.conflicts.extend(conflicts)
    review.records.sort(key=lambda r: (datetime.fromisoformat(r["created_at"]), r["key"]))
    votes = {key: {r: a.answer.choice for r, a in by_reviewer.items()} for key, by_reviewer in latest.items()}
    review.agreement = pooled_agreement(
        review.reviewers, lambda a, b: [(v[a], v[b]) for _, v in sorted(votes.items()) if a in v and b in v])
    return review


def started_review(parsed: Export, *, decision_field: str) -> Review:
    """A :class:`Review` with the export's counts, problems and reviewers, before any record."""
    return Review(tasks=len(parsed.tasks), annotated=parsed.annotated, annotations=len(parsed.annotations),
                  cancelled=parsed.cancelled, problems=parsed.problems, task_keys=set(parsed.tasks),
                  annotators=parsed.annotators, reviewers=sorted({a.reviewer for a in parsed.annotations}),
                  decision_field=decision_field)
