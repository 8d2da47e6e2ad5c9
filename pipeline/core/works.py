"""Cutting an omnibus file (a complete works, a collection) into its works by the file's own
table of contents (pure functions over raw text, before normalisation).

Public-domain omnibus editions open with a table of contents and repeat each title as a heading
line where the work begins (often in capitals). Treating each work as a document lets the
pipeline spread training blocks over works and report, per work, what was forgotten. The rule
uses nothing but the file: the first line reading ``Contents`` or ``Table of contents`` opens
the list, its non-blank lines are the titles, and three blank lines in a row close it; each title
is then found, in order, as a line of its own after the list (case, spacing and punctuation
ignored). A title that is never found is reported, not guessed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CONTENTS_HEADING = re.compile(r"^\s*(table\s+of\s+)?contents\s*:?\s*$", re.IGNORECASE)
CONTENTS_END_BLANKS = 3  # blank lines in a row that close the list (single blanks separate its groups)


@dataclass(frozen=True)
class Work:
    """A work's title as the table of contents writes it, and its span ``[start, end)`` in the
    raw text (from its heading line to the next work's heading)."""

    title: str
    start: int
    end: int


def title_key(line: str) -> str:
    """What two spellings of a title share: letters and digits, case-folded, single-spaced."""
    return " ".join(re.sub(r"[\W_]+", " ", line).split()).casefold()


def _lines(text: str) -> list[tuple[int, str]]:
    """``(offset, line)`` for every line of ``text`` (line breaks excluded)."""
    found, offset = [], 0
    for line in text.splitlines(keepends=True):
        found.append((offset, line.rstrip("\r\n")))
        offset += len(line)
    return found


def contents_titles(lines: list[tuple[int, str]]) -> tuple[list[str], int] | None:
    """The titles of the first table of contents and the index of the line after it; None
    when the text has no contents heading followed by at least one title."""
    start = next((i for i, (_, line) in enumerate(lines) if CONTENTS_HEADING.match(line)), None)
    if start is None:
        return None
    titles: list[str] = []
    blanks = 0
    index = start + 1
    while index < len(lines):
        line = lines[index][1].strip()
        if line:
            if blanks >= CONTENTS_END_BLANKS and titles:
                break
            titles.append(line)
            blanks = 0
        else:
            blanks += 1
        index += 1
    return (titles, index) if titles else None


def split_works(text: str) -> tuple[list[Work], list[str]]:
    """The works of ``text`` in file order, and the titles the table of contents lists but the
    text never repeats as a heading. A work whose span holds nothing but its heading (a
    collection's title directly followed by its first story, :func:`is_empty`) is no work: its
    heading stays with the text before it. Every character from the first work's heading on
    belongs to exactly one work.

    Raises:
        ValueError: ``text`` has no table of contents.
    """
    lines = _lines(text)
    contents = contents_titles(lines)
    if contents is None:
        raise ValueError("no table of contents (a line 'Contents' or 'Table of contents' followed by titles)")
    titles, position = contents
    starts: list[tuple[str, int]] = []
    missing: list[str] = []
    for title in titles:
        key = title_key(title)
        found = next((i for i in range(position, len(lines)) if key and title_key(lines[i][1]) == key), None)
        if found is None:
            missing.append(title)
            continue
        starts.append((title, lines[found][0]))
        position = found + 1
    ends = [start for _, start in starts[1:]] + [len(text)]
    works = [Work(title, start, end) for (title, start), end in zip(starts, ends)]
    # An empty work's heading joins the text before it, so that no line of the file is lost.
    kept = [(w.title, w.start) for w in works if not is_empty(text, w)]
    ends = [start for _, start in kept[1:]] + [len(text)]
    return [Work(title, start, end) for (title, start), end in zip(kept, ends)], missing


def is_empty(text: str, work: Work) -> bool:
    """True when the work's span holds only its heading line."""
    body = text[work.start:work.end].strip().split("\n", 1)
    return len(body) == 1 or not body[1].strip()


def slug(title: str) -> str:
    """A work's id inside its file: ``The "Gloria Scott"`` -> ``the-gloria-scott``."""
    return title_key(title).replace(" ", "-")
