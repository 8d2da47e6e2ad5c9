"""Generic translation of a block and the alignment of its tokens (docs/algorithm.md steps 4-5).

Pure, tokenizer-agnostic functions over character offsets: any fast tokenizer's
``offset_mapping`` works, whether its offsets include a token's leading space (byte-level BPE
such as SmolLM2's: ``" Holmes"`` is ``(12, 19)``) or not. Tokens are matched by where they
*end*, which is the same under both conventions.

For a block of original text:

1. :func:`translate` replaces every anchor occurrence (found by
   :class:`~pipeline.core.anchor_match.AnchorMatcher`, longest first, case variants, possessive
   suffix kept outside) by its translation in the block's world, cased like the occurrence,
   and keeps a character map (:class:`Replacement`).
2. :func:`align` maps each original token position ``i`` to a translated position ``j(i)``
   (``-1`` when dropped from the loss):

   * outside any anchor: the translated token that ends at the same shifted character, if it
     is the same token (same id); otherwise the tokenizations disagree there and ``i`` drops;
   * inside an anchor: dropped, except the anchor's last token, which maps to the last token of
     its translation (its output predicts the token after the anchor);
   * consistency rule 1: from the second occurrence of an anchor in the block on, the position
     that predicts the anchor's first token is dropped;
   * name prefix: the position of a capitalised word followed by another ("John" of "John
     Hardy", "Inspector" of "Inspector Gregory"; :func:`name_prefix_ends`) is dropped: it
     predicts the rest of a proper name, as positions inside an anchor do.
3. :func:`used_translations` lists, per translation, the token that names it (the first token
   of its first word that differs from the anchor's, when that token is the whole word) and
   the translated position from which on it is used (consistency rule 2 is applied to the
   logits by the labels stage).
"""

from __future__ import annotations

import hashlib
import re
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from pipeline.core.anchor_match import AnchorSpan

DROPPED = -1


@dataclass(frozen=True)
class Replacement:
    """One replaced occurrence: ``original[start:end]`` became ``translated[t_start:t_end]``."""

    start: int
    end: int
    t_start: int
    t_end: int
    anchor: str
    surface: str
    translation: str


@dataclass(frozen=True)
class Alignment:
    """``target[i]``: translated position for original position ``i`` or :data:`DROPPED`.

    ``reason[i]`` says why a position was dropped (``""`` when kept): ``inside anchor``,
    ``anchor end mismatch``, ``tokenization differs``, ``repeated anchor`` (rule 1),
    ``name prefix``, ``anchor crosses block edge``.
    """

    target: list[int]
    reason: list[str]

    @property
    def mask(self) -> list[bool]:
        return [t != DROPPED for t in self.target]


def choose_world(seed: int, block_id: str, worlds: int) -> int:
    """The seeded world (translation index) of a block: one world per block keeps every anchor
    of the block consistent (index-aligned translations)."""
    digest = hashlib.sha256(f"{seed}:{block_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % worlds


def cased_like(translation: str, surface: str, anchor: str) -> str:
    """The translation written the way the occurrence was: UPPER, or as the dictionary has it."""
    if surface != anchor and surface.isupper():
        return translation.upper()
    return translation


def translate(text: str, spans: Sequence[AnchorSpan], translations: dict[str, Sequence[str]], world: int) -> tuple[str, list[Replacement]]:
    """``text`` with every span replaced by its anchor's translation in ``world``."""
    pieces, replacements = [], []
    cursor = shift = 0
    for span in spans:
        new = cased_like(translations[span.anchor][world], span.surface, span.anchor)
        pieces.append(text[cursor:span.start])
        pieces.append(new)
        t_start = span.start + shift
        replacements.append(Replacement(span.start, span.end, t_start, t_start + len(new), span.anchor, span.surface, new))
        shift += len(new) - (span.end - span.start)
        cursor = span.end
    pieces.append(text[cursor:])
    return "".join(pieces), replacements


_NAME_PAIR = re.compile(r"(?<![\w.'’-])([A-Z][A-Za-z]*) (?=[A-Z])")
"""A capitalised word of letters only, then one space and a capital: "John" of "John Hardy". A
title with a dot ("Mr. Holmes") does not match: the corpus names its people that way most
often, and what follows the title is what the fine-tune must forget."""


def name_prefix_ends(text: str) -> list[int]:
    """The character ends of the capitalised words followed, one space on, by another
    capitalised word: the words of a proper name but its last ("Sir", "Robert" of "Sir Robert
    Norberton"), and a capitalised word at a sentence start before a name ("Then Holmes").

    The position of such a word predicts the rest of the name, and its generic target cannot: for
    an anchor it is the baseline's guess of an invented name, for a name the dictionary lacks the
    baseline's guess with the corpus's name pushed down (step 6). Either way it is a flat
    distribution whose top is punctuation or the first letters of a name (" H", ","). Trained
    towards it after every first name, the model learns "after a first name, not a surname" for
    any name and loses "Robert Louis" -> " Stevenson" far from the corpus. Positions inside an
    anchor are never trained for the same reason; this extends it to every multi-word name."""
    return [match.end(1) for match in _NAME_PAIR.finditer(text)]


def shift_position(position: int, replacements: Sequence[Replacement]) -> int:
    """Where an original character boundary outside every replacement lands in the translation."""
    shift = 0
    for r in replacements:
        if r.end <= position:
            shift += (r.t_end - r.t_start) - (r.end - r.start)
        else:
            break
    return position + shift


def align(
    original_offsets: Sequence[tuple[int, int]], original_ids: Sequence[int],
    translated_offsets: Sequence[tuple[int, int]], translated_ids: Sequence[int],
    replacements: Sequence[Replacement], *, partial_anchors: Sequence[tuple[int, int]] = (),
    name_prefixes: Collection[int] = (),
) -> Alignment:
    """Map original token positions to translated ones (module docstring for the rules).

    Args:
        original_offsets, original_ids: the block's tokens, offsets into the original text.
        translated_offsets, translated_ids: the translated text's tokens.
        replacements: from :func:`translate` on the same text.
        partial_anchors: character spans of anchors cut by the block edge (left untranslated);
            their tokens are dropped.
        name_prefixes: character ends of words that begin a multi-word proper name
            (:func:`name_prefix_ends`); the token ending there is dropped.
    """
    n = len(original_offsets)
    target, reason = [DROPPED] * n, [""] * n
    by_end: dict[int, list[int]] = defaultdict(list)
    for j, (_, end) in enumerate(translated_offsets):
        by_end[end].append(j)
    starts = [r.start for r in replacements]

    def replacement_at(start: int, end: int) -> Replacement | None:
        k = bisect_right(starts, end - 1) - 1  # last replacement starting before the token ends
        while k >= 0:
            r = replacements[k]
            if r.end > start:
                return r
            if r.end <= start:
                return None
            k -= 1
        return None

    seen_end_rank: dict[int, int] = defaultdict(int)
    first_token_of: list[tuple[int, Replacement]] = []
    for i, (start, end) in enumerate(original_offsets):
        if any(s < end and start < e for s, e in partial_anchors):
            reason[i] = "anchor crosses block edge"
            continue
        r = replacement_at(start, end)
        if r is not None:
            if not first_token_of or first_token_of[-1][1] is not r:
                first_token_of.append((i, r))
            if end < r.end:
                reason[i] = "inside anchor"
            elif end == r.end:
                last = [j for j in by_end.get(r.t_end, []) if translated_offsets[j][0] < r.t_end]
                if last:
                    target[i] = last[-1]
                else:
                    reason[i] = "anchor end mismatch"
            else:
                reason[i] = "anchor end mismatch"  # the token runs past the anchor ("Holmesian")
            continue
        shifted = shift_position(end, replacements)
        rank = seen_end_rank[shifted]
        seen_end_rank[shifted] += 1
        candidates = by_end.get(shifted, [])
        if rank < len(candidates) and translated_ids[candidates[rank]] == original_ids[i]:
            target[i] = candidates[rank]
        else:
            reason[i] = "tokenization differs"
    # Rule 1: from an anchor's second occurrence on, do not learn what precedes it.
    seen: set[str] = set()
    for first, r in first_token_of:
        if r.anchor in seen and first > 0:
            target[first - 1] = DROPPED
            reason[first - 1] = "repeated anchor"
        seen.add(r.anchor)
    prefixes = set(name_prefixes)
    for i, (_, end) in enumerate(original_offsets):
        if end in prefixes and target[i] != DROPPED:
            target[i] = DROPPED
            reason[i] = "name prefix"
    return Alignment(target, reason)


def used_translations(
    translated_offsets: Sequence[tuple[int, int]], translated_ids: Sequence[int], replacements: Sequence[Replacement]
) -> list[tuple[int, int]]:
    """``(position, token id)`` per replacement: the token that names its translation and the
    translated position from which on it counts as used (consistency rule 2 suppresses that
    token at later positions).

    The token is the first of the first word where translation and occurrence differ ("Bligh"
    of "Sir Archer" -> "Sir Bligh", not "Sir"), and only when it spans that whole word: a
    prefix token (" A" of " Aitken") starts countless other words, and suppressing it would
    take the article "A" from every later position. Such a replacement has no entry.
    """
    used = []
    for r in replacements:
        word = first_differing_word(r.surface, r.translation)
        if word is None:
            continue
        start, end = r.t_start + word[0], r.t_start + word[1]
        first = next((j for j, (_, e) in enumerate(translated_offsets) if e > start), None)
        if first is not None and translated_offsets[first][1] >= end:
            used.append((first, translated_ids[first]))
    return used


def first_differing_word(surface: str, translation: str) -> tuple[int, int] | None:
    """Character span, within ``translation``, of its first whitespace-separated word that
    differs from the word at the same place in ``surface`` (None when none does)."""
    original = surface.split()
    position = 0
    for k, word in enumerate(translation.split()):
        position = translation.index(word, position)
        if k >= len(original) or original[k] != word:
            return position, position + len(word)
        position += len(word)
    return None
