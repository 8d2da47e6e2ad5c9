"""Stage ``evaluate``: what a model knows of the forget corpus, and what it kept.

``python -m pipeline.evaluate <model>`` evaluates ``models/<model>`` (``dvc repro`` runs it for
``baseline``, ``reinforced`` and ``unlearned``, a DVC ``foreach``; docs/evaluation.md) and writes

* ``evaluation_scores_<model>``: one row per unit measured (familiarity, general and
  near-collateral probes; completion probes; verbatim windows of forget text trained on and never
  trained on; held-out retain windows) with its scores and the model's greedy output;
* ``metrics/evaluation/<model>.json``: the headline numbers (:mod:`pipeline.core.headlines`),
  each with its 95% bootstrap interval, the completion grades and the size of every set;
* ``evaluation_completions_<model>``: every completion with its grade and the terms that
  decided it (the input of the ``evaluation`` review project).

"Trained on" means the fine-tune's training blocks: the dataset version ``finetune.dataset``
pins. Timings go to the stage's summary line, never to the metrics file (they would make
``dvc metrics diff`` noisy). The report comparing the models is stage ``report``
(:mod:`pipeline.report`).
"""

from __future__ import annotations

import functools
import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from pipeline.core import generation, grading, headlines, metrics
from pipeline.core.probes import Probe, ProbeError, answer_terms, parse_probes, parse_terms
from pipeline.core.provenance import Span, Window, story_documents, trained_stories, verbatim_windows
from pipeline.core.sampling import spread_sample
from pipeline.errors import PipelineError
from pipeline.models import load_model, load_tokenizer
from pipeline.params import Params, section_dict
from pipeline.paths import model_dir
from pipeline.stage import run_stage
from pipeline.store import DatasetWriter, atomic_write_text, read_dataset
from pipeline.versions import read_pinned
from schemas.evaluation import MODELS, RETENTION_MEASURES, TIERS, completions_contract, scores_contract

STAGE = "evaluate"
PARAMS = ("evaluate", "finetune.dataset")
METRICS_DIR = Path("metrics/evaluation")
_SAMPLE_SEED = 0  # which retain blocks a cap keeps: fixed, so every model sees the same ones


# --------------------------------------------------------------------------- inputs


def read_probe_file(path: Path, kind: str, *, key: str | None = None) -> list[Probe]:
    """The probes of ``path``, a file of ``kind`` (:func:`pipeline.core.probes.parse_probes`); a
    missing or non-UTF-8 file is a :class:`ProbeError` naming it and the params key
    (``evaluate.probes.<key>``, ``key`` defaulting to ``kind``)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProbeError(f"{path}: probe file not found (evaluate.probes.{key or kind} in params.yaml)") from None
    except UnicodeDecodeError as exc:
        raise ProbeError(f"{path}: not valid UTF-8 at byte offset {exc.start}") from None
    return parse_probes(text, kind, source=str(path))


def read_term_file(path: Path) -> list[str]:
    try:
        return parse_terms(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProbeError(f"{path}: term list not found (evaluate.probes.genre_terms in params.yaml)") from None
    except UnicodeDecodeError as exc:
        raise ProbeError(f"{path}: not valid UTF-8 at byte offset {exc.start}") from None


def encode_pairs(tokenizer, probes: list[Probe], source: str) -> list[tuple[list[int], list[int]]]:
    """``(prompt_ids, answer_ids)`` per probe: the prompt as the tokenizer encodes it by default
    (with BOS where the model expects one), the answer alone without special tokens."""
    pairs = []
    for probe in probes:
        prompt = tokenizer(probe.prompt)["input_ids"]
        answer = tokenizer(probe.answer, add_special_tokens=False)["input_ids"]
        if not prompt or not answer:
            raise ProbeError(f"{source}: probe {probe.id!r}: its {'prompt' if not prompt else 'answer'} has no tokens")
        pairs.append((prompt, answer))
    return pairs


def trained_spans(params: Params, root: Path) -> list[Span]:
    """The character spans of the fine-tune's training blocks (the pinned dataset version)."""
    frame = read_pinned(params, root=root, columns=["doc_id", "char_start", "char_end"])
    return [Span(r.doc_id, int(r.char_start), int(r.char_end)) for r in frame.itertuples(index=False)]


def retain_texts(params: Params, root: Path) -> tuple[list[str], list[list[int]]]:
    """Held-out retain blocks (ids, token ids), capped and spread, each cut to ``retain_tokens``."""
    settings = params.evaluate
    frame = read_dataset("retain_blocks", root, columns=["block_id", "doc_id", "index", "input_ids", "split"])
    rows = spread_sample(frame[frame["split"] == "heldout"].to_dict("records"), settings.max_retain_blocks,
                         seed=_SAMPLE_SEED)
    cut = settings.retain_tokens
    rows = [(r["block_id"], list(r["input_ids"])[:cut] if cut else list(r["input_ids"])) for r in rows]
    rows = [(block_id, ids) for block_id, ids in rows if len(ids) >= 2]
    return [b for b, _ in rows], [ids for _, ids in rows]


def forget_windows(params: Params, root: Path, tokenizer, documents: dict[str, str], trained: list[Span]):
    """Verbatim windows ``(text trained on, forget text never trained on)`` starting at passage starts."""
    verbatim = params.evaluate.verbatim
    passages = read_dataset("passages", root, columns=["doc_id", "corpus", "char_start"])
    starts = [(d, int(s)) for d, c, s in passages[["doc_id", "corpus", "char_start"]].itertuples(index=False)
              if c == "forget" and d in documents]

    def encode(text: str):
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return encoded["input_ids"], encoded["offset_mapping"]

    return tuple(verbatim_windows(
        documents, starts, trained, inside=inside, encode=encode, prefix_tokens=verbatim.prefix_tokens,
        continuation_tokens=verbatim.continuation_tokens, limit=verbatim.windows,
    ) for inside in (True, False))


# --------------------------------------------------------------------------- one model


@dataclass
class Inputs:
    """Everything the evaluation reads, tokenized with the model's tokenizer."""

    familiar: list[Probe]
    completion: list[Probe]
    general: list[Probe]
    heldout: list[Probe]
    """Held-out retention probes (``evaluate.probes.heldout``; empty when null)."""
    trained_story: dict[str, bool]
    """Story tag -> whether a training block lies in its document."""
    training_blocks: int
    grading: tuple[grading.TermMatcher, grading.TermMatcher, grading.TermMatcher]
    """Anchor, genre and weak terms (:func:`pipeline.core.grading.grade_completion`)."""
    dictionary: grading.TermMatcher
    """Every key and variant of the forget dictionary (:func:`pipeline.core.probes.answer_terms`)."""
    familiar_pairs: list[tuple[list[int], list[int]]]
    general_pairs: list[tuple[list[int], list[int]]]
    heldout_pairs: list[tuple[list[int], list[int]]]
    completion_prompts: list[list[int]]
    inside: list[Window]
    outside: list[Window]
    retain_ids: list[str]
    retain: list[list[int]]


def read_inputs(params: Params, root: Path, model_folder: Path):
    """Probes, stories trained on, grading terms, verbatim windows and retain texts, tokenized with
    the tokenizer of ``model_folder``; returns ``(inputs, tokenizer)``. Every file is read and
    checked before the tokenizer loads: a bad probe file fails at once."""
    settings, probe_files = params.evaluate, params.evaluate.probes
    familiar = read_probe_file(root / probe_files.familiarity, "familiarity")
    completion = read_probe_file(root / probe_files.completion, "completion")
    general = read_probe_file(root / probe_files.general, "general")
    heldout = ([] if probe_files.heldout is None
               else read_probe_file(root / probe_files.heldout, "general", key="heldout"))
    genre_terms = read_term_file(root / probe_files.genre_terms)
    docs = read_dataset("documents", root, columns=["doc_id", "corpus", "title", "text"])
    forget = docs[docs["corpus"] == "forget"]
    documents = dict(zip(forget["doc_id"], forget["text"]))
    trained = trained_spans(params, root)
    stories = story_documents([p.story for p in familiar], zip(forget["doc_id"], forget["title"], forget["text"]))
    dictionary = read_dataset("dictionary", root, columns=["anchor", "variants", "forget_count"])

    from wordfreq import zipf_frequency

    anchor_terms, weak_terms = grading.grading_terms(
        zip(dictionary["anchor"], dictionary["variants"], dictionary["forget_count"]), genre_terms,
        zipf=lambda term: zipf_frequency(term, "en"),
        corpus_words=sum(len(re.findall(r"\w+", text)) for text in documents.values()),
        min_specificity=settings.min_anchor_specificity, common_phrase_zipf=settings.common_phrase_zipf,
    )
    tokenizer = load_tokenizer(model_folder)
    inside, outside = forget_windows(params, root, tokenizer, documents, trained)
    retain_ids, retain = retain_texts(params, root)
    return Inputs(
        familiar=familiar, completion=completion, general=general, heldout=heldout,
        trained_story={title: count > 0 for title, count in trained_stories(stories, trained).items()},
        training_blocks=len(trained),
        grading=tuple(grading.TermMatcher(t) for t in (anchor_terms, genre_terms, weak_terms)),
        dictionary=grading.TermMatcher([*dictionary["anchor"], *(v for vs in dictionary["variants"] for v in vs)]),
        familiar_pairs=encode_pairs(tokenizer, familiar, str(probe_files.familiarity)),
        general_pairs=encode_pairs(tokenizer, general, str(probe_files.general)),
        heldout_pairs=encode_pairs(tokenizer, heldout, str(probe_files.heldout)),
        completion_prompts=[tokenizer(p.prompt)["input_ids"] for p in completion],
        inside=inside, outside=outside, retain_ids=retain_ids, retain=retain,
    ), tokenizer


def run_model(model, inputs: Inputs, settings, *, pad_id: int, eos_id: int | None, label: str,
              seconds: dict[str, float]) -> dict[str, list]:
    """Every forward pass of the evaluation, under one progress bar; ``seconds`` gets each phase's time."""
    batch = {"batch_size": settings.batch_size}
    total = sum(map(len, (inputs.familiar, inputs.general, inputs.heldout, inputs.completion, inputs.inside,
                          inputs.outside, inputs.retain)))
    phases = {
        "familiarity": lambda bar: generation.answer_probes(
            model, inputs.familiar_pairs, pad_id=pad_id, progress=bar.update, **batch),
        "general": lambda bar: generation.answer_probes(
            model, inputs.general_pairs, pad_id=pad_id, progress=bar.update, **batch),
        "heldout": lambda bar: generation.answer_probes(
            model, inputs.heldout_pairs, pad_id=pad_id, progress=bar.update, **batch),
        "completion": lambda bar: generation.greedy_continuations(
            model, inputs.completion_prompts, max_new_tokens=settings.max_new_tokens, pad_id=pad_id, eos_id=eos_id,
            progress=bar.update, **batch),
        **{f"verbatim_{side}": lambda bar, windows=windows: generation.window_scores(
            model, [w.prefix_ids + w.continuation_ids for w in windows],
            prefix_tokens=settings.verbatim.prefix_tokens, progress=bar.update, **batch)
           for side, windows in (("trained", inputs.inside), ("untrained", inputs.outside))},
        "retain": lambda bar: generation.token_logprobs(
            model, inputs.retain, pad_id=pad_id, progress=bar.update, **batch),
    }
    found = {}
    with tqdm(total=total, desc=f"evaluate {label}", unit="item") as bar:
        for name, phase in phases.items():
            clock = time.perf_counter()
            found[name] = phase(bar)
            seconds[name] = time.perf_counter() - clock
    return found


def _probe_rows(probes, scores, outputs, trained_story: dict[str, bool], dictionary: grading.TermMatcher,
                measure: str | None = None, *, suffix: str = "") -> list[dict]:
    """Rows of probability probes; ``measure`` defaults to each probe's ``kind`` (general, near)
    followed by ``suffix``."""
    return [{"measure": measure or p.kind + suffix, "unit_id": p.id, "story": p.story or "", "tier": p.tier or "",
             "answer_terms": "; ".join(answer_terms(p, dictionary)),
             "trained": trained_story.get(p.story, False), "output": out, "top1": float(s.top1),
             "first_prob": s.first_prob, "first_logprob": s.first_logprob, "answer_prob": s.prob,
             "rank": float(s.first_rank),
             "rouge_l": metrics.rouge_l(out, p.answer)} for p, s, out in zip(probes, scores, outputs)]


def _window_rows(windows, scores, outputs, measure: str, *, k_percent: float) -> list[dict]:
    return [{"measure": measure, "unit_id": w.id, "story": "", "tier": "", "trained": measure == "verbatim_trained",
             "output": out, "rouge_l": metrics.rouge_l(out, w.continuation), "nll": float(-s.logprobs.sum()),
             "tokens": float(len(s.logprobs)), "min_k": metrics.min_k_score(s.logprobs, k_percent)}
            for w, s, out in zip(windows, scores, outputs)]


def unit_scores(model_name: str, inputs: Inputs, found: dict[str, list], texts: list[str], grades: list[int], *,
                decode, k_percent: float) -> pd.DataFrame:
    """The ``evaluation_scores_<model>`` frame: one row per unit measured."""
    def greedy(scores) -> list[str]:
        return [decode(s.greedy) for s in scores]

    rows = (
        _probe_rows(inputs.familiar, found["familiarity"], greedy(found["familiarity"]), inputs.trained_story,
                    inputs.dictionary, "familiarity")
        + _probe_rows(inputs.general, found["general"], greedy(found["general"]), {}, inputs.dictionary)
        + _probe_rows(inputs.heldout, found["heldout"], greedy(found["heldout"]), {}, inputs.dictionary,
                      suffix="_heldout")
        + [{"measure": "completion", "unit_id": p.id, "story": "", "tier": "", "trained": False, "output": text,
            "score": float(metrics.completion_score(g))} for p, text, g in zip(inputs.completion, texts, grades)]
        + _window_rows(inputs.inside, found["verbatim_trained"], greedy(found["verbatim_trained"]),
                       "verbatim_trained", k_percent=k_percent)
        + _window_rows(inputs.outside, found["verbatim_untrained"], greedy(found["verbatim_untrained"]),
                       "verbatim_untrained", k_percent=k_percent)
        + [{"measure": "retain", "unit_id": b, "story": "", "tier": "", "trained": False, "output": "",
            "nll": float(-lp.sum()),
            "tokens": float(len(lp))} for b, lp in zip(inputs.retain_ids, found["retain"])]
    )
    frame = pd.DataFrame(rows, columns=list(headlines.UNIT_COLUMNS)[1:]).assign(model=model_name)
    frame["answer_terms"] = frame["answer_terms"].fillna("")  # only probes have an answer
    return frame[list(headlines.UNIT_COLUMNS)]


def metrics_file(model_name: str, inputs: Inputs, scores: pd.DataFrame, grades: list[int], boot) -> dict[str, Any]:
    """The content of ``metrics/evaluation/<model>.json``: flat headlines, grades, sizes, intervals."""
    intervals = headlines.headline_intervals(scores, n_resamples=boot.resamples, confidence=boot.confidence,
                                             seed=boot.seed)
    n_trained = sum(inputs.trained_story.get(p.story, False) for p in inputs.familiar)
    tiers = {f"familiarity_tier_{tier}": sum(p.tier == tier for p in inputs.familiar) for tier in TIERS}
    return {
        "model": model_name,
        **{key: None if value is None else round(value.estimate, 6) for key, value in intervals.items()},
        "completion_grades": {str(g): grades.count(g) for g in (3, 2, 1, 0)},
        "n": {"familiarity": len(inputs.familiar), "familiarity_trained": n_trained,
              "familiarity_untrained": len(inputs.familiar) - n_trained, **tiers,
              "stories": len(inputs.trained_story),
              "stories_trained": sum(inputs.trained_story.values()), "completion": len(inputs.completion),
              **{kind: int((scores["measure"] == kind).sum()) for kind in RETENTION_MEASURES},
              **{f"{kind}_in_dictionary": int(((scores["measure"] == kind) & (scores["answer_terms"] != "")).sum())
                 for kind in RETENTION_MEASURES},
              "verbatim_trained": len(inputs.inside),
              "verbatim_untrained": len(inputs.outside), "retain_windows": len(inputs.retain),
              "retain_tokens": int(scores.loc[scores["measure"] == "retain", "tokens"].sum()),
              "training_blocks": inputs.training_blocks},
        "intervals": {key: {"low": round(value.low, 6), "high": round(value.high, 6)}
                      for key, value in intervals.items() if value is not None},
    }


def evaluate_model(params: Params, model_name: str, *, root: Path = Path(".")) -> tuple[dict[str, Any], dict]:
    """Evaluate ``models/<model_name>``; write its scores, completions and metrics file.

    Returns ``(metrics, seconds by phase)``: the metrics file's content and the timings.
    """
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", model_name):
        raise PipelineError(f"model name {model_name!r}: use letters, digits, '_', '.', '-' (a folder under models/)")
    settings, seconds = params.evaluate, {}
    clock = time.perf_counter()
    folder = root / model_dir(model_name)
    inputs, tokenizer = read_inputs(params, root, folder)
    seconds["inputs"] = time.perf_counter() - clock

    clock = time.perf_counter()
    model = load_model(folder, dtype=settings.dtype)
    seconds["load"] = time.perf_counter() - clock
    pad_id = next((t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id) if t is not None), 0)
    found = run_model(model, inputs, settings, pad_id=pad_id, eos_id=tokenizer.eos_token_id, label=model_name,
                      seconds=seconds)

    clock = time.perf_counter()
    decode = functools.partial(tokenizer.decode, skip_special_tokens=True)
    texts = [decode(c) for c in found["completion"]]
    anchors, genre, weak = inputs.grading
    graded = [grading.grade_completion(text, anchors, p.keywords, genre, weak_terms=weak, prompt=p.prompt)
              for p, text in zip(inputs.completion, texts)]
    grades = [g for g, _ in graded]
    scores = unit_scores(model_name, inputs, found, texts, grades, decode=decode, k_percent=settings.min_k_percent)
    values = metrics_file(model_name, inputs, scores, grades, settings.bootstrap)

    used = section_dict(params, "evaluate") | {"model": model_name, "finetune.dataset": params.finetune.dataset}
    completions = [{"model": model_name, "probe_id": p.id, "prompt": p.prompt, "completion": text, "grade": grade,
                    "matched_terms": list(terms)} for p, text, (grade, terms) in zip(inputs.completion, texts, graded)]
    stage = f"{STAGE}@{model_name}"
    with DatasetWriter(completions_contract(model_name), stage=stage, params=used, root=root) as out:
        out.write(pd.DataFrame(completions))
    with DatasetWriter(scores_contract(model_name), stage=stage, params=used, root=root) as out:
        out.write(scores)
    atomic_write_text(root / METRICS_DIR / f"{model_name}.json", json.dumps(values, indent=2) + "\n")
    seconds["scoring"] = time.perf_counter() - clock
    return values, {key: round(value, 1) for key, value in seconds.items()}


def run(params: Params, *, model: str, root: Path = Path(".")) -> dict:
    values, timings = evaluate_model(params, model, root=root)
    keys = ("familiarity_top1_rate", "familiarity_mean_prob", "completion_familiarity", "verbatim_trained_rouge_l",
            "retain_perplexity", "general_top1_rate", "min_k_auc")
    return {key: values[key] for key in keys} | {f"s_{key}": value for key, value in timings.items()}


def main(argv: list[str]) -> None:
    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: python -m pipeline.evaluate <model>   (a folder under models/, e.g. " + ", ".join(MODELS) + ")",
              file=sys.stderr)
        sys.exit(2)
    run_stage(f"{STAGE}@{argv[0]}", functools.partial(run, model=argv[0]))


if __name__ == "__main__":
    main(sys.argv[1:])
