"""The evaluation's headline numbers: each a statistic of per-unit scores, with its interval.

A model's *unit scores* are one row per unit measured (a probe, a verbatim window, a retain
window) in a frame with the columns of :data:`UNIT_COLUMNS` (the stage's dataset
``evaluation_scores_<model>``, contract :mod:`schemas.evaluation`, whose ``MEASURES`` say what a
row measures). A :class:`Headline` says which rows and columns make one number and with which
statistic; :func:`headline_intervals` gives every headline of one model with its bootstrap
interval, :func:`paired_deltas` every change against the baseline with its paired interval
(units matched by ``unit_id``).

:data:`KNOWN_HEADLINES` are read on the *known subset*: the familiarity probes whose answer the
baseline ranks among its first few guesses (:func:`baseline_known`), chosen by the baseline
alone and applied to every model (:func:`only_units`), so that forgetting is measured on what
the baseline knew.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.core import bootstrap
from pipeline.core.bootstrap import Interval
from schemas.evaluation import TIERS

VALUE_COLUMNS = ("top1", "first_prob", "first_logprob", "answer_prob", "rank", "rouge_l", "score", "nll", "tokens",
                 "min_k")
"""Per-unit values (NaN where a measure has none): ``top1`` 1/0, ``first_prob``/``answer_prob``
p(first answer token)/p(whole answer), ``first_logprob`` the first one's natural log, ``rank`` of
the first answer token, ``rouge_l`` of the greedy output, ``score`` of a graded completion
(5/1/0), ``nll`` summed over ``tokens`` scored tokens, ``min_k`` (Min-K% Prob)."""
UNIT_COLUMNS = ("model", "measure", "unit_id", "story", "tier", "answer_terms", "trained", "output", *VALUE_COLUMNS)


@dataclass(frozen=True)
class Headline:
    """One headline number: ``statistic`` of ``column`` over the units of ``measure``.

    ``trained`` keeps only units whose story was (True) or was not (False) trained on, ``tier``
    only probes of that tier (:data:`schemas.evaluation.TIERS`), ``dictionary`` only probes whose
    answer is (True) or is not (False) a forget-dictionary term (``answer_terms``);
    ``statistic`` is ``mean``, ``perplexity`` (``nll`` and ``tokens``) or ``auc`` (``column``
    of ``measure``, the members, against the same column of ``against``); ``at_least`` makes
    the mean a share: of the units whose ``column`` reaches it; ``relative`` reports
    its change against the baseline as a fraction too; ``style`` formats it (``pct``, ``prob``, ``num``).
    """

    key: str
    label: str
    style: str
    measure: str
    column: str = ""
    statistic: str = "mean"
    trained: bool | None = None
    tier: str | None = None
    dictionary: bool | None = None
    relative: bool = False
    against: str | None = None
    at_least: float | None = None


MEMORISED_ROUGE_L = 0.5
"""A greedy continuation this close to the true text (ROUGE-L F1) reproduces it rather than
writing plausible English: the default baseline's continuations of the four shipped books
score 0.13 to 0.15 on average and at most 0.37 (docs/evaluation.md)."""

HEADLINES = (
    Headline("familiarity_top1_rate", "familiarity probes: top-1 rate", "pct", "familiarity", "top1"),
    Headline("familiarity_mean_prob", "familiarity probes: mean p(first answer token)", "prob", "familiarity",
             "first_prob", relative=True),
    Headline("familiarity_mean_logprob", "familiarity probes: mean log p(first answer token), nats", "num",
             "familiarity", "first_logprob"),
    Headline("familiarity_mean_answer_prob", "familiarity probes: mean p(whole answer)", "prob", "familiarity",
             "answer_prob", relative=True),
    Headline("familiarity_mean_rank", "familiarity probes: mean rank of the answer", "num", "familiarity", "rank",
             relative=True),
    Headline("familiarity_rouge_l", "familiarity probes: ROUGE-L F1 of the greedy answer", "prob", "familiarity",
             "rouge_l"),
    Headline("familiarity_trained_top1_rate", "  stories trained on: top-1 rate", "pct", "familiarity", "top1",
             trained=True),
    Headline("familiarity_trained_mean_prob", "  stories trained on: mean p(first answer token)", "prob",
             "familiarity", "first_prob", trained=True, relative=True),
    Headline("familiarity_trained_mean_logprob", "  stories trained on: mean log p(first answer token)", "num",
             "familiarity", "first_logprob", trained=True),
    Headline("familiarity_untrained_top1_rate", "  stories never trained on: top-1 rate", "pct", "familiarity",
             "top1", trained=False),
    Headline("familiarity_untrained_mean_prob", "  stories never trained on: mean p(first answer token)", "prob",
             "familiarity", "first_prob", trained=False, relative=True),
    Headline("familiarity_untrained_mean_logprob", "  stories never trained on: mean log p(first answer token)",
             "num", "familiarity", "first_logprob", trained=False),
    *(headline for tier in TIERS for headline in (
        Headline(f"familiarity_tier_{tier}_top1_rate", f"  {tier} tier: top-1 rate", "pct", "familiarity", "top1",
                 tier=tier),
        Headline(f"familiarity_tier_{tier}_mean_prob", f"  {tier} tier: mean p(first answer token)", "prob",
                 "familiarity", "first_prob", tier=tier, relative=True),
        Headline(f"familiarity_tier_{tier}_mean_logprob", f"  {tier} tier: mean log p(first answer token)", "num",
                 "familiarity", "first_logprob", tier=tier),
    )),
    Headline("completion_familiarity", "completion familiarity, (5 x n3 + n2) / N", "num", "completion", "score",
             relative=True),
    Headline("verbatim_trained_rouge_l", "verbatim memorisation, text trained on: ROUGE-L F1", "prob",
             "verbatim_trained", "rouge_l", relative=True),
    Headline("verbatim_untrained_rouge_l", "verbatim memorisation, forget text never trained on: ROUGE-L F1",
             "prob", "verbatim_untrained", "rouge_l", relative=True),
    Headline("verbatim_trained_memorised_rate",
             f"  text trained on: windows continued near-verbatim (ROUGE-L >= {MEMORISED_ROUGE_L})", "pct",
             "verbatim_trained", "rouge_l", at_least=MEMORISED_ROUGE_L),
    Headline("verbatim_untrained_memorised_rate",
             f"  forget text never trained on: windows continued near-verbatim (ROUGE-L >= {MEMORISED_ROUGE_L})",
             "pct", "verbatim_untrained", "rouge_l", at_least=MEMORISED_ROUGE_L),
    Headline("forget_perplexity", "perplexity of the forget text trained on", "num", "verbatim_trained",
             statistic="perplexity", relative=True),
    Headline("retain_perplexity", "retain perplexity (held-out text)", "num", "retain", statistic="perplexity",
             relative=True),
    Headline("general_top1_rate", "general knowledge: top-1 rate", "pct", "general", "top1"),
    Headline("general_mean_prob", "general knowledge: mean p(first answer token)", "prob", "general", "first_prob",
             relative=True),
    Headline("general_outside_dictionary_top1_rate", "  general, answers outside the forget dictionary: top-1 rate",
             "pct", "general", "top1", dictionary=False),
    Headline("near_top1_rate", "near-collateral: top-1 rate", "pct", "near", "top1"),
    Headline("near_mean_prob", "near-collateral: mean p(first answer token)", "prob", "near", "first_prob",
             relative=True),
    Headline("near_outside_dictionary_top1_rate",
             "  near-collateral, answers outside the forget dictionary: top-1 rate", "pct", "near", "top1",
             dictionary=False),
    Headline("near_outside_dictionary_mean_prob",
             "  near-collateral, answers outside the forget dictionary: mean p(first answer token)", "prob", "near",
             "first_prob", dictionary=False, relative=True),
    Headline("general_heldout_top1_rate", "held-out general knowledge: top-1 rate", "pct", "general_heldout", "top1"),
    Headline("general_heldout_mean_prob", "held-out general knowledge: mean p(first answer token)", "prob",
             "general_heldout", "first_prob", relative=True),
    Headline("near_heldout_top1_rate", "held-out near-collateral: top-1 rate", "pct", "near_heldout", "top1"),
    Headline("near_heldout_mean_prob", "held-out near-collateral: mean p(first answer token)", "prob",
             "near_heldout", "first_prob", relative=True),
    Headline("min_k_auc", "leakage: Min-K% AUC, forget text trained on vs never trained on", "prob",
             "verbatim_trained", "min_k", statistic="auc", against="verbatim_untrained"),
)
KNOWN_HEADLINES = (
    Headline("known_familiarity_top1_rate", "probes the baseline knows: top-1 rate", "pct", "familiarity", "top1"),
    Headline("known_familiarity_mean_prob", "probes the baseline knows: mean p(first answer token)", "prob",
             "familiarity", "first_prob", relative=True),
    Headline("known_familiarity_mean_logprob", "probes the baseline knows: mean log p(first answer token), nats",
             "num", "familiarity", "first_logprob"),
)
"""Headlines of the known subset (:func:`baseline_known`), computed by the report from the
scores restricted to it (:func:`only_units`)."""
BY_KEY = {h.key: h for h in (*HEADLINES, *KNOWN_HEADLINES)}
_STATISTICS = {"mean": bootstrap.mean, "perplexity": bootstrap.perplexity_of, "auc": bootstrap.auc_of}


@dataclass(frozen=True)
class Delta:
    """A headline's change against the baseline over ``n`` matched units: ``absolute`` and, for
    headlines with ``relative``, as a fraction of the baseline."""

    absolute: Interval
    relative: Interval | None
    n: int


def unit_rows(frame: pd.DataFrame, headline: Headline) -> list[pd.DataFrame]:
    """The rows of each group the headline's statistic reads, each sorted by ``unit_id``."""
    measures = [headline.measure] + ([headline.against] if headline.against else [])
    groups = []
    for measure in measures:
        rows = frame[frame["measure"] == measure]
        if headline.trained is not None:
            rows = rows[rows["trained"] == headline.trained]
        if headline.tier is not None:
            rows = rows[rows["tier"] == headline.tier]
        if headline.dictionary is not None:
            rows = rows[(rows["answer_terms"] != "") == headline.dictionary]
        groups.append(rows.sort_values("unit_id", kind="stable"))
    return groups


def _values(rows: pd.DataFrame, headline: Headline) -> np.ndarray:
    if headline.statistic == "perplexity":
        return rows[["nll", "tokens"]].to_numpy(dtype=float)  # [n, 2]
    values = rows[headline.column].to_numpy(dtype=float)
    return values if headline.at_least is None else (values >= headline.at_least).astype(float)


def baseline_known(baseline: pd.DataFrame, *, max_rank: int) -> list[str]:
    """The known subset: ids of the familiarity probes whose answer's first token the baseline
    ranks ``max_rank`` or better (its unit scores), sorted."""
    rows = baseline[(baseline["measure"] == "familiarity") & (baseline["rank"] <= max_rank)]
    return sorted(rows["unit_id"])


def only_units(frame: pd.DataFrame, unit_ids: Collection[str], *, measure: str = "familiarity") -> pd.DataFrame:
    """The rows of ``measure`` whose ``unit_id`` is in ``unit_ids`` (every other row dropped)."""
    return frame[(frame["measure"] == measure) & frame["unit_id"].isin(list(unit_ids))]


def headline_intervals(
    frame: pd.DataFrame, *, headlines: Sequence[Headline] = HEADLINES, n_resamples: int = bootstrap.DEFAULT_RESAMPLES,
    confidence: float = bootstrap.DEFAULT_CONFIDENCE, seed: int = 0,
) -> dict[str, Interval | None]:
    """Every headline (of ``headlines``) of one model's unit scores with its bootstrap interval
    (None: no unit)."""
    found: dict[str, Interval | None] = {}
    for headline in headlines:
        groups = [_values(rows, headline) for rows in unit_rows(frame, headline)]
        if any(len(g) == 0 for g in groups):
            found[headline.key] = None
            continue
        found[headline.key] = bootstrap.bootstrap_interval(
            _STATISTICS[headline.statistic], *groups, n_resamples=n_resamples, confidence=confidence, seed=seed)
    return found


def paired_deltas(
    frame: pd.DataFrame, baseline: pd.DataFrame, *, headlines: Sequence[Headline] = HEADLINES,
    n_resamples: int = bootstrap.DEFAULT_RESAMPLES, confidence: float = bootstrap.DEFAULT_CONFIDENCE, seed: int = 0,
) -> dict[str, Delta | None]:
    """Every headline's (of ``headlines``) change from ``baseline`` to ``frame`` (two models' unit
    scores), paired on the units both measured (matched by ``unit_id``); None when they share no unit."""
    found: dict[str, Delta | None] = {}
    for headline in headlines:
        pairs = []
        for rows, base_rows in zip(unit_rows(frame, headline), unit_rows(baseline, headline)):
            shared = sorted(set(rows["unit_id"]) & set(base_rows["unit_id"]))
            pairs.append((_values(rows.set_index("unit_id").loc[shared].reset_index(), headline),
                          _values(base_rows.set_index("unit_id").loc[shared].reset_index(), headline)))
        if any(len(model) == 0 for model, _ in pairs):
            found[headline.key] = None
            continue
        statistic = _STATISTICS[headline.statistic]
        options = {"n_resamples": n_resamples, "confidence": confidence, "seed": seed}
        groups, base_groups = [m for m, _ in pairs], [b for _, b in pairs]
        absolute = bootstrap.paired_delta_interval(statistic, groups, base_groups, **options)
        relative = (bootstrap.paired_delta_interval(statistic, groups, base_groups, relative=True, **options)
                    if headline.relative else None)
        found[headline.key] = Delta(absolute, relative, len(pairs[0][0]))
    return found
