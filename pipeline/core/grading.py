"""Grading completions for familiarity with the forget corpus (pure; docs/algorithm.md, Evaluation).

:func:`grading_terms` splits the anchor dictionary into terms unique to the corpus and terms
anyone may guess; :class:`TermMatcher` finds whole-word terms; :func:`grade_completion` grades
one completion 0-3 and says which terms decided it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence


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

    def occurrences(self, text: str) -> list[tuple[str, int, int]]:
        """Every occurrence in ``text`` as ``(term, start, end)``, in order of ``start`` (at each
        position the longest term starting there, once per case rule)."""
        found = []
        if self._sensitive is not None:
            found += [(m.group(1), m.start(), m.start() + len(m.group(1))) for m in self._sensitive.finditer(text)]
        if self._insensitive is not None:
            found += [(self._lower[m.group(1).lower()], m.start(), m.start() + len(m.group(1)))
                      for m in self._insensitive.finditer(text)]
        return sorted(found, key=lambda hit: hit[1])

    def find(self, text: str) -> list[str]:
        """The terms found in ``text``, each once, in order of first occurrence."""
        return list(dict.fromkeys(term for term, _, _ in self.occurrences(text)))

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
