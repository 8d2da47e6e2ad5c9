"""README's results block, regenerated from the evaluation report."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipeline.core.headlines import BY_KEY, HEADLINES, KNOWN_HEADLINES
from pipeline.errors import PipelineError
from pipeline.tools import results
from pipeline.tools.results import END, ROWS, START, main, replace_block, results_block
from tests.conftest import REPO


def _report(skip: str | None = None) -> str:
    rows = [h for h in (*HEADLINES, *KNOWN_HEADLINES) if h.key != skip]
    values = ["| metric | baseline | reinforced | unlearned |", "|---|---|---|---|"]
    values += [f"| {h.label} | base-{h.key} | reinf-{h.key} | unl-{h.key} |" for h in rows]
    changes = ["| metric | reinforced | unlearned |", "|---|---|---|"]
    changes += [f"| {h.label} | d-reinf-{h.key} | d-unl-{h.key} † |" for h in rows]
    return "\n".join(["# Evaluation", "", "## Values", "", *values, "", "## Change", "", *changes, ""])


def test_each_row_takes_the_baseline_value_and_the_unlearned_change():
    block = results_block(_report()).splitlines()
    assert len(block) == 2 + len(ROWS)
    for key, line in zip(ROWS, block[2:]):
        assert line == f"| {BY_KEY[key].label.strip()} | base-{key} | d-unl-{key} † |"


def test_a_report_without_a_row_names_the_headline():
    with pytest.raises(PipelineError, match="verbatim_trained_rouge_l"):
        results_block(_report(skip="verbatim_trained_rouge_l"))


def test_the_block_is_replaced_between_the_markers_and_nothing_else_changes():
    readme = f"# Title\n\nbefore\n{START}\nold table\n{END}\nafter\n"
    assert replace_block(readme, "new") == f"# Title\n\nbefore\n{START}\nnew\n{END}\nafter\n"
    with pytest.raises(PipelineError, match="exactly one"):
        replace_block("no markers\n", "new")


def test_check_fails_until_the_readme_is_regenerated(tmp_path: Path):
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "evaluation.md").write_text(_report(), encoding="utf-8")
    (tmp_path / "README.md").write_text(f"intro\n{START}\nstale\n{END}\n", encoding="utf-8")
    assert main(["--check"], tmp_path) == 1
    assert main([], tmp_path) == 0
    assert main(["--check"], tmp_path) == 0
    assert "base-known_familiarity_mean_prob" in (tmp_path / "README.md").read_text(encoding="utf-8")


def test_the_committed_readme_shows_the_committed_report(tmp_path: Path):
    for name in (results.README, results.REPORT):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, tmp_path / name)
    assert main(["--check"], tmp_path) == 0, "run `python -m pipeline.tools.results` after `dvc repro`"
