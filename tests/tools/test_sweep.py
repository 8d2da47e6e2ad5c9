"""The sweep: points validated against params.yaml, stable names, and a real DVC experiment queue."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from pipeline.errors import ParamsError
from pipeline.tools import sweep
from pipeline.tools.sweep import (
    chosen_point, point_row, read_points, read_results, slug, swept_keys, table, unflatten, write_results,
)
from tests.conftest import REPO, run


def test_unflatten_nests_dotted_keys():
    assert unflatten({"finetune.retain.weight": 0.0, "dataset.alpha": 2.5}) == {
        "finetune": {"retain": {"weight": 0.0}}, "dataset": {"alpha": 2.5}}


def test_slug_is_stable_and_names_the_default():
    assert slug({}) == "sweep-default"
    assert slug({"finetune.retain.weight": 0.0, "dataset.alpha": 2.5}) == slug({"dataset.alpha": 2.5, "finetune.retain.weight": 0.0})
    assert slug({"dataset.alpha": 2.5}) == "sweep-alpha-2.5"


def test_the_shipped_sweep_is_valid_and_starts_with_the_default():
    points = read_points(REPO)
    assert points[0] == {}
    assert len({slug(p) for p in points}) == len(points)  # every point has its own experiment


def test_a_point_with_an_invalid_value_is_refused_before_anything_runs(tmp_path: Path):
    (tmp_path / "profiles").mkdir()
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    (tmp_path / "profiles" / "sweep.yaml").write_text("points:\n  - {}\n  - {dataset.alpha: 7.0}\n")
    with pytest.raises(ParamsError, match=r"point 2.*\n.*dataset.alpha \(7.0\) is not one of"):
        read_points(tmp_path)


def test_swept_keys_are_the_union_in_first_seen_order():
    assert swept_keys([{}, {"b": 1}, {"a": 2, "b": 3}]) == ["b", "a"]


def test_results_round_trip_and_the_table_marks_the_default(tmp_path: Path):
    keys = ["dataset.alpha", "finetune.learning_rate"]
    params = {"dataset": {"alpha": 5.0}, "finetune": {"learning_rate": 1e-4}}
    metrics = {"familiarity_top1_rate": 0.25, "retain_perplexity": 21.456}
    path = tmp_path / "sweep.csv"
    write_results(path, [point_row("sweep-default", keys, params, metrics),
                         point_row("sweep-alpha-2.5", keys, {**params, "dataset": {"alpha": 2.5}}, metrics)], keys)
    rows = read_results(path)
    assert [r["point"] for r in rows] == ["sweep-default", "sweep-alpha-2.5"] and rows[1]["dataset.alpha"] == "2.5"
    chosen = chosen_point(rows, keys, {"dataset": {"alpha": 2.5}, "finetune": {"learning_rate": 1e-4}})
    assert chosen == "sweep-alpha-2.5"
    lines = table(rows, keys, {"familiarity_top1_rate": 0.5}, chosen).splitlines()
    assert lines[2].startswith("| *baseline* |") and "50.0%" in lines[2]
    assert lines[4].startswith("| **sweep-alpha-2.5** (default) | 2.5 | 0.0001 |")
    assert "25.0%" in lines[3] and "21.5" in lines[3]


STAGE = """\
import json, os, yaml
p = yaml.safe_load(open("params.yaml"))
os.makedirs("metrics/evaluation", exist_ok=True)
alpha = p["dataset"]["alpha"]
json.dump({"familiarity_mean_prob": 1 / alpha, "retain_perplexity": 20 + alpha},
          open("metrics/evaluation/unlearned.json", "w"))
json.dump({"familiarity_mean_prob": 0.5, "retain_perplexity": 20.0}, open("metrics/evaluation/baseline.json", "w"))
"""


@pytest.mark.slow
def test_the_sweep_runs_through_the_dvc_queue_and_leaves_the_workspace_alone(tmp_path: Path):
    """Real `dvc exp run --queue` + `dvc queue start` on a one-stage project reading dataset.alpha."""
    root = tmp_path / "project"
    (root / "profiles").mkdir(parents=True)
    params_text = (REPO / "params.yaml").read_text()
    (root / "params.yaml").write_text(params_text)
    (root / "stage.py").write_text(STAGE)
    (root / "profiles" / "sweep.yaml").write_text("points:\n  - {}\n  - {dataset.alpha: 2.5}\n")
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"evaluate": {
        "cmd": f"{sys.executable} stage.py", "deps": ["stage.py"], "params": ["dataset.alpha"],
        "metrics": [{"metrics/evaluation/unlearned.json": {"cache": False}},
                    {"metrics/evaluation/baseline.json": {"cache": False}}]}}}))
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "toy"]):
        run(cmd, root)

    assert sweep.queue(root) == ["sweep-default", "sweep-alpha-2.5"]
    sweep.start(root)
    sweep.wait(root, poll_s=2)
    run(["git", "commit", "-q", "--allow-empty", "-m", "work committed while the sweep ran"], root)
    rows = sweep.collect(root)
    assert (root / "params.yaml").read_text() == params_text  # the workspace is untouched
    by_name = {r["point"]: r for r in rows}
    assert by_name["sweep-alpha-2.5"]["familiarity_mean_prob"] == pytest.approx(0.4)
    assert by_name["sweep-default"]["retain_perplexity"] == pytest.approx(25.0)
    assert sweep.queue(root) == []  # resumable: nothing left to queue
    sweep.report(root)
    assert "**sweep-default** (default)" in (root / "reports" / "sweep.md").read_text()
    assert (root / "reports" / "sweep.png").stat().st_size > 0


def test_every_measure_is_a_key_the_evaluate_stage_writes():
    # The sweep reads these keys from metrics/evaluation/unlearned.json: a renamed headline would
    # leave an empty column and an empty plot without this check.
    from pipeline.core.headlines import HEADLINES

    written = {headline.key for headline in HEADLINES}
    assert set(sweep.MEASURES) <= written, set(sweep.MEASURES) - written
    assert {sweep.FORGOTTEN, *sweep.KEPT} <= set(sweep.MEASURES)  # the plot's axes are table columns
    assert set(sweep.KEPT.values()) <= {"lower", "higher"}


def test_labels_of_close_points_are_told_apart():
    texts = ["default", "trainlayers-None", "weight-10.0", "alpha-10.0"]
    close = [(0.0060, 61.0), (0.0058, 61.1), (0.0061, 60.9), (0.0063, 61.2)]
    places = sweep.label_places(close + [(0.013, 80.0)], texts + ["baseline"])
    assert len(set(places[:4])) == 4  # four crowded labels, four different places
    assert places[4] == (4, 2, "left")  # a lone point keeps the first place
    assert sweep.label_places([(1.0, 1.0)], ["x"]) == [(4, 2, "left")]  # one point: no division by 0
    assert sweep.label_places([], []) == []
    # far apart, every label takes the first place
    assert set(sweep.label_places([(0.0, 0.0), (1.0, 1.0)], ["a", "b"])) == {(4, 2, "left")}
