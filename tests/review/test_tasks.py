"""pipeline/review/tasks.py: our copy of the tasks on the server."""

from __future__ import annotations

import pytest

from pipeline.review.projects import ReviewError
from pipeline.review.tasks import read_tasks, write_tasks
from tests.review.conftest import tracked


def test_tasks_file_round_trip_and_corruption(tmp_path):
    path = tmp_path / "tasks.jsonl"
    write_tasks(path, tracked())
    assert read_tasks(path) == tracked()
    path.write_text(path.read_text() + "{not json\n")
    with pytest.raises(ReviewError, match=r"tasks.jsonl:2: not a task record"):
        read_tasks(path)
