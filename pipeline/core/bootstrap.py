"""Bootstrap confidence intervals for evaluation metrics (pure, seeded, deterministic).

A metric is a *statistic* of per-unit values (a probe's top-1 hit, a block's log-likelihood):
its interval comes from recomputing the statistic on ``n_resamples`` resamples of the units,
drawn with replacement, and taking the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2``
percentiles (the percentile bootstrap).

* :func:`bootstrap_interval`: one model's metric.
* :func:`paired_delta_interval`: the change of a metric between two models measured on the *same*
  units. Both models are recomputed on the same resampled indices, so what the probes have in
  common (an easy probe is easy for both) cancels out: a paired interval is much narrower than
  the difference of two independent intervals.

A statistic takes one array per *group* of units, each ``[R, n_group]`` (``R`` resamples), and
returns ``[R]``; groups are resampled independently (stratified), e.g. the members and the
non-members of a membership AUC. Statistics for the evaluation: :func:`mean`,
:func:`perplexity_of`, :func:`auc_of`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

Statistic = Callable[..., np.ndarray]
"""``statistic(*groups) -> [R]`` where each group is ``[R, n_group]`` (or ``[R, n_group, k]``)."""

DEFAULT_RESAMPLES = 2000
DEFAULT_CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    """A point estimate and its bootstrap interval ``[low, high]`` (same units as the metric)."""

    estimate: float
    low: float
    high: float

    @property
    def contains_zero(self) -> bool:
        """For a delta: no evidence of a change at this confidence (``low <= 0 <= high``)."""
        return self.low <= 0.0 <= self.high


# --------------------------------------------------------------------------- statistics


def mean(values: np.ndarray) -> np.ndarray:
    """The mean over units: ``[R, n] -> [R]`` (top-1 rate, mean probability, mean ROUGE-L)."""
    return values.mean(axis=-1)


def perplexity_of(nll_and_tokens: np.ndarray) -> np.ndarray:
    """Perplexity over blocks, each ``(sum of token negative log-likelihoods, token count)``:
    ``[R, n, 2] -> [R]``, ``exp(sum nll / sum tokens)`` (a resampled long block weighs more,
    exactly as in the point estimate)."""
    return np.exp(nll_and_tokens[..., 0].sum(axis=-1) / nll_and_tokens[..., 1].sum(axis=-1))


def auc_of(members: np.ndarray, non_members: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUC (ties count half) of member scores above non-member scores:
    ``[R, m]``, ``[R, k] -> [R]``."""
    a, b = members[:, :, None], non_members[:, None, :]
    return ((a > b).sum(axis=(1, 2)) + 0.5 * (a == b).sum(axis=(1, 2))) / (members.shape[1] * non_members.shape[1])


# --------------------------------------------------------------------------- resampling


def resample_indices(n: int, *, n_resamples: int, seed: int) -> np.ndarray:
    """``[n_resamples, n]`` indices drawn with replacement from ``range(n)`` (seeded)."""
    return np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))


def _as_groups(groups: Sequence[Sequence[float] | np.ndarray]) -> list[np.ndarray]:
    arrays = [np.asarray(g, dtype=float) for g in groups]
    if not arrays or any(len(a) == 0 for a in arrays):
        raise ValueError("every group needs at least one unit")
    return arrays


def _percentiles(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(samples, [tail, 100 - tail])
    return float(low), float(high)


def _group_indices(sizes: list[int], *, n_resamples: int, seed: int) -> list[np.ndarray]:
    # One generator stream per group: adding a group never changes the draws of the others.
    return [resample_indices(n, n_resamples=n_resamples, seed=seed + 7919 * i) for i, n in enumerate(sizes)]


def bootstrap_interval(
    statistic: Statistic, *groups: Sequence[float] | np.ndarray, n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE, seed: int = 0,
) -> Interval:
    """The statistic on ``groups`` (each ``[n_group]`` or ``[n_group, k]`` per-unit values) and its
    percentile-bootstrap interval; each group is resampled on its own."""
    arrays = _as_groups(groups)
    estimate = float(statistic(*(a[None] for a in arrays))[0])
    indices = _group_indices([len(a) for a in arrays], n_resamples=n_resamples, seed=seed)
    samples = statistic(*(a[i] for a, i in zip(arrays, indices)))
    return Interval(estimate, *_percentiles(samples, confidence))


def paired_delta_interval(
    statistic: Statistic, groups: Sequence[Sequence[float] | np.ndarray],
    baseline_groups: Sequence[Sequence[float] | np.ndarray], *, relative: bool = False,
    n_resamples: int = DEFAULT_RESAMPLES, confidence: float = DEFAULT_CONFIDENCE, seed: int = 0,
) -> Interval:
    """``statistic(model) - statistic(baseline)`` and its paired bootstrap interval.

    ``groups[g][i]`` and ``baseline_groups[g][i]`` are the same unit measured on the two models;
    every resample draws one set of indices per group and applies it to both. ``relative``
    gives the change as a fraction of the baseline (``-0.4`` = down 40%).
    """
    model, base = _as_groups(groups), _as_groups(baseline_groups)
    if [a.shape for a in model] != [b.shape for b in base]:
        raise ValueError(f"paired groups must hold the same units: shapes {[a.shape for a in model]} "
                         f"and {[b.shape for b in base]}")

    def delta(model_values: list[np.ndarray], base_values: list[np.ndarray]) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            a, b = statistic(*model_values), statistic(*base_values)
            return (a - b) / b if relative else a - b

    estimate = float(delta([a[None] for a in model], [b[None] for b in base])[0])
    indices = _group_indices([len(a) for a in model], n_resamples=n_resamples, seed=seed)
    samples = delta([a[i] for a, i in zip(model, indices)], [b[i] for b, i in zip(base, indices)])
    samples = samples[np.isfinite(samples)]
    if not len(samples):
        return Interval(estimate, float("nan"), float("nan"))
    return Interval(estimate, *_percentiles(samples, confidence))
