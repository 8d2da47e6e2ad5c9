"""Stage `report`: values with intervals, paired changes against the baseline, the marks, the files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import report
from pipeline.core.bootstrap import Interval
from pipeline.core.headlines import UNIT_COLUMNS, Delta
from pipeline.errors import PipelineError
from pipeline.params import parse_params
from pipeline.store import write_dataset
from schemas.evaluation import scores_contract

PARAMS = parse_params({"corpus": {"forget": ["corpora/forget"]}, "evaluate": {"bootstrap": {"resamples": 300}}})


def test_value_cells_show_the_estimate_and_its_interval():
    assert report.value_cell(0.31, {"low": 0.25, "high": 0.375}, "pct") == "31.0% [25.0, 37.5]"
    assert report.value_cell(24.7, {"low": 22.0, "high": 27.5}, "num") == "24.70 [22.00, 27.50]"
    assert report.value_cell(None, None, "prob") == "n/a"


def test_delta_cells_mark_an_interval_that_contains_zero():
    moved = Delta(Interval(-0.22, -0.28, -0.16), None, 200)
    assert report.delta_cell(moved, "pct") == "-22.0 pt [-28.0, -16.0]"
    unsure = Delta(Interval(0.004, -0.01, 0.02), Interval(0.08, -0.2, 0.4), 45)
    assert report.delta_cell(unsure, "prob") == f"+0.004 [-0.010, +0.020], +8% [-20, +40] {report.NO_CHANGE}"
    down = Delta(Interval(-0.02, -0.03, -0.01), Interval(-0.4, -0.55, -0.25), 200)
    assert report.delta_cell(down, "prob") == "-0.020 [-0.030, -0.010], -40% [-55, -25]"
    assert report.delta_cell(None, "num") == "n/a"


def _scores(model: str, probs: np.ndarray, hits: np.ndarray, ranks: np.ndarray) -> pd.DataFrame:
    rows = [{"measure": "familiarity", "unit_id": f"f{i:03d}", "story": "Two Stories" if i % 2 else "One Story",
             "tier": "known" if i % 2 else "detail", "trained": bool(i % 2 == 0), "output": "", "top1": float(h),
             "first_prob": float(p), "first_logprob": float(np.log(p)), "answer_prob": float(p), "rank": float(r),
             "rouge_l": float(h)} for i, (p, h, r) in enumerate(zip(probs, hits, ranks))]
    rows += [{"measure": "retain", "unit_id": f"r{i}", "story": "", "tier": "", "trained": False, "output": "",
              "nll": 30.0 + i, "tokens": 10.0} for i in range(8)]
    rows += [{"measure": "near", "unit_id": f"n{i}", "story": "", "tier": "", "trained": False, "output": "",
              "answer_terms": "Thames" if i == 0 else "", "top1": 1.0, "first_prob": 0.5} for i in range(4)]
    rows += [{"measure": "near_heldout", "unit_id": "hn0", "story": "", "tier": "", "trained": False, "output": "",
              "answer_terms": "Devon", "top1": 1.0, "first_prob": 0.5}]
    frame = pd.DataFrame(rows).reindex(columns=UNIT_COLUMNS)
    frame["answer_terms"] = frame["answer_terms"].astype(object).fillna("")
    return frame.assign(model=model)


@pytest.fixture()
def evaluated(tmp_path: Path) -> Path:
    """Metrics files and unit scores of a baseline and a model that forgot half of each probability.
    The baseline ranks the answers of 42 probes in its top 10 (30 first, 12 fifth), the other model none."""
    rng = np.random.default_rng(0)
    probs, hits = rng.uniform(0.05, 0.6, 80), (np.arange(80) < 30).astype(float)
    ranks = np.where(hits > 0, 1.0, np.where(np.arange(80) % 4 == 0, 5.0, 40.0))
    frames = {"baseline": _scores("baseline", probs, hits, ranks),
              "unlearned": _scores("unlearned", probs * 0.5, hits * 0, np.full(80, 40.0))}
    for name, frame in frames.items():
        write_dataset(frame, scores_contract(name), stage="evaluate", root=tmp_path)
        familiar = frame[frame["measure"] == "familiarity"]
        metrics = {"model": name, "familiarity_top1_rate": familiar["top1"].mean(),
                   "retain_perplexity": float(np.exp(3.35)), "familiarity_mean_prob": familiar["first_prob"].mean(),
                   "completion_grades": {"3": 1, "2": 0, "1": 0, "0": 9},
                   "n": {"familiarity": 80, "stories": 2, "stories_trained": 1},
                   "intervals": {"familiarity_top1_rate": {"low": 0.0, "high": 0.5},
                                 "retain_perplexity": {"low": 25.0, "high": 31.0}}}
        path = tmp_path / "metrics" / "evaluation" / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(metrics))
    return tmp_path


def test_report_writes_values_changes_deltas_plot_data_and_figure(evaluated: Path):
    summary = report.report(PARAMS, root=evaluated, models=("baseline", "unlearned"))
    text = (evaluated / "reports" / "evaluation.md").read_text()
    assert "| metric | baseline | unlearned |" in text and "## Change against baseline" in text
    assert "| familiarity probes: top-1 rate | 37.5% [0.0, 50.0] |" in text
    prob_row = [line for line in text.splitlines() if line.startswith("| familiarity probes: mean p(first")][-1]
    assert "-50% [-50, -50]" in prob_row.split("|")[-2] and report.NO_CHANGE not in prob_row.split("|")[-2]
    retain_row = [line for line in text.splitlines() if line.startswith("| retain perplexity")][-1]
    assert retain_row.rstrip(" |").endswith(report.NO_CHANGE)  # same retain scores: no change
    assert "Stories trained on: One Story." in text
    assert "Probes answered by a forget-dictionary term" in text and "leave them out): hn0 (Devon), n0 (Thames)." in text
    deltas = json.loads((evaluated / "metrics" / "evaluation_deltas.json").read_text())
    assert deltas["unlearned"]["familiarity_mean_prob"]["relative"] == pytest.approx(-0.5)
    assert deltas["unlearned"]["familiarity_top1_rate"]["delta"] == pytest.approx(-30 / 80)
    assert deltas["unlearned"]["familiarity_top1_rate"]["high"] < 0
    tier = deltas["unlearned"]["familiarity_tier_known_mean_prob"]
    assert tier["relative"] == pytest.approx(-0.5) and tier["n"] == 40
    plot = pd.read_csv(evaluated / "plots" / "evaluation.csv")
    assert plot["model"].tolist() == ["baseline", "unlearned"] and "retain_perplexity" in plot.columns
    assert (evaluated / "reports" / "evaluation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert summary["changes_resolved"] >= 3


def test_the_known_subset_is_what_the_baseline_ranks_in_its_top_k_read_on_every_model(evaluated: Path):
    report.report(PARAMS, root=evaluated, models=("baseline", "unlearned"))
    deltas = json.loads((evaluated / "metrics" / "evaluation_deltas.json").read_text())["unlearned"]
    # chosen by the baseline alone: the other model ranks none of them in its top 10
    assert deltas["known_familiarity_top1_rate"]["n"] == 42
    assert deltas["known_familiarity_top1_rate"]["delta"] == pytest.approx(-30 / 42)
    assert deltas["known_familiarity_mean_prob"]["relative"] == pytest.approx(-0.5)
    assert deltas["known_familiarity_mean_prob"]["relative_high"] == pytest.approx(-0.5)
    assert deltas["known_familiarity_mean_logprob"]["delta"] == pytest.approx(np.log(0.5))
    text = (evaluated / "reports" / "evaluation.md").read_text()
    assert "Probes the baseline knows: the 42 familiarity probes whose answer baseline ranks 10 or better" in text
    value_row = next(line for line in text.splitlines() if line.startswith("| probes the baseline knows: top-1"))
    cells = [cell.strip() for cell in value_row.split("|")]
    assert cells[2].startswith("71.4% [") and cells[3] == "0.0% [0.0, 0.0]"
    top1 = parse_params({"corpus": {"forget": ["corpora/forget"]},
                         "evaluate": {"bootstrap": {"resamples": 300}, "known_rank": 1}})
    report.report(top1, root=evaluated, models=("baseline", "unlearned"))
    deltas = json.loads((evaluated / "metrics" / "evaluation_deltas.json").read_text())["unlearned"]
    assert deltas["known_familiarity_top1_rate"]["n"] == 30 and deltas["known_familiarity_top1_rate"]["delta"] == -1.0


def test_the_report_is_deterministic(evaluated: Path):
    report.report(PARAMS, root=evaluated, models=("baseline", "unlearned"))
    first = (evaluated / "reports" / "evaluation.md").read_text()
    report.report(PARAMS, root=evaluated, models=("baseline", "unlearned"))
    assert (evaluated / "reports" / "evaluation.md").read_text() == first


def test_report_needs_every_models_metrics(tmp_path: Path):
    (tmp_path / "metrics" / "evaluation").mkdir(parents=True)
    (tmp_path / "metrics" / "evaluation" / "baseline.json").write_text("{}")
    with pytest.raises(PipelineError, match=r"unlearned\.json: missing"):
        report.report(PARAMS, root=tmp_path, models=("baseline", "unlearned"))
