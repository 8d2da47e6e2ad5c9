"""Which text of the forget corpus a model was trained on: stories, trained spans, verbatim windows.

Pure functions on document texts and character spans; the stage reads the datasets.

* :func:`story_documents`: a story tag (the story's title) resolved to its document: ingest
  cuts an omnibus file into one document per work (``split: contents``), so a story is a
  document, found by its title.
* :func:`trained_stories`: the stories whose documents hold training blocks.
* :func:`verbatim_windows`: prefix / true continuation pairs for verbatim memorisation (MUSE's
  VerbMem), starting at passage starts, either inside the training blocks or outside all of them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from pipeline.core.works import title_key
from pipeline.errors import PipelineError


class StoryError(PipelineError):
    """A story tag that no forget document's title matches, or that several match."""


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


def document_title(title: str, text: str) -> str:
    """What a story tag is compared with: the document's ``title`` (a work of a file that ingest
    split by its table of contents), or for an untitled document (one work per file) its first
    non-blank line."""
    if title.strip():
        return title
    return next((line for line in text.splitlines() if line.strip()), "")


def story_documents(tags: Iterable[str], documents: Iterable[tuple[str, str, str]]) -> dict[str, str]:
    """Each story tag's document: ``tag -> doc_id``.

    ``documents`` are ``(doc_id, title, text)`` of the forget corpus; a tag names the document
    whose :func:`document_title` it matches, case, spacing and punctuation ignored
    (:func:`pipeline.core.works.title_key`: ``A Study in Scarlet`` is ``A STUDY IN SCARLET``).
    Raises :class:`StoryError` naming every tag no document matches (with the titles there are)
    and every tag that matches several documents.
    """
    by_key: dict[str, list[str]] = {}
    titles: list[str] = []
    for doc_id, title, text in documents:
        shown = document_title(title, text)
        titles.append(shown)
        by_key.setdefault(title_key(shown), []).append(doc_id)
    found: dict[str, str] = {}
    problems: list[str] = []
    for tag in dict.fromkeys(tags):
        matches = by_key.get(title_key(tag), []) if title_key(tag) else []
        if len(matches) == 1:
            found[tag] = matches[0]
        elif matches:
            problems.append(f"story {tag!r} matches {len(matches)} documents ({', '.join(matches)})")
        else:
            problems.append(f"no forget document is titled {tag!r}")
    if problems:
        known = ", ".join(repr(t) for t in dict.fromkeys(titles) if t)
        raise StoryError("; ".join(problems) + f". Titles of the forget documents: {known or 'none'}. A story is "
                         "a document: cut an omnibus file into its works with `split: contents` on its source, or "
                         "put one story per file with its title on the first line.")
    return found


def trained_stories(story_docs: Mapping[str, str], trained: Iterable[Span]) -> dict[str, int]:
    """Per story (``tag -> doc_id``, :func:`story_documents`), how many training spans (blocks)
    lie in its document (0 = never trained on)."""
    per_doc = Counter(span.doc_id for span in trained)
    return {tag: per_doc[doc_id] for tag, doc_id in story_docs.items()}


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
