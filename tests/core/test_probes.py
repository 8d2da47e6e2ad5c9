"""Parsing probe files (pipeline/core/probes.py): valid files, and every problem named with its line."""

from __future__ import annotations

import pytest

from pipeline.core.grading import TermMatcher
from pipeline.core.probes import Probe, ProbeError, answer_terms, parse_probes, parse_terms


def test_each_kind_parses_into_probes():
    familiarity = parse_probes(
        '{"id": "f1", "prompt": "Holmes lived in Baker", "answer": " Street", "story": "A Study in Scarlet"}\n\n',
        "familiarity", source="f.jsonl")
    assert familiarity == [Probe("f1", "Holmes lived in Baker", answer=" Street", story="A Study in Scarlet")]
    (tiered,) = parse_probes('{"id": "f2", "prompt": "p", "answer": " a", "story": "S", "tier": "known"}',
                             "familiarity", source="f.jsonl")
    assert tiered.tier == "known" and familiarity[0].tier is None
    (completion,) = parse_probes('{"id": "c1", "prompt": "Dr.", "keywords": ["Watson", "Holmes"]}', "completion",
                                 source="c.jsonl")
    assert completion.keywords == ("Watson", "Holmes") and completion.answer is None
    (general,) = parse_probes('{"id": "g1", "prompt": "Paris is in", "answer": " France", "kind": "near"}',
                              "general", source="g.jsonl")
    assert general.kind == "near"


@pytest.mark.parametrize(("content", "kind", "message"), [
    ('{"id": "a", "prompt": "x", "answer": " y", "story": "S"}\n{"id": "b", "prompt": "x"\n', "familiarity",
     "line 2: not valid JSON"),
    ('["id", "prompt"]\n', "familiarity", "line 1: expected a JSON object, got list"),
    ('\n{"id": "a", "prompt": "x", "story": "S"}\n', "familiarity", "line 2: missing field 'answer'"),
    ('{"id": "a", "prompt": "x", "answer": " y"}\n', "familiarity", "line 1: missing field 'story'"),
    ('{"id": "a", "prompt": "x", "answer": "  ", "story": "S"}\n', "familiarity", "line 1: field 'answer' is empty"),
    ('{"id": "a", "prompt": 3, "answer": " y", "story": "S"}\n', "familiarity",
     "line 1: field 'prompt' must be a string (got int)"),
    ('{"id": "a", "prompt": "x", "answer": " y", "story": "S", "storey": "T"}\n', "familiarity",
     "line 1: unknown field 'storey'"),
    ('{"id": "a", "prompt": "x", "answer": " y", "story": "S", "tier": "famous"}\n', "familiarity",
     "line 1: field 'tier' must be one of known, detail (got 'famous')"),
    ('{"id": "a", "prompt": "x", "answer": " y", "kind": "near", "tier": "known"}\n', "general",
     "line 1: unknown field 'tier'"),
    ('{"id": "a", "prompt": "x", "keywords": "Watson"}\n', "completion",
     "line 1: field 'keywords' must be a non-empty list"),
    ('{"id": "a", "prompt": "x", "keywords": []}\n', "completion", "line 1: field 'keywords' must be a non-empty list"),
    ('{"id": "a", "prompt": "x", "answer": " y", "kind": "trivia"}\n', "general",
     "line 1: field 'kind' must be one of general, near"),
    ('{"id": "a", "prompt": "x", "answer": " y", "kind": "near"}\n{"id": "a", "prompt": "z", "answer": " y", '
     '"kind": "near"}\n', "general", "line 2: duplicate id 'a' (first on line 1)"),
    ("\n\n", "familiarity", "no probes"),
])
def test_bad_probe_files_are_errors_naming_file_line_and_problem(content: str, kind: str, message: str):
    with pytest.raises(ProbeError) as error:
        parse_probes(content, kind, source="probes/x.jsonl")
    assert "probes/x.jsonl" in str(error.value) and message in str(error.value)


def test_every_bad_line_is_reported_at_once():
    content = ('{"id": "a", "prompt": "x"}\n'
               '{"id": "b", "prompt": "x", "answer": " y", "story": "S"}\n'
               'not json\n')
    with pytest.raises(ProbeError) as error:
        parse_probes(content, "familiarity", source="f.jsonl")
    lines = str(error.value).splitlines()
    assert lines == ["f.jsonl, line 1: missing field 'answer'", "f.jsonl, line 1: missing field 'story'",
                     "f.jsonl, line 3: not valid JSON (Expecting value at column 1)"]


def test_terms_skip_blank_lines_and_comments():
    assert parse_terms("# genre\ndetective\n\n  Scotland Yard \n  # indented comment\n") == ["detective", "Scotland Yard"]


DICTIONARY = TermMatcher(["Scotland Yard", "Thames", "Hugo", "Mason", "moor"])


@pytest.mark.parametrize("prompt, answer, terms", [
    ("The river through London is the", " Thames", ["Thames"]),            # the answer is a term
    ("The police of London are called Scotland", " Yard", ["Scotland Yard"]),  # it completes one
    ("Victor", " Hugo wrote it", ["Hugo"]),                                  # a term inside the answer
    ("Across the", " Moor", ["moor"]),                                        # lower-case terms: any case
    ("Hugo wrote of the", " sea", []),                                        # a term only in the prompt
    ("The mason laid the", " Masonry", []),                                   # a name: case and whole word
    ("Perry", " ", []),                                                       # no answer text
])
def test_answer_terms_are_the_dictionary_terms_the_answer_says_or_completes(prompt: str, answer: str,
                                                                            terms: list[str]):
    assert answer_terms(Probe("n1", prompt, answer, kind="near"), DICTIONARY) == terms
