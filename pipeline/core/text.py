"""Reading corpus files and normalising their text (pure functions, no dataset I/O).

Normalisation happens once, at ingest (``normalise``); every later character offset refers to
the normalised text. It is versioned (``NORMALISATION``): change the rules, bump the name.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.jsonl import parse_jsonl
from pipeline.errors import CorpusError

NORMALISATION = "normalise_v1"
FORMAT_BY_SUFFIX = {".txt": "text", ".text": "text", ".md": "markdown", ".markdown": "markdown", ".jsonl": "jsonl"}

_LINE_BREAKS = re.compile(r"\r\n|[\r\u2028\u2029\x0b\x0c\x85]")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*(?:\n[ \t]*)+")
_FRONT_MATTER = re.compile(r"\A---\n(?:.*?\n)?---\n", re.DOTALL)
# A sentence end: punctuation, optional closing quotes/brackets, then a space.
_SENTENCE_END = re.compile(r"[.!?][\"'\u2019\u201d)\]]*\s")


@dataclass(frozen=True)
class SourceRecord:
    """One document's raw text from a corpus file: whole file (record 0) or a JSONL line."""

    path: Path
    record: int
    text: str


@dataclass(frozen=True)
class Refusal:
    """A record refused while reading, kept for the rejects table."""

    source: str
    location: str
    reason: str
    record: str


def normalise(text: str, *, strip_lines: bool = True, unwrap_lines: bool = True, unwrap_min_width: int = 50) -> str:
    """Canonical form of a document (``normalise_v1``).

    BOM removed; every line ending becomes ``\\n``; Unicode NFC; optionally each line stripped
    and the hard-wrapped lines of a paragraph joined with one space; paragraphs separated by
    exactly one blank line; no leading or trailing blank space. A paragraph whose longest line
    is shorter than ``unwrap_min_width`` is not wrapped prose (a table of contents, verse, an
    address) and keeps its line breaks.
    """
    # U+FEFF anywhere is a byte-order mark or a deprecated zero-width no-break space: invisible
    # either way, and left in place it would make normalise() depend on where it sat.
    text = text.replace("\ufeff", "")
    text = _LINE_BREAKS.sub("\n", text)
    text = unicodedata.normalize("NFC", text)
    if strip_lines:
        text = "\n".join(line.strip() for line in text.split("\n"))
    paragraphs = [p for p in _PARAGRAPH_BREAK.split(text) if p.strip()]
    if unwrap_lines:
        paragraphs = [_unwrap(p, unwrap_min_width) for p in paragraphs]
    return "\n\n".join(p.strip("\n") for p in paragraphs).strip()


def _unwrap(paragraph: str, min_width: int) -> str:
    lines = [line for line in paragraph.split("\n") if line.strip()]
    if max(len(line.strip()) for line in lines) < min_width:
        return "\n".join(lines)
    return " ".join(line.strip() for line in lines)


def paragraph_spans(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` of every paragraph (blank-line separated), trimmed of blank space."""
    spans, start = [], 0
    for brk in [*_PARAGRAPH_BREAK.finditer(text), None]:
        end = brk.start() if brk else len(text)
        chunk = text[start:end]
        lead = len(chunk) - len(chunk.lstrip())
        trail = len(chunk.rstrip())
        if trail > lead:
            spans.append((start + lead, start + trail))
        if brk:
            start = brk.end()
    return spans


def split_long_span(text: str, start: int, end: int, max_chars: int) -> list[tuple[int, int]]:
    """Cut ``text[start:end]`` into pieces of at most ``max_chars``.

    Cuts after the last sentence end inside the window, else at the last space, else hard.
    """
    pieces = []
    while end - start > max_chars:
        window = text[start:start + max_chars + 1]
        cut = max((m.end() - 1 for m in _SENTENCE_END.finditer(window)), default=0)
        if cut <= 0:
            cut = window.rfind(" ")
        if cut <= 0:
            cut = max_chars
        piece_end = start + len(text[start:start + cut].rstrip())
        pieces.append((start, piece_end))
        start += cut
        while start < end and text[start].isspace():
            start += 1
    if end > start:
        pieces.append((start, end))
    return pieces


def passage_spans(text: str, *, min_chars: int, max_chars: int) -> tuple[list[tuple[int, int]], list[tuple[int, int, str]]]:
    """Passages of a normalised document, and the spans refused with the reason.

    A passage is a paragraph (split further when longer than ``max_chars``); one shorter than
    ``min_chars`` or without any letter or digit (``* * *`` separators) is refused.
    """
    kept, refused = [], []
    for start, end in paragraph_spans(text):
        for piece_start, piece_end in split_long_span(text, start, end, max_chars):
            piece = text[piece_start:piece_end]
            if not any(ch.isalnum() for ch in piece):
                refused.append((piece_start, piece_end, "no letter or digit"))
            elif len(piece) < min_chars:
                refused.append((piece_start, piece_end, f"shorter than ingest.min_passage_chars ({min_chars})"))
            else:
                kept.append((piece_start, piece_end))
    return kept, refused


def source_files(path: Path, fmt: str) -> list[Path]:
    """The corpus files a params source names: the file itself, or a folder's supported files."""
    if not path.exists():
        raise CorpusError(f"{path}: corpus path does not exist")
    if path.is_file():
        return [path]
    suffixes = set(FORMAT_BY_SUFFIX) if fmt == "auto" else {s for s, f in FORMAT_BY_SUFFIX.items() if f == fmt}
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
    if not files:
        raise CorpusError(f"{path}: folder holds no corpus file ({', '.join(sorted(suffixes))})")
    return files


def file_format(path: Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    try:
        return FORMAT_BY_SUFFIX[path.suffix.lower()]
    except KeyError:
        raise CorpusError(
            f"{path}: unknown corpus format {path.suffix!r}; use .txt, .md or .jsonl, or set `format:` in params"
        ) from None


def _line_of(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def decode_text(data: bytes, path: Path) -> str:
    """UTF-8 text of a whole file; a clear error for binary, empty or mis-encoded input."""
    nul = data.find(b"\x00")
    if nul >= 0:
        raise CorpusError(f"{path}: binary file (NUL byte at byte offset {nul}); corpus files must be UTF-8 text")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorpusError(
            f"{path}: not valid UTF-8 at byte offset {exc.start} (line {_line_of(data, exc.start)}): "
            f"byte 0x{data[exc.start]:02x}; re-encode the file as UTF-8"
        ) from None
    if not text.strip():
        raise CorpusError(f"{path}: empty file (no text)")
    return text


def strip_front_matter(text: str) -> str:
    """Markdown: drop a leading YAML front-matter block (metadata, not prose)."""
    return _FRONT_MATTER.sub("", _LINE_BREAKS.sub("\n", text.removeprefix("\ufeff")), count=1)


def read_jsonl(data: bytes, path: Path, text_field: str) -> tuple[list[SourceRecord], list[Refusal]]:
    """One record per non-blank line (:func:`pipeline.core.jsonl.parse_jsonl`); a bad line (not
    UTF-8, invalid JSON, nested too deep, a duplicate key, not an object, no usable text field)
    is refused with its line number and reason, not fatal. A binary file, or one without any
    usable line, is a :class:`CorpusError`."""
    nul = data.find(b"\x00")
    if nul >= 0:
        raise CorpusError(f"{path}: binary file (NUL byte at byte offset {nul}); JSONL files must be UTF-8 text")
    records, refused = [], []
    for line in parse_jsonl(data, source=str(path)):
        obj = line.record
        if line.problem is not None:
            reason = line.problem
        elif text_field not in obj:
            reason = f"no field {text_field!r} (text_field in params)"
        elif not isinstance(obj[text_field], str):
            reason = f"field {text_field!r} is {type(obj[text_field]).__name__}, not a string"
        elif not obj[text_field].strip():
            reason = f"field {text_field!r} is empty"
        else:
            records.append(SourceRecord(path, line.number, obj[text_field]))
            continue
        refused.append(Refusal(str(path), f"line {line.number}", reason, line.text))
    if not records:
        reasons = "; ".join(f"{r.location}: {r.reason}" for r in refused[:5]) or "no non-blank line"
        raise CorpusError(f"{path}: no usable JSONL record ({reasons})")
    return records, refused


def read_corpus_file(path: Path, fmt: str, text_field: str) -> tuple[list[SourceRecord], list[Refusal]]:
    """Raw records of one corpus file (not yet normalised) and the lines refused."""
    fmt = file_format(path, fmt)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CorpusError(f"{path}: cannot read: {exc.strerror}") from None
    if not data:
        raise CorpusError(f"{path}: empty file (0 bytes)")
    if fmt == "jsonl":
        return read_jsonl(data, path, text_field)
    text = decode_text(data, path)
    if fmt == "markdown":
        text = strip_front_matter(text)
    return [SourceRecord(path, 0, text)], []
