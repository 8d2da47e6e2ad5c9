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


@pytest.mark.parametrize(("line", "problem"), [
    ('{"key": "k", "data": {"key": "other"}, "data_sha256": "x"}', "'data.key' differs from 'key'"),
    ('{"key": "k", "data": {"key": "k"}}', "no 'data_sha256' string"),
    ('{"key": ["k"], "data": {"key": "k"}, "data_sha256": "x"}', "no 'key' string"),
    ('{"key": "k", "key": "k"}', "duplicate field 'key'"),
    ("[" * 100_000 + "]" * 100_000, "nested deeper than 100 levels"),
])
def test_a_bad_task_record_names_file_line_and_problem(tmp_path, line, problem):
    path = tmp_path / "tasks.jsonl"
    write_tasks(path, tracked())
    path.write_text(path.read_text() + line + "\n")
    with pytest.raises(ReviewError) as caught:
        read_tasks(path)
    assert str(caught.value).startswith(f"{path}:2: not a task record (") and problem in str(caught.value)
