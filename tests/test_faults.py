"""Fault injection: every stage that writes, killed with SIGKILL at seeded moments, then rerun.

On the small project (tests/conftest.py ``small_project``; checkpoints every training step, six
probes of each kind), after a real ``dvc repro`` of the whole pipeline (the reference), each stage
in pipeline order:

1. gets an *older generation* of its outputs: every file of every output it declares in dvc.yaml
   with a line appended, so that each file tells which generation it is;
2. reruns uninterrupted over it, traced (``WHP_FAULT_TRACE`` numbers its write steps): its outputs
   must be the reference's again;
3. is killed ``KILLS`` times at write steps drawn with a seeded generator (``WHP_FAULT_AT``: the
   store kills the process at that step; in the training stages each checkpoint ``torch.save`` is a
   step too), each time starting over the older generation with no resume state, so the step is
   the traced one. After each kill the recovery that a next run does first runs; then the stage's
   outputs must be *exactly* the older generation or *exactly* the reference, with nothing left
   beside them (staged versions, backups, snapshots, transaction records) but resume state;
4. is rerun after a kill that left resume state (checkpoints, generic-label shards: the rerun
   resumes from them), and after the last kill in any case: outputs byte-identical to the
   reference, nothing left at all.

Byte-identical has one exception, the wall-clock figures a training or evaluation run records
(two uninterrupted runs differ there too): ``tokens_per_s``, ``train_seconds``, ``seconds`` and
``resumed_from_step`` in ``models/*/whp_model.json`` and ``metrics/evaluation/*.json``, the
DVCLive's ``tokens_per_s`` (``plots/dvclive/<stage>``) and the two timing rows of the model card. They are
removed from both sides before comparing; every other byte, weights included, must match.
Manifests' ``created_at`` is pinned with ``SOURCE_DATE_EPOCH``. After a stage is done its reference
bytes are put back, so that the next stage reads exactly the reference inputs (a rerun
``reinforce`` records other timings in ``whp_model.json``, which ``generic_labels`` hashes).

Stages run in children of a warm parent (tests/zygote.py), not through ``dvc repro``: with every
output ``persist: true`` DVC does nothing to them before or after a killed command, and a run costs
its own work rather than ``import torch``. ``dvc status`` checks the outcome at the end.
``WHP_FAULT_TABLE=<file> python -m pytest -m faults`` writes the table of docs/datasets.md.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipeline.stage import FAULT_AT, FAULT_TRACE, declared_outputs, recover
from pipeline.store import list_datasets
from tests.conftest import REPO, run
from tests.zygote import Zygote

pytestmark = [pytest.mark.faults, pytest.mark.slow]

KILLS = 5
SEED = 20261130
PINNED = {"SOURCE_DATE_EPOCH": "1700000000"}


def pipeline_stages() -> list[tuple[str, str, list[str]]]:
    """``(dvc stage, module, arguments)`` of every stage, in dvc.yaml's order (which is the
    pipeline's): each runs over its inputs' reference outputs. Read from dvc.yaml, so a new
    stage is exercised without editing this file."""
    stages = []
    for name, spec in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].items():
        if "foreach" in spec:
            for item in spec["foreach"]:
                words = spec["do"]["cmd"].replace("${item}", item).split()
                stages.append((f"{name}@{item}", words[words.index("-m") + 1], words[words.index("-m") + 2:]))
        else:
            words = spec["cmd"].split()
            stages.append((name, words[words.index("-m") + 1], words[words.index("-m") + 2:]))
    return stages


STAGES = pipeline_stages()
PRELOAD = sorted({module for _, module, _ in STAGES} | {"torch", "transformers", "spacy"})
TIMING_KEYS = {"tokens_per_s", "train_seconds", "seconds", "resumed_from_step"}
# Resume state a killed stage leaves on purpose (its next run continues from it).
RESUME_STATE = {".generic_labels-work", ".reinforce-checkpoints", ".finetune-checkpoints", ".reinforce-log", ".finetune-log"}


def _without_timings(path: str, data: bytes) -> bytes:
    """``data`` with the wall-clock figures removed, for the files that record them."""
    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in TIMING_KEYS}
        return [strip(v) for v in value] if isinstance(value, list) else value

    if path.endswith("whp_model.json") or path.startswith("metrics/evaluation/"):
        try:
            return json.dumps(strip(json.loads(data)), sort_keys=True).encode()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return data  # an older generation's changed bytes: compared as they are
    if path.startswith("plots/dvclive/"):  # DVCLive: metrics.json, and one <metric>.tsv per metric
        if path.endswith("metrics.json"):
            try:
                return json.dumps(strip(json.loads(data)), sort_keys=True).encode()
            except (json.JSONDecodeError, UnicodeDecodeError):
                return data  # an older generation's changed bytes: compared as they are
        if Path(path).stem in TIMING_KEYS:
            return b""
    if path.startswith("models/") and path.endswith("README.md"):
        return b"\n".join(line for line in data.split(b"\n") if not line.startswith((b"| forget tokens/s", b"| training time")))
    return data


def _outputs(project: Path, stage: str) -> dict[str, bytes]:
    """Every file of every output ``stage`` declares, by path (timings removed)."""
    found = {}
    for out in declared_outputs(stage, project):
        path = project / out
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path] * path.exists()
        for file in files:
            name = file.relative_to(project).as_posix()
            found[name] = _without_timings(name, file.read_bytes())
    return found


def _raw(project: Path, stage: str) -> dict[str, bytes]:
    found = {}
    for out in declared_outputs(stage, project):
        path = project / out
        for file in (sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]):
            found[file.relative_to(project).as_posix()] = file.read_bytes()
    return found


def _put(project: Path, stage: str, files: dict[str, bytes]) -> None:
    """Make ``stage``'s outputs exactly ``files``."""
    for out in declared_outputs(stage, project):
        path = project / out
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    for name, data in files.items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_bytes(data)


def _leftovers(project: Path, stage: str, *, resume_state_allowed: bool) -> list[str]:
    """Hidden entries next to the stage's outputs: staged versions, backups, snapshots, temporaries."""
    folders = {(project / out).parent for out in declared_outputs(stage, project)} | {project / "data"}
    found = [
        p.relative_to(project).as_posix() for folder in folders if folder.is_dir() for p in folder.iterdir()
        if p.name.startswith(".") and p.name != ".gitignore" and not (resume_state_allowed and p.name in RESUME_STATE)
    ]
    return sorted(found)


def _recover_as_a_next_run_would(project: Path, stage: str) -> None:
    outputs = declared_outputs(stage, project)
    recover(project, folders={project / out.parent for out in outputs}, names={out.name for out in outputs})
    list_datasets(project)  # and as any reader would


def _clear_resume_state(project: Path) -> None:
    for folder in ("data", "models"):
        for name in RESUME_STATE:
            shutil.rmtree(project / folder / name, ignore_errors=True)


def _kill_steps(stage: str, steps: list[str]) -> list[int]:
    """``KILLS`` distinct steps (1-based), seeded per stage: half of them up to the commit point
    (where a kill must leave the older generation), the rest after it (the new one)."""
    rng = random.Random(f"{SEED}:{stage}")
    commit = steps.index(f"commit {stage}") + 1
    before = rng.sample(range(1, commit + 1), min(commit, (KILLS + 1) // 2))
    after = rng.sample(range(commit + 1, len(steps) + 1), KILLS - len(before))
    return sorted(before + after)


def _exercise(zygote: Zygote, project: Path, stage: str, module: str, args: list[str], logs: Path) -> dict:
    reference_raw = _raw(project, stage)
    reference = _outputs(project, stage)
    older = {name: data + b"\n# an older generation\n" for name, data in reference_raw.items()}
    older_view = {name: _without_timings(name, data) for name, data in older.items()}
    log = logs / f"{stage}.log"
    trace = logs / f"{stage}.trace"

    def launch(**env: str) -> int:
        return zygote.run(module=module, args=args, cwd=project, env=PINNED | env, log=log, timeout=900,
                          checkpoints_are_steps=True)

    def rerun(what: str) -> None:
        assert launch() == 0, log.read_text()[-3000:]
        assert _outputs(project, stage) == reference, f"{stage}: {what}: outputs differ from the uninterrupted run"
        assert _leftovers(project, stage, resume_state_allowed=False) == [], f"{stage}: {what}: temporaries left"

    # Run 0, traced: the write steps of a run over an older generation, and its outputs.
    _put(project, stage, older)
    assert launch(WHP_FAULT_TRACE=str(trace)) == 0, log.read_text()[-3000:]
    assert _outputs(project, stage) == reference, f"{stage}: a rerun over an older generation differs"
    steps = [line.split("\t")[2] for line in trace.read_text().splitlines()]
    kills = _kill_steps(stage, steps)

    outcomes, labels, reruns = [], [], 0
    for step in kills:
        _clear_resume_state(project)  # each kill starts afresh, so step `step` is the step traced
        _put(project, stage, older)
        trace.unlink()
        status = launch(**{FAULT_AT: str(step), FAULT_TRACE: str(trace)})
        label = trace.read_text().splitlines()[-1].split("\t")[2]
        assert status == -signal.SIGKILL, f"{stage}: step {step} ({label}) ended with {status}"
        _recover_as_a_next_run_would(project, stage)
        after = _outputs(project, stage)
        mixed = sorted(n for n in set(after) | set(reference) if after.get(n) not in (reference.get(n), older_view.get(n)))
        assert after in (older_view, reference), f"{stage}: killed at step {step} ({label}): mixed: {mixed}"
        assert _leftovers(project, stage, resume_state_allowed=True) == [], (stage, step, label)
        outcomes.append("new" if after == reference else "old")
        labels.append(label)
        if _leftovers(project, stage, resume_state_allowed=False):  # resume state: the rerun resumes from it
            rerun(f"resumed after the kill at step {step} ({label})")
            reruns += 1
        elif step == kills[-1]:
            rerun(f"rerun after the kill at step {step} ({label})")
            reruns += 1
    _put(project, stage, reference_raw)  # downstream stages get exactly the reference inputs
    return {"stage": stage, "steps": len(steps), "kills": kills, "labels": labels, "outcomes": outcomes,
            "reruns": reruns}


def _plain(label: str) -> str:
    """A step's label without the writer's pid and random tag, the same from run to run."""
    return re.sub(r"\.(txn-new\d+|txn-old|txn-snap|tmp)-\d+-[0-9a-f]+", lambda m: "." + re.sub(r"\d+$", "", m.group(1)), label)


def _table(results: list[dict], seconds: float) -> str:
    lines = [
        "| stage | write steps | killed at (step: what) | after kill + recovery | rerun identical |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        where = "; ".join(f"{k}: {_plain(label)}" for k, label in zip(r["kills"], r["labels"]))
        outcome = ", ".join(f"{r['outcomes'].count(o)} {o}" for o in ("old", "new") if o in r["outcomes"])
        lines.append(f"| `{r['stage']}` | {r['steps']} | {where} | {outcome} | yes ({r['reruns']} of {r['reruns']}) |")
    kills = sum(len(r["kills"]) for r in results)
    lines.append("")
    lines.append(f"{len(results)} stages, {kills} kills, seed {SEED}; {seconds:.0f} s in all.")
    return "\n".join(lines) + "\n"


def test_every_writing_stage_survives_kill_9_at_seeded_moments(small_project: Path, tmp_path: Path, monkeypatch):
    params = yaml.safe_load((small_project / "params.yaml").read_text())
    for section in ("reinforce", "finetune"):  # a checkpoint per step: kills land mid-training
        params[section]["checkpoint_every"] = 1
    probes = small_project / "corpora" / "probes"
    for name in ("familiarity.jsonl", "completion.jsonl", "general.jsonl", "heldout.jsonl"):  # 6 each: seconds
        lines = (probes / name).read_text(encoding="utf-8").splitlines()
        (probes / f"few_{name}").write_text("\n".join(lines[:6]) + "\n", encoding="utf-8")
        params["evaluate"].setdefault("probes", {})[name.removesuffix(".jsonl")] = f"corpora/probes/few_{name}"
    (small_project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "add", "-A"], small_project)
    run(["git", "commit", "-qm", "checkpoints every step, few probes"], small_project)
    started = time.perf_counter()
    for key, value in PINNED.items():
        monkeypatch.setenv(key, value)
    run([sys.executable, "-m", "dvc", "repro"], small_project)

    logs = tmp_path / "logs"
    logs.mkdir()
    results = []
    with Zygote(PRELOAD, code=small_project) as zygote:
        for stage, module, args in STAGES:
            results.append(_exercise(zygote, small_project, stage, module, args, logs))
    table = _table(results, time.perf_counter() - started)
    print(table)
    if os.environ.get("WHP_FAULT_TABLE"):
        Path(os.environ["WHP_FAULT_TABLE"]).write_text(table, encoding="utf-8")

    # DVC agrees: apart from the files with timings, every output is the one dvc.lock recorded.
    status = json.loads(run([sys.executable, "-m", "dvc", "status", "--json"], small_project).stdout or "{}")
    changed = {path for entries in status.values() for entry in entries if isinstance(entry, dict)
               for path in entry.get("changed outs", {})}
    timed = {"models/reinforced", "models/unlearned", "plots/reinforce_loss.csv", "plots/finetune_loss.csv",
             "metrics/evaluation/baseline.json", "metrics/evaluation/reinforced.json",
             "metrics/evaluation/unlearned.json"}
    assert changed <= timed, sorted(changed - timed)
