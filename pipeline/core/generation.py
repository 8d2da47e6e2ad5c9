"""Running a causal language model for the evaluation: greedy decoding and teacher forcing (pure).

One prefill per batch serves several measures, which is most of the evaluation's speed:

* :func:`answer_probes`: per ``(prompt, answer)`` probe, the probability and rank of the answer's
  first token, the teacher-forced log-probability of the whole answer, and the greedy
  continuation of the same length (scored with ROUGE-L against the answer). Prefill the
  prompts, decode greedily, crop the key/value cache back to the prompts, teacher-force the answers.
* :func:`greedy_continuations`: greedy continuations of open prompts (completion probes).
* :func:`token_logprobs`: teacher-forced log-probabilities of whole texts (retain perplexity).
* :func:`window_scores`: per verbatim window (prefix + true continuation, equal lengths), the
  teacher-forced log-probability of every token (Min-K%, perplexity) and the greedy continuation
  of the prefix (MUSE's verbatim memorisation): one forward over the whole window, the cache
  cropped to the prefix, then greedy decoding.

Batches are left-padded (every prompt ends at the same position, so one decoding step serves the
batch) with explicit position ids, and sorted by length to waste little on padding; results come
back in input order. Greedy = argmax at each step (first index on ties, as ``generate`` does).
Everything runs under ``torch.no_grad`` on the model's device; ``progress(n)`` is called after
each batch with the number of items it finished.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.core.padding import right_pad

Progress = Callable[[int], None] | None


@dataclass(frozen=True)
class AnswerScore:
    """How much a model expects one probe's true continuation, and what it says instead.

    ``logprob`` is the sum of the answer tokens' log-probabilities (natural log) given the
    prompt, so ``prob = exp(logprob)`` is the probability of the whole answer; ``first_logprob``
    (``first_prob``) and ``first_rank`` concern its first token alone, the paper's measure. The rank counts every
    token whose logit is at least the answer's (the answer included), so a tie is never a
    top-1: a model with constant logits ranks every answer last, not first. ``greedy`` is the
    model's greedy continuation, as many tokens as the answer.
    """

    logprob: float
    first_logprob: float
    first_rank: int
    n_tokens: int
    greedy: tuple[int, ...] = ()

    @property
    def prob(self) -> float:
        return float(np.exp(self.logprob))

    @property
    def first_prob(self) -> float:
        return float(np.exp(self.first_logprob))

    @property
    def top1(self) -> bool:
        return self.first_rank == 1


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def left_pad(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``[b, t]`` ids and attention mask, each sequence right-aligned (generation pads on the left)."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if len(seq):
            ids[row, width - len(seq):] = torch.as_tensor(list(seq), dtype=torch.long)
            mask[row, width - len(seq):] = 1
    return ids, mask


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that start at 0 on each row's first real token (left padding ignored)."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def _batches(lengths: Sequence[int], batch_size: int, *, steps: Sequence[int] | None = None) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first), deterministic. ``steps``
    (per index, e.g. greedy steps): grouped by it first, so that a batch runs as few sequential
    steps as its own rows need."""
    order = sorted(range(len(lengths)), key=lambda i: (-(steps[i] if steps else 0), -lengths[i], i))
    return [order[i: i + batch_size] for i in range(0, len(order), batch_size)]


def _forward(model, *, cache=None, **inputs):
    """``model(**inputs)`` with the key/value ``cache`` under whichever name this transformers
    release uses (``cache`` since 5.2x, ``past_key_values`` before); returns (logits, cache)."""
    name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    out = model(**inputs, use_cache=True, **({name: cache} if cache is not None else {}))
    return out.logits, getattr(out, name)


def _truncate(cache, length: int) -> None:
    """Drop the cache's positions from ``length`` on (a negative ``crop`` means "remove n" in
    every transformers 5 release)."""
    extra = cache.get_seq_length() - length
    if extra > 0:
        cache.crop(-extra)


def _greedy_steps(
    model, cache, mask: torch.Tensor, logits: torch.Tensor, steps: int, *, eos_id: int | None = None,
) -> torch.Tensor:
    """``steps`` greedy tokens ``[b, steps]`` continuing a prefilled batch whose next-token
    ``logits`` are ``[b, V]``; ``cache`` and ``mask`` cover what was fed so far. Stops early
    once every row has produced ``eos_id`` (the rest is filled with it)."""
    batch = logits.shape[0]
    position = mask.sum(-1)  # the next position of each row
    done = torch.zeros(batch, dtype=torch.bool, device=logits.device)
    tokens = []
    for step in range(steps):
        token = logits.argmax(-1)
        if eos_id is not None:
            token = torch.where(done, torch.full_like(token, eos_id), token)
            done |= token == eos_id
        tokens.append(token)
        if step == steps - 1 or (eos_id is not None and bool(done.all())):
            break
        mask = torch.cat([mask, mask.new_ones((batch, 1))], dim=1)
        logits, cache = _forward(model, cache=cache, input_ids=token[:, None], attention_mask=mask,
                                 position_ids=position[:, None])
        position, logits = position + 1, logits[:, -1].float()
    result = torch.stack(tokens, dim=1)
    if result.shape[1] < steps:
        result = torch.cat([result, result.new_full((batch, steps - result.shape[1]), eos_id)], dim=1)
    return result


def _token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) per position, ``[b, t, V]`` logits and ``[b, t]`` targets -> ``[b, t]``
    (logit minus logsumexp: no second ``[b, t, V]`` tensor)."""
    logits = logits.float()
    return logits.gather(-1, targets[..., None])[..., 0] - torch.logsumexp(logits, dim=-1)


@torch.no_grad()
def answer_probes(
    model, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], *, pad_id: int = 0, batch_size: int = 32,
    progress: Progress = None,
) -> list[AnswerScore]:
    """Score each ``(prompt_ids, answer_ids)`` pair (both non-empty) and decode its greedy answer."""
    for i, (prompt, answer) in enumerate(pairs):
        if not len(prompt) or not len(answer):
            raise ValueError(f"pair {i}: prompt and answer must both have at least one token")
    device = _device(model)
    scores: list[AnswerScore | None] = [None] * len(pairs)
    # Grouped by answer length first: a batch decodes greedily as many tokens as its longest answer.
    for batch in _batches([len(p) for p, _ in pairs], batch_size, steps=[len(a) for _, a in pairs]):
        prompts = [list(pairs[i][0]) for i in batch]
        answers = [list(pairs[i][1]) for i in batch]
        longest = max(len(a) for a in answers)
        ids, mask = (t.to(device) for t in left_pad(prompts, pad_id))
        logits, cache = _forward(model, input_ids=ids, attention_mask=mask, position_ids=_positions(mask),
                                 logits_to_keep=1)
        first = logits[:, -1].float()  # [b, V]
        greedy = _greedy_steps(model, cache, mask, first, longest)
        first_ids = torch.as_tensor([a[0] for a in answers], device=device)
        first_lp = torch.log_softmax(first, dim=-1).gather(1, first_ids[:, None])[:, 0]
        ranks = (first >= first.gather(1, first_ids[:, None])).sum(-1)
        rest = torch.zeros(len(batch), dtype=torch.float64, device=device)
        if longest > 1:
            _truncate(cache, ids.shape[1])
            answer_ids, answer_mask = _right_pad_answers(answers, pad_id, device)
            full_mask = torch.cat([mask, answer_mask], dim=1)
            start = mask.sum(-1, keepdim=True)
            positions = start + torch.arange(answer_ids.shape[1], device=device)[None]
            logits, _ = _forward(model, cache=cache, input_ids=answer_ids, attention_mask=full_mask,
                                 position_ids=positions)
            # position j of the answer predicts its token j + 1
            picked = _token_logprobs(logits[:, :-1], answer_ids[:, 1:]) * answer_mask[:, 1:]
            rest = picked.double().sum(-1)
        for row, index in enumerate(batch):
            n = len(answers[row])
            scores[index] = AnswerScore(
                logprob=float(first_lp[row] + rest[row]), first_logprob=float(first_lp[row]),
                first_rank=int(ranks[row]), n_tokens=n, greedy=tuple(int(t) for t in greedy[row, :n]),
            )
        if progress:
            progress(len(batch))
    return scores  # type: ignore[return-value]


def _right_pad_answers(answers: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(a) for a in answers)
    ids = torch.full((len(answers), width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((len(answers), width), dtype=torch.long, device=device)
    for row, answer in enumerate(answers):
        ids[row, : len(answer)] = torch.as_tensor(answer, dtype=torch.long)
        mask[row, : len(answer)] = 1
    return ids, mask


@torch.no_grad()
def greedy_continuations(
    model, prompts: Sequence[Sequence[int]], *, max_new_tokens: int, pad_id: int = 0, eos_id: int | None = None,
    batch_size: int = 32, progress: Progress = None,
) -> list[list[int]]:
    """Greedy continuations (new token ids only, cut before the first ``eos_id``) of ``prompts``."""
    device = _device(model)
    found: list[list[int] | None] = [None] * len(prompts)
    for batch in _batches([len(p) for p in prompts], batch_size):
        ids, mask = (t.to(device) for t in left_pad([prompts[i] for i in batch], pad_id))
        logits, cache = _forward(model, input_ids=ids, attention_mask=mask, position_ids=_positions(mask),
                                 logits_to_keep=1)
        tokens = _greedy_steps(model, cache, mask, logits[:, -1].float(), max_new_tokens, eos_id=eos_id).tolist()
        for row, index in enumerate(batch):
            seq = tokens[row]
            found[index] = seq[: seq.index(eos_id)] if eos_id is not None and eos_id in seq else seq
        if progress:
            progress(len(batch))
    return found  # type: ignore[return-value]


@torch.no_grad()
def token_logprobs(
    model, texts: Sequence[Sequence[int]], *, batch_size: int = 8, pad_id: int = 0, max_batch_tokens: int = 2048,
    progress: Progress = None,
) -> list[np.ndarray]:
    """Per text of ``n`` tokens, the float64 log-probability ``[n - 1]`` of each token after the
    first given the ones before it. Right-padded; padding is never scored. A forward pass holds
    at most ``max_batch_tokens`` positions (its logits are ``[b, t, V]`` floats: 400 MB for 2048
    positions of a 49k vocabulary)."""
    device = _device(model)
    out: list[np.ndarray] = []
    longest = max((len(t) for t in texts), default=1)
    step = max(1, min(batch_size, max_batch_tokens // longest))
    for start in range(0, len(texts), step):
        chunk = texts[start: start + step]
        ids, mask = (t.to(device) for t in right_pad(chunk, pad_id))
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]  # [b, t-1, V]
        picked = _token_logprobs(logits, ids[:, 1:])
        del logits
        out += [picked[row, : len(text) - 1].double().cpu().numpy() for row, text in enumerate(chunk)]
        if progress:
            progress(len(chunk))
    return out


@dataclass(frozen=True)
class WindowScore:
    """One verbatim window: ``logprobs`` ``[n - 1]`` of every token after the first given the
    ones before it (teacher forcing), and the ``greedy`` continuation of its prefix."""

    logprobs: np.ndarray
    greedy: tuple[int, ...]


@torch.no_grad()
def window_scores(
    model, windows: Sequence[Sequence[int]], *, prefix_tokens: int, batch_size: int = 32,
    max_batch_tokens: int = 2048, progress: Progress = None,
) -> list[WindowScore]:
    """Teacher-forced log-probabilities and greedy prefix continuations of equal-length windows.

    Each window is ``prefix_tokens`` tokens of prompt then its true continuation; the greedy
    continuation is as long as the true one. A forward pass holds at most ``max_batch_tokens``
    positions (its logits are ``[b, t, V]`` floats).
    """
    if not windows:
        return []
    width = len(windows[0])
    if any(len(w) != width for w in windows) or not 0 < prefix_tokens < width:
        raise ValueError(f"windows must share one length > prefix_tokens ({prefix_tokens})")
    device = _device(model)
    step = max(1, min(batch_size, max_batch_tokens // width))
    scores: list[WindowScore] = []
    for start in range(0, len(windows), step):
        ids = torch.as_tensor([list(w) for w in windows[start: start + step]], dtype=torch.long, device=device)
        logits, cache = _forward(model, input_ids=ids)
        logprobs = _token_logprobs(logits[:, :-1], ids[:, 1:]).double().cpu().numpy()
        following = logits[:, prefix_tokens - 1].float()
        del logits
        _truncate(cache, prefix_tokens)
        mask = torch.ones((ids.shape[0], prefix_tokens), dtype=torch.long, device=device)
        greedy = _greedy_steps(model, cache, mask, following, width - prefix_tokens).tolist()
        scores += [WindowScore(lp, tuple(g)) for lp, g in zip(logprobs, greedy)]
        if progress:
            progress(ids.shape[0])
    return scores
