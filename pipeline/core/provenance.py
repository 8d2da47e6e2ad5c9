"""Which text of the forget corpus a model was trained on: stories, trained spans, verbatim windows.

Pure functions on document texts and character spans; the stage reads the datasets.

* :func:`story_spans`: a story tag (the story's title as it appears in the corpus) resolved to the
  span of text it heads: from its title line to the next story's title line in the same
  document, or the document's end.
* :func:`trained_stories`: the stories that share text with the training blocks.
* :func:`verbatim_windows`: prefix / true continuation pairs for verbatim memorisation (MUSE's
  VerbMem), starting at passage starts, either inside the training blocks or outside all of them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from pipeline.errors import PipelineError


class StoryError(PipelineError):
    """A story tag that no title line of the forget corpus matches."""


@dataclass(frozen=True)
class Span:
    """Characters ``[start, end)`` of one document's text."""

    doc_id: str
    start: int
    end: int

    def overlaps(self, other: Span) -> bool:
        return self.doc_id == other.doc_id and self.start < other.end and other.start < self.end

    def contains(self, other: Span) -> bool:
        return self.doc_id == other.doc_id and self.start <= other.start and other.end <= self.end


def _normalise_title(text: str) -> str:
    # Titles are typeset many ways: "A STUDY IN SCARLET", "A Study In Scarlet", curly quotes.
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", '"').replace("\u201d", '"')
    return " ".join(text.split()).casefold()


def title_index(text: str) -> dict[str, list[int]]:
    """Every line of ``text``, normalised as titles are compared, to the offsets where it starts."""
    index: dict[str, list[int]] = {}
    for match in re.finditer(r"(?m)^[^\n]*$", text):
        if match.group().strip():
            index.setdefault(_normalise_title(match.group()), []).append(match.start())
    return index


def title_lines(title: str, text: str, *, index: dict[str, list[int]] | None = None) -> list[int]:
    """Character offsets of the lines of ``text`` that hold ``title`` alone (case, spacing and
    quote style ignored), in order; ``index`` (:func:`title_index` of ``text``) saves re-reading it."""
    wanted = _normalise_title(title)
    if not wanted:
        return []
    return list((index if index is not None else title_index(text)).get(wanted, []))


def story_spans(titles: Iterable[str], documents: Mapping[str, str]) -> dict[str, Span]:
    """The text span of each story.

    A title may stand alone on several lines: in a table of contents, as a collection's name, as
    the title of a novel's chapter. The story starts at the one followed by the most text before
    the next line that holds *another* of ``titles`` (a table of contents is followed at once by
    the next title; a chapter named like its novel by the next story), and ends where the next
    story starts in the same document, or at the document's end. Raises :class:`StoryError`
    naming every title no line matches.
    """
    titles = list(dict.fromkeys(titles))
    indexes = {doc_id: title_index(text) for doc_id, text in documents.items()}
    lines = {title: [(doc_id, start) for doc_id, text in documents.items()
                     for start in title_lines(title, text, index=indexes[doc_id])] for title in titles}
    missing = [title for title, found in lines.items() if not found]
    if missing:
        raise StoryError("no line of the forget documents holds these story titles alone: "
                         + ", ".join(repr(t) for t in missing))
    by_doc: dict[str, list[tuple[int, str]]] = {}
    for title, found in lines.items():
        for doc_id, start in found:
            by_doc.setdefault(doc_id, []).append((start, title))
    for entries in by_doc.values():
        entries.sort()

    def text_after(title: str, doc_id: str, start: int) -> int:
        later = [s for s, t in by_doc[doc_id] if s > start and t != title]
        return min(later, default=len(documents[doc_id])) - start

    starts = {title: max(found, key=lambda f: (text_after(title, *f), -f[1])) for title, found in lines.items()}
    spans = {}
    for title, (doc_id, start) in starts.items():
        later = [s for t, (d, s) in starts.items() if d == doc_id and s > start]
        spans[title] = Span(doc_id, start, min(later, default=len(documents[doc_id])))
    return spans


def trained_stories(spans: Mapping[str, Span], trained: Iterable[Span]) -> dict[str, int]:
    """Per story, how many training spans (blocks) share text with it (0 = never trained on)."""
    trained = list(trained)
    return {title: sum(span.overlaps(block) for block in trained) for title, span in spans.items()}


@dataclass(frozen=True)
class Window:
    """A verbatim-memorisation item: ``prefix_ids`` then the true ``continuation`` text.

    ``span`` covers prefix and continuation in the document; ``continuation_ids`` are the true
    continuation's tokens (the greedy continuation is as long)."""

    span: Span
    prefix_ids: tuple[int, ...]
    continuation_ids: tuple[int, ...]
    continuation: str

    @property
    def id(self) -> str:
        return f"{self.span.doc_id}:{self.span.start}"


Encoder = Callable[[str], tuple[Sequence[int], Sequence[tuple[int, int]]]]
"""``text -> (token ids, (start, end) character offsets per token)``, no special tokens."""


def verbatim_windows(
    documents: Mapping[str, str], starts: Sequence[tuple[str, int]], trained: Sequence[Span], *,
    inside: bool, encode: Encoder, prefix_tokens: int, continuation_tokens: int, limit: int,
) -> list[Window]:
    """At most ``limit`` windows of ``prefix_tokens + continuation_tokens`` tokens, spread evenly
    over the candidate ``starts`` (``(doc_id, char offset)``, e.g. passage starts).

    ``inside``: each window lies within one ``trained`` span (text trained on); otherwise it
    shares no character with any (text never trained on). Deterministic: candidate ``k`` of
    ``limit`` is the first usable start at or after ``k * len(starts) / limit``.
    """
    spans_by_doc: dict[str, list[Span]] = {}
    for span in trained:
        spans_by_doc.setdefault(span.doc_id, []).append(span)

    def plausible(doc_id: str, offset: int) -> bool:
        point = Span(doc_id, offset, offset + 1)
        return any(s.contains(point) for s in spans_by_doc.get(doc_id, ())) == inside

    candidates = sorted(s for s in starts if plausible(*s))
    need = prefix_tokens + continuation_tokens
    chosen: list[Window] = []
    taken: list[Span] = []
    cursor = 0
    for k in range(limit):
        cursor = max(cursor, (k * len(candidates)) // max(limit, 1))
        while cursor < len(candidates):
            doc_id, offset = candidates[cursor]
            cursor += 1
            window = _window(documents[doc_id], doc_id, offset, encode=encode, prefix=prefix_tokens, need=need)
            if window is None or any(window.span.overlaps(t) for t in taken):
                continue
            own = spans_by_doc.get(doc_id, ())
            if inside:
                fits = any(s.contains(window.span) for s in own)
            else:
                fits = not any(s.overlaps(window.span) for s in own)
            if fits:
                chosen.append(window)
                taken.append(window.span)
                break
    return chosen


def _window(text: str, doc_id: str, offset: int, *, encode: Encoder, prefix: int, need: int) -> Window | None:
    # Twelve characters a token is far more than any tokenizer needs for English prose.
    ids, offsets = encode(text[offset: offset + 12 * need])
    if len(ids) < need:
        return None
    ids, offsets = list(ids[:need]), list(offsets[:need])
    cont_start, end = offset + offsets[prefix][0], offset + offsets[-1][1]
    return Window(Span(doc_id, offset + offsets[0][0], end), tuple(ids[:prefix]), tuple(ids[prefix:]),
                  text[cont_start:end])
