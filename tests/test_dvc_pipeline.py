"""Real `dvc repro` in a temporary git repository: the pipeline end to end on a small corpus."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pandas as pd
import yaml

from pipeline.store import read_dataset, read_manifest
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

    second = run([*DVC, "repro"], small_project)
    assert not _stage_ran(second.stdout, "ingest") and not _stage_ran(second.stdout, "baseline_model")
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


def test_invalid_params_fail_the_repro_naming_the_key(small_project: Path):
    params = (small_project / "params.yaml").read_text()
    (small_project / "params.yaml").write_text(params.replace("max_passage_chars: 400", "max_passage_chars: -3"))
    result = run([*DVC, "repro", "ingest"], small_project, check=False)
    assert result.returncode != 0
    assert "ingest.max_passage_chars" in result.stdout + result.stderr
    assert not (small_project / "data" / "passages").exists()


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
