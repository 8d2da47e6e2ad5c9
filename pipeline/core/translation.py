"""Generic translations of anchor terms: requests, proposals, the proposer protocol, words.

An anchor gets ``n`` translations, *index-aligned*: translation ``i`` of every anchor belongs to
one invented substitute world ``i``, so that a block which picks world ``i`` replaces
``Mr. Jonathan Pike``, ``Pike`` and ``Pike's`` with ``Mr. Edward Hale``, ``Hale`` and ``Hale's``.

Proposers:

* :class:`pipeline.core.offline_proposer.OfflineProposer` (the default) builds a seeded
  name-token map from name pools (:mod:`pipeline.core.name_pools`); no network, no model.
* ``pipeline.proposers.OpenAICompatibleProposer`` asks an OpenAI-compatible chat endpoint and
  falls back to the offline proposer for every entity whose reply is unusable (it lives above
  the core: it reads params and the environment and talks to the network).

This module holds what they share: the request and result types, the proposer protocol, the
words of an anchor (which of them a translation replaces, which it keeps), and
:func:`collect_proposals`, which checks any proposer's output.

Casefolding: vocabularies (``forbidden``, the anchors' own words) are sets of casefolded word
stems, possessive ``'s`` removed; see :func:`forbidden_vocabulary`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from pipeline.core.lexicon import CONNECTORS, KEEP_WORDS, TITLE_FUNCTION_WORDS, is_roman_numeral
from pipeline.errors import PipelineError
from schemas.anchors import GENDERS, KINDS


class ProposerError(PipelineError):
    """A proposer cannot produce translations: endpoint unreachable, HTTP error, pools exhausted."""


# --------------------------------------------------------------------------------------------
# Requests, results and the proposer protocol
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AnchorRequest:
    """One anchor to translate.

    Attributes:
        anchor: canonical surface form, e.g. ``"Mr. Jonathan Pike"``.
        kind: one of :data:`schemas.anchors.KINDS`.
        variants: other observed surface forms; they are evidence (a ``Miss`` before a first name
            tells its gender), never translated themselves.
        gender: for a person, what the pronouns after it in the corpus say (``"female"``,
            ``"male"``, ``""`` when unsure); it decides the gender of its first name when no
            title does.
    """

    anchor: str
    kind: str
    variants: tuple[str, ...] = ()
    gender: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"anchor {self.anchor!r}: kind {self.kind!r} is not one of {KINDS}")
        if self.gender not in GENDERS:
            raise ValueError(f"anchor {self.anchor!r}: gender {self.gender!r} is not one of {GENDERS}")
        if not self.anchor.strip():
            raise ValueError("an anchor must not be empty")


@dataclass(frozen=True)
class Proposal:
    """The translations of one anchor and who actually wrote them.

    ``refused`` says why the configured proposer's own answer was not used (``None`` when it
    was), and ``reply`` keeps that refused answer, for the rejects table.
    """

    translations: tuple[str, ...]
    proposer: str
    refused: str | None = None
    reply: str = ""


@dataclass(frozen=True)
class AnchorProposal:
    """One anchor's validated translations, as :func:`collect_proposals` returns them."""

    anchor: str
    translations: tuple[str, ...]
    proposer: str
    refused: str | None = None
    reply: str = ""


class TranslationProposer(Protocol):
    """Anything that turns anchor requests into index-aligned translations."""

    name: str

    def propose(
        self, requests: list[AnchorRequest], *, n: int, seed: int, forbidden: frozenset[str]
    ) -> dict[str, list[str]]:
        """Map every requested anchor to exactly ``n`` translations; index ``i`` is world ``i``."""
        ...


@runtime_checkable
class MarkingProposer(Protocol):
    """A proposer that may hand some anchors to another proposer and says so per anchor."""

    name: str

    def propose_marked(
        self, requests: list[AnchorRequest], *, n: int, seed: int, forbidden: frozenset[str]
    ) -> dict[str, Proposal]: ...


# --------------------------------------------------------------------------------------------
# Words of an anchor
# --------------------------------------------------------------------------------------------

# A word is a run of letters with inner apostrophes ("O'Neill", "Holmes's"); digits, hyphens,
# periods and spaces separate words and are kept verbatim in a translation.
_WORD = re.compile(r"[^\W\d_]+(?:['\u2019][^\W\d_]+)*")
_POSSESSIVE = re.compile(r"['\u2019][sS]$")

@dataclass(frozen=True)
class Word:
    """A word of an anchor: its offsets in the text and its stem."""

    start: int
    end: int
    stem: str  # the word without a possessive 's (Holmes's -> Holmes)

    @property
    def key(self) -> str:
        return self.stem.casefold()


def words_of(text: str) -> list[Word]:
    """The words of ``text``, each without a possessive ``'s`` (offsets cover the stem only)."""
    words = []
    for match in _WORD.finditer(text):
        stem = match.group()
        if _POSSESSIVE.search(stem) and len(stem) > 2:
            stem = stem[:-2]
        words.append(Word(match.start(), match.start() + len(stem), stem))
    return words


def word_keys(text: str) -> set[str]:
    """Casefolded stems of every word of ``text`` (``"Mr. Holmes's"`` -> ``{"mr", "holmes"}``)."""
    return {word.key for word in words_of(text)}


def forbidden_vocabulary(texts: Iterable[str], anchors: Iterable[str]) -> frozenset[str]:
    """Words a substitute must never be: capitalised words of the corpora and every anchor word.

    Args:
        texts: corpus documents (forget and retain).
        anchors: anchors and their variants.

    Returns:
        Casefolded word stems (possessive ``'s`` removed). From ``texts``: every word that starts
        with a capital letter and has at least two letters (single capitals are initials, the
        pronoun I and the article A; counting them would forbid every initial). From ``anchors``:
        every word, of any case and length.
    """
    vocabulary: set[str] = set()
    for text in texts:
        vocabulary.update(w.key for w in words_of(text) if len(w.stem) >= 2 and w.stem[0].isupper())
    for anchor in anchors:
        vocabulary.update(word_keys(anchor))
    return frozenset(vocabulary)


# --------------------------------------------------------------------------------------------
# Which words of an anchor a translation replaces
# --------------------------------------------------------------------------------------------

def _is_roman(word: Word, text: str) -> bool:
    # "Henry VIII", "Charles I"; but "H." is an initial.
    return is_roman_numeral(word.stem) and not text[word.end:word.end + 1] == "."


def _touches_digit(word: Word, text: str) -> bool:
    # "221B": the letter belongs to a number.
    return text[word.start - 1:word.start].isdigit() or text[word.end:word.end + 1].isdigit()


def proper_name_words(text: str) -> list[Word]:
    """Proper-name words of ``text`` outside a work title: capitalised, not kept."""
    return [
        w for w in words_of(text)
        if w.stem[0].isupper() and w.key not in KEEP_WORDS and not _is_roman(w, text) and not _touches_digit(w, text)
    ]


def promoted_words(text: str) -> list[Word]:
    """The words to translate in an anchor without any proper-name word ("Hall", "the Colonel"):
    its capitalised non-connector words, else its non-connector words, else all its words."""
    words = words_of(text)
    content = [w for w in words if w.key not in CONNECTORS]
    return [w for w in content if w.stem[0].isupper()] or content or words


def _is_title_function(word: Word, text: str) -> bool:
    return word.key in TITLE_FUNCTION_WORDS or _is_roman(word, text) or _touches_digit(word, text)


def title_content_words(text: str) -> list[Word]:
    """The words of a work title to replace: all but function words (all, if that is none)."""
    return [w for w in words_of(text) if not _is_title_function(w, text)] or promoted_words(text)


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------


def check_n(n: int) -> None:
    """Refuse a translation count below one (a ``ValueError``: a caller's bug, not bad data)."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")


def collect_proposals(
    requests: Sequence[AnchorRequest], *, proposer: TranslationProposer, n: int, seed: int, forbidden: frozenset[str]
) -> list[AnchorProposal]:
    """Propose and validate translations, with who wrote each anchor's and why a reply was refused.

    Returns:
        One :class:`AnchorProposal` per request, in the input order, each with exactly ``n``
        non-empty translations.

    Raises:
        ValueError: two requests share an anchor.
        ProposerError: the proposer failed, or returned a missing or malformed entry.
    """
    requests = list(requests)
    anchors = [r.anchor for r in requests]
    if len(set(anchors)) != len(anchors):
        repeated = sorted({a for a in anchors if anchors.count(a) > 1})
        raise ValueError(f"anchors requested twice: {repeated[:5]}")
    if isinstance(proposer, MarkingProposer):
        marked = proposer.propose_marked(requests, n=n, seed=seed, forbidden=forbidden)
    else:
        plain = proposer.propose(requests, n=n, seed=seed, forbidden=forbidden)
        marked = {a: Proposal(tuple(ts), proposer.name) for a, ts in plain.items() if isinstance(ts, list | tuple)}
    results = []
    for anchor in anchors:
        proposal = marked.get(anchor)
        translations = None if proposal is None else proposal.translations
        if (
            translations is None or len(translations) != n
            or not all(isinstance(t, str) and t.strip() for t in translations)
        ):
            raise ProposerError(
                f"proposer {proposer.name}: no {n} non-empty translations for {anchor!r}: {translations!r}"
            )
        results.append(AnchorProposal(anchor, tuple(translations), proposal.proposer, proposal.refused, proposal.reply))
    return results


def propose_translations(
    requests: Sequence[AnchorRequest], *, proposer: TranslationProposer, n: int, seed: int, forbidden: frozenset[str]
) -> list[tuple[str, list[str], str]]:
    """``(anchor, n translations, proposer actually used)`` per request, in the input order.

    See :func:`collect_proposals` for the checks and errors.
    """
    return [
        (p.anchor, list(p.translations), p.proposer)
        for p in collect_proposals(requests, proposer=proposer, n=n, seed=seed, forbidden=forbidden)
    ]
