"""The parameter sweep behind the frontier plot: forgetting against what the model must keep.

``profiles/sweep.yaml`` lists the points, each a set of overrides of ``params.yaml`` (``{}`` is
the default point). The sweep runs through DVC's experiment queue, so the workspace and git stay
usable while it runs:

* ``python -m pipeline.tools.sweep queue`` validates every point, then queues each one that has
  no experiment yet (``dvc exp run --queue --name sweep-<slug> -S key=value ...``);
* ``python -m pipeline.tools.sweep start`` starts the queue's worker (``dvc queue start -j 1``:
  one at a time, each experiment in its own temporary copy; DVC's run cache skips every stage
  whose inputs did not change);
* ``python -m pipeline.tools.sweep collect`` reads every ``sweep-*`` experiment from
  ``dvc exp show --json`` into ``reports/sweep.csv`` (a point that failed or is still queued has
  no row), and ``report`` writes ``reports/sweep.md`` (the table) and ``reports/sweep.png`` (the
  frontier, with the baseline and the point that matches ``params.yaml`` marked);
* ``run`` does all of it and waits for the queue.

An interrupted sweep resumes: ``queue`` skips the points that already have an experiment.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from io import StringIO
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import ParamsError
from pipeline.params import PARAMS_FILE, parse_params
from pipeline.store import atomic_write_text
from pipeline.tools.profiles import dvc_set_args, flatten, merge

SWEEP_FILE = Path("profiles/sweep.yaml")
RESULTS = Path("reports/sweep.csv")
TABLE, PLOT = Path("reports/sweep.md"), Path("reports/sweep.png")
UNLEARNED_METRICS = "metrics/evaluation/unlearned.json"
BASELINE_METRICS = "metrics/evaluation/baseline.json"
# What the table and the plot show of the unlearned model (keys of its metrics file), with a
# short header.
MEASURES = {
    "familiarity_mean_prob": "mean p(answer)",
    "retain_perplexity": "retain ppl",
    "familiarity_tier_known_mean_prob": "known tier p(answer)",
    "familiarity_top1_rate": "familiarity top-1",
    "completion_familiarity": "completion familiarity",
    "verbatim_trained_rouge_l": "verbatim ROUGE-L",
    "near_top1_rate": "near top-1",
    "general_top1_rate": "general top-1",
    "near_heldout_top1_rate": "held-out near top-1",
}
# The plot: forgetting on the x axis, one panel per measure of what must be kept.
FORGOTTEN = "familiarity_mean_prob"
KEPT = {"retain_perplexity": "lower", "near_top1_rate": "higher"}
PREFIX = "sweep-"
SHOW_COMMITS = 20
"""How many commits back (from HEAD) the sweep looks for its experiments."""


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
        return f"{PREFIX}default"
    parts = [f"{key.rsplit('.', 1)[-1].replace('_', '')}-{value}" for key, value in sorted(point.items())]
    return PREFIX + "-".join(parts).replace("/", "_")


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
    names = [slug(p) for p in points]
    if len(set(names)) != len(names):
        raise ParamsError(f"{path}: two points have the same name: {sorted(n for n in names if names.count(n) > 1)[0]}")
    return points


def swept_keys(points: list[dict[str, Any]]) -> list[str]:
    """Every parameter some point changes, in first-seen order: the table's parameter columns."""
    keys: list[str] = []
    for point in points:
        keys += [key for key in point if key not in keys]
    return keys


def experiments(show: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``dvc exp show --json`` -> ``{name: {"params": ..., "metrics": {file: data}}}`` for every
    finished experiment whose name starts with ``sweep-`` (failed or queued ones are left out)."""
    found: dict[str, dict[str, Any]] = {}
    for baseline in show:
        for group in baseline.get("experiments") or []:
            for rev in group.get("revs") or []:
                name, data = rev.get("name") or "", rev.get("data") or {}
                if not name.startswith(PREFIX) or rev.get("error") or not data.get("metrics"):
                    continue
                metrics = {path: entry.get("data") for path, entry in data["metrics"].items() if "data" in entry}
                params = ((data.get("params") or {}).get(str(PARAMS_FILE)) or {}).get("data") or {}
                if UNLEARNED_METRICS in metrics:
                    found.setdefault(name, {"params": params, "metrics": metrics})
    return found


def point_row(name: str, keys: list[str], params: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
    """One row of ``reports/sweep.csv``: the point's name, the swept parameters, its measures."""
    leaves = dict(flatten(params))
    return {"point": name, **{key: leaves.get(key) for key in keys}, **{key: metrics.get(key) for key in MEASURES}}


def read_results(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def write_results(path: Path, rows: list[dict[str, Any]], keys: list[str]) -> None:
    buffer = StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["point", *keys, *MEASURES], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def _dvc(root: Path, *args: str, capture: bool = False) -> str:
    result = subprocess.run(["dvc", *args], cwd=root, check=True, text=True,
                            stdout=subprocess.PIPE if capture else None)
    return result.stdout or ""


def _show(root: Path) -> list[dict[str, Any]]:
    # Experiments hang off the commit they were queued on; commits made while the sweep runs
    # (the workspace and git stay usable) must not hide them. Newest commit first, so a point
    # rerun on a later commit wins (:func:`experiments` keeps the first of each name).
    return json.loads(_dvc(root, "exp", "show", "--json", "-n", str(SHOW_COMMITS), capture=True) or "[]")


def queue(root: Path = Path(".")) -> list[str]:
    """Queue every point that has no experiment yet; returns the names queued."""
    points = read_points(root)
    existing = set(experiments(_show(root)))
    queued = []
    for point in points:
        name = slug(point)
        if name in existing:
            print(f"{name}: has an experiment already", flush=True)
            continue
        args = dvc_set_args(flatten(unflatten(point))) if point else []
        _dvc(root, "exp", "run", "--queue", "--name", name, *args)
        queued.append(name)
    return queued


def start(root: Path = Path("."), *, jobs: int = 1) -> None:
    _dvc(root, "queue", "start", "--jobs", str(jobs))


def wait(root: Path = Path("."), *, poll_s: float = 30.0) -> None:
    """Until no task is queued or running (``dvc queue status``)."""
    while True:
        status = _dvc(root, "queue", "status", capture=True)
        if not any(word in status for word in (" Queued", " Running")):
            return
        time.sleep(poll_s)


def collect(root: Path = Path(".")) -> list[dict[str, Any]]:
    """Every finished sweep experiment, in the order of the points, into ``reports/sweep.csv``."""
    points = read_points(root)
    keys = swept_keys(points)
    found = experiments(_show(root))
    rows = [point_row(slug(p), keys, found[slug(p)]["params"], found[slug(p)]["metrics"][UNLEARNED_METRICS])
            for p in points if slug(p) in found]
    write_results(root / RESULTS, rows, keys)
    baseline = next((e["metrics"].get(BASELINE_METRICS) for e in found.values() if e["metrics"].get(BASELINE_METRICS)), None)
    if baseline is not None:
        atomic_write_text(root / RESULTS.with_name("sweep_baseline.json"), json.dumps(baseline, indent=1, sort_keys=True) + "\n")
    return rows


def _number(value: Any) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _format(key: str, value: Any) -> str:
    number = _number(value)
    if number is None:
        return ""
    return f"{number:.1%}" if key.endswith("_rate") else f"{number:.3g}"


def chosen_point(rows: list[dict[str, str]], keys: list[str], params: dict[str, Any]) -> str | None:
    """The point whose swept parameters equal ``params.yaml``'s: the shipped default."""
    leaves = {key: str(value) for key, value in flatten(params)}
    for row in rows:
        if all(leaves.get(key) == row.get(key) for key in keys):
            return row["point"]
    return None


def table(rows: list[dict[str, str]], keys: list[str], baseline: dict[str, Any] | None, chosen: str | None) -> str:
    """The report's table: the baseline first, then every point; the shipped default in bold."""
    header = ["point", *(key.split(".", 1)[-1] for key in keys), *MEASURES.values()]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    if baseline is not None:
        lines.append("| " + " | ".join(["*baseline*", *([""] * len(keys)),
                                        *(_format(k, baseline.get(k)) for k in MEASURES)]) + " |")
    for row in rows:
        name = f"**{row['point']}** (default)" if row["point"] == chosen else row["point"]
        lines.append("| " + " | ".join([name, *(row.get(k) or "" for k in keys),
                                        *(_format(k, row.get(k)) for k in MEASURES)]) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, str]], baseline: dict[str, Any] | None, chosen: str | None, path: Path) -> None:
    """The frontier: forgetting (x) against each measure of what the model keeps (one panel each)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, panels = plt.subplots(1, len(KEPT), figsize=(6 * len(KEPT), 4.5), squeeze=False)
    for axes, (y_key, better) in zip(panels[0], KEPT.items()):
        shown = [(r, (x, y)) for r in rows
                 if (x := _number(r.get(FORGOTTEN))) is not None and (y := _number(r.get(y_key))) is not None]
        names = [r["point"].removeprefix(PREFIX) for r, _ in shown]
        places = label_places([p for _, p in shown], names)
        for (row, (x, y)), name, (dx, dy, align) in zip(shown, names, places):
            is_chosen = row["point"] == chosen
            axes.scatter(x, y, color="tab:red" if is_chosen else "tab:blue", marker="*" if is_chosen else "o",
                         s=160 if is_chosen else 30, zorder=3, label="default (params.yaml)" if is_chosen else None)
            axes.annotate(name, (x, y), fontsize=7, xytext=(dx, dy), textcoords="offset points", ha=align)
        if baseline is not None and None not in (_number(baseline.get(FORGOTTEN)), _number(baseline.get(y_key))):
            axes.scatter(baseline[FORGOTTEN], baseline[y_key], marker="s", color="black", label="baseline")
        axes.set_xlabel(f"{MEASURES[FORGOTTEN]} on the familiarity probes (lower = forgotten)")
        axes.set_ylabel(f"{MEASURES[y_key]} ({better} = kept)")
        axes.legend(loc="best", fontsize=8)
        axes.grid(alpha=0.3)
    figure.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    figure.savefig(tmp, dpi=120)
    plt.close(figure)
    tmp.replace(path)


_PANEL_POINTS = (400.0, 300.0)
"""A panel's plotting area in typographic points (6 x 4.5 inches, less the axes' margins)."""
_LABEL_PLACES = ((4, 2, "left"), (4, -9, "left"), (-4, 2, "right"), (-4, -9, "right"), (4, 11, "left"),
                 (4, -18, "left"), (-4, 11, "right"), (-4, -18, "right"))
"""Where a label may go, tried in order: (x, y) offset from its point in points, and alignment."""


def label_places(points: list[tuple[float, float]], texts: list[str], *, char_width: float = 3.9,
                 line_height: float = 8.0) -> list[tuple[float, float, str]]:
    """An offset and alignment per label (7-point text): the first of :data:`_LABEL_PLACES`
    whose box overlaps no label placed before it and no other point's marker; the first place
    when every place is taken. Points are scaled to the panel, the box sized from the text."""
    xs, ys = [x for x, _ in points] or [0.0], [y for _, y in points] or [0.0]
    width, height = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0
    at = [((x - min(xs)) / width * _PANEL_POINTS[0], (y - min(ys)) / height * _PANEL_POINTS[1]) for x, y in points]
    markers = [(x - 4, y - 4, x + 4, y + 4) for x, y in at]
    boxes: list[tuple[float, float, float, float]] = []
    places = []
    for k, ((x, y), text) in enumerate(zip(at, texts)):
        length = char_width * len(text)
        taken = boxes + [m for j, m in enumerate(markers) if j != k]
        for dx, dy, align in (*_LABEL_PLACES, _LABEL_PLACES[0]):
            left = x + dx if align == "left" else x + dx - length
            box = (left, y + dy, left + length, y + dy + line_height)
            if not any(_overlap(box, other) for other in taken):
                break
        boxes.append(box)
        places.append((dx, dy, align))
    return places


def _overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def report(root: Path = Path(".")) -> None:
    rows = read_results(root / RESULTS)
    if not rows:
        raise ParamsError(f"{root / RESULTS}: no sweep results yet (run `python -m pipeline.tools.sweep run`)")
    keys = swept_keys(read_points(root))
    baseline_file = root / RESULTS.with_name("sweep_baseline.json")
    baseline = json.loads(baseline_file.read_text(encoding="utf-8")) if baseline_file.exists() else None
    chosen = chosen_point(rows, keys, yaml.safe_load((root / PARAMS_FILE).read_text(encoding="utf-8")))
    atomic_write_text(root / TABLE, table(rows, keys, baseline, chosen))
    plot(rows, baseline, chosen, root / PLOT)
    print((root / TABLE).read_text(encoding="utf-8"))


def run(root: Path = Path(".")) -> None:
    queue(root)
    start(root)
    wait(root)
    collect(root)
    report(root)


def main(argv: list[str]) -> int:
    commands = {"queue": queue, "start": start, "collect": collect, "report": report, "run": run}
    if len(argv) != 1 or argv[0] not in commands:
        print(f"usage: python -m pipeline.tools.sweep {'|'.join(commands)}", file=sys.stderr)
        return 2
    try:
        commands[argv[0]]()
    except ParamsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
