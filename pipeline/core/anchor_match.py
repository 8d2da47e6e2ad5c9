"""Finding anchor terms in text: longest match first, at word boundaries, with case variants.

Used by the anchor stages (counts, variants, coverage) and by the blocks stage (translation).
An anchor matches as written, in UPPER CASE and in Title Case (headings), never in lower case
(``Hope`` the name is not ``hope`` the word). A possessive (``Holmes's``, ``Holmes'``) matches
the anchor; the suffix stays outside the span so a translation keeps it. Alternatives are
compiled into a trie-shaped regular expression, so matching costs about the same for 10 or
10,000 anchors.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class AnchorSpan:
    """One occurrence: ``text[start:end] == surface``, which is a case variant of ``anchor``."""

    start: int
    end: int
    anchor: str
    surface: str


def case_variants(anchor: str) -> list[str]:
    """The forms an anchor matches in: as written, UPPER, and Title Case (deduplicated)."""
    forms = [anchor, anchor.upper(), _title(anchor)]
    return list(dict.fromkeys(forms))


def _title(text: str) -> str:
    # str.title() would write "Holmes'S" and "Mcmurdo"; capitalise word starts only.
    return re.sub(r"(?<![\w'’])(\w)", lambda m: m.group(1).upper(), text)


def _trie_regex(words: Iterable[str]) -> str:
    trie: dict = {}
    for word in words:
        node = trie
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}

    def emit(node: dict) -> str:
        ends = "" in node
        branches = [re.escape(ch) + emit(child) for ch, child in sorted(node.items()) if ch]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        # Greedy optional: a longer anchor is tried before the shorter one that ends here.
        return f"(?:{body})?" if ends else body

    return emit(trie)


class AnchorMatcher:
    """Compiled matcher over a set of anchors."""

    def __init__(self, anchors: Iterable[str]):
        self.surface_to_anchor: dict[str, str] = {}
        # Longer anchors claim a shared surface form first, then alphabetical: deterministic.
        for anchor in sorted(set(anchors), key=lambda a: (-len(a), a)):
            for form in case_variants(anchor):
                self.surface_to_anchor.setdefault(form, anchor)
        if self.surface_to_anchor:
            body = _trie_regex(self.surface_to_anchor)
            # Boundaries are letters and digits, not "_": "_Holmes_" (italics) is Holmes.
            self.pattern: re.Pattern | None = re.compile(rf"(?<![^\W_]){body}(?![^\W_])")
        else:
            self.pattern = None

    def find(self, text: str) -> list[AnchorSpan]:
        """Non-overlapping occurrences, left to right, longest first at each position."""
        if self.pattern is None:
            return []
        spans = []
        for match in self.pattern.finditer(text):
            surface = match.group(0)
            anchor = self.surface_to_anchor.get(surface)
            if anchor is None:  # the trie can end mid-way through an alternative's prefix
                continue
            spans.append(AnchorSpan(match.start(), match.end(), anchor, surface))
        return spans
