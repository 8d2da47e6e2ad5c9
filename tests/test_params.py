"""pipeline/params.py: params.yaml is read once, validated strictly, and every error names its key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from pipeline.errors import ParamsError
from pipeline.params import CorpusSource, Params, load_params, parse_params, section_dict

REPO = Path(__file__).resolve().parents[1]


def minimal(**sections) -> dict:
    """A valid raw params mapping, with some sections replaced or added."""
    raw = {"corpus": {"forget": [{"path": "corpora/forget/a.txt"}]}}
    raw.update(sections)
    return raw


def write_yaml(tmp_path: Path, text: str, name: str = "params.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def params_error(raw) -> str:
    with pytest.raises(ParamsError) as info:
        parse_params(raw)
    return str(info.value)


# --- the repository's own params.yaml -------------------------------------------------------


def test_repository_params_yaml_loads_and_matches_the_file():
    params = load_params(REPO / "params.yaml")
    raw = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))

    assert isinstance(params, Params)
    # Every source listed in the file comes back, in order, whatever its spelling.
    def listed(items):
        return [item if isinstance(item, str) else item["path"] for item in items]

    assert [s.path for s in params.corpus.forget] == listed(raw["corpus"]["forget"])
    assert [s.path for s in params.corpus.retain] == listed(raw["corpus"].get("retain", []))
    for key, value in raw["ingest"].items():
        assert getattr(params.ingest, key) == value
    for key, value in raw["baseline"].items():
        assert getattr(params.baseline, key) == value


def test_valid_params_round_trip_through_section_dict():
    raw = minimal(ingest={"min_passage_chars": 3, "max_passage_chars": 40, "strip_lines": False})
    params = parse_params(raw)
    dumped = section_dict(params, "corpus", "ingest")
    assert set(dumped) == {"corpus", "ingest"}
    assert dumped["ingest"]["min_passage_chars"] == 3
    assert dumped["ingest"]["max_passage_chars"] == 40
    assert dumped["ingest"]["strip_lines"] is False
    # The dump is itself valid input and gives the same model.
    assert parse_params(dumped) == params


# --- unknown keys ---------------------------------------------------------------------------


def test_unknown_top_level_key_is_named():
    message = params_error(minimal(ingset={"strip_lines": True}))
    assert re.search(r"^\s*ingset: unknown key", message, re.MULTILINE)


def test_unknown_nested_key_names_the_full_path():
    message = params_error(minimal(ingest={"max_pasage_chars": 100}))
    assert re.search(r"^\s*ingest\.max_pasage_chars: unknown key", message, re.MULTILINE)


def test_unknown_key_inside_a_corpus_source_names_the_list_index():
    raw = {"corpus": {"forget": [{"path": "a.txt"}, {"path": "b.txt", "text_feild": "body"}]}}
    message = params_error(raw)
    assert re.search(r"^\s*corpus\.forget\[1\]\.text_feild: unknown key", message, re.MULTILINE)


def test_unknown_key_in_a_yaml_file_names_the_file_and_key(tmp_path):
    path = write_yaml(tmp_path, "corpus:\n  forget: [a.txt]\ningest:\n  max_pasage_chars: 100\n")
    with pytest.raises(ParamsError, match=r"ingest\.max_pasage_chars: unknown key") as info:
        load_params(path)
    assert str(path) in str(info.value)


# --- wrong types and sizes ------------------------------------------------------------------


def test_wrong_boolean_type_is_named_with_the_value():
    message = params_error(minimal(ingest={"strip_lines": "maybe"}))
    assert re.search(r"^\s*ingest\.strip_lines: .*boolean.*'maybe'", message, re.MULTILINE)


def test_wrong_integer_type_is_named_with_the_value():
    message = params_error(minimal(ingest={"max_passage_chars": "big"}))
    assert re.search(r"^\s*ingest\.max_passage_chars: .*integer.*'big'", message, re.MULTILINE)


@pytest.mark.parametrize(
    "key, value",
    [("max_passage_chars", -5), ("min_passage_chars", 0), ("min_passage_chars", -1), ("unwrap_min_width", -3)],
)
def test_negative_or_zero_size_is_named(key, value):
    message = params_error(minimal(ingest={key: value}))
    assert re.search(rf"^\s*ingest\.{key}: .*greater than or equal", message, re.MULTILINE)
    assert f"got {value}" in message


def test_baseline_dtype_outside_the_literal_is_refused():
    message = params_error(minimal(baseline={"dtype": "int8"}))
    assert re.search(r"^\s*baseline\.dtype: .*'float32'.*'int8'", message, re.MULTILINE)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_baseline_dtype_inside_the_literal_is_accepted(dtype):
    assert parse_params(minimal(baseline={"dtype": dtype})).baseline.dtype == dtype


def test_corpus_format_outside_the_literal_is_refused():
    raw = {"corpus": {"forget": [{"path": "a.csv", "format": "csv"}]}}
    message = params_error(raw)
    assert re.search(r"^\s*corpus\.forget\[0\]\.format: .*'csv'", message, re.MULTILINE)


def test_top_level_that_is_not_a_mapping_is_refused():
    with pytest.raises(ParamsError, match=r"params\.yaml: expected a mapping of sections, got list"):
        parse_params(["corpus"])


# --- impossible combinations ----------------------------------------------------------------


def test_min_passage_chars_above_max_is_refused_naming_both_keys():
    message = params_error(minimal(ingest={"min_passage_chars": 50, "max_passage_chars": 10}))
    assert re.search(r"^\s*ingest: .*min_passage_chars \(50\) exceeds max_passage_chars \(10\)", message, re.MULTILINE)


def test_min_equal_to_max_is_allowed():
    params = parse_params(minimal(ingest={"min_passage_chars": 10, "max_passage_chars": 10}))
    assert params.ingest.min_passage_chars == params.ingest.max_passage_chars == 10


def test_same_path_in_forget_and_retain_is_refused_and_named():
    raw = {"corpus": {"forget": ["corpora/x.txt", "corpora/only_forget.txt"], "retain": [{"path": "corpora/x.txt"}]}}
    message = params_error(raw)
    assert re.search(r"^\s*corpus: .*both corpus\.forget and corpus\.retain: corpora/x\.txt", message, re.MULTILINE)
    assert "only_forget" not in message.split("(got")[0]


def test_same_folder_spelt_differently_in_forget_and_retain_is_refused():
    # './a/b/' and 'a/b' are the same folder.
    raw = {"corpus": {"forget": ["a/b"], "retain": ["./a/b/"]}}
    assert "both corpus.forget and corpus.retain: a/b" in params_error(raw)


def test_missing_corpus_forget_is_named():
    message = params_error({"corpus": {"retain": ["r.txt"]}})
    assert re.search(r"^\s*corpus\.forget: Field required", message, re.MULTILINE)


def test_missing_corpus_section_is_named():
    message = params_error({"ingest": {"strip_lines": True}})
    assert re.search(r"^\s*corpus: Field required", message, re.MULTILINE)


def test_empty_forget_list_is_refused():
    message = params_error({"corpus": {"forget": []}})
    assert re.search(r"^\s*corpus\.forget: .*at least 1 item", message, re.MULTILINE)


def test_empty_source_path_is_refused():
    message = params_error({"corpus": {"forget": [""]}})
    assert re.search(r"^\s*corpus\.forget\[0\]\.path: .*at least 1 character", message, re.MULTILINE)


# --- several errors at once -----------------------------------------------------------------


def test_every_error_is_reported_at_once_with_the_count():
    raw = {
        "corpus": {"forget": [{"path": "a.txt", "pth": "x"}]},
        "ingest": {"strip_lines": "maybe", "max_passage_chars": "big", "max_pasage_chars": 3},
        "baseline": {"dtype": "int8"},
        "extra": 1,
    }
    expected_keys = [
        "corpus.forget[0].pth", "ingest.strip_lines", "ingest.max_passage_chars",
        "ingest.max_pasage_chars", "baseline.dtype", "extra",
    ]
    message = params_error(raw)
    assert f"{len(expected_keys)} invalid parameter(s)" in message
    for key in expected_keys:
        assert re.search(rf"^\s*{re.escape(key)}: ", message, re.MULTILINE), key
    # One line per error after the header.
    assert len(message.splitlines()) == 1 + len(expected_keys)


# --- bare strings ---------------------------------------------------------------------------


def test_bare_string_sources_are_shorthand_for_path():
    raw = {"corpus": {"forget": ["f.txt", {"path": "g.jsonl", "text_field": "body"}], "retain": ["r/"]}}
    params = parse_params(raw)
    assert params.corpus.forget[0] == CorpusSource(path="f.txt")
    assert params.corpus.forget[0].format == "auto" and params.corpus.forget[0].text_field == "text"
    assert params.corpus.forget[1] == CorpusSource(path="g.jsonl", text_field="body")
    assert [s.path for s in params.corpus.retain] == ["r/"]


def test_params_are_frozen():
    params = parse_params(minimal())
    with pytest.raises(Exception):
        params.ingest.max_passage_chars = 5  # type: ignore[misc]


# --- the YAML file itself -------------------------------------------------------------------


def test_duplicate_yaml_key_is_an_error_naming_the_key(tmp_path):
    path = write_yaml(
        tmp_path,
        "corpus:\n  forget: [a.txt]\ningest:\n  strip_lines: true\n  strip_lines: false\n",
    )
    with pytest.raises(ParamsError, match=r"duplicate key 'strip_lines'") as info:
        load_params(path)
    assert str(path) in str(info.value)
    assert "line 5" in str(info.value)


def test_duplicate_top_level_section_is_an_error(tmp_path):
    path = write_yaml(tmp_path, "corpus:\n  forget: [a.txt]\ncorpus:\n  forget: [b.txt]\n")
    with pytest.raises(ParamsError, match=r"duplicate key 'corpus'"):
        load_params(path)


def test_invalid_yaml_names_the_file(tmp_path):
    path = write_yaml(tmp_path, "corpus:\n  forget: [a.txt\n", name="broken.yaml")
    with pytest.raises(ParamsError, match=r"broken\.yaml: not valid YAML"):
        load_params(path)


def test_missing_file_names_the_file(tmp_path):
    path = tmp_path / "nowhere" / "params.yaml"
    with pytest.raises(ParamsError, match=re.escape(f"{path}: not found")):
        load_params(path)


def test_empty_file_is_refused_naming_the_file(tmp_path):
    path = write_yaml(tmp_path, "# only a comment\n", name="empty.yaml")
    with pytest.raises(ParamsError, match=r"empty\.yaml: expected a mapping of sections, got NoneType"):
        load_params(path)


def test_validation_errors_from_a_file_name_the_file(tmp_path):
    path = write_yaml(tmp_path, "corpus:\n  forget: [a.txt]\ningest:\n  max_passage_chars: -5\n", name="p.yaml")
    with pytest.raises(ParamsError, match=r"p\.yaml: 1 invalid parameter\(s\):\n\s*ingest\.max_passage_chars: "):
        load_params(path)


def test_non_utf8_params_file_is_a_params_error_naming_the_file(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("corpus:\n  forget: [caf\u00e9.txt]\n".encode("latin-1"))
    with pytest.raises(ParamsError, match=r"latin1\.yaml"):
        load_params(path)
