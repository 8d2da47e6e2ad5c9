"""pipeline/stage.py: a stage's outputs are published as one transaction, and recovered after a crash.

The crash tests kill a real process (SIGKILL, through the store's ``WHP_FAULT_AT`` hook) at every
write step of a publication, one run per step, then let the next store access recover, and
require the result to be exactly the previous generation or exactly the new one, byte for byte,
with nothing else left on disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
from pathlib import Path

import pandas as pd
import pytest

from pipeline.errors import DatasetValidationError
from pipeline.stage import (
    FAULT_AT, FAULT_TRACE, OutputsNotWrittenError, Transaction, declared_outputs, recover, stage_transaction,
)
from pipeline.store import (
    atomic_write_text, list_datasets, publish_folder, read_dataset, read_manifest, write_dataset, write_rejects,
)
from schemas.corpus import DOCUMENTS
from tests.conftest import REPO
from tests.zygote import Zygote

GENERATIONS = {
    "v1": {"a.txt": "The first generation.", "b.txt": "Its second document."},
    "v2": {"a.txt": "The second generation, longer.", "c.txt": "A document only v2 has."},
}
OUTPUTS = (
    "data/documents", "data/documents_rejects", "data/manifests/documents.json",
    "data/manifests/documents_rejects.json", "metrics/counts.json", "models/toy", "plots/loss.csv",
)
PINNED = {"SOURCE_DATE_EPOCH": "1700000000"}  # manifests' created_at: byte-identical reruns


def _documents(texts: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame([
        {"doc_id": f"forget:{name}", "corpus": "forget", "source": name, "record": 0, "title": "", "text": text,
         "n_chars": len(text), "sha256": hashlib.sha256(text.encode()).hexdigest()}
        for name, text in texts.items()
    ])


def _write_everything(root: Path, generation: str) -> None:
    """What a stage writes, every kind: two datasets, a metrics file, a model folder, a log in place."""
    texts = GENERATIONS[generation]
    write_dataset(_documents(texts), DOCUMENTS, stage="toy", root=root)
    write_rejects([{"source": generation, "location": "line 1", "reason": "toy", "record": generation}],
                  DOCUMENTS, stage="toy", root=root)
    atomic_write_text(root / "metrics" / "counts.json", json.dumps({"generation": generation}) + "\n")
    tmp = root / "models" / ".toy.tmp"
    tmp.mkdir(parents=True)
    (tmp / "weights.bin").write_bytes(generation.encode() * 4096)
    (tmp / "config.json").write_text(json.dumps({"generation": generation}))
    publish_folder(tmp, root / "models" / "toy")
    # Written in place, as training writes its loss log: the transaction's snapshot covers it.
    (root / "plots").mkdir(exist_ok=True)
    (root / "plots" / "loss.csv").write_text(f"step,generation\n1,{generation}\n")


def publish_generation(root: str, generation: str, mode: str = "stage") -> None:
    """Run in a child process by the crash tests (tests.zygote)."""
    root = Path(root)
    if mode == "stage":
        with stage_transaction(root, stage="toy", outputs=OUTPUTS):
            _write_everything(root, generation)
    else:  # outside a stage: each write is its own transaction, a folder swap its own two renames
        write_dataset(_documents(GENERATIONS[generation]), DOCUMENTS, stage="toy", root=root)
        tmp = root / "models" / ".toy.tmp"
        tmp.mkdir(parents=True)
        (tmp / "weights.bin").write_bytes(generation.encode() * 4096)
        publish_folder(tmp, root / "models" / "toy")


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (hidden ones included), by relative path. A manifest's
    ``code_revision`` is masked: it says whether this checkout had uncommitted edits at the time,
    which an edit made while the test runs would change between two runs."""
    return {
        p.relative_to(root).as_posix(): re.sub(rb'"code_revision": "[^"]*"', b'"code_revision": "-"', p.read_bytes())
        for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def zygote():
    with Zygote(["pipeline.store", "tests.test_stage"]) as warm:
        yield warm


def _reference(zygote: Zygote, folder: Path, generation: str, mode: str, start: Path | None = None) -> Path:
    if start is not None:
        shutil.copytree(start, folder)
    folder.mkdir(exist_ok=True)
    assert zygote.run(call="tests.test_stage:publish_generation", args=[str(folder), generation, mode],
                      cwd=folder, env=PINNED) == 0
    return folder


def _generation(after: dict[str, bytes], old: dict[str, bytes], new: dict[str, bytes], prefixes: tuple[str, ...]) -> str:
    """"old" or "new" when the files under ``prefixes`` are exactly one generation's, else "mixed"."""
    def part(files: dict[str, bytes]) -> dict[str, bytes]:
        return {k: v for k, v in files.items() if k.startswith(prefixes)}
    return {True: "old"}.get(part(after) == part(old)) or {True: "new"}.get(part(after) == part(new)) or "mixed"


# What is published together: a stage's outputs all at once; outside a stage, each write alone
# (a dataset's folder with its manifest; a model folder).
UNITS = {
    "stage": [("",)],
    "standalone": [("data/documents", "data/manifests/documents.json"), ("models/",)],
}


@pytest.mark.parametrize("mode", ["stage", "standalone"])
def test_a_kill_at_any_write_step_leaves_one_whole_generation(tmp_path: Path, zygote: Zygote, mode: str):
    old = tree(_reference(zygote, tmp_path / "old", "v1", mode))
    new = tree(_reference(zygote, tmp_path / "new", "v2", mode, start=tmp_path / "old"))
    assert all(old.get(k) != v for k, v in new.items() if k.startswith(("data/manifests", "models")))

    trace = tmp_path / "trace.txt"
    shutil.copytree(tmp_path / "old", tmp_path / "traced")
    assert zygote.run(call="tests.test_stage:publish_generation", args=[str(tmp_path / "traced"), "v2", mode],
                      cwd=tmp_path, env=PINNED | {FAULT_TRACE: str(trace)}) == 0
    steps = [line.split("\t")[2] for line in trace.read_text().splitlines()]
    assert len(steps) >= (20 if mode == "stage" else 8), steps

    outcomes = []
    for number, label in enumerate(steps, start=1):
        root = tmp_path / f"kill-{number}"
        shutil.copytree(tmp_path / "old", root)
        status = zygote.run(call="tests.test_stage:publish_generation", args=[str(root), "v2", mode], cwd=root,
                            env=PINNED | {FAULT_AT: str(number)})
        assert status == -signal.SIGKILL, (number, label)
        list_datasets(root)  # any store access recovers
        # A stage's begin() sweeps its outputs' folders, the callers' untagged temporaries included.
        recover(root, folders=[root / "models"], names={"toy"})
        after = tree(root)
        assert set(after) == set(old) | set(new), (number, label, "left or lost", sorted(set(after) ^ set(new)))
        units = [_generation(after, old, new, prefixes) for prefixes in UNITS[mode]]
        assert "mixed" not in units, (number, label, units, "differ from new:", sorted(k for k in new if after.get(k) != new[k]),
                                      "from old:", sorted(k for k in old if after.get(k) != old[k]))
        outcomes.append(units)
        shutil.rmtree(root)
    if mode == "stage":
        # Old up to the commit point (the journal's rename), new from the first step after it.
        commit = steps.index("commit toy")
        assert outcomes == [["old"]] * (commit + 1) + [["new"]] * (len(steps) - commit - 1)
    else:
        assert outcomes[0] == ["old", "old"] and outcomes[-1] == ["new", "new"] and ["new", "old"] in outcomes


def test_a_swap_cut_between_its_renames_restores_the_target(tmp_path: Path):
    """The old store's window: data/NAME renamed away, the new folder not yet in; `.NAME.old-PID` left."""
    write_dataset(_documents(GENERATIONS["v1"]), DOCUMENTS, stage="toy", root=tmp_path)
    before = tree(tmp_path)
    folder = tmp_path / "data" / "documents"
    folder.rename(folder.with_name(".documents.old-999999"))  # a pid no process has
    assert read_dataset("documents", tmp_path)["doc_id"].tolist() == ["forget:a.txt", "forget:b.txt"]
    assert tree(tmp_path) == before


def test_an_error_inside_a_stage_publishes_nothing_and_restores_files_written_in_place(tmp_path: Path):
    with stage_transaction(tmp_path, stage="toy", outputs=OUTPUTS):
        _write_everything(tmp_path, "v1")
    before = tree(tmp_path)
    with pytest.raises(DatasetValidationError):
        with stage_transaction(tmp_path, stage="toy", outputs=OUTPUTS):
            _write_everything(tmp_path, "v2")
            assert (tmp_path / "plots" / "loss.csv").read_text().endswith("1,v2\n")  # in place
            write_dataset(_documents(GENERATIONS["v2"]).assign(n_chars=0), DOCUMENTS, stage="toy", root=tmp_path)
    assert tree(tmp_path) == before


def test_inside_a_stage_reads_see_its_own_writes_and_others_see_them_at_commit(tmp_path: Path):
    write_dataset(_documents(GENERATIONS["v1"]), DOCUMENTS, stage="toy", root=tmp_path)
    outputs = ("data/documents", "data/manifests/documents.json")
    with stage_transaction(tmp_path, stage="toy", outputs=outputs):
        write_dataset(_documents(GENERATIONS["v2"]), DOCUMENTS, stage="toy", root=tmp_path)
        assert read_manifest("documents", tmp_path)["rows"] == 2
        assert read_dataset("documents", tmp_path)["doc_id"].tolist() == ["forget:a.txt", "forget:c.txt"]
        published = json.loads((tmp_path / "data" / "manifests" / "documents.json").read_text())
        assert [f["sha256"] for f in published["files"]] != [f["sha256"] for f in read_manifest("documents", tmp_path)["files"]]
    assert read_dataset("documents", tmp_path)["doc_id"].tolist() == ["forget:a.txt", "forget:c.txt"]


def test_a_declared_output_left_unwritten_fails_the_commit(tmp_path: Path):
    write_dataset(_documents(GENERATIONS["v1"]), DOCUMENTS, stage="toy", root=tmp_path)
    before = tree(tmp_path)
    with pytest.raises(OutputsNotWrittenError, match=r"without writing metrics/counts\.json"):
        with stage_transaction(tmp_path, stage="toy", outputs=("data/documents", "metrics/counts.json")):
            write_dataset(_documents(GENERATIONS["v2"]), DOCUMENTS, stage="toy", root=tmp_path)
    assert tree(tmp_path) == before


def test_hidden_scratch_paths_are_written_at_once_not_at_commit(tmp_path: Path):
    """Resume state (generic_labels' shards, checkpoints) must survive a failed run."""
    marker = tmp_path / "data" / ".work" / "shard-00000.key"
    with pytest.raises(RuntimeError):
        with stage_transaction(tmp_path, stage="toy"):
            atomic_write_text(marker, "done")
            assert marker.read_text() == "done"
            raise RuntimeError("killed later")
    assert marker.read_text() == "done"


def test_recovery_leaves_a_live_transaction_alone(tmp_path: Path, zygote: Zygote):
    write_dataset(_documents(GENERATIONS["v1"]), DOCUMENTS, stage="toy", root=tmp_path)
    txn = Transaction(tmp_path, stage="toy").begin()
    staged = txn.staged_path(tmp_path / "metrics" / "counts.json")
    staged.parent.mkdir(parents=True)
    staged.write_text("{}")
    # Another process (a `whp query`, say) reads meanwhile: it must not roll back our transaction.
    assert zygote.run(call="pipeline.store:list_datasets", args=[str(tmp_path)], cwd=tmp_path) == 0
    assert staged.exists()
    txn.add(staged, tmp_path / "metrics" / "counts.json")
    txn.commit()
    assert (tmp_path / "metrics" / "counts.json").read_text() == "{}"
    assert not (tmp_path / "data" / ".transactions").exists()


def test_declared_outputs_reads_dvc_yaml_including_foreach_stages():
    assert declared_outputs("dictionary", REPO)[-1] == Path("metrics/anchors.json")
    assert Path("data/evaluation_completions_baseline") in declared_outputs("evaluate@baseline", REPO)
    assert declared_outputs("evaluate", REPO) == () and declared_outputs("no_such_stage", REPO) == ()
    assert declared_outputs("ingest", REPO / "no-such-folder") == ()


def test_every_output_in_dvc_yaml_is_persisted():
    """Without persist DVC deletes a stage's outputs before running it, and a failed run loses them."""
    import yaml

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name, spec in stages.items():
        spec = spec.get("do", spec)
        for key in ("outs", "metrics", "plots"):
            for out in spec.get(key) or []:
                assert isinstance(out, dict) and next(iter(out.values())).get("persist") is True, (name, out)


def test_the_fault_hook_counts_steps_and_is_inert_when_unset(tmp_path: Path, monkeypatch):
    trace = tmp_path / "trace.txt"
    monkeypatch.setenv(FAULT_TRACE, str(trace))
    monkeypatch.delenv(FAULT_AT, raising=False)
    write_dataset(_documents(GENERATIONS["v1"]), DOCUMENTS, stage="toy", root=tmp_path)
    labels = [line.split("\t")[2] for line in trace.read_text().splitlines()]
    assert labels[0] == "part documents/part-00000.parquet" and "commit toy" in labels
    numbers = [int(line.split("\t")[0]) for line in trace.read_text().splitlines()]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    assert os.environ.get(FAULT_AT) is None
