"""Stage ``evaluate``: what a model knows of the forget corpus, and what it kept.

``python -m pipeline.evaluate <model>`` evaluates ``models/<model>`` (``dvc repro`` runs it for
``baseline``, ``reinforced`` and ``unlearned``, a DVC ``foreach``) and writes

* ``metrics/evaluation/<model>.json``: familiarity by probability (top-1 rate, mean probability
  and rank of the true continuation over ``evaluate.probes.familiarity``), familiarity by
  completion ((5 x count(3) + count(2)) / N over ``evaluate.probes.completion``, with the count
  of each grade), retention (perplexity on held-out ``retain_blocks``; top-1 rate and mean
  probability on the general and near-collateral probes), leakage (Min-K% Prob membership AUC,
  forget ``blocks`` against held-out retain blocks), the size of each set and the timings;
* ``evaluation_completions_<model>``: every completion with its grade and the terms that
  decided it (the input of the ``evaluation`` review project).

``python -m pipeline.evaluate report`` reads the three metrics files and writes
``reports/evaluation.md`` (before/after table with deltas against the baseline),
``reports/evaluation.png`` and ``plots/evaluation.csv`` (familiarity against retain perplexity,
for ``dvc plots``). The metrics themselves are :mod:`pipeline.core.metrics`.
"""

from __future__ import annotations

import functools
import json
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.core import metrics as evaluation
from pipeline.stage import run_stage
from pipeline.errors import PipelineError
from pipeline.models import load_model, load_tokenizer
from pipeline.paths import model_dir
from pipeline.params import Params, section_dict
from pipeline.core.sampling import spread_sample
from pipeline.store import DatasetWriter, atomic_write_text, read_dataset
from schemas.evaluation import MODELS, completions_contract

STAGE = "evaluate"
PARAMS = ("evaluate",)
REPORT_PARAMS: tuple[str, ...] = ()  # stage `report` reads only the metrics files
METRICS_DIR = Path("metrics/evaluation")
REPORT = Path("reports/evaluation.md")
FIGURE = Path("reports/evaluation.png")
PLOT = Path("plots/evaluation.csv")
_SAMPLE_SEED = 0  # which blocks a cap keeps: fixed, so every model sees the same blocks
_KINDS = ("general", "near")


class ProbeError(PipelineError):
    """A probe file is missing or malformed; the message names the file, line and problem."""


# --------------------------------------------------------------------------- probe files


@dataclass(frozen=True)
class Probe:
    """One probe: ``answer`` for probability probes, ``keywords`` for completion probes."""

    id: str
    prompt: str
    answer: str | None = None
    keywords: tuple[str, ...] = field(default=())
    kind: str | None = None


_FIELDS = {"familiarity": ("answer",), "completion": ("keywords",), "general": ("answer", "kind")}


def read_probes(path: Path | str, kind: str) -> list[Probe]:
    """Read a probe file of ``kind`` (``familiarity``, ``completion`` or ``general``).

    Raises :class:`ProbeError` naming the file and line for a missing or empty file, a line that
    is not a JSON object, a missing or empty field, a wrong type or a duplicate id.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ProbeError(f"{path}: probe file not found (evaluate.probes.{kind} in params.yaml)") from None
    except UnicodeDecodeError as exc:
        raise ProbeError(f"{path}: not valid UTF-8 at byte offset {exc.start}") from None
    probes, seen = [], {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ProbeError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(record, dict):
            raise ProbeError(f"{where}: expected a JSON object, got {type(record).__name__}")
        values = {name: _text_field(record, name, where) for name in ("id", "prompt")}
        for name in _FIELDS[kind]:
            if name == "keywords":
                values[name] = _keywords(record, where)
            else:
                values[name] = _text_field(record, name, where)
        if kind == "general" and values["kind"] not in _KINDS:
            raise ProbeError(f"{where}: field 'kind' must be one of {', '.join(_KINDS)} (got {values['kind']!r})")
        if values["id"] in seen:
            raise ProbeError(f"{where}: duplicate id {values['id']!r} (first on line {seen[values['id']]})")
        seen[values["id"]] = number
        probes.append(Probe(**values))
    if not probes:
        raise ProbeError(f"{path}: no probes (an empty file)")
    return probes


def _text_field(record: dict, name: str, where: str) -> str:
    if name not in record:
        raise ProbeError(f"{where}: missing field {name!r}")
    value = record[name]
    if not isinstance(value, str):
        raise ProbeError(f"{where}: field {name!r} must be a string (got {type(value).__name__})")
    if not value.strip():
        raise ProbeError(f"{where}: field {name!r} is empty")
    return value


def _keywords(record: dict, where: str) -> tuple[str, ...]:
    value = record.get("keywords")
    if "keywords" not in record:
        raise ProbeError(f"{where}: missing field 'keywords'")
    if not isinstance(value, list) or not value or not all(isinstance(k, str) and k.strip() for k in value):
        raise ProbeError(f"{where}: field 'keywords' must be a non-empty list of non-empty strings (got {value!r})")
    return tuple(value)


def read_terms(path: Path | str) -> list[str]:
    """One term a line; blank lines and ``#`` comments skipped."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProbeError(f"{path}: term list not found (evaluate.probes.genre_terms in params.yaml)") from None
    except UnicodeDecodeError as exc:
        raise ProbeError(f"{path}: not valid UTF-8 at byte offset {exc.start}") from None
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def encode_pairs(tokenizer, probes: list[Probe], path: Path | str) -> list[tuple[list[int], list[int]]]:
    """``(prompt_ids, answer_ids)`` per probe: the prompt as the tokenizer encodes it by default
    (with BOS where the model expects one), the answer alone without special tokens."""
    pairs = []
    for probe in probes:
        prompt = tokenizer(probe.prompt)["input_ids"]
        answer = tokenizer(probe.answer, add_special_tokens=False)["input_ids"]
        if not prompt or not answer:
            raise ProbeError(f"{path}: probe {probe.id!r}: its {'prompt' if not prompt else 'answer'} has no tokens")
        pairs.append((prompt, answer))
    return pairs


# --------------------------------------------------------------------------- one model


def _pad_id(tokenizer) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return candidate
    return 0


def _round(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(float(value), digits)


def evaluation_blocks(params: Params, root: Path) -> tuple[list[list[int]], list[list[int]]]:
    """Forget blocks (members) and held-out retain blocks (non-members), capped and spread."""
    settings = params.evaluate
    forget = read_dataset("blocks", root, columns=["block_id", "doc_id", "index", "input_ids"])
    retain = read_dataset("retain_blocks", root, columns=["block_id", "doc_id", "index", "input_ids", "split"])
    retain = retain[retain["split"] == "heldout"].drop(columns="split")
    chosen = []
    for frame, limit in ((forget, settings.max_forget_blocks), (retain, settings.max_retain_blocks)):
        rows = spread_sample(frame.to_dict("records"), limit, seed=_SAMPLE_SEED)
        chosen.append([list(r["input_ids"]) for r in rows if len(r["input_ids"]) >= 2])
    return chosen[0], chosen[1]


def evaluate_model(params: Params, model_name: str, *, root: Path = Path(".")) -> dict[str, Any]:
    """Evaluate ``models/<model_name>``; write its metrics file and completions dataset."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", model_name):
        raise PipelineError(f"model name {model_name!r}: use letters, digits, '_', '.', '-' (a folder under models/)")
    settings = params.evaluate
    probes = settings.probes
    # Read every input before the (slow) model load: a bad probe file fails at once.
    familiar = read_probes(root / probes.familiarity, "familiarity")
    completion = read_probes(root / probes.completion, "completion")
    general = read_probes(root / probes.general, "general")
    genre_terms = read_terms(root / probes.genre_terms)
    dictionary = read_dataset("dictionary", root, columns=["anchor", "variants", "forget_count"])
    documents = read_dataset("documents", root, columns=["corpus", "text"])
    corpus_words = sum(len(re.findall(r"\w+", text)) for text in documents.loc[documents["corpus"] == "forget", "text"])
    forget_blocks, retain_blocks = evaluation_blocks(params, root)

    from wordfreq import zipf_frequency

    anchor_terms, weak_terms = evaluation.grading_terms(
        zip(dictionary["anchor"], dictionary["variants"], dictionary["forget_count"]), genre_terms,
        zipf=lambda term: zipf_frequency(term, "en"), corpus_words=corpus_words,
        min_specificity=settings.min_anchor_specificity, common_phrase_zipf=settings.common_phrase_zipf,
    )
    anchors, genre, weak = (evaluation.TermMatcher(t) for t in (anchor_terms, genre_terms, weak_terms))

    folder = root / model_dir(model_name)
    tokenizer = load_tokenizer(folder)
    model = load_model(folder)
    pad_id, batch = _pad_id(tokenizer), settings.batch_size
    seconds: dict[str, float] = {}
    started = time.perf_counter()

    clock = time.perf_counter()
    familiar_scores = evaluation.score_answers(
        model, encode_pairs(tokenizer, familiar, root / probes.familiarity), batch_size=batch, pad_id=pad_id)
    seconds["familiarity"] = time.perf_counter() - clock

    clock = time.perf_counter()
    general_scores = evaluation.score_answers(
        model, encode_pairs(tokenizer, general, root / probes.general), batch_size=batch, pad_id=pad_id)
    seconds["general"] = time.perf_counter() - clock

    clock = time.perf_counter()
    texts = evaluation.generate_completions(
        model, tokenizer, [p.prompt for p in completion], max_new_tokens=settings.max_new_tokens, batch_size=batch)
    graded = [evaluation.grade_completion(text, anchors, p.keywords, genre, weak_terms=weak, prompt=p.prompt)
              for p, text in zip(completion, texts)]
    seconds["completion"] = time.perf_counter() - clock

    clock = time.perf_counter()
    forget_lp = evaluation.token_logprobs(model, forget_blocks, batch_size=batch, pad_id=pad_id)
    retain_lp = evaluation.token_logprobs(model, retain_blocks, batch_size=batch, pad_id=pad_id)
    k = settings.min_k_percent
    auc = evaluation.membership_auc([evaluation.min_k_score(lp, k) for lp in forget_lp],
                                    [evaluation.min_k_score(lp, k) for lp in retain_lp])
    seconds["blocks"] = time.perf_counter() - clock
    seconds["total"] = time.perf_counter() - started

    fam = evaluation.summarise_scores(familiar_scores)
    by_kind = {kind: evaluation.summarise_scores([s for s, p in zip(general_scores, general) if p.kind == kind])
               for kind in _KINDS}
    grades = [g for g, _ in graded]
    metrics = {
        "model": model_name,
        "familiarity_top1_rate": _round(fam["top1_rate"]),
        "familiarity_mean_prob": _round(fam["mean_prob"]),
        "familiarity_mean_answer_prob": _round(fam["mean_answer_prob"]),
        "familiarity_mean_rank": _round(fam["mean_rank"], 2),
        "completion_familiarity": _round(evaluation.familiarity(grades)),
        "completion_grades": {str(g): grades.count(g) for g in (3, 2, 1, 0)},
        "retain_perplexity": _round(evaluation.perplexity(retain_lp), 4),
        "forget_perplexity": _round(evaluation.perplexity(forget_lp), 4),
        "general_top1_rate": _round(by_kind["general"]["top1_rate"]),
        "general_mean_prob": _round(by_kind["general"]["mean_prob"]),
        "near_top1_rate": _round(by_kind["near"]["top1_rate"]),
        "near_mean_prob": _round(by_kind["near"]["mean_prob"]),
        "min_k_auc": _round(auc),
        "n": {"familiarity": len(familiar), "completion": len(completion), "general": by_kind["general"]["n"],
              "near": by_kind["near"]["n"], "forget_blocks": len(forget_blocks), "retain_blocks": len(retain_blocks),
              "retain_tokens": int(sum(len(lp) for lp in retain_lp))},
        "seconds": {key: round(value, 2) for key, value in seconds.items()},
        "device": str(next(model.parameters()).device),
    }

    rows = [{"model": model_name, "probe_id": p.id, "prompt": p.prompt, "completion": text, "grade": grade,
             "matched_terms": list(terms)} for p, text, (grade, terms) in zip(completion, texts, graded)]
    used = section_dict(params, *PARAMS) | {"model": model_name}
    with DatasetWriter(completions_contract(model_name), stage=f"{STAGE}@{model_name}", params=used, root=root) as writer:
        writer.write(pd.DataFrame(rows))
    atomic_write_text(root / METRICS_DIR / f"{model_name}.json", json.dumps(metrics, indent=2) + "\n")
    return metrics


def run(params: Params, *, model: str, root: Path = Path(".")) -> dict:
    metrics = evaluate_model(params, model, root=root)
    keys = ("familiarity_top1_rate", "familiarity_mean_prob", "completion_familiarity", "retain_perplexity",
            "general_top1_rate", "near_top1_rate", "min_k_auc")
    return {key: metrics[key] for key in keys} | {"seconds": metrics["seconds"]["total"]}


# --------------------------------------------------------------------------- report

_TABLE = (
    ("familiarity_top1_rate", "familiarity probes: top-1 rate", "pct"),
    ("familiarity_mean_prob", "familiarity probes: mean p(first answer token)", "prob"),
    ("familiarity_mean_rank", "familiarity probes: mean rank of the answer", "num"),
    ("completion_familiarity", "completion familiarity, (5 x n3 + n2) / N", "num"),
    ("retain_perplexity", "retain perplexity (held-out blocks)", "num"),
    ("general_top1_rate", "general knowledge: top-1 rate", "pct"),
    ("general_mean_prob", "general knowledge: mean p(first answer token)", "prob"),
    ("near_top1_rate", "near-collateral: top-1 rate", "pct"),
    ("near_mean_prob", "near-collateral: mean p(first answer token)", "prob"),
    ("min_k_auc", "leakage: Min-K% membership AUC", "prob"),
)
PLOT_COLUMNS = ("model", "familiarity_top1_rate", "completion_familiarity", "retain_perplexity",
                "general_top1_rate", "near_top1_rate", "min_k_auc")


def _cell(value: float | None, style: str) -> str:
    if value is None:
        return "n/a"
    return {"pct": f"{100 * value:.1f}%", "prob": f"{value:.3f}", "num": f"{value:.2f}"}[style]


def _delta(value: float | None, base: float | None, style: str) -> str:
    if value is None or base is None:
        return ""
    diff = value - base
    text = {"pct": f"{100 * diff:+.1f} pt", "prob": f"{diff:+.3f}", "num": f"{diff:+.2f}"}[style]
    if style == "num" and base:
        text += f", {100 * diff / base:+.0f}%"
    return f" ({text})"


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


def report_markdown(metrics: dict[str, dict], *, figure: str = FIGURE.name) -> str:
    """The before/after table (deltas against the first model, the baseline) and the plot."""
    names = list(metrics)
    base = metrics[names[0]]
    lines = [
        "# Evaluation", "",
        f"Written by `python -m pipeline.evaluate report` (stage `report`) from `{METRICS_DIR}/<model>.json`; "
        f"deltas against {names[0]}. Probe sets and metrics: README, Evaluation.", "",
        "| metric | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for key, label, style in _TABLE:
        cells = [_cell(base.get(key), style)]
        cells += [_cell(metrics[n].get(key), style) + _delta(metrics[n].get(key), base.get(key), style) for n in names[1:]]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("| completion grades 3 / 2 / 1 / 0 | " + " | ".join(
        " / ".join(str(metrics[n].get("completion_grades", {}).get(g, 0)) for g in "3210") for n in names) + " |")
    sizes = base.get("n", {})
    lines += [
        "", f"Probes: {sizes.get('familiarity')} familiarity, {sizes.get('completion')} completion, "
        f"{sizes.get('general')} general, {sizes.get('near')} near-collateral; blocks: {sizes.get('forget_blocks')} "
        f"forget, {sizes.get('retain_blocks')} held-out retain ({sizes.get('retain_tokens')} scored tokens).",
        "", f"![familiarity against retain perplexity]({figure})", "",
    ]
    return "\n".join(lines)


def plot_frame(metrics: dict[str, dict]) -> pd.DataFrame:
    return pd.DataFrame([{col: m.get(col) if col != "model" else name for col in PLOT_COLUMNS}
                         for name, m in metrics.items()])


def write_figure(frame: pd.DataFrame, path: Path) -> None:
    """Familiarity (top-1 rate) against retain perplexity, one labelled point per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4), dpi=100)
    for row in frame.itertuples(index=False):
        if row.familiarity_top1_rate is None or row.retain_perplexity is None or pd.isna(row.retain_perplexity):
            continue
        ax.scatter(100 * row.familiarity_top1_rate, row.retain_perplexity, s=40)
        ax.annotate(row.model, (100 * row.familiarity_top1_rate, row.retain_perplexity),
                    textcoords="offset points", xytext=(6, 4))
    ax.set_xlabel("familiarity probes: top-1 rate (%)")
    ax.set_ylabel("retain perplexity (held-out blocks)")
    ax.set_title("Forgetting against retention (lower-left is better)")
    ax.margins(0.2)  # room for the labels
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png", metadata={"Software": None})
    plt.close(fig)
    tmp.replace(path)


def report(params: Params | None = None, *, root: Path = Path("."), models: tuple[str, ...] = MODELS) -> dict:
    """Write the report, its figure and the plot CSV from the models' metrics files."""
    metrics = read_metrics(root, models)
    frame = plot_frame(metrics)
    atomic_write_text(root / PLOT, frame.to_csv(index=False))
    write_figure(frame, root / FIGURE)
    atomic_write_text(root / REPORT, report_markdown(metrics))
    return {"models": len(metrics), "report": str(REPORT)}


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        print("usage: python -m pipeline.evaluate <model>|report   (model: a folder under models/, e.g. "
              + ", ".join(MODELS) + ")", file=sys.stderr)
        sys.exit(2)
    if argv[0] == "report":
        run_stage("report", lambda params: report(params))
    else:
        run_stage(f"{STAGE}@{argv[0]}", functools.partial(run, model=argv[0]))


if __name__ == "__main__":
    main(sys.argv[1:])
