"""Bootstrap intervals (pipeline/core/bootstrap.py) on cases whose answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.core import bootstrap
from pipeline.core.bootstrap import bootstrap_interval, paired_delta_interval


def test_a_constant_metric_has_a_zero_width_interval():
    interval = bootstrap_interval(bootstrap.mean, [0.25] * 40)
    assert (interval.estimate, interval.low, interval.high) == pytest.approx((0.25, 0.25, 0.25))


def test_the_interval_of_a_mean_covers_it_and_shrinks_with_more_units():
    rng = np.random.default_rng(1)
    few, many = rng.normal(0, 1, 25), rng.normal(0, 1, 400)
    small, large = bootstrap_interval(bootstrap.mean, few), bootstrap_interval(bootstrap.mean, many)
    assert small.low < few.mean() < small.high
    assert small.estimate == pytest.approx(few.mean())
    # the percentile interval of a mean is about +-1.96 standard errors
    assert small.high - small.low == pytest.approx(2 * 1.96 * few.std() / math.sqrt(25), rel=0.2)
    assert (large.high - large.low) < (small.high - small.low) / 2


def test_a_rate_of_ones_and_zeros():
    hits = [1.0] * 30 + [0.0] * 70
    interval = bootstrap_interval(bootstrap.mean, hits)
    assert interval.estimate == pytest.approx(0.3)
    assert 0.19 < interval.low < 0.23 and 0.37 < interval.high < 0.41  # binomial: 0.3 +- 0.09


def test_intervals_are_seeded_and_deterministic():
    values = np.random.default_rng(2).random(50)
    assert bootstrap_interval(bootstrap.mean, values, seed=3) == bootstrap_interval(bootstrap.mean, values, seed=3)
    assert bootstrap_interval(bootstrap.mean, values, seed=3) != bootstrap_interval(bootstrap.mean, values, seed=4)


def test_a_clearly_shifted_pair_excludes_zero():
    rng = np.random.default_rng(3)
    base = rng.random(60)
    shifted = base - 0.1 + rng.normal(0, 0.02, 60)  # every unit moves down by about 0.1
    delta = paired_delta_interval(bootstrap.mean, [shifted], [base])
    assert delta.estimate == pytest.approx(shifted.mean() - base.mean())
    assert delta.high < 0 and not delta.contains_zero
    assert -0.11 < delta.low < delta.high < -0.09


def test_pairing_resolves_what_unpaired_intervals_cannot():
    # units differ a lot from one another, the models little: only the paired interval sees it
    rng = np.random.default_rng(4)
    base = rng.normal(0, 1, 50)
    model = base + 0.05
    paired = paired_delta_interval(bootstrap.mean, [model], [base])
    a, b = bootstrap_interval(bootstrap.mean, model), bootstrap_interval(bootstrap.mean, base)
    assert a.low < b.high  # the separate intervals overlap
    assert paired.low > 0  # the paired one excludes 0
    assert paired.estimate == pytest.approx(0.05)


def test_a_pure_noise_pair_includes_zero():
    rng = np.random.default_rng(5)
    base = rng.random(80)
    noisy = base + rng.normal(0, 0.1, 80)  # no systematic change
    delta = paired_delta_interval(bootstrap.mean, [noisy], [base])
    assert delta.contains_zero and delta.low < 0 < delta.high


def test_a_relative_delta_is_a_fraction_of_the_baseline():
    base = np.linspace(0.1, 0.5, 40)
    delta = paired_delta_interval(bootstrap.mean, [base * 0.6], [base], relative=True)
    assert (delta.estimate, delta.low, delta.high) == pytest.approx((-0.4, -0.4, -0.4))


def test_paired_groups_must_hold_the_same_units():
    with pytest.raises(ValueError, match="same units"):
        paired_delta_interval(bootstrap.mean, [[1.0, 2.0]], [[1.0, 2.0, 3.0]])
    with pytest.raises(ValueError, match="at least one unit"):
        bootstrap_interval(bootstrap.mean, [])


def test_perplexity_weights_every_token_not_every_block():
    blocks = np.array([[3.0, 3.0], [4.0, 1.0]])  # (nll sum, tokens): 3 nats over 3 tokens, 4 over 1
    assert bootstrap.perplexity_of(blocks[None])[0] == pytest.approx(math.exp(7 / 4))
    interval = bootstrap_interval(bootstrap.perplexity_of, [[2.0, 1.0]] * 10)
    assert (interval.low, interval.high) == pytest.approx((math.exp(2), math.exp(2)))


@pytest.mark.parametrize(("members", "non_members", "auc"), [
    ([3.0, 4.0, 5.0], [0.0, 1.0, 2.0], 1.0),
    ([0.0, 1.0], [2.0, 3.0], 0.0),
    ([1.0, 1.0], [1.0, 1.0, 1.0], 0.5),
    ([1.0, 2.0], [1.0, 0.0], 3.5 / 4),  # one tie counts half
])
def test_auc_known_answers(members, non_members, auc):
    assert bootstrap.auc_of(np.array([members]), np.array([non_members]))[0] == pytest.approx(auc)


def test_two_groups_are_resampled_each_on_its_own():
    interval = bootstrap_interval(bootstrap.auc_of, [3.0, 4.0, 5.0, 6.0], [0.0, 1.0, 2.0])
    assert (interval.estimate, interval.low, interval.high) == (1.0, 1.0, 1.0)  # any resample separates them
    mixed = bootstrap_interval(bootstrap.auc_of, list(range(0, 40, 2)), list(range(1, 41, 2)))
    assert mixed.low < 0.5 < mixed.high
