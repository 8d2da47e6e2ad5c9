"""Stories, trained spans and verbatim windows (pipeline/core/provenance.py) on hand-made texts."""

from __future__ import annotations

import re

import pytest

from pipeline.core.provenance import (
    Span, StoryError, document_title, story_documents, trained_stories, verbatim_windows,
)

# Documents of a forget corpus: two works of a split omnibus file (titled), a story alone in its
# file (untitled: its first line is the title), the contents of the omnibus, and two prefaces.
DOCUMENTS = [
    ("forget:omnibus.txt:00-contents", "", "Contents\n\nThe Grey Lantern\nThe \u201cSilent\u201d Weir\n"),
    ("forget:omnibus.txt:01-the-grey-lantern", "The Grey Lantern", "THE GREY LANTERN\n\nFenwick lit the lantern.\n"),
    ("forget:omnibus.txt:02-the-silent-weir", 'The "Silent" Weir', "THE SILENT WEIR\n\nThe water did not move.\n"),
    ("forget:omnibus.txt:03-preface", "Preface", "PREFACE\n\nA word first.\n"),
    ("forget:omnibus.txt:04-preface", "Preface", "PREFACE\n\nAnother word.\n"),
    ("forget:last_light.txt", "", "\n\n  Last Light  \n\nBrackwell came home at last.\n"),
]


def test_a_story_is_the_document_its_title_names_in_any_case_spacing_or_quote_style():
    found = story_documents(["the grey  lantern", "The \u201cSilent\u201d Weir", "LAST LIGHT"], DOCUMENTS)
    assert found == {"the grey  lantern": "forget:omnibus.txt:01-the-grey-lantern",
                     "The \u201cSilent\u201d Weir": "forget:omnibus.txt:02-the-silent-weir",
                     "LAST LIGHT": "forget:last_light.txt"}  # untitled: its first non-blank line


def test_a_title_no_document_has_is_an_error_naming_it_and_the_titles_there_are():
    with pytest.raises(StoryError) as error:
        story_documents(["The Grey Lantern", "The Red Weir", "Fenwick lit the lantern."], DOCUMENTS)
    message = str(error.value)
    assert "no forget document is titled 'The Red Weir'" in message
    assert "'Fenwick lit the lantern.'" in message  # a line of the text is no title
    assert "'The Grey Lantern'" in message.split("Titles of the forget documents:")[1] and "split: contents" in message


def test_an_unsplit_omnibus_is_an_error_that_says_how_to_split_it():
    omnibus = [("forget:omnibus.txt", "", "THE COMPLETE WORKS\n\nContents\n\nThe Grey Lantern\n\n\n\n"
                "THE GREY LANTERN\n\nFenwick lit the lantern.\n")]
    with pytest.raises(StoryError, match=r"no forget document is titled 'The Grey Lantern'.*split: contents"):
        story_documents(["The Grey Lantern"], omnibus)


def test_a_title_several_documents_share_is_an_error_naming_them():
    with pytest.raises(StoryError, match=r"story 'Preface' matches 2 documents \(forget:omnibus.txt:03-preface, "):
        story_documents(["Preface"], DOCUMENTS)


def test_document_title_is_the_title_column_or_the_first_line():
    assert document_title("The Grey Lantern", "CHAPTER I\n") == "The Grey Lantern"
    assert document_title("", "\n  Last Light \nText") == "  Last Light "
    assert document_title("", "") == ""


def test_trained_stories_count_the_blocks_in_each_story_document():
    stories = {"A": "d1", "B": "d2", "C": "d3"}
    blocks = [Span("d1", 0, 10), Span("d2", 5, 9), Span("d2", 20, 30), Span("elsewhere", 0, 5)]
    assert trained_stories(stories, blocks) == {"A": 1, "B": 2, "C": 0}


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
