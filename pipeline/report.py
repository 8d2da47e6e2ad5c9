"""Stage ``report``: the models side by side, with intervals, and every change against the baseline.

``python -m pipeline.report`` reads each model's ``metrics/evaluation/<model>.json`` and
``evaluation_scores_<model>`` (stage ``evaluate``) and writes

* ``reports/evaluation.md``: every headline number with its 95% bootstrap interval, then every
  change against the baseline (the first model) with its paired bootstrap interval (the same
  resampled probes and windows for both models), deltas whose interval contains 0 marked; and
  the same for the *known subset*, the familiarity probes whose answer the baseline ranks in its
  top ``evaluate.known_rank`` (:func:`pipeline.core.headlines.baseline_known`): forgetting
  measured on what the baseline knew;
* ``metrics/evaluation_deltas.json``: those changes, flat, for ``dvc metrics`` and sweeps;
* ``reports/evaluation.png`` and ``plots/evaluation.csv``: familiarity against retain perplexity.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from pipeline.core.bootstrap import Interval
from pipeline.core.headlines import (
    HEADLINES, KNOWN_HEADLINES, Delta, baseline_known, headline_intervals, only_units, paired_deltas,
)
from pipeline.errors import PipelineError
from pipeline.params import Params
from pipeline.stage import run_stage
from pipeline.store import atomic_write_text, read_dataset
from schemas.evaluation import MODELS, RETENTION_MEASURES

STAGE = "report"
PARAMS = ("evaluate.bootstrap", "evaluate.known_rank")
METRICS_DIR = Path("metrics/evaluation")
DELTAS = Path("metrics/evaluation_deltas.json")
REPORT = Path("reports/evaluation.md")
FIGURE = Path("reports/evaluation.png")
PLOT = Path("plots/evaluation.csv")
PLOT_COLUMNS = ("model", "familiarity_top1_rate", "familiarity_mean_prob", "completion_familiarity",
                "verbatim_trained_rouge_l", "retain_perplexity", "general_top1_rate", "near_top1_rate", "min_k_auc")
NO_CHANGE = "†"
"""Marks a change whose paired interval contains 0: no evidence of a change at this confidence."""


def read_metrics(root: Path, models: tuple[str, ...] = MODELS) -> dict[str, dict]:
    found = {}
    for name in models:
        path = root / METRICS_DIR / f"{name}.json"
        try:
            found[name] = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise PipelineError(f"{path}: missing (run `dvc repro evaluate@{name}` first)") from None
        except json.JSONDecodeError as exc:
            raise PipelineError(f"{path}: not valid JSON ({exc.msg})") from None
    return found


# --------------------------------------------------------------------------- formatting


def _number(value: float | None, style: str, *, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    sign = "+" if signed else ""
    return {"pct": f"{100 * value:{sign}.1f}", "prob": f"{value:{sign}.3f}", "num": f"{value:{sign}.2f}"}[style]


def value_cell(estimate: float | None, interval: dict | None, style: str) -> str:
    """``31.0% [25.0, 37.5]``: the estimate and its interval."""
    if estimate is None:
        return "n/a"
    unit = "%" if style == "pct" else ""
    text = _number(estimate, style) + unit
    if interval:
        text += f" [{_number(interval['low'], style)}, {_number(interval['high'], style)}]"
    return text


def delta_cell(delta: Delta | None, style: str) -> str:
    """``-22.0 pt [-28.0, -16.0]`` (and ``, -40% [-52, -27]`` relative), ``†`` when the absolute
    interval contains 0."""
    if delta is None:
        return "n/a"
    a = delta.absolute
    unit = " pt" if style == "pct" else ""
    text = f"{_number(a.estimate, style, signed=True)}{unit} [{_number(a.low, style, signed=True)}, " \
           f"{_number(a.high, style, signed=True)}]"
    r = delta.relative
    if r is not None and not math.isnan(r.estimate) and not math.isnan(r.low):
        text += f", {100 * r.estimate:+.0f}% [{100 * r.low:+.0f}, {100 * r.high:+.0f}]"
    return text + (f" {NO_CHANGE}" if a.contains_zero else "")


def deltas_json(deltas: dict[str, dict[str, Delta | None]]) -> dict:
    """``{model: {headline: {delta, low, high, relative, relative_low, relative_high, n}}}``."""
    out: dict[str, dict] = {}
    for model, by_key in deltas.items():
        out[model] = {}
        for key, delta in by_key.items():
            if delta is None:
                continue
            entry = {"delta": round(delta.absolute.estimate, 6), "low": round(delta.absolute.low, 6),
                     "high": round(delta.absolute.high, 6), "n": delta.n}
            if delta.relative is not None and all(math.isfinite(v) for v in vars(delta.relative).values()):
                entry |= {"relative": round(delta.relative.estimate, 6), "relative_low": round(delta.relative.low, 6),
                          "relative_high": round(delta.relative.high, 6)}
            out[model][key] = entry
    return out


def report_markdown(metrics: dict[str, dict], deltas: dict[str, dict[str, Delta | None]], *,
                    known: dict[str, dict[str, Interval | None]], known_size: int, known_rank: int,
                    trained_stories: list[str], dictionary_probes: list[tuple[str, str]] = (),
                    confidence: float = 0.95, resamples: int = 2000, figure: str = FIGURE.name) -> str:
    """Two tables: values with intervals per model, changes against the first model (the baseline).
    ``known`` holds each model's values on the known subset (``known_size`` probes whose answer
    the baseline ranks ``known_rank`` or better); ``deltas`` holds their changes too;
    ``dictionary_probes`` lists the general and near-collateral probes answered by a
    forget-dictionary term as ``(probe id, terms)``."""
    names = list(metrics)
    base_name, others = names[0], names[1:]
    level = f"{100 * confidence:.0f}%"
    lines = [
        "# Evaluation", "",
        f"Written by `python -m pipeline.report` (stage `report`) from `{METRICS_DIR}/<model>.json` and "
        f"`evaluation_scores_<model>`. Brackets: {level} bootstrap intervals ({resamples} resamples of the "
        "probes or windows). How to read them: docs/evaluation.md.", "",
        f"## Values ({level} interval)", "",
        "| metric | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for h in HEADLINES:
        cells = [value_cell(metrics[n].get(h.key), metrics[n].get("intervals", {}).get(h.key), h.style) for n in names]
        lines.append(f"| {h.label} | " + " | ".join(cells) + " |")
    for h in KNOWN_HEADLINES:
        values = [known.get(n, {}).get(h.key) for n in names]
        cells = [value_cell(v.estimate, {"low": v.low, "high": v.high}, h.style) if v else "n/a" for v in values]
        lines.append(f"| {h.label} | " + " | ".join(cells) + " |")
    lines.append("| completion grades 3 / 2 / 1 / 0 | " + " | ".join(
        " / ".join(str(metrics[n].get("completion_grades", {}).get(g, 0)) for g in "3210") for n in names) + " |")
    if others:
        lines += [
            "", f"## Change against {base_name} (paired {level} interval)", "",
            f"Each model and {base_name} are resampled on the same probes and windows. Absolute change, then "
            f"relative to {base_name} where it means something; {NO_CHANGE}: the interval of the absolute change "
            "contains 0 (no evidence of a change).", "",
            "| metric | " + " | ".join(others) + " |",
            "|---|" + "---|" * len(others),
        ]
        for h in (*HEADLINES, *KNOWN_HEADLINES):
            cells = [delta_cell(deltas[n].get(h.key), h.style) for n in others]
            lines.append(f"| {h.label} | " + " | ".join(cells) + " |")
    sizes = metrics[base_name].get("n", {})
    lines += [
        "", f"Units: {sizes.get('familiarity')} familiarity probes over {sizes.get('stories')} stories "
        f"({sizes.get('familiarity_trained')} of them from the {_stories(sizes.get('stories_trained'))} trained on; "
        f"tiers: {sizes.get('familiarity_tier_known')} known, {sizes.get('familiarity_tier_detail')} detail), "
        f"{sizes.get('completion')} completion, {sizes.get('general')} general, {sizes.get('near')} near-collateral "
        f"probes ({sizes.get('general_heldout', 0)} and {sizes.get('near_heldout', 0)} held out: never used to choose a "
        f"parameter); verbatim windows: {sizes.get('verbatim_trained')} of text trained on, "
        f"{sizes.get('verbatim_untrained')} of forget text never trained on; {sizes.get('retain_windows')} held-out "
        f"retain windows ({sizes.get('retain_tokens')} scored tokens); {sizes.get('training_blocks')} training blocks.",
        "", f"Probes the baseline knows: the {known_size} familiarity probes whose answer {base_name} ranks "
        f"{known_rank} or better (the same probes for every model; docs/evaluation.md).",
        "", "Probes answered by a forget-dictionary term (the fine-tune was asked to forget the term in the "
        "corpus's contexts; the rows \"answers outside the forget dictionary\" leave them out): "
        + (", ".join(f"{unit} ({terms})" for unit, terms in dictionary_probes) if dictionary_probes else "none") + ".",
        "", "Stories trained on: " + (", ".join(trained_stories) if trained_stories else "none") + ".",
        "", f"![familiarity against retain perplexity]({figure})", "",
    ]
    return "\n".join(lines)


def _stories(count: int | None) -> str:
    return "1 story" if count == 1 else f"{count} stories"


def plot_frame(metrics: dict[str, dict]) -> pd.DataFrame:
    return pd.DataFrame([{col: m.get(col) if col != "model" else name for col in PLOT_COLUMNS}
                         for name, m in metrics.items()])


def write_figure(metrics: dict[str, dict], path: Path) -> None:
    """Familiarity (top-1 rate) against retain perplexity, one labelled point per model with its
    intervals as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4), dpi=100)
    for name, m in metrics.items():
        x, y = m.get("familiarity_top1_rate"), m.get("retain_perplexity")
        if x is None or y is None:
            continue
        ix, iy = m.get("intervals", {}).get("familiarity_top1_rate"), m.get("intervals", {}).get("retain_perplexity")
        xerr = [[100 * (x - ix["low"])], [100 * (ix["high"] - x)]] if ix else None
        yerr = [[y - iy["low"]], [iy["high"] - y]] if iy else None
        ax.errorbar(100 * x, y, xerr=xerr, yerr=yerr, fmt="o", capsize=3)
        ax.annotate(name, (100 * x, y), textcoords="offset points", xytext=(6, 4))
    ax.set_xlabel("familiarity probes: top-1 rate (%)")
    ax.set_ylabel("retain perplexity (held-out text)")
    ax.set_title("Forgetting against retention (lower-left is better)")
    ax.margins(0.2)  # room for the labels
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png", metadata={"Software": None})
    plt.close(fig)
    tmp.replace(path)


def report(params: Params, *, root: Path = Path("."), models: tuple[str, ...] = MODELS) -> dict:
    """Write the report, the deltas metrics file, the figure and the plot CSV."""
    boot, known_rank = params.evaluate.bootstrap, params.evaluate.known_rank
    metrics = read_metrics(root, models)
    scores = {name: read_dataset(f"evaluation_scores_{name}", root) for name in models}
    base = scores[models[0]]
    options = {"n_resamples": boot.resamples, "confidence": boot.confidence, "seed": boot.seed}
    known_ids = baseline_known(base, max_rank=known_rank)
    subset = {name: only_units(frame, known_ids) for name, frame in scores.items()}
    known = {name: headline_intervals(frame, headlines=KNOWN_HEADLINES, **options) for name, frame in subset.items()}
    deltas = {name: paired_deltas(scores[name], base, **options)
              | paired_deltas(subset[name], subset[models[0]], headlines=KNOWN_HEADLINES, **options)
              for name in models[1:]}
    familiar = base[base["measure"] == "familiarity"]
    trained = sorted(familiar.loc[familiar["trained"], "story"].unique())
    flagged = base[base["measure"].isin(RETENTION_MEASURES) & (base["answer_terms"] != "")]
    atomic_write_text(root / DELTAS, json.dumps(deltas_json(deltas), indent=2) + "\n")
    atomic_write_text(root / PLOT, plot_frame(metrics).to_csv(index=False))
    write_figure(metrics, root / FIGURE)
    atomic_write_text(root / REPORT, report_markdown(
        metrics, deltas, known=known, known_size=len(known_ids), known_rank=known_rank, trained_stories=trained,
        dictionary_probes=sorted(zip(flagged["unit_id"], flagged["answer_terms"])),
        confidence=boot.confidence, resamples=boot.resamples))
    changed = sum(d is not None and not d.absolute.contains_zero for by_key in deltas.values() for d in by_key.values())
    return {"models": len(metrics), "changes_resolved": changed, "report": str(REPORT)}


if __name__ == "__main__":
    run_stage(STAGE, report)
