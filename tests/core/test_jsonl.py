"""pipeline/core/jsonl.py: the one JSON Lines parser (and its JSON document twin)."""

from __future__ import annotations

import sys

import pytest

from pipeline.core.jsonl import MAX_DEPTH, JsonError, json_type, nesting_depth, parse_json, parse_jsonl


def lines(*raw: bytes) -> bytes:
    return b"\n".join(raw) + b"\n"


def test_records_and_problems_name_the_source_and_line():
    data = b"\xef\xbb\xbf" + lines(
        b'{"a": 1}',                 # 1
        b"   ",                      # 2 blank: skipped
        b'{"a": 1, "a": 2}',         # 3 duplicate key
        b"[1, 2]",                   # 4 not an object
        b'{"a": "caf\xe9"}',         # 5 not UTF-8
        b'{"a": ',                   # 6 invalid JSON
        b'{"b": "{[{[", "c": {}}\r',  # 7 brackets inside a string do not nest; CRLF is fine
    )
    parsed = parse_jsonl(data, source="labels/x.jsonl")
    assert [line.number for line in parsed] == [1, 3, 4, 5, 6, 7]
    assert [line.record for line in parsed if line.problem is None] == [{"a": 1}, {"b": "{[{[", "c": {}}]
    problems = {line.where: line.problem for line in parsed if line.problem}
    assert problems["labels/x.jsonl:3"] == "duplicate field 'a'"
    assert problems["labels/x.jsonl:4"] == "expected a JSON object, got array"
    offset = data.index(b"\xe9")
    assert problems["labels/x.jsonl:5"] == f"not valid UTF-8 at byte offset {offset} (byte 0xe9, column 11)"
    assert problems["labels/x.jsonl:6"].startswith("invalid JSON: Expecting value (column 7)")
    assert parsed[3].text == '{"a": "caf\ufffd"}'  # kept for a rejects table


def test_a_line_nested_100000_deep_is_a_problem_not_a_recursion_error():
    deep = b"[" * 100_000 + b"]" * 100_000
    assert 100_000 > sys.getrecursionlimit()
    [line] = parse_jsonl(deep, source="corpus.jsonl")
    assert line.record is None
    assert line.problem == f"nested deeper than {MAX_DEPTH} levels of arrays and objects (100000)"
    nested = b'{"a": ' * 50 + b"1" + b"}" * 50
    assert parse_jsonl(nested, source="s")[0].record is not None
    assert parse_jsonl(nested, source="s", max_depth=49)[0].problem.startswith("nested deeper than 49 levels")


def test_nesting_depth_ignores_brackets_in_strings():
    assert nesting_depth('{"a": [1, {"b": "]]]}"}]}') == 3
    assert nesting_depth(r'["\"[[[", []]') == 2
    assert nesting_depth("1") == 0


def test_a_json_document_error_names_the_source():
    assert parse_json(b'\xef\xbb\xbf[{"key": "k"}]', source="export") == [{"key": "k"}]
    for data, problem in [
        (b"[" * 5000 + b"]" * 5000, "nested deeper than 100 levels"),
        (b'[{"a": 1, "a": 1}]', "duplicate field 'a'"),
        (b"[1,\n 2", "invalid JSON: Expecting ',' delimiter (line 2, column 3)"),
        (b"[\xff]", "not valid UTF-8 at byte offset 1"),
    ]:
        with pytest.raises(JsonError) as caught:
            parse_json(data, source="the export of 'whp-anchors'")
        assert str(caught.value).startswith("the export of 'whp-anchors': ") and problem in str(caught.value)


def test_json_type_names():
    assert [json_type(v) for v in (None, True, 1, 1.5, "s", [], {}, ())] == [
        "null", "boolean", "number", "number", "string", "array", "object", "array"]
