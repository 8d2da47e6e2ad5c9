"""Real `dvc repro` in a temporary git repository: the pipeline end to end on a small corpus."""

from __future__ import annotations

import importlib
import json
import shutil
import sys
from pathlib import Path

import pandas as pd
import yaml

from pipeline.stage import declared_outputs
from pipeline.store import read_dataset, read_manifest, verify_dataset
from tests.conftest import REPO, run

DVC = [sys.executable, "-m", "dvc"]


def _stage_ran(output: str, stage: str) -> bool:
    return f"Running stage '{stage}'" in output


def test_repro_builds_every_output_then_is_a_no_op(small_project: Path):
    first = run([*DVC, "repro"], small_project)
    assert _stage_ran(first.stdout, "ingest") and _stage_ran(first.stdout, "baseline_model")

    documents = read_dataset("documents", small_project)
    passages = read_dataset("passages", small_project)
    assert set(documents["doc_id"]) == {"forget:lantern.txt", "retain:fortune.md"}
    texts = documents.set_index("doc_id")["text"]
    for row in passages.itertuples():
        assert texts[row.doc_id][row.char_start:row.char_end] == row.text
    rejects = read_dataset("passages_rejects", small_project)
    assert rejects["record"].tolist() == ["* * *"]
    assert (small_project / "models" / "baseline" / "model.safetensors").is_file()

    manifest = read_manifest("passages", small_project)
    assert manifest["rows"] == len(passages)
    assert manifest["params"]["ingest"]["max_passage_chars"] == 400
    assert manifest["code_revision"] == run(["git", "rev-parse", "HEAD"], small_project).stdout.strip()

    # Training blocks chosen from every candidate; the choice recorded with its coverage.
    candidates = read_dataset("block_candidates", small_project)
    chosen = read_dataset("blocks", small_project)
    assert chosen["block_id"].tolist() == candidates[candidates["selected"]]["block_id"].tolist()
    assert read_manifest("blocks", small_project)["params"]["selection"]["method"] == "anchors"

    # `dvc plots` reads the training stages' DVCLive files: the fine-tune's terms apart.
    plots = json.loads(run([*DVC, "plots", "show", "--json"], small_project).stdout)
    assert not plots.get("errors"), plots.get("errors")
    sources = {source for definitions in plots["data"].values() for d in definitions
               for source in d.get("props", {}).get("y", {}) if isinstance(d, dict)} | set(plots["data"])
    for metric in ("loss", "forget_loss", "retain_loss", "learning_rate", "tokens_per_s"):
        assert any(f"plots/dvclive/finetune/plots/metrics/{metric}.tsv" in s for s in sources), (metric, sources)
    assert any("plots/dvclive/reinforce/plots/metrics/loss.tsv" in s for s in sources)

    second = run([*DVC, "repro"], small_project)
    assert not _stage_ran(second.stdout, "ingest") and not _stage_ran(second.stdout, "baseline_model")
    assert not _stage_ran(second.stdout, "reinforce") and not _stage_ran(second.stdout, "finetune")
    assert "up to date" in second.stdout


def test_changing_an_ingest_param_reruns_only_ingest(small_project: Path):
    run([*DVC, "repro"], small_project)
    params = yaml.safe_load((small_project / "params.yaml").read_text())
    params["ingest"]["max_passage_chars"] = 60
    (small_project / "params.yaml").write_text(yaml.safe_dump(params))
    rerun = run([*DVC, "repro"], small_project)
    assert _stage_ran(rerun.stdout, "ingest")
    assert not _stage_ran(rerun.stdout, "baseline_model")
    assert read_dataset("passages", small_project)["text"].str.len().max() <= 60


def _output_bytes(root: Path, stage: str) -> dict[str, bytes]:
    """Every file of every output dvc.yaml declares for ``stage``, by path."""
    found = {}
    for out in declared_outputs(stage, root):
        path = root / out
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path] * path.exists()
        found.update({f.relative_to(root).as_posix(): f.read_bytes() for f in files})
    return found


def _leftovers(root: Path) -> list[str]:
    """Hidden temporaries, staged versions, backups or transaction records anywhere in the outputs."""
    found = []
    for folder in ("data", "data/manifests", "models", "metrics", "plots", "reports"):
        if (root / folder).is_dir():
            found += [f"{folder}/{p.name}" for p in (root / folder).iterdir()
                      if p.name.startswith(".") and p.name not in {".gitignore", ".generic_labels-work"}]
    return found


def _set_param(root: Path, section: str, key: str, value) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    params[section][key] = value
    (root / "params.yaml").write_text(yaml.safe_dump(params))


def test_a_failed_stage_keeps_every_previous_output_byte_for_byte(small_project: Path):
    run([*DVC, "repro", "ingest"], small_project)
    before = _output_bytes(small_project, "ingest")
    assert len([p for p in before if p.startswith("data/manifests/")]) == 4 and len(before) == 8

    _set_param(small_project, "ingest", "max_passage_chars", -5)
    result = run([*DVC, "repro", "ingest"], small_project, check=False)
    assert result.returncode != 0
    assert "ingest.max_passage_chars" in result.stdout + result.stderr
    assert _output_bytes(small_project, "ingest") == before
    assert _leftovers(small_project) == []
    # DVC sees a changed parameter, not changed outputs: they are still the ones dvc.lock records.
    status = json.loads(run([*DVC, "status", "--json", "ingest"], small_project).stdout)
    assert status["ingest"] == [{"changed deps": {"params.yaml": {"ingest": "modified"}}}]


def test_a_stage_failing_after_its_writes_publishes_none_of_them(small_project: Path):
    """`dictionary` writes its two datasets, then reads the gold list: a missing gold file used to
    leave the new dictionary next to the old metrics. Now nothing is published."""
    run([*DVC, "repro", "dictionary"], small_project)
    before = _output_bytes(small_project, "dictionary")
    assert {"data/manifests/dictionary.json", "metrics/anchors.json"} <= set(before)
    # A change that alters the dictionary (so a half-published run would show) and a missing gold list.
    _set_param(small_project, "translations", "seed", 7)
    _set_param(small_project, "dictionary", "gold", "tests/data/no_such_gold.csv")
    result = run([*DVC, "repro", "dictionary"], small_project, check=False)
    assert result.returncode != 0
    assert "no_such_gold.csv" in result.stdout + result.stderr
    assert _output_bytes(small_project, "dictionary") == before
    assert _leftovers(small_project) == []


def test_a_declared_output_the_stage_does_not_write_fails_it_and_keeps_the_others(small_project: Path):
    """With `persist: true` DVC would record a stale output as fresh: the stage's transaction
    refuses to commit instead, as DVC would without persist (\"output does not exist\")."""
    run([*DVC, "repro", "ingest"], small_project)
    before = _output_bytes(small_project, "ingest")
    spec = yaml.safe_load((small_project / "dvc.yaml").read_text())
    spec["stages"]["ingest"]["outs"].append({"data/manifests/extra.json": {"persist": True}})
    (small_project / "dvc.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    result = run([*DVC, "repro", "ingest"], small_project, check=False)
    assert result.returncode != 0
    assert "without writing data/manifests/extra.json" in result.stdout + result.stderr
    assert {k: v for k, v in _output_bytes(small_project, "ingest").items() if k in before} == before
    assert not (small_project / "data" / "manifests" / "extra.json").exists()


def test_persisted_outputs_with_dvc_status_checkout_and_the_run_cache(small_project: Path):
    run([*DVC, "repro", "ingest"], small_project)
    built = _output_bytes(small_project, "ingest")
    # A stray part (as an interrupted copy might leave): DVC sees the output modified, and the
    # rerun replaces the whole folder, so no part of an older generation survives the swap.
    stray = small_project / "data" / "passages" / "part-00009.parquet"
    stray.write_bytes((small_project / "data" / "passages" / "part-00000.parquet").read_bytes())
    assert "modified" in run([*DVC, "status", "ingest"], small_project).stdout
    rerun = run([*DVC, "repro", "ingest"], small_project)
    assert _stage_ran(rerun.stdout, "ingest") and not stray.exists()
    assert verify_dataset("passages", small_project)
    assert {k: v for k, v in _output_bytes(small_project, "ingest").items() if "manifests" not in k} == {
        k: v for k, v in built.items() if "manifests" not in k}

    # dvc checkout restores a persisted output from the cache, byte for byte.
    shutil.rmtree(small_project / "data" / "passages")
    run([*DVC, "checkout", "ingest"], small_project)
    assert (small_project / "data" / "passages" / "part-00000.parquet").read_bytes() == built["data/passages/part-00000.parquet"]
    assert "up to date" in run([*DVC, "status", "ingest"], small_project).stdout

    # DVC's run cache skips stages with persisted outputs: going back to earlier params reruns
    # the stage instead of checking out its earlier outputs (docs/datasets.md).
    _set_param(small_project, "ingest", "max_passage_chars", 300)
    run([*DVC, "repro", "ingest"], small_project)
    _set_param(small_project, "ingest", "max_passage_chars", 400)
    back = run([*DVC, "repro", "ingest"], small_project)
    assert _stage_ran(back.stdout, "ingest") and "skipping run" not in back.stdout


def test_a_bad_corpus_file_fails_the_repro_naming_it(small_project: Path):
    (small_project / "corpora" / "retain" / "broken.txt").write_bytes(b"fine text\n\xff\xfe more")
    result = run([*DVC, "repro", "ingest"], small_project, check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "broken.txt" in output and "byte offset 10" in output


def test_every_stage_declares_exactly_the_params_sections_its_module_reads():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    # `evaluate` runs once per model (a foreach over models/<item>).
    entry = {"evaluate": ("evaluate", "PARAMS", "python -m pipeline.evaluate ${item}")}
    for name, stage in stages.items():
        stage = stage.get("do", stage)
        module_name, attribute, cmd = entry.get(name, (name, "PARAMS", f"python -m pipeline.{name}"))
        module = importlib.import_module(f"pipeline.{module_name}")
        assert stage["cmd"] == cmd, name
        assert sorted(stage.get("params", [])) == sorted(getattr(module, attribute)), name
        assert f"pipeline/{module_name}.py" in stage["deps"], name


def test_every_dataset_output_has_its_manifest_declared():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        outs = [o if isinstance(o, str) else next(iter(o)) for o in stage.get("outs", [])]
        datasets = [Path(o).name for o in outs if o.startswith("data/") and "/manifests/" not in o]
        for dataset in datasets:
            assert f"data/manifests/{dataset}.json" in outs, (name, dataset)


def test_every_output_is_persisted_so_a_failed_stage_keeps_it():
    # Without `persist: true` DVC deletes an output before the command runs, and a stage that then
    # fails has lost it; the stages publish their outputs themselves, all at once (docs/datasets.md).
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    unpersisted = []
    for name, stage in stages.items():
        stage = stage.get("do", stage)  # a foreach stage (evaluate@<model>) declares its outputs under `do`
        for kind in ("outs", "metrics", "plots"):
            for out in stage.get(kind, []):
                path, options = (out, {}) if isinstance(out, str) else next(iter(out.items()))
                if not (options or {}).get("persist"):
                    unpersisted.append(f"{name}: {path}")
    assert not unpersisted, unpersisted


def test_whp_query_answers_sql_over_the_pipeline_outputs(small_project: Path):
    run([*DVC, "repro", "ingest"], small_project)
    result = run(
        [sys.executable, "-m", "pipeline.cli", "query", "--format", "json",
         "select doc_id, count(*) as n from passages group by 1 order by 1"],
        small_project,
    )
    answer = json.loads(result.stdout)
    expected = read_dataset("passages", small_project).groupby("doc_id").size()
    assert {row["doc_id"]: row["n"] for row in answer} == expected.to_dict()
    assert isinstance(expected, pd.Series) and len(answer) == 2
