"""The parameter sweep behind the README's frontier plot: familiarity against retain perplexity.

``profiles/sweep.yaml`` lists the points, each a set of overrides of ``params.yaml`` (``{}`` is
the default point). ``python -m pipeline.tools.sweep run`` runs every point as a DVC experiment in
the workspace (``dvc exp run --name sweep-<slug> -S key=value ...``; DVC reruns only the stages
whose parameters changed, usually ``dataset``, ``finetune`` and ``evaluate@unlearned``) and
appends the point's metrics to ``reports/sweep.csv`` as soon as it finishes, so an interrupted
sweep resumes at the first point without a row. Each point starts from the original
``params.yaml``, which is put back at the end, and a final ``dvc repro`` restores the default
outputs (from DVC's run cache, without training).
``python -m pipeline.tools.sweep report`` writes ``reports/sweep.md`` (the table) and
``reports/sweep.png`` (the plot, with the baseline and the reinforced model as references).
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import ParamsError
from pipeline.params import PARAMS_FILE, parse_params
from pipeline.tools.profiles import dvc_set_args, flatten, merge
from pipeline.store import atomic_write_text

SWEEP_FILE = Path("profiles/sweep.yaml")
RESULTS = Path("reports/sweep.csv")
TABLE, PLOT = Path("reports/sweep.md"), Path("reports/sweep.png")
METRICS = Path("metrics/evaluation")
# Columns of the table: the swept parameters, then what was measured on the unlearned model.
PARAMETERS = ("dataset.alpha", "finetune.label_type", "finetune.learning_rate", "finetune.retain.weight")
MEASURES = ("familiarity_top1_rate", "familiarity_mean_prob", "completion_familiarity", "retain_perplexity",
            "general_top1_rate", "min_k_auc")


def unflatten(point: dict[str, Any]) -> dict[str, Any]:
    """``{"a.b": 1}`` -> ``{"a": {"b": 1}}``."""
    nested: dict[str, Any] = {}
    for dotted, value in point.items():
        *parents, leaf = dotted.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def slug(point: dict[str, Any]) -> str:
    """A stable experiment name for a point: ``sweep-default``, ``sweep-alpha-2.5-weight-0.0``."""
    if not point:
        return "sweep-default"
    parts = [f"{key.rsplit('.', 1)[-1].replace('_', '')}-{value}" for key, value in sorted(point.items())]
    return "sweep-" + "-".join(parts).replace("/", "_")


def read_points(root: Path = Path(".")) -> list[dict[str, Any]]:
    """The sweep's points, each validated against params.yaml before anything runs."""
    path = root / SWEEP_FILE
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    points = raw.get("points") if isinstance(raw, dict) else None
    if not isinstance(points, list) or not all(isinstance(p, dict) for p in points):
        raise ParamsError(f"{path}: expected `points:`, a list of mappings of dotted keys to values")
    base = yaml.safe_load((root / PARAMS_FILE).read_text(encoding="utf-8"))
    for number, point in enumerate(points, start=1):
        parse_params(merge(base, unflatten(point)), source=f"{PARAMS_FILE} with {path} point {number}")
    return points


def point_row(point: dict[str, Any], params: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
    """One row of ``reports/sweep.csv``: the point's name, its swept parameters, its measures."""
    leaves = dict(flatten(params))
    row = {"point": slug(point)}
    row.update({key: leaves.get(key) for key in PARAMETERS})
    row.update({key: metrics.get(key) for key in MEASURES})
    return row


def read_results(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def write_results(path: Path, rows: list[dict[str, Any]]) -> None:
    from io import StringIO

    buffer = StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["point", *PARAMETERS, *MEASURES], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def run(root: Path = Path(".")) -> None:
    points = read_points(root)
    results = root / RESULTS
    params_file = root / PARAMS_FILE
    # `dvc exp run -S` edits params.yaml in place; every point starts from the original text.
    original = params_file.read_text(encoding="utf-8")
    done = {row["point"] for row in read_results(results)}
    try:
        for point in points:
            name = slug(point)
            if name in done:
                print(f"{name}: done already ({RESULTS})")
                continue
            atomic_write_text(params_file, original)
            args = dvc_set_args(flatten(unflatten(point))) if point else []
            print(f"{name}: dvc exp run {' '.join(args)}", flush=True)
            subprocess.run(["dvc", "exp", "run", "--name", name, *args], cwd=root, check=True)
            params = yaml.safe_load(params_file.read_text(encoding="utf-8"))
            metrics = json.loads((root / METRICS / "unlearned.json").read_text(encoding="utf-8"))
            write_results(results, read_results(results) + [point_row(point, params, metrics)])
            done.add(name)
    finally:
        atomic_write_text(params_file, original)
    # Leave the outputs on the default parameters too (DVC's run cache restores them).
    subprocess.run(["dvc", "repro"], cwd=root, check=True)


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


def table(rows: list[dict[str, str]], references: dict[str, dict[str, Any]]) -> str:
    """The README/report table: references first, then every sweep point."""
    header = ["point", "alpha", "labels", "lr", "retain weight", "familiarity top-1", "mean p(answer)",
              "completion familiarity", "retain ppl", "general top-1", "Min-K% AUC"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def measures(source: dict[str, Any]) -> list[str]:
        out = []
        for key in MEASURES:
            value = _number(source.get(key)) if isinstance(source.get(key), str) else source.get(key)
            out.append("" if value is None else (f"{value:.1%}" if key.endswith("_rate") else f"{value:.3g}"))
        return out

    for name, metrics in references.items():
        lines.append("| " + " | ".join([f"*{name}*", "", "", "", "", *measures(metrics)]) + " |")
    for row in rows:
        lines.append("| " + " | ".join([row["point"], row["dataset.alpha"], row["finetune.label_type"],
                                        row["finetune.learning_rate"], row["finetune.retain.weight"], *measures(row)]) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, str]], references: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for row in rows:
        x, y = _number(row["familiarity_top1_rate"]), _number(row["retain_perplexity"])
        if x is not None and y is not None:
            axes.scatter(x, y, color="tab:blue")
            axes.annotate(row["point"].removeprefix("sweep-"), (x, y), fontsize=7, xytext=(4, 2), textcoords="offset points")
    for (name, metrics), colour in zip(references.items(), ("black", "tab:red")):
        axes.scatter(metrics["familiarity_top1_rate"], metrics["retain_perplexity"], marker="s", color=colour, label=name)
    axes.set_xlabel("familiarity: top-1 rate of the true continuation (lower = forgotten)")
    axes.set_ylabel("retain perplexity (lower = kept)")
    axes.legend()
    axes.grid(alpha=0.3)
    figure.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    figure.savefig(tmp, dpi=120)
    plt.close(figure)
    tmp.replace(path)


def report(root: Path = Path(".")) -> None:
    rows = read_results(root / RESULTS)
    if not rows:
        raise ParamsError(f"{root / RESULTS}: no sweep results yet (run `python -m pipeline.tools.sweep run`)")
    references = {}
    for name in ("baseline", "reinforced"):
        path = root / METRICS / f"{name}.json"
        if path.exists():
            references[name] = json.loads(path.read_text(encoding="utf-8"))
    atomic_write_text(root / TABLE, table(rows, references))
    plot(rows, references, root / PLOT)
    print((root / TABLE).read_text(encoding="utf-8"))


def main(argv: list[str]) -> int:
    commands = {"run": run, "report": report}
    if len(argv) != 1 or argv[0] not in commands:
        print("usage: python -m pipeline.tools.sweep run|report", file=sys.stderr)
        return 2
    try:
        commands[argv[0]]()
    except ParamsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
