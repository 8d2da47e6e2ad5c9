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
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from pipeline.core import generation, grading, headlines, metrics
from pipeline.core.probes import Probe, ProbeError, parse_probes, parse_terms
from pipeline.core.provenance import Span, story_spans, trained_stories, verbatim_windows
from pipeline.core.sampling import spread_sample
from pipeline.errors import PipelineError
from pipeline.models import load_model, load_tokenizer
from pipeline.params import Params, section_dict
from pipeline.paths import model_dir
from pipeline.stage import run_stage
from pipeline.store import DatasetWriter, atomic_write_text, read_dataset
from pipeline.versions import read_pinned
from schemas.evaluation import MODELS, completions_contract, scores_contract

STAGE = "evaluate"
PARAMS = ("evaluate", "finetune.dataset")
METRICS_DIR = Path("metrics/evaluation")
_SAMPLE_SEED = 0  # which retain blocks a cap keeps: fixed, so every model sees the same ones


# --------------------------------------------------------------------------- inputs


def read_probe_file(path: Path, kind: str) -> list[Probe]:
    """The probes of ``path`` (:func:`pipeline.core.probes.parse_probes`); a missing or non-UTF-8
    file is a :class:`ProbeError` naming it and the params key."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProbeError(f"{path}: probe file not found (evaluate.probes.{kind} in params.yaml)") from None
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


def _probe_rows(probes, scores, outputs, trained_story: dict[str, bool], measure: str | None = None) -> list[dict]:
    """Rows of probability probes; ``measure`` defaults to each probe's ``kind`` (general, near)."""
    return [{"measure": measure or p.kind, "unit_id": p.id, "story": p.story or "",
             "trained": trained_story.get(p.story, False), "output": out, "top1": float(s.top1),
             "first_prob": s.first_prob, "first_logprob": s.first_logprob, "answer_prob": s.prob,
             "rank": float(s.first_rank),
             "rouge_l": metrics.rouge_l(out, p.answer)} for p, s, out in zip(probes, scores, outputs)]


def _window_rows(windows, scores, outputs, measure: str, *, k_percent: float) -> list[dict]:
    return [{"measure": measure, "unit_id": w.id, "story": "", "trained": measure == "verbatim_trained",
             "output": out, "rouge_l": metrics.rouge_l(out, w.continuation), "nll": float(-s.logprobs.sum()),
             "tokens": float(len(s.logprobs)), "min_k": metrics.min_k_score(s.logprobs, k_percent)}
            for w, s, out in zip(windows, scores, outputs)]


def evaluate_model(params: Params, model_name: str, *, root: Path = Path(".")) -> tuple[dict[str, Any], dict]:
    """Evaluate ``models/<model_name>``; write its scores, completions and metrics file.

    Returns ``(metrics, seconds by phase)``: the metrics file's content and the timings.
    """
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", model_name):
        raise PipelineError(f"model name {model_name!r}: use letters, digits, '_', '.', '-' (a folder under models/)")
    settings, probe_files = params.evaluate, params.evaluate.probes
    clock, seconds = time.perf_counter(), {}
    # Read every input before the (slow) model load: a bad probe file fails at once.
    familiar = read_probe_file(root / probe_files.familiarity, "familiarity")
    completion = read_probe_file(root / probe_files.completion, "completion")
    general = read_probe_file(root / probe_files.general, "general")
    genre_terms = read_term_file(root / probe_files.genre_terms)
    docs = read_dataset("documents", root, columns=["doc_id", "corpus", "text"])
    documents = dict(zip(docs.loc[docs["corpus"] == "forget", "doc_id"], docs.loc[docs["corpus"] == "forget", "text"]))
    trained = trained_spans(params, root)
    stories = story_spans([p.story for p in familiar], documents)
    trained_story = {title: count > 0 for title, count in trained_stories(stories, trained).items()}
    dictionary = read_dataset("dictionary", root, columns=["anchor", "variants", "forget_count"])
    corpus_words = sum(len(re.findall(r"\w+", text)) for text in documents.values())

    from wordfreq import zipf_frequency

    anchor_terms, weak_terms = grading.grading_terms(
        zip(dictionary["anchor"], dictionary["variants"], dictionary["forget_count"]), genre_terms,
        zipf=lambda term: zipf_frequency(term, "en"), corpus_words=corpus_words,
        min_specificity=settings.min_anchor_specificity, common_phrase_zipf=settings.common_phrase_zipf,
    )
    anchors, genre, weak = (grading.TermMatcher(t) for t in (anchor_terms, genre_terms, weak_terms))

    folder = root / model_dir(model_name)
    tokenizer = load_tokenizer(folder)
    inside, outside = forget_windows(params, root, tokenizer, documents, trained)
    retain_ids, retain = retain_texts(params, root)
    familiar_pairs = encode_pairs(tokenizer, familiar, str(probe_files.familiarity))
    general_pairs = encode_pairs(tokenizer, general, str(probe_files.general))
    completion_prompts = [tokenizer(p.prompt)["input_ids"] for p in completion]
    seconds["inputs"] = time.perf_counter() - clock

    clock = time.perf_counter()
    model = load_model(folder, dtype=settings.dtype)
    seconds["load"] = time.perf_counter() - clock
    pad_id = next((t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id) if t is not None), 0)
    batch = {"batch_size": settings.batch_size}
    total = len(familiar) + len(general) + len(completion) + len(inside) + len(outside) + len(retain)
    with tqdm(total=total, desc=f"evaluate {model_name}", unit="item") as bar:
        def timed(name: str, run):
            start = time.perf_counter()
            result = run()
            seconds[name] = time.perf_counter() - start
            return result

        familiar_scores = timed("familiarity", lambda: generation.answer_probes(
            model, familiar_pairs, pad_id=pad_id, progress=bar.update, **batch))
        general_scores = timed("general", lambda: generation.answer_probes(
            model, general_pairs, pad_id=pad_id, progress=bar.update, **batch))
        continuations = timed("completion", lambda: generation.greedy_continuations(
            model, completion_prompts, max_new_tokens=settings.max_new_tokens, pad_id=pad_id,
            eos_id=tokenizer.eos_token_id, progress=bar.update, **batch))
        window_scores = functools.partial(generation.window_scores, model,
                                          prefix_tokens=settings.verbatim.prefix_tokens, progress=bar.update, **batch)
        inside_scores = timed("verbatim_trained", lambda: window_scores([w.prefix_ids + w.continuation_ids
                                                                         for w in inside]))
        outside_scores = timed("verbatim_untrained", lambda: window_scores([w.prefix_ids + w.continuation_ids
                                                                            for w in outside]))
        retain_lp = timed("retain", lambda: generation.token_logprobs(
            model, retain, pad_id=pad_id, progress=bar.update, **batch))

    clock = time.perf_counter()
    decode = functools.partial(tokenizer.decode, skip_special_tokens=True)
    texts = [decode(c) for c in continuations]
    graded = [grading.grade_completion(text, anchors, p.keywords, genre, weak_terms=weak, prompt=p.prompt)
              for p, text in zip(completion, texts)]
    k = settings.min_k_percent
    rows = (
        _probe_rows(familiar, familiar_scores, [decode(s.greedy) for s in familiar_scores], trained_story,
                    "familiarity")
        + _probe_rows(general, general_scores, [decode(s.greedy) for s in general_scores], {})
        + [{"measure": "completion", "unit_id": p.id, "story": "", "trained": False, "output": text,
            "score": float(metrics.completion_score(g))} for p, text, (g, _) in zip(completion, texts, graded)]
        + _window_rows(inside, inside_scores, [decode(s.greedy) for s in inside_scores], "verbatim_trained",
                       k_percent=k)
        + _window_rows(outside, outside_scores, [decode(s.greedy) for s in outside_scores], "verbatim_untrained",
                       k_percent=k)
        + [{"measure": "retain", "unit_id": b, "story": "", "trained": False, "output": "", "nll": float(-lp.sum()),
            "tokens": float(len(lp))} for b, lp in zip(retain_ids, retain_lp)]
    )
    scores = pd.DataFrame(rows, columns=list(headlines.UNIT_COLUMNS)[1:]).assign(model=model_name)
    scores = scores[list(headlines.UNIT_COLUMNS)]
    boot = settings.bootstrap
    intervals = headlines.headline_intervals(scores, n_resamples=boot.resamples, confidence=boot.confidence,
                                             seed=boot.seed)
    grades = [g for g, _ in graded]
    n_trained = sum(trained_story.get(p.story, False) for p in familiar)
    metric_values = {
        "model": model_name,
        **{key: None if value is None else round(value.estimate, 6) for key, value in intervals.items()},
        "completion_grades": {str(g): grades.count(g) for g in (3, 2, 1, 0)},
        "n": {"familiarity": len(familiar), "familiarity_trained": n_trained,
              "familiarity_untrained": len(familiar) - n_trained, "stories": len(stories),
              "stories_trained": sum(trained_story.values()), "completion": len(completion),
              "general": sum(p.kind == "general" for p in general), "near": sum(p.kind == "near" for p in general),
              "verbatim_trained": len(inside), "verbatim_untrained": len(outside), "retain_windows": len(retain),
              "retain_tokens": int(sum(len(lp) for lp in retain_lp)), "training_blocks": len(trained)},
        "intervals": {key: {"low": round(value.low, 6), "high": round(value.high, 6)}
                      for key, value in intervals.items() if value is not None},
    }

    used = section_dict(params, "evaluate") | {"model": model_name, "finetune.dataset": params.finetune.dataset}
    completions = [{"model": model_name, "probe_id": p.id, "prompt": p.prompt, "completion": text, "grade": grade,
                    "matched_terms": list(terms)} for p, text, (grade, terms) in zip(completion, texts, graded)]
    with DatasetWriter(completions_contract(model_name), stage=f"{STAGE}@{model_name}", params=used, root=root) as out:
        out.write(pd.DataFrame(completions))
    with DatasetWriter(scores_contract(model_name), stage=f"{STAGE}@{model_name}", params=used, root=root) as out:
        out.write(scores)
    atomic_write_text(root / METRICS_DIR / f"{model_name}.json", json.dumps(metric_values, indent=2) + "\n")
    seconds["scoring"] = time.perf_counter() - clock
    return metric_values, {key: round(value, 1) for key, value in seconds.items()}


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
