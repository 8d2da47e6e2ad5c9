"""pipeline/gold.py: reading gold lists, with their header comments, and their errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.core.anchor_gold import GoldTerm
from pipeline.errors import CorpusError
from pipeline.gold import read_gold
from tests.conftest import REPO


def test_header_comments_are_skipped_and_lines_counted_from_the_file(tmp_path: Path):
    path = tmp_path / "gold.csv"
    path.write_text("# how it was written\n# by hand\nterm,kind,tier\nHolmes,person,core\nToby,person,valid\n")
    assert read_gold(path) == [GoldTerm("Holmes", "person", "core"), GoldTerm("Toby", "person", "valid")]
    path.write_text("# a comment\nterm,kind,tier\nHolmes,person,core\nWatson,person,maybe\n")
    with pytest.raises(CorpusError, match=r"gold.csv: line 4"):
        read_gold(path)
    with pytest.raises(CorpusError, match="not found"):
        read_gold(tmp_path / "missing.csv")


@pytest.mark.parametrize("name", ["gold.csv", "gold_sherlock_holmes.csv", "gold_pride_and_prejudice.csv"])
def test_the_projects_gold_lists_read_and_say_how_they_were_written(name: str):
    path = REPO / "labels" / "anchors" / name
    terms = read_gold(path)
    assert len({t.term for t in terms}) == len(terms)  # no term twice
    assert sum(t.tier == "core" for t in terms) >= 30
    assert path.read_text(encoding="utf-8").startswith("# ")  # the header says how it was made
