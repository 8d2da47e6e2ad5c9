"""pipeline/core/works.py: an omnibus file cut into its works by its own table of contents."""

from __future__ import annotations

import pytest

from pipeline.core.works import slug, split_works, title_key

OMNIBUS = """                THE COLLECTED TALES

                Table of contents

             The Grey Lantern

                The Tales of the Yard
             The Brass Key
             The "Silent" Bell



                THE GREY LANTERN

Inspector Brackwell came to Fenwick Street that evening.

                THE TALES OF THE YARD

                THE BRASS KEY

Contents of the drawer: one brass key.

                The Silent Bell

The bell in Quillby Hall never rang.
"""


def test_each_title_starts_a_work_and_collection_headings_without_text_are_left_out():
    works, missing = split_works(OMNIBUS)
    assert missing == []
    assert [w.title for w in works] == ["The Grey Lantern", "The Brass Key", 'The "Silent" Bell']
    texts = [OMNIBUS[w.start:w.end] for w in works]
    assert texts[0].strip().startswith("THE GREY LANTERN") and "Fenwick Street" in texts[0]
    assert "TALES OF THE YARD" in texts[0]  # the empty collection heading stays with the work before it
    assert texts[1].strip().startswith("THE BRASS KEY") and "Quillby" not in texts[1]
    assert texts[2].strip().startswith("The Silent Bell") and works[-1].end == len(OMNIBUS)
    assert "".join(texts) == OMNIBUS[works[0].start:]  # nothing after the first heading is lost


def test_titles_match_across_case_spacing_and_punctuation_only():
    assert title_key('The "Gloria  Scott"') == title_key("THE GLORIA SCOTT") == "the gloria scott"
    assert title_key("The Brass Key") != title_key("The Brass Keys")
    assert slug("The Stock-Broker's Clerk") == "the-stock-broker-s-clerk"


def test_a_title_the_text_never_repeats_is_reported_not_guessed():
    text = OMNIBUS.replace("                THE BRASS KEY\n", "")
    works, missing = split_works(text)
    assert missing == ["The Brass Key"]
    # the collection heading now has text under it (the key's), so it is a work of its own
    assert [w.title for w in works] == ["The Grey Lantern", "The Tales of the Yard", 'The "Silent" Bell']


def test_a_word_of_the_text_equal_to_a_title_inside_a_line_is_not_a_heading():
    text = OMNIBUS.replace("The bell in Quillby Hall never rang.", "He read The Brass Key aloud.")
    assert [w.title for w in split_works(text)[0]] == ["The Grey Lantern", "The Brass Key", 'The "Silent" Bell']


def test_a_text_without_a_table_of_contents_is_refused():
    with pytest.raises(ValueError, match="no table of contents"):
        split_works("Just a story.\n\nWith two paragraphs.\n")
