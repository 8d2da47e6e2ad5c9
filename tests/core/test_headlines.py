"""Headline numbers and paired changes (pipeline/core/headlines.py) on hand-made unit scores."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pipeline.core.headlines import (
    BY_KEY, HEADLINES, KNOWN_HEADLINES, UNIT_COLUMNS, baseline_known, headline_intervals, only_units, paired_deltas,
)


def _frame(model: str, *, top1: list[float], prob: list[float], nll: list[float], general: list[float],
           trained: list[bool] | None = None, near: list[tuple[float, str]] = ()) -> pd.DataFrame:
    rows = []
    trained = trained or [False] * len(top1)
    for i, (hit, p, is_trained) in enumerate(zip(top1, prob, trained)):
        rows.append({"measure": "familiarity", "unit_id": f"f{i:02d}", "story": "A" if is_trained else "B",
                     "tier": "known" if i % 3 == 0 else "detail", "trained": is_trained, "top1": hit,
                     "first_prob": p, "first_logprob": np.log(p), "answer_prob": p,
                     "rank": 1 + 9 * (1 - hit),
                     "rouge_l": hit})
    for i, hit in enumerate(general):
        rows.append({"measure": "general", "unit_id": f"g{i:02d}", "top1": hit, "first_prob": 0.5})
    for i, (hit, terms) in enumerate(near):
        rows.append({"measure": "near", "unit_id": f"n{i:02d}", "top1": hit, "first_prob": 0.1 + 0.8 * hit,
                     "answer_terms": terms})
    for i, value in enumerate(nll):
        rows.append({"measure": "retain", "unit_id": f"r{i:02d}", "nll": value, "tokens": 10.0})
    frame = pd.DataFrame(rows).reindex(columns=UNIT_COLUMNS)
    return frame.assign(model=model, story=frame["story"].fillna(""), tier=frame["tier"].fillna(""),
                        answer_terms=frame["answer_terms"].astype(object).fillna(""),
                        trained=frame["trained"].fillna(False).astype(bool), output="")


RNG = np.random.default_rng(0)
BASE_PROB = RNG.uniform(0.05, 0.5, 60)
BASE = _frame("baseline", top1=[1.0] * 20 + [0.0] * 40, prob=list(BASE_PROB), nll=list(RNG.uniform(20, 40, 30)),
              general=[1.0, 0.0] * 15, trained=[True] * 30 + [False] * 30)


def test_every_headline_has_an_interval_or_none_when_its_units_are_missing():
    intervals = headline_intervals(BASE, n_resamples=500)
    assert set(intervals) == {h.key for h in HEADLINES}
    top1 = intervals["familiarity_top1_rate"]
    assert top1.estimate == pytest.approx(20 / 60) and top1.low < 20 / 60 < top1.high
    assert intervals["familiarity_trained_top1_rate"].estimate == pytest.approx(20 / 30)
    assert intervals["familiarity_untrained_top1_rate"].estimate == 0.0
    nll = BASE.loc[BASE["measure"] == "retain", "nll"]
    assert intervals["retain_perplexity"].estimate == pytest.approx(math.exp(nll.sum() / (10 * len(nll))))
    assert intervals["near_top1_rate"] is None and intervals["min_k_auc"] is None  # no such units
    known_tier = BASE[(BASE["measure"] == "familiarity") & (BASE["tier"] == "known")]
    assert len(known_tier) == 20
    assert intervals["familiarity_tier_known_mean_prob"].estimate == pytest.approx(known_tier["first_prob"].mean())
    assert intervals["familiarity_tier_detail_top1_rate"].estimate == pytest.approx(
        BASE.loc[(BASE["measure"] == "familiarity") & (BASE["tier"] == "detail"), "top1"].mean())


def test_a_model_that_forgot_shows_changes_that_exclude_zero_and_kept_knowledge_that_does_not_move():
    retain_nll = BASE.loc[BASE["measure"] == "retain", "nll"] + RNG.normal(0, 0.5, 30)
    forgot = _frame("unlearned", top1=[0.0] * 60, prob=list(BASE_PROB * 0.5), nll=list(retain_nll),
                    general=[1.0, 0.0] * 15, trained=[True] * 30 + [False] * 30)
    deltas = paired_deltas(forgot, BASE, n_resamples=500)
    prob = deltas["familiarity_mean_prob"]
    assert prob.relative.estimate == pytest.approx(-0.5) and prob.relative.low == pytest.approx(-0.5)
    assert prob.absolute.high < 0 and not prob.absolute.contains_zero and prob.n == 60
    assert deltas["familiarity_top1_rate"].absolute.estimate == pytest.approx(-20 / 60)
    assert deltas["general_top1_rate"].absolute.contains_zero and deltas["general_top1_rate"].absolute.estimate == 0
    assert deltas["retain_perplexity"].absolute.contains_zero  # noise only
    assert deltas["familiarity_top1_rate"].relative is None  # a rate's change is read in points
    assert deltas["near_top1_rate"] is None


def test_units_are_paired_by_id_whatever_their_order_and_only_shared_units_count():
    shuffled = BASE.sample(frac=1.0, random_state=1)
    deltas = paired_deltas(shuffled, BASE, n_resamples=200)
    assert deltas["familiarity_mean_prob"].absolute.estimate == 0.0
    assert deltas["familiarity_mean_prob"].absolute.low == deltas["familiarity_mean_prob"].absolute.high == 0.0
    fewer = BASE[BASE["unit_id"] != "f00"]
    assert paired_deltas(fewer, BASE, n_resamples=200)["familiarity_mean_prob"].n == 59


def test_the_known_subset_is_chosen_by_the_baseline_and_read_on_any_model():
    # baseline ranks: 1 for its 20 hits, 10 (the hits' rank 1 + 9 misses of _frame) otherwise
    assert baseline_known(BASE, max_rank=1) == [f"f{i:02d}" for i in range(20)]
    assert len(baseline_known(BASE, max_rank=10)) == 60
    assert baseline_known(BASE, max_rank=9) == baseline_known(BASE, max_rank=1)
    forgot = _frame("unlearned", top1=[0.0] * 60, prob=list(BASE_PROB * 0.25), nll=[30.0], general=[1.0])
    known = baseline_known(BASE, max_rank=1)
    subset, base_subset = only_units(forgot, known), only_units(BASE, known)
    assert set(subset["measure"]) == {"familiarity"} and sorted(subset["unit_id"]) == known
    values = headline_intervals(base_subset, headlines=KNOWN_HEADLINES, n_resamples=300)
    assert set(values) == {h.key for h in KNOWN_HEADLINES} and values["known_familiarity_top1_rate"].estimate == 1.0
    deltas = paired_deltas(subset, base_subset, headlines=KNOWN_HEADLINES, n_resamples=300)
    top1 = deltas["known_familiarity_top1_rate"]
    assert top1.absolute.estimate == -1.0 and top1.n == 20
    assert deltas["known_familiarity_mean_prob"].relative.estimate == pytest.approx(-0.75)
    assert deltas["known_familiarity_mean_logprob"].absolute.estimate == pytest.approx(np.log(0.25))
    assert paired_deltas(only_units(forgot, []), only_units(BASE, []), headlines=KNOWN_HEADLINES,
                         n_resamples=10)["known_familiarity_mean_prob"] is None  # an empty subset: no number


def test_probes_answered_by_a_dictionary_term_are_read_apart():
    # 20 near probes the baseline knows; 4 answer with a dictionary term. The other model loses
    # those 4 and one more: near-collateral counts all five, the outside-dictionary rows one.
    terms = ["Thames"] * 4 + [""] * 16
    base = _frame("baseline", top1=[1.0], prob=[0.5], nll=[30.0], general=[1.0], near=[(1.0, t) for t in terms])
    lost = _frame("unlearned", top1=[1.0], prob=[0.5], nll=[30.0], general=[1.0],
                  near=[(0.0 if i < 5 else 1.0, t) for i, t in enumerate(terms)])
    deltas = paired_deltas(lost, base, n_resamples=300)
    assert deltas["near_top1_rate"].absolute.estimate == pytest.approx(-5 / 20) and deltas["near_top1_rate"].n == 20
    outside = deltas["near_outside_dictionary_top1_rate"]
    assert outside.absolute.estimate == pytest.approx(-1 / 16) and outside.n == 16
    assert deltas["near_outside_dictionary_mean_prob"].relative.estimate == pytest.approx(-0.8 / 0.9 / 16)
    values = headline_intervals(base, n_resamples=100)
    assert values["near_outside_dictionary_top1_rate"].estimate == 1.0
    assert values["general_outside_dictionary_top1_rate"].estimate == 1.0  # no general probe flagged


def test_headlines_name_existing_columns_and_measures():
    for headline in (*HEADLINES, *KNOWN_HEADLINES):
        assert headline.statistic in {"mean", "perplexity", "auc"}
        assert headline.statistic == "perplexity" or headline.column in UNIT_COLUMNS
    assert BY_KEY["min_k_auc"].against == "verbatim_untrained"
    labels = [h.label.strip() for h in (*HEADLINES, *KNOWN_HEADLINES)]
    assert len(set(labels)) == len(labels)  # the report's rows and README's results are found by label


def _windows(model: str, rouge: list[float]) -> pd.DataFrame:
    frame = pd.DataFrame([{"measure": "verbatim_trained", "unit_id": f"w{i:02d}", "rouge_l": r}
                          for i, r in enumerate(rouge)]).reindex(columns=UNIT_COLUMNS)
    return frame.assign(model=model, story="", tier="", answer_terms="", trained=True, output="")


def test_the_memorised_share_counts_windows_at_or_above_the_threshold_and_pairs_them():
    memorised = [h for h in HEADLINES if h.key == "verbatim_trained_memorised_rate"]
    base = _windows("baseline", [0.9, 0.5, 0.49, 0.1] * 10)  # 0.5 itself counts
    forgot = _windows("unlearned", [0.2, 0.1, 0.49, 0.1] * 10)
    assert headline_intervals(base, headlines=memorised, n_resamples=200)[memorised[0].key].estimate == 0.5
    delta = paired_deltas(forgot, base, headlines=memorised, n_resamples=500)[memorised[0].key]
    assert delta.absolute.estimate == pytest.approx(-0.5) and delta.absolute.high < 0 and delta.n == 40
