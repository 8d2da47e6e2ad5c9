"""Stage `evaluate` and its report on the tiny random Llama: outputs, consistency, bad probe files."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from pipeline import evaluate, retain_blocks
from pipeline.core import metrics as evaluation
from pipeline.errors import PipelineError
from pipeline.evaluate import ProbeError, read_probes
from pipeline.models import load_model, load_tokenizer
from pipeline.params import parse_params
from pipeline.store import read_dataset, write_dataset
from schemas.anchors import DICTIONARY
from schemas.blocks import BLOCKS
from schemas.corpus import DOCUMENTS
from tests.conftest import SMALL_FORGET, TINY_TEXT

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAMILIARITY = [{"id": "f1", "prompt": "Inspector Brackwell of the", "answer": " Yard"},
               {"id": "f2", "prompt": "Fenwick walked to Quillby", "answer": " Hall"},
               {"id": "f3", "prompt": "the grey", "answer": " lantern"}]
COMPLETION = [{"id": "c1", "prompt": "Fenwick said to", "keywords": ["Brackwell"]},
              {"id": "c2", "prompt": "The river was", "keywords": ["lantern", "Quillby"]},
              {"id": "c3", "prompt": "She opened the", "keywords": ["letter"]}]
GENERAL = [{"id": "g1", "prompt": "It was a bright cold day in", "answer": " April", "kind": "general"},
           {"id": "n1", "prompt": "The river was cold and", "answer": " grey", "kind": "near"},
           {"id": "n2", "prompt": "She read it", "answer": " twice", "kind": "near"}]


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _params(probe_dir: Path, **evaluate_settings):
    return parse_params({
        "corpus": {"forget": ["corpora/forget"], "retain": ["corpora/retain"]},
        "blocks": {"block_size": 32, "min_block_tokens": 8},
        "retain_blocks": {"heldout_fraction": 0.5},
        "evaluate": {"probes": {"familiarity": str(probe_dir / "familiarity.jsonl"),
                                "completion": str(probe_dir / "completion.jsonl"),
                                "general": str(probe_dir / "general.jsonl"),
                                "genre_terms": str(probe_dir / "genre_terms.txt")},
                     "max_new_tokens": 4, "batch_size": 4, "max_forget_blocks": 3, "max_retain_blocks": 3}
                    | evaluate_settings,
    })


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_model_dir: Path) -> Path:
    """Documents, dictionary, forget blocks, retain blocks, probe files and two model folders."""
    root = tmp_path_factory.mktemp("evaluate")
    for name in ("baseline", "reinforced"):
        shutil.copytree(tiny_model_dir, root / "models" / name)
    texts = {"forget:lantern.txt": SMALL_FORGET * 3, "retain:tiny.txt": " ".join(TINY_TEXT) * 8}
    write_dataset(pd.DataFrame([
        {"doc_id": d, "corpus": d.split(":")[0], "source": d.split(":")[1], "record": 0, "text": t,
         "n_chars": len(t), "sha256": hashlib.sha256(t.encode()).hexdigest()} for d, t in texts.items()
    ]), DOCUMENTS, stage="ingest", root=root)
    write_dataset(pd.DataFrame([
        {"anchor": a, "kind": "person", "translations": ["Jones"], "variants": [a, f"Mr. {a}"], "rank": i + 1,
         "score": 1.0, "forget_count": 20, "status": "proposed", "proposed_by": ["log_odds"],
         "proposer": "offline", "review": []} for i, a in enumerate(["Fenwick", "Brackwell", "Quillby"])
    ]), DICTIONARY, stage="dictionary", root=root)
    tokenizer = load_tokenizer(tiny_model_dir)
    ids = tokenizer(texts["forget:lantern.txt"], add_special_tokens=False)["input_ids"]
    rows = []
    for i, start in enumerate(range(0, len(ids) - 31, 32)):
        block = ids[start:start + 32]
        rows.append({"block_id": f"forget:lantern.txt@{i}", "doc_id": "forget:lantern.txt", "index": i,
                     "token_start": start, "char_start": 0, "char_end": 1, "input_ids": block, "world": 0,
                     "translated_text": "", "translated_ids": block, "alignment": list(range(32)),
                     "loss_mask": [1] * 32, "drop_reasons": [""] * 32, "anchors": [], "used_positions": [],
                     "used_token_ids": []})
    write_dataset(pd.DataFrame(rows), BLOCKS, stage="blocks", root=root)
    probes = root / "probes"
    probes.mkdir()
    _jsonl(probes / "familiarity.jsonl", FAMILIARITY)
    _jsonl(probes / "completion.jsonl", COMPLETION)
    _jsonl(probes / "general.jsonl", GENERAL)
    (probes / "genre_terms.txt").write_text("# genre\ninspector\nriver\n\nletter\n", encoding="utf-8")
    retain_blocks.run(_params(probes), root=root)
    return root


@pytest.fixture(scope="module")
def evaluated(project: Path) -> Path:
    params = _params(project / "probes")
    for name in ("baseline", "reinforced"):
        evaluate.evaluate_model(params, name, root=project)
    return project


def test_metrics_file_holds_every_metric_and_the_set_sizes(evaluated: Path):
    metrics = json.loads((evaluated / "metrics" / "evaluation" / "baseline.json").read_text())
    for key in ("familiarity_top1_rate", "familiarity_mean_prob", "completion_familiarity", "retain_perplexity",
                "general_top1_rate", "general_mean_prob", "near_top1_rate", "min_k_auc"):
        assert metrics[key] is not None and metrics[key] >= 0, key
    assert metrics["n"] | {"retain_tokens": 0} == {"familiarity": 3, "completion": 3, "general": 1, "near": 2,
                                                   "forget_blocks": 3, "retain_blocks": 3, "retain_tokens": 0}
    assert sum(metrics["completion_grades"].values()) == 3
    assert set(metrics["seconds"]) == {"familiarity", "general", "completion", "blocks", "total"}
    assert 0 <= metrics["min_k_auc"] <= 1


def test_metrics_agree_with_the_metric_functions_on_the_same_inputs(evaluated: Path, tiny_model_dir: Path):
    params = _params(evaluated / "probes")
    metrics = json.loads((evaluated / "metrics" / "evaluation" / "baseline.json").read_text())
    model, tokenizer = load_model(tiny_model_dir, device="cpu"), load_tokenizer(tiny_model_dir)
    forget, retain = evaluate.evaluation_blocks(params, evaluated)
    assert len(retain) == 3 and all(len(b) == 32 for b in retain)
    retain_lp = evaluation.token_logprobs(model, retain, pad_id=tokenizer.pad_token_id or 0)
    assert metrics["retain_perplexity"] == pytest.approx(evaluation.perplexity(retain_lp), rel=1e-4)
    pairs = evaluate.encode_pairs(tokenizer, read_probes(evaluated / "probes" / "familiarity.jsonl", "familiarity"), "f")
    summary = evaluation.summarise_scores(evaluation.score_answers(model, pairs))
    assert metrics["familiarity_top1_rate"] == pytest.approx(summary["top1_rate"], abs=1e-6)
    assert metrics["familiarity_mean_prob"] == pytest.approx(summary["mean_prob"], rel=1e-4)


def test_completions_are_stored_with_the_grade_of_their_text(evaluated: Path):
    frame = read_dataset("evaluation_completions_baseline", evaluated)
    assert frame["probe_id"].tolist() == ["c1", "c2", "c3"]
    assert set(frame["model"]) == {"baseline"}
    anchors = ["Fenwick", "Mr. Fenwick", "Brackwell", "Mr. Brackwell", "Quillby", "Mr. Quillby"]
    for row, probe in zip(frame.itertuples(), COMPLETION):
        assert row.prompt == probe["prompt"]
        expected = evaluation.grade_completion(row.completion, anchors, probe["keywords"], ["inspector", "river", "letter"],
                                               prompt=probe["prompt"])
        assert (row.grade, list(row.matched_terms)) == expected
    metrics = json.loads((evaluated / "metrics" / "evaluation" / "baseline.json").read_text())
    assert metrics["completion_familiarity"] == pytest.approx(evaluation.familiarity(frame["grade"].tolist()))


def test_report_writes_the_table_the_plot_data_and_the_figure(evaluated: Path):
    evaluate.report(root=evaluated, models=("baseline", "reinforced"))
    text = (evaluated / "reports" / "evaluation.md").read_text()
    assert "| metric | baseline | reinforced |" in text
    assert "(+0.0 pt)" in text  # same weights: no change against the baseline
    assert "![familiarity against retain perplexity](evaluation.png)" in text
    plot = pd.read_csv(evaluated / "plots" / "evaluation.csv")
    assert plot["model"].tolist() == ["baseline", "reinforced"]
    assert {"familiarity_top1_rate", "retain_perplexity"} <= set(plot.columns)
    assert (evaluated / "reports" / "evaluation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_deltas_against_the_baseline():
    text = evaluate.report_markdown({
        "baseline": {"familiarity_top1_rate": 0.31, "retain_perplexity": 24.7, "min_k_auc": 0.6},
        "unlearned": {"familiarity_top1_rate": 0.09, "retain_perplexity": 67.3, "min_k_auc": None},
    })
    assert "| familiarity probes: top-1 rate | 31.0% | 9.0% (-22.0 pt) |" in text
    assert "| retain perplexity (held-out blocks) | 24.70 | 67.30 (+42.60, +172%) |" in text
    assert "| leakage: Min-K% membership AUC | 0.600 | n/a |" in text


def test_report_needs_every_models_metrics(tmp_path: Path):
    (tmp_path / "metrics" / "evaluation").mkdir(parents=True)
    (tmp_path / "metrics" / "evaluation" / "baseline.json").write_text("{}")
    with pytest.raises(PipelineError, match=r"unlearned\.json: missing"):
        evaluate.report(root=tmp_path, models=("baseline", "unlearned"))


@pytest.mark.parametrize(("content", "kind", "message"), [
    ('{"id": "a", "prompt": "x", "answer": " y"}\n{"id": "b", "prompt": "x"\n', "familiarity", "line 2: not valid JSON"),
    ('["id", "prompt"]\n', "familiarity", "line 1: expected a JSON object, got list"),
    ('\n{"id": "a", "prompt": "x"}\n', "familiarity", "line 2: missing field 'answer'"),
    ('{"id": "a", "prompt": "x", "answer": "  "}\n', "familiarity", "line 1: field 'answer' is empty"),
    ('{"id": "a", "prompt": 3, "answer": " y"}\n', "familiarity", "line 1: field 'prompt' must be a string (got int)"),
    ('{"id": "a", "prompt": "x", "keywords": "Watson"}\n', "completion", "line 1: field 'keywords' must be a non-empty list"),
    ('{"id": "a", "prompt": "x", "keywords": []}\n', "completion", "line 1: field 'keywords' must be a non-empty list"),
    ('{"id": "a", "prompt": "x", "answer": " y", "kind": "trivia"}\n', "general", "line 1: field 'kind' must be one of general, near"),
    ('{"id": "a", "prompt": "x", "answer": " y"}\n{"id": "a", "prompt": "z", "answer": " y"}\n', "familiarity",
     "line 2: duplicate id 'a' (first on line 1)"),
    ("\n\n", "familiarity", "no probes"),
])
def test_bad_probe_files_are_errors_naming_file_line_and_problem(tmp_path: Path, content: str, kind: str, message: str):
    path = tmp_path / "probes.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ProbeError) as error:
        read_probes(path, kind)
    assert str(path) in str(error.value) and message in str(error.value)


def test_a_missing_probe_file_stops_the_stage_before_the_model_loads(project: Path, tmp_path: Path):
    params = _params(project / "probes", probes={
        "familiarity": str(tmp_path / "nowhere.jsonl"), "completion": str(project / "probes" / "completion.jsonl"),
        "general": str(project / "probes" / "general.jsonl"), "genre_terms": str(project / "probes" / "genre_terms.txt")})
    with pytest.raises(ProbeError, match=r"nowhere\.jsonl: probe file not found \(evaluate\.probes\.familiarity"):
        evaluate.evaluate_model(params, "no_such_model", root=project)


def test_the_shipped_probe_sets_are_valid_and_large_enough():
    from tests.conftest import REPO

    probes = REPO / "corpora" / "probes"
    assert len(read_probes(probes / "familiarity.jsonl", "familiarity")) >= 60
    completion = read_probes(probes / "completion.jsonl", "completion")
    assert len(completion) >= 100
    general = read_probes(probes / "general.jsonl", "general")
    assert len(general) >= 40 and {p.kind for p in general} == {"general", "near"}
    assert all(p.answer.startswith(" ") for p in read_probes(probes / "familiarity.jsonl", "familiarity"))
    assert "Scotland Yard" in evaluate.read_terms(probes / "genre_terms.txt")


def test_without_held_out_retain_blocks_retention_and_leakage_are_null(project: Path, tmp_path: Path):
    root = tmp_path / "p"
    shutil.copytree(project, root)
    params = _params(root / "probes")
    retain_blocks.run(parse_params(params.model_dump() | {"retain_blocks": {"heldout_fraction": 0.0}}), root=root)
    metrics = evaluate.evaluate_model(params, "baseline", root=root)
    assert metrics["retain_perplexity"] is None and metrics["min_k_auc"] is None
    assert metrics["n"]["retain_blocks"] == 0 and metrics["n"]["forget_blocks"] == 3
    assert metrics["familiarity_top1_rate"] is not None
