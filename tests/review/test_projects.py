"""pipeline/review/projects.py: the registry, and the configurations it points at."""

from __future__ import annotations

import pytest
from label_studio_sdk.label_interface import LabelInterface

from pipeline.review.anchors import ANCHOR_LABELS
from pipeline.review.projects import PROJECTS, ReviewError, review_project
from tests.review.conftest import REPO, the_task


def test_configs_parse_and_accept_the_pre_annotations():
    anchors = LabelInterface((REPO / "labels/anchors/config.xml").read_text(encoding="utf-8"))
    assert tuple(anchors.get_control("kind").labels) == ANCHOR_LABELS
    assert anchors.get_control("translation").attr["perRegion"] == "true"
    assert anchors.validate_prediction(the_task()["predictions"][0])
    linguistic = LabelInterface((REPO / "labels/linguistic/config.xml").read_text(encoding="utf-8"))
    assert linguistic.get_control("verdict").labels == ["correct", "incorrect", "unsure"]
    assert {o.name for o in linguistic.objects} == {"translated", "continuation", "actual", "uncertain"}
    assert linguistic.get_control("fix").tag == "TextArea"
    evaluation = LabelInterface((REPO / "labels/evaluation/config.xml").read_text(encoding="utf-8"))
    assert evaluation.get_control("grade").labels == ["0", "1", "2", "3"]
    assert set(PROJECTS) == {"anchors", "linguistic", "evaluation"}


def test_an_unknown_project_names_the_known_ones():
    with pytest.raises(ReviewError, match="unknown review project 'names'.*anchors"):
        review_project("names")
    assert review_project("linguistic").output_path("/p").as_posix() == "/p/labels/linguistic/decisions.jsonl"
    assert review_project("evaluation").title == "whp-evaluation"
