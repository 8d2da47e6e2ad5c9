"""Evaluation metrics of an unlearned model (docs/algorithm.md, Evaluation): pure functions.

Each function takes a model and token ids (or plain text) and returns numbers; the stage
``pipeline/evaluate.py`` does the I/O. All are tokenizer-agnostic and run batched under
``torch.no_grad`` on whatever device the model is on.

* Familiarity by probability: :func:`score_answers` gives, per probe, the log-probability of
  the whole true continuation and the probability and rank of its first token;
  :func:`summarise_scores` aggregates them (top-1 rate, mean probability, mean rank).
* Familiarity by completion: :func:`generate_completions` (greedy, batched, left padding),
  :func:`grade_completion` (0-3), :func:`familiarity` ((5 x count(3) + count(2)) / N).
* Retention: :func:`token_logprobs` then :func:`perplexity` on held-out retain blocks.
* Leakage: :func:`min_k_score` per block (Min-K% Prob, arXiv 2310.16789) and
  :func:`membership_auc` of forget blocks (members) against held-out retain blocks.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.core.padding import right_pad

# --------------------------------------------------------------------------- probabilities


@dataclass(frozen=True)
class AnswerScore:
    """How much a model expects one probe's true continuation.

    ``logprob`` is the sum of the answer tokens' log-probabilities (natural log) given the
    prompt, so ``prob = exp(logprob)`` is the probability of the whole answer; ``first_prob``
    and ``first_rank`` concern its first token alone, the paper's measure. The rank counts every
    token whose logit is at least the answer's (the answer included), so a tie is never a
    top-1: a model with constant logits ranks every answer last, not first.
    """

    logprob: float
    first_prob: float
    first_rank: int
    n_tokens: int

    @property
    def prob(self) -> float:
        return math.exp(self.logprob)

    @property
    def top1(self) -> bool:
        return self.first_rank == 1


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def score_answers(
    model: torch.nn.Module, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], *,
    batch_size: int = 16, pad_id: int = 0,
) -> list[AnswerScore]:
    """Score each ``(prompt_ids, answer_ids)`` pair (both non-empty) with one forward pass per batch.

    The answer's tokens are teacher-forced after the prompt: token ``j`` of the answer, at
    position ``p = len(prompt) + j``, is scored by the logits at ``p - 1``.
    """
    for i, (prompt, answer) in enumerate(pairs):
        if not prompt or not answer:
            raise ValueError(f"pair {i}: prompt and answer must both have at least one token")
    device = _model_device(model)
    scores: list[AnswerScore] = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        ids, mask = right_pad([list(p) + list(a) for p, a in chunk], pad_id)
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()  # [b, t, V]
        for row, (prompt, answer) in enumerate(chunk):
            positions = torch.arange(len(prompt) - 1, len(prompt) + len(answer) - 1, device=logits.device)
            targets = torch.as_tensor(list(answer), dtype=torch.long, device=logits.device)
            row_logits = logits[row, positions]  # [n_answer, V]
            logprobs = torch.log_softmax(row_logits, dim=-1).gather(1, targets[:, None])[:, 0]
            first = row_logits[0]
            rank = int((first >= first[targets[0]]).sum().item())
            scores.append(AnswerScore(
                logprob=float(logprobs.sum().item()), first_prob=float(logprobs[0].exp().item()),
                first_rank=rank, n_tokens=len(answer),
            ))
    return scores


def summarise_scores(scores: Sequence[AnswerScore]) -> dict[str, float | int | None]:
    """``top1_rate`` (share whose first answer token is the argmax), ``mean_prob`` (mean
    first-token probability), ``mean_answer_prob`` (whole answer), ``mean_rank``, ``n``."""
    if not scores:
        return {"top1_rate": None, "mean_prob": None, "mean_answer_prob": None, "mean_rank": None, "n": 0}
    return {
        "top1_rate": sum(s.top1 for s in scores) / len(scores),
        "mean_prob": float(np.mean([s.first_prob for s in scores])),
        "mean_answer_prob": float(np.mean([s.prob for s in scores])),
        "mean_rank": float(np.mean([s.first_rank for s in scores])),
        "n": len(scores),
    }


# --------------------------------------------------------------------------- blocks


@torch.no_grad()
def token_logprobs(
    model: torch.nn.Module, blocks: Sequence[Sequence[int]], *, batch_size: int = 8, pad_id: int = 0,
    max_batch_tokens: int = 4096,
) -> list[np.ndarray]:
    """Per block, the log-probability of each token given the ones before it.

    Returns one float64 array ``[n - 1]`` per block of ``n`` tokens (the first token has no
    context and is not scored). Padding is never scored. A forward pass holds at most
    ``max_batch_tokens`` positions (fewer blocks than ``batch_size`` when blocks are long): its
    logits are ``[b, t, vocab]`` floats, 800 MB for 4096 positions of a 49k vocabulary.
    """
    device = _model_device(model)
    out: list[np.ndarray] = []
    longest = max((len(b) for b in blocks), default=1)
    step = max(1, min(batch_size, max_batch_tokens // longest))
    for start in range(0, len(blocks), step):
        chunk = blocks[start : start + step]
        ids, mask = right_pad(chunk, pad_id)
        ids, mask = ids.to(device), mask.to(device)
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]  # [b, t-1, V]
        # log p = logit(target) - logsumexp(logits): no second [b, t, V] tensor (log_softmax's)
        picked = logits.gather(2, ids[:, 1:, None])[..., 0].float() - torch.logsumexp(logits.float(), dim=-1)
        del logits
        for row, block in enumerate(chunk):
            out.append(picked[row, : len(block) - 1].double().cpu().numpy())
    return out


def perplexity(logprobs: Iterable[np.ndarray]) -> float | None:
    """exp of the mean token negative log-likelihood over all blocks' tokens (None if no token)."""
    values = [lp for lp in logprobs if len(lp)]
    if not values:
        return None
    flat = np.concatenate(values)
    return float(np.exp(-flat.mean()))


def min_k_score(logprobs: np.ndarray, k_percent: float) -> float:
    """Min-K% Prob of one block: the mean of its lowest ``k_percent`` % token log-probs (at least
    one token). Higher means the model finds even the block's hardest tokens likely: a member."""
    if not len(logprobs):
        raise ValueError("a block needs at least one scored token (two tokens) for Min-K%")
    count = max(1, int(len(logprobs) * k_percent / 100))
    return float(np.sort(logprobs)[:count].mean())


def membership_auc(members: Sequence[float], non_members: Sequence[float]) -> float | None:
    """Area under the ROC curve of ``score`` separating members from non-members: the
    Mann-Whitney probability that a random member scores higher than a random non-member,
    ties counted half. 0.5 = no leakage signal; None when either side is empty."""
    if not len(members) or not len(non_members):
        return None
    a, b = np.asarray(members, dtype=float)[:, None], np.asarray(non_members, dtype=float)[None, :]
    return float(((a > b).sum() + 0.5 * (a == b).sum()) / (a.size * b.size))


# --------------------------------------------------------------------------- completions


@torch.no_grad()
def generate_completions(
    model, tokenizer, prompts: Sequence[str], *, max_new_tokens: int = 24, batch_size: int = 16,
) -> list[str]:
    """Greedy continuations of ``prompts`` (the new text only, special tokens dropped).

    Batched with left padding, so every prompt's last token sits at the same position;
    deterministic for a given model, batch size and device.
    """
    from transformers import GenerationConfig

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        pad_id = 0
    config = GenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, pad_token_id=pad_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    device = _model_device(model)
    texts: list[str] = []
    for start in range(0, len(prompts), batch_size):
        encoded = [tokenizer(p)["input_ids"] for p in prompts[start : start + batch_size]]
        width = max(len(e) for e in encoded)
        ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for row, e in enumerate(encoded):
            ids[row, width - len(e):] = torch.as_tensor(e, dtype=torch.long)
            mask[row, width - len(e):] = 1
        generated = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=config)
        texts += tokenizer.batch_decode(generated[:, width:], skip_special_tokens=True)
    return texts


class TermMatcher:
    """Finds whole-word occurrences of terms in text.

    A term holding an uppercase letter is a name and matches case-sensitively ("Watson", not
    "watson"); an all-lowercase term matches in any case ("goose", "Goose"). "Whole word": no
    letter, digit or underscore directly before or after (so "Holmes" is found in "Holmes's").
    Matches may overlap: "Miss Mary Sutherland" yields "Miss Mary" and "Mary Sutherland" when
    both are terms (at each position the longest term starting there).
    """

    def __init__(self, terms: Iterable[str]):
        terms = sorted({t for t in terms if t and t.strip()}, key=lambda t: (-len(t), t))
        self.terms = terms
        sensitive = [t for t in terms if t != t.lower()]
        insensitive = [t for t in terms if t == t.lower()]
        self._sensitive = self._pattern(sensitive, 0)
        self._insensitive = self._pattern(insensitive, re.IGNORECASE)
        self._lower = {t.lower(): t for t in insensitive}

    @staticmethod
    def _pattern(terms: list[str], flags: int) -> re.Pattern | None:
        if not terms:
            return None
        # A lookahead consumes nothing, so a term inside or overlapping another is still found.
        return re.compile(r"(?=(?<!\w)(" + "|".join(map(re.escape, terms)) + r")(?!\w))", flags)

    def find(self, text: str) -> list[str]:
        """The terms found in ``text``, each once, in order of first occurrence."""
        found: dict[str, int] = {}
        if self._sensitive is not None:
            for m in self._sensitive.finditer(text):
                found.setdefault(m.group(1), m.start())
        if self._insensitive is not None:
            for m in self._insensitive.finditer(text):
                found.setdefault(self._lower[m.group(1).lower()], m.start())
        return sorted(found, key=found.get)

    @staticmethod
    def occurs(term: str, text: str) -> bool:
        """Whether ``term`` occurs in ``text`` under the same rules (a single-term search)."""
        flags = 0 if term != term.lower() else re.IGNORECASE
        return re.search(r"(?<!\w)" + re.escape(term) + r"(?!\w)", text, flags) is not None


def _as_matcher(terms: TermMatcher | Iterable[str]) -> TermMatcher:
    return terms if isinstance(terms, TermMatcher) else TermMatcher(terms)


def grade_completion(
    text: str, anchor_terms: TermMatcher | Iterable[str], keywords: Iterable[str],
    genre_terms: TermMatcher | Iterable[str], *, weak_terms: TermMatcher | Iterable[str] = (),
    prompt: str = "",
) -> tuple[int, list[str]]:
    """Grade a completion for familiarity with the forget corpus, and say what decided it.

    * 3 - details unique to the corpus: a canon anchor term (``anchor_terms``: the dictionary's
      distinctive anchors and their variants) or one of the probe's own ``keywords``;
    * 2 - only terms typical of the genre (``genre_terms``: "detective", "Scotland Yard");
    * 1 - possibly a lucky guess: a ``weak_terms`` entry (an anchor that is also common in
      general English, such as "Arthur" or "Murphy"), or a capitalised keyword found only in
      another case ("watson" for "Watson");
    * 0 - none of these.

    A term that already occurs in the ``prompt`` does not count: echoing "Sherlock Holmes" from
    the prompt shows no knowledge. Returns ``(grade, matched terms of that grade)``; matching
    rules: :class:`TermMatcher`.
    """
    keywords = list(keywords)
    keyword_matcher = TermMatcher(keywords)

    def found(matcher: TermMatcher) -> list[str]:
        return [t for t in matcher.find(text) if not (prompt and TermMatcher.occurs(t, prompt))]

    strong = found(_as_matcher(anchor_terms)) + found(keyword_matcher)
    if strong:
        return 3, list(dict.fromkeys(strong))
    genre = found(_as_matcher(genre_terms))
    if genre:
        return 2, genre
    names = [k for k in keywords if k != k.lower()]
    other_case = [k for k in names
                  if re.search(r"(?<!\w)" + re.escape(k) + r"(?!\w)", text, re.IGNORECASE)
                  and not re.search(r"(?<!\w)" + re.escape(k) + r"(?!\w)", prompt, re.IGNORECASE)]
    weak = found(_as_matcher(weak_terms)) + other_case
    if weak:
        return 1, list(dict.fromkeys(weak))
    return 0, []


def familiarity(grades: Sequence[int]) -> float | None:
    """The paper's familiarity score, (5 x count(3) + count(2)) / N, in [0, 5]; None if N = 0."""
    if not grades:
        return None
    return (5 * sum(g == 3 for g in grades) + sum(g == 2 for g in grades)) / len(grades)


def grading_terms(
    anchors: Iterable[tuple[str, Sequence[str], int]], genre_terms: Iterable[str], *,
    zipf: Callable[[str], float], corpus_words: int, min_specificity: float = 10.0, common_phrase_zipf: float = 4.5,
) -> tuple[list[str], list[str]]:
    """Split the dictionary's ``(anchor, variants, forget_count)`` into grade-3 and grade-1 terms.

    * An anchor listed among the genre terms ("Scotland Yard", "London") is the genre's, not the
      corpus's, and is left out of both lists (the genre list wins).
    * A one-word anchor is *weak* (grade 1) unless its rate in the forget corpus
      (``forget_count / corpus_words``) is at least ``min_specificity`` times its rate in general
      English (``10 ** (zipf(anchor) - 9)`` per word, wordfreq's Zipf scale): "Watson" (1,027
      times in 669k words of the canon, Zipf 4.18) is distinctive, "Murphy" (6 times, Zipf 4.13)
      is a name anyone may guess.
    * A multi-word anchor is weak when its Zipf is at least ``common_phrase_zipf`` ("New York",
      "Prime Minister"); wordfreq's estimate for phrases is too rough for the ratio.

    Each anchor brings its variants into the same list.
    """
    genre = {g.lower() for g in genre_terms}
    strong, weak = [], []
    for anchor, variants, count in anchors:
        if anchor.lower() in genre:
            continue
        frequency = zipf(anchor)
        if len(anchor.split()) == 1:
            general_rate = 10 ** (frequency - 9)
            common = frequency > 0 and count / max(corpus_words, 1) < min_specificity * general_rate
        else:
            common = frequency >= common_phrase_zipf
        target = weak if common else strong
        target += [anchor, *(v for v in variants if v.lower() not in genre)]
    return list(dict.fromkeys(strong)), list(dict.fromkeys(weak))
