"""The sweep's pure parts: points validated against params.yaml, stable names, the table."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import ParamsError
from pipeline.tools.sweep import point_row, read_points, read_results, slug, table, unflatten, write_results

ROOT = Path(__file__).resolve().parents[2]


def test_unflatten_nests_dotted_keys():
    assert unflatten({"finetune.retain.weight": 0.0, "dataset.alpha": 2.5}) == {
        "finetune": {"retain": {"weight": 0.0}}, "dataset": {"alpha": 2.5}}


def test_slug_is_stable_and_names_the_default():
    assert slug({}) == "sweep-default"
    assert slug({"finetune.retain.weight": 0.0, "dataset.alpha": 2.5}) == slug({"dataset.alpha": 2.5, "finetune.retain.weight": 0.0})
    assert slug({"dataset.alpha": 2.5}) == "sweep-alpha-2.5"


def test_the_shipped_sweep_is_valid_and_starts_with_the_default():
    points = read_points(ROOT)
    assert points[0] == {}
    assert len({slug(p) for p in points}) == len(points)  # every point has its own experiment


def test_a_point_with_an_invalid_value_is_refused_before_anything_runs(tmp_path: Path):
    (tmp_path / "profiles").mkdir()
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    (tmp_path / "profiles" / "sweep.yaml").write_text("points:\n  - {}\n  - {dataset.alpha: 7.0}\n")
    with pytest.raises(ParamsError, match=r"point 2.*\n.*dataset.alpha \(7.0\) is not one of"):
        read_points(tmp_path)


def test_results_round_trip_and_table_formats_rates_as_percentages(tmp_path: Path):
    params = {"dataset": {"alpha": 5.0}, "finetune": {"label_type": "soft", "learning_rate": 1e-4, "retain": {"weight": 1.0}}}
    metrics = {"familiarity_top1_rate": 0.25, "retain_perplexity": 21.456, "min_k_auc": 0.61}
    path = tmp_path / "sweep.csv"
    write_results(path, [point_row({}, params, metrics)])
    rows = read_results(path)
    assert rows[0]["point"] == "sweep-default" and rows[0]["finetune.retain.weight"] == "1.0"
    text = table(rows, {"baseline": {"familiarity_top1_rate": 0.5, "retain_perplexity": 20.0}})
    lines = text.splitlines()
    assert lines[2].startswith("| *baseline* |") and "50.0%" in lines[2]
    assert "| sweep-default | 5.0 | soft | 0.0001 | 1.0 | 25.0% |" in lines[3] and "21.5" in lines[3]
