"""pipeline/anchor_check.py: the miner on a second forget domain (roles swapped), scored by its gold list."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline import anchor_check, ingest
from pipeline.errors import CorpusError
from pipeline.params import parse_params
from tests.conftest import FORGET_TEXT, HARRY_REFERENCE, HARRY_STORY

GOLD = """# Names of the invented Harry story, written by hand for this test.
term,kind,tier
Harry Thornbury,person,core
Elizabeth,person,core
Greyholt,place,core
Quillby,person,valid
"""


def params(domains: list[dict]):
    return parse_params({
        "corpus": {"forget": ["corpora/forget/ravensmoor.txt"], "retain": ["corpora/retain"]},
        "anchors": {"min_count": 3, "ner_processes": 1},
        "anchor_check": {"precision_at": 5, "domains": domains},
    })


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("check")
    (root / "corpora" / "forget").mkdir(parents=True)
    (root / "corpora" / "retain").mkdir(parents=True)
    (root / "corpora" / "forget" / "ravensmoor.txt").write_text(FORGET_TEXT, encoding="utf-8")
    # "Quillby", a name of the default forget book, also walks through the Harry story a few times.
    story = [*HARRY_STORY, "Quillby passed by the gate and nodded."]
    (root / "corpora" / "retain" / "harry.txt").write_text(
        "\n\n".join(story[i % len(story)] for i in range(56)) + "\n", encoding="utf-8"
    )
    (root / "corpora" / "retain" / "village.txt").write_text(
        "\n\n".join(HARRY_REFERENCE[i % len(HARRY_REFERENCE)] for i in range(36)) + "\n", encoding="utf-8"
    )
    (root / "gold.csv").write_text(GOLD, encoding="utf-8")
    ingest.run(params([]), root=root)
    return root


def test_a_swapped_domain_is_mined_against_every_other_document_and_scored(project: Path):
    domain = {"name": "harry", "forget": ["corpora/retain/harry.txt"], "gold": ["gold.csv"]}
    summary = anchor_check.run(params([domain]), root=project)
    report = json.loads((project / "metrics" / "anchor_check.json").read_text())
    result = report["domains"]["harry"]
    assert result["anchors"] > 0 and "Harry" in result["top"] and "Elizabeth" in result["top"]
    # The default forget book is reference here: its Quillby is common there, so no anchor.
    assert "Quillby" not in result["top"]
    scores = result["gold"]["gold"]
    assert scores["core_terms"] == 3 and scores["recall"] == 1.0 and scores["missed"] == []
    assert "precision_at_5" in scores
    assert summary["recall_harry_gold"] == 1.0


def test_a_domain_without_documents_or_without_reference_is_an_error(project: Path):
    missing = {"name": "nowhere", "forget": ["corpora/retain/nothing.txt"], "gold": ["gold.csv"]}
    with pytest.raises(CorpusError, match=r"anchor_check.domains\[nowhere\].forget: no ingested document"):
        anchor_check.run(params([missing]), root=project)
    everything = {"name": "all", "forget": ["corpora"], "gold": ["gold.csv"]}
    with pytest.raises(CorpusError, match="no document is left for the reference"):
        anchor_check.run(params([everything]), root=project)
