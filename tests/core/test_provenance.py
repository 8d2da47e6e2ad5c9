"""Stories, trained spans and verbatim windows (pipeline/core/provenance.py) on hand-made texts."""

from __future__ import annotations

import re

import pytest

from pipeline.core.provenance import Span, StoryError, story_spans, title_lines, trained_stories, verbatim_windows

# A collection with a table of contents, a novel with a chapter named like itself, and a
# collection whose last story shares the collection's title: every trap of "find the title".
COLLECTION = """Contents

   The Grey Lantern
   The Silent Weir
   Last Light

THE GREY LANTERN

Chapter 1
Fenwick lit the lantern. Brackwell watched.

Chapter 2
The Grey Lantern
Fenwick carried it across the moor.

LAST LIGHT

A preface to the second book.

THE SILENT WEIR

The water did not move. Quillby waited by the weir.

LAST LIGHT

Brackwell came home at last. The lantern was cold, the weir silent, and Fenwick asleep.
"""


def test_a_title_line_holds_the_title_alone_in_any_case_or_spacing():
    assert title_lines("the grey  lantern", "x\n  THE GREY LANTERN \nThe Grey Lantern is lit\n") == [2]
    assert title_lines("The \u201cGloria Scott\u201d", 'THE "GLORIA SCOTT"\n') == [0]
    assert title_lines("", "anything") == []


def test_each_story_starts_at_its_heading_not_its_contents_line_or_a_chapter_of_the_same_name():
    spans = story_spans(["The Grey Lantern", "The Silent Weir", "Last Light"], {"d": COLLECTION})
    text = lambda title: COLLECTION[spans[title].start:spans[title].end]  # noqa: E731
    assert text("The Grey Lantern").startswith("THE GREY LANTERN\n")
    assert "Fenwick carried it across the moor." in text("The Grey Lantern")  # the chapter stays inside
    assert text("The Silent Weir").startswith("THE SILENT WEIR") and "Quillby" in text("The Silent Weir")
    assert text("Last Light").startswith("LAST LIGHT\n\nBrackwell")  # the story, not the collection's name
    assert spans["Last Light"].end == len(COLLECTION)


def test_a_title_no_line_holds_is_an_error_naming_it():
    with pytest.raises(StoryError, match="'The Red Weir'"):
        story_spans(["The Silent Weir", "The Red Weir"], {"d": COLLECTION})


def test_one_story_per_document():
    docs = {"a": "ONE\nfirst text\n", "b": "TWO\nsecond text\n"}
    spans = story_spans(["One", "Two"], docs)
    assert spans == {"One": Span("a", 0, len(docs["a"])), "Two": Span("b", 0, len(docs["b"]))}


def test_trained_stories_count_the_blocks_sharing_text_with_each():
    spans = {"A": Span("d", 0, 100), "B": Span("d", 100, 200), "C": Span("e", 0, 50)}
    blocks = [Span("d", 90, 110), Span("d", 120, 130), Span("e", 50, 60)]
    assert trained_stories(spans, blocks) == {"A": 1, "B": 2, "C": 0}  # [50, 60) only touches C's end


def _words(text: str):
    """A whitespace tokenizer with offsets: one token per word."""
    matches = list(re.finditer(r"\S+", text))
    return [hash(m.group()) % 1000 for m in matches], [(m.start(), m.end()) for m in matches]


DOC = " ".join(f"w{i}" for i in range(200))  # w0 w1 ... w199


def _offset(word: int) -> int:
    return DOC.index(f"w{word} ") if word < 199 else DOC.index("w199")


def test_windows_inside_the_trained_text_lie_within_one_block():
    trained = [Span("d", _offset(20), _offset(60)), Span("d", _offset(100), _offset(104))]
    starts = [("d", _offset(i)) for i in range(0, 200, 5)]
    windows = verbatim_windows({"d": DOC}, starts, trained, inside=True, encode=_words, prefix_tokens=3,
                               continuation_tokens=4, limit=10)
    assert windows and all(any(t.contains(w.span) for t in trained) for w in windows)
    # 7-word windows from w20, w25, ... that fit before w60 and do not overlap; none fits in w100-w103
    assert [DOC[w.span.start:].split()[0] for w in windows] == ["w20", "w30", "w40", "w50"]
    first = windows[0]
    assert first.continuation == "w23 w24 w25 w26" and len(first.prefix_ids) == 3 and len(first.continuation_ids) == 4
    assert first.id == f"d:{_offset(20)}"


def test_windows_outside_share_no_character_with_trained_text_and_spread_over_the_corpus():
    trained = [Span("d", _offset(20), _offset(60))]
    starts = [("d", _offset(i)) for i in range(0, 200, 5)]
    windows = verbatim_windows({"d": DOC}, starts, trained, inside=False, encode=_words, prefix_tokens=3,
                               continuation_tokens=4, limit=6)
    assert len(windows) == 6
    assert not any(w.span.overlaps(t) for w in windows for t in trained)
    first_words = [int(DOC[w.span.start:].split()[0][1:]) for w in windows]
    assert first_words == sorted(first_words) and first_words[0] < 20 and first_words[-1] > 150  # spread
    assert all(not a.span.overlaps(b.span) for a, b in zip(windows, windows[1:]))
    again = verbatim_windows({"d": DOC}, starts, trained, inside=False, encode=_words, prefix_tokens=3,
                             continuation_tokens=4, limit=6)
    assert again == windows


def test_a_window_needs_its_full_length_before_the_end_of_the_document():
    windows = verbatim_windows({"d": DOC}, [("d", _offset(195))], [], inside=False, encode=_words,
                               prefix_tokens=3, continuation_tokens=4, limit=1)
    assert windows == []
