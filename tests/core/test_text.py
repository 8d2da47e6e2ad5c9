"""pipeline/core/text.py: reading corpus files and normalising their text (pure functions)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pipeline.errors import CorpusError
from pipeline.core.text import (
    Refusal,
    SourceRecord,
    decode_text,
    file_format,
    normalise,
    paragraph_spans,
    passage_spans,
    read_corpus_file,
    read_jsonl,
    source_files,
    split_long_span,
    strip_front_matter,
)

# A line comfortably longer than the default unwrap_min_width (50), and one shorter.
LONG_1 = "It was the best of times, it was the worst of times, it was the age"
LONG_2 = "of wisdom, it was the age of foolishness, it was the epoch of belief,"
LONG_3 = "it was the epoch of incredulity."


def non_space(text: str) -> str:
    return "".join(text.split())


# --- normalise ------------------------------------------------------------------------------


def test_line_endings_become_newlines():
    assert normalise("alpha\r\nbeta\rgamma\ndelta", unwrap_lines=False) == "alpha\nbeta\ngamma\ndelta"


def test_crlf_and_lf_inputs_normalise_identically():
    lf = f"Title\n\n{LONG_1}\n{LONG_2}\n\n\n* * *\n\nEnd.\n"
    assert normalise(lf.replace("\n", "\r\n")) == normalise(lf)
    assert normalise(lf.replace("\n", "\r")) == normalise(lf)


def test_bom_is_removed():
    out = normalise("\ufeffHello world")
    assert out == "Hello world"
    assert "\ufeff" not in out


def test_nfc_composition():
    decomposed = "Caf" + "e\u0301" + " au lait"
    out = normalise(decomposed)
    assert out == "Caf\u00e9 au lait"
    assert len(out) == len(decomposed) - 1


def test_strip_lines_removes_indentation_and_trailing_blanks():
    text = "    First line\t\n   second line   \n"
    assert normalise(text, unwrap_lines=False) == "First line\nsecond line"
    # Without strip_lines the indentation inside the text stays.
    kept = normalise("a\n    indented", strip_lines=False, unwrap_lines=False)
    assert kept == "a\n    indented"


def test_wrapped_paragraph_is_unwrapped_into_one_line():
    text = f"  {LONG_1}\n  {LONG_2}\n  {LONG_3}\n"
    out = normalise(text)
    assert out == " ".join([LONG_1, LONG_2, LONG_3])
    assert "\n" not in out


def test_unwrap_lines_false_keeps_the_line_breaks():
    text = f"{LONG_1}\n{LONG_2}"
    assert normalise(text, unwrap_lines=False) == text


def test_short_line_paragraph_keeps_its_line_breaks():
    contents = "CONTENTS\n  I. A Scandal in Bohemia\n  II. The Red-Headed League\n  III. A Case of Identity"
    verse = "Tyger Tyger, burning bright,\nIn the forests of the night;"
    text = f"{contents}\n\n{verse}\n\n{LONG_1}\n{LONG_2}"
    paragraphs = normalise(text).split("\n\n")
    expected_contents = "\n".join(line.strip() for line in contents.split("\n"))
    assert paragraphs == [expected_contents, verse, f"{LONG_1} {LONG_2}"]


def test_unwrap_min_width_is_the_threshold():
    lines = ["x" * 10, "y" * 12]
    text = "\n".join(lines)
    longest = max(len(line) for line in lines)
    # Longest line shorter than the width: line breaks kept.
    assert normalise(text, unwrap_min_width=longest + 1) == text
    # Longest line at least the width: joined.
    assert normalise(text, unwrap_min_width=longest) == " ".join(lines)


def test_paragraphs_are_separated_by_exactly_one_blank_line():
    text = "One.\n\n\n\nTwo.\n \t \n\t\nThree.\n\nFour."
    out = normalise(text)
    assert out == "One.\n\nTwo.\n\nThree.\n\nFour."
    assert "\n\n\n" not in out


def test_no_leading_or_trailing_whitespace():
    out = normalise("\n\n   \n  Hello there.  \n\n\n  \t")
    assert out == "Hello there."
    assert out == out.strip()


def test_whitespace_only_input_normalises_to_empty():
    assert normalise(" \n\r\n\t \n") == ""


IDEMPOTENCE_INPUTS = [
    "\ufeffTitle\r\n\r\n" + f"   {LONG_1}\r\n   {LONG_2}\r\n\r\n\r\n* * *\r\n\r\nThe End.",
    "CONTENTS\n  I. One\n  II. Two\n\n\n" + f"{LONG_1}\n{LONG_2}\n{LONG_3}",
    "Caf" + "e\u0301\n\n\n\n\tna\u0131\u0308ve   \n",
    "a\rb\r\rc\u2028d\u2029e\x0cf",
    "",
    "   \n\n\t",
]


@pytest.mark.parametrize("text", IDEMPOTENCE_INPUTS)
@pytest.mark.parametrize(
    "options",
    [{}, {"strip_lines": False}, {"unwrap_lines": False}, {"unwrap_min_width": 5}],
    ids=["default", "no-strip", "no-unwrap", "narrow"],
)
def test_normalise_is_idempotent(text, options):
    once = normalise(text, **options)
    assert normalise(once, **options) == once


def test_normalise_is_idempotent_with_a_bom_after_leading_blank_space():
    text = "\n\ufeffChapter One"
    once = normalise(text)
    assert not once.startswith("\ufeff")
    assert normalise(once) == once


# --- paragraph_spans ------------------------------------------------------------------------


def test_paragraph_spans_point_at_the_stripped_paragraphs():
    text = "  First para\nstill first  \n\n\n Second \n \t\nThird"
    spans = paragraph_spans(text)
    assert [text[s:e] for s, e in spans] == ["First para\nstill first", "Second", "Third"]
    assert all(s < e for s, e in spans)
    assert [s for s, _ in spans] == sorted(s for s, _ in spans)


def test_paragraph_spans_on_normalised_text():
    text = normalise(f"Title\n\n{LONG_1}\n{LONG_2}\n\nEnd.")
    spans = paragraph_spans(text)
    assert [text[s:e] for s, e in spans] == text.split("\n\n")


def test_paragraph_spans_of_blank_text_is_empty():
    assert paragraph_spans("") == []
    assert paragraph_spans(" \n\n \n") == []


# --- split_long_span ------------------------------------------------------------------------


def assert_covering(text: str, start: int, end: int, pieces: list[tuple[int, int]], max_chars: int) -> None:
    assert pieces, "no piece"
    for s, e in pieces:
        assert start <= s < e <= end
        assert e - s <= max_chars
        assert text[s:e] == text[s:e].strip()
    assert all(a[1] <= b[0] for a, b in zip(pieces, pieces[1:])), "pieces overlap or are out of order"
    # Nothing between or around the pieces but whitespace.
    gaps = [text[start:pieces[0][0]], text[pieces[-1][1]:end]] + [text[a[1]:b[0]] for a, b in zip(pieces, pieces[1:])]
    assert all(not gap.strip() for gap in gaps)
    assert "".join(non_space(text[s:e]) for s, e in pieces) == non_space(text[start:end])


def test_short_span_is_one_piece():
    text = "Short enough."
    assert split_long_span(text, 0, len(text), 100) == [(0, len(text))]


def test_split_at_sentence_ends_when_possible():
    sentences = ["One two three.", "Four five six!", "Seven eight nine?", "Ten eleven."]
    text = " ".join(sentences)
    max_chars = max(len(s) for s in sentences) + 5  # room for one sentence, never two
    pieces = split_long_span(text, 0, len(text), max_chars)
    assert [text[s:e] for s, e in pieces] == sentences
    assert_covering(text, 0, len(text), pieces, max_chars)


def test_sentence_end_with_closing_quote_keeps_the_quote():
    first = '"Come at once!" said he.'
    text = f'{first} "I shall." She went away quietly after that.'
    pieces = split_long_span(text, 0, len(text), len(first) + 3)
    assert text[pieces[0][0]:pieces[0][1]] == first
    assert_covering(text, 0, len(text), pieces, len(first) + 3)


def test_split_packs_several_sentences_when_they_fit():
    text = "A b. C d. E f. G h. I j."
    pieces = split_long_span(text, 0, len(text), 10)
    assert [text[s:e] for s, e in pieces] == ["A b. C d.", "E f. G h.", "I j."]


def test_split_at_spaces_without_sentence_end():
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
    text = " ".join(words)
    max_chars = 12
    pieces = split_long_span(text, 0, len(text), max_chars)
    assert_covering(text, 0, len(text), pieces, max_chars)
    # Every piece is made of whole words.
    for s, e in pieces:
        assert all(word in words for word in text[s:e].split(" "))
    assert len(pieces) > 1


def test_hard_cut_without_any_space():
    text = "x" * 25
    pieces = split_long_span(text, 0, len(text), 10)
    assert pieces == [(0, 10), (10, 20), (20, 25)]
    assert_covering(text, 0, len(text), pieces, 10)


def test_split_inside_a_larger_text_keeps_absolute_offsets():
    prefix = "Intro paragraph.\n\n"
    body = "First sentence here. Second sentence here. Third one."
    text = prefix + body + "\n\nOutro."
    start, end = len(prefix), len(prefix) + len(body)
    pieces = split_long_span(text, start, end, 25)
    assert_covering(text, start, end, pieces, 25)
    assert [text[s:e] for s, e in pieces] == ["First sentence here.", "Second sentence here.", "Third one."]


@pytest.mark.parametrize("max_chars", [1, 2, 7, 13, 40, 80])
def test_covering_on_mixed_text(max_chars):
    text = normalise(
        f"{LONG_1}\n{LONG_2}\n{LONG_3} Mr. Holmes said: \"Indeed!\" (Really?) "
        "Supercalifragilisticexpialidocious-and-then-some words. End"
    )
    pieces = split_long_span(text, 0, len(text), max_chars)
    assert_covering(text, 0, len(text), pieces, max_chars)


# --- passage_spans --------------------------------------------------------------------------


def test_passage_spans_keep_and_refuse_with_reasons():
    text = "A real paragraph.\n\n* * *\n\nOk\n\nAnother real paragraph here."
    kept, refused = passage_spans(text, min_chars=5, max_chars=100)
    assert [text[s:e] for s, e in kept] == ["A real paragraph.", "Another real paragraph here."]
    assert [(text[s:e], reason) for s, e, reason in refused][0] == ("* * *", "no letter or digit")
    short = [(text[s:e], reason) for s, e, reason in refused][1]
    assert short[0] == "Ok"
    assert "min_passage_chars" in short[1] and "5" in short[1]
    assert len(refused) == 2


def test_passage_spans_split_long_paragraphs():
    para = " ".join(f"Sentence number {i} is here." for i in range(10))
    kept, refused = passage_spans(para, min_chars=1, max_chars=60)
    assert refused == []
    assert len(kept) > 1
    assert all(e - s <= 60 for s, e in kept)
    assert non_space("".join(para[s:e] for s, e in kept)) == non_space(para)


def test_digits_count_as_content():
    kept, refused = passage_spans("1887", min_chars=1, max_chars=100)
    assert kept == [(0, 4)] and refused == []


# --- decode_text / read_corpus_file ---------------------------------------------------------


def test_non_utf8_byte_names_file_offset_and_line(tmp_path):
    head = "First line.\nSecond line, caf".encode("utf-8")
    data = head + b"\xe9 au lait.\nThird line.\n"
    path = tmp_path / "latin.txt"
    path.write_bytes(data)
    offset = len(head)
    line = data[:offset].count(b"\n") + 1
    with pytest.raises(CorpusError) as info:
        read_corpus_file(path, "auto", "text")
    message = str(info.value)
    assert str(path) in message
    assert f"byte offset {offset}" in message
    assert f"line {line}" in message
    assert "0xe9" in message


def test_non_utf8_after_multibyte_characters_reports_the_byte_offset(tmp_path):
    head = "\u00e9t\u00e9 \u2014 \u00fcber\n\n".encode("utf-8")  # multi-byte chars before the bad byte
    data = head + b"ok \xff"
    path = tmp_path / "multi.txt"
    path.write_bytes(data)
    offset = len(head) + len(b"ok ")
    assert data[offset] == 0xFF
    with pytest.raises(CorpusError, match=rf"byte offset {offset} \(line 3\)"):
        read_corpus_file(path, "auto", "text")


def test_binary_file_is_refused(tmp_path):
    path = tmp_path / "image.txt"
    path.write_bytes(b"GIF89a\x00\x01\x02binary")
    with pytest.raises(CorpusError, match=r"binary") as info:
        read_corpus_file(path, "auto", "text")
    assert str(path) in str(info.value)
    assert "byte offset 6" in str(info.value)


def test_binary_jsonl_is_refused(tmp_path):
    path = tmp_path / "blob.jsonl"
    path.write_bytes(b'{"text": "a"}\n\x00\x00')
    with pytest.raises(CorpusError, match=r"binary"):
        read_corpus_file(path, "auto", "text")


@pytest.mark.parametrize("content", [b"", b"   \n\t\r\n  \n"], ids=["empty", "whitespace-only"])
def test_empty_and_blank_files_are_refused(tmp_path, content):
    path = tmp_path / "blank.txt"
    path.write_bytes(content)
    with pytest.raises(CorpusError, match=r"empty") as info:
        read_corpus_file(path, "auto", "text")
    assert str(path) in str(info.value)


def test_decode_text_returns_the_text():
    data = "Caf\u00e9\r\n".encode("utf-8")
    assert decode_text(data, Path("x.txt")) == data.decode("utf-8")


def test_text_file_is_one_record(tmp_path):
    path = tmp_path / "book.txt"
    path.write_text("Hello.\n\nWorld.\n", encoding="utf-8")
    records, refused = read_corpus_file(path, "auto", "text")
    assert records == [SourceRecord(path, 0, "Hello.\n\nWorld.\n")]
    assert refused == []


def test_missing_source_path_is_named(tmp_path):
    path = tmp_path / "corpora" / "nope.txt"
    with pytest.raises(CorpusError, match=re.escape(f"{path}: corpus path does not exist")):
        source_files(path, "auto")


def test_folder_without_supported_files_is_an_error(tmp_path):
    folder = tmp_path / "books"
    folder.mkdir()
    (folder / "cover.png").write_bytes(b"\x89PNG")
    (folder / "notes.csv").write_text("a,b\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"folder holds no corpus file") as info:
        source_files(folder, "auto")
    assert str(folder) in str(info.value)


def test_folder_lists_supported_files_recursively_and_sorted(tmp_path):
    folder = tmp_path / "books"
    (folder / "sub").mkdir(parents=True)
    for name in ["b.txt", "a.md", "sub/c.jsonl", "sub/d.MARKDOWN", "skip.csv"]:
        (folder / name).write_text("x", encoding="utf-8")
    found = source_files(folder, "auto")
    assert found == sorted(folder / n for n in ["b.txt", "a.md", "sub/c.jsonl", "sub/d.MARKDOWN"])
    # An explicit format keeps only that format's files.
    assert source_files(folder, "markdown") == sorted([folder / "a.md", folder / "sub/d.MARKDOWN"])


def test_unknown_extension_with_auto_format_names_the_suffix(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("text\nhello\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"unknown corpus format '\.csv'") as info:
        read_corpus_file(path, "auto", "text")
    assert str(path) in str(info.value)


def test_explicit_format_overrides_the_suffix(tmp_path):
    assert file_format(Path("x.csv"), "text") == "text"
    path = tmp_path / "notes.log"
    path.write_text("Some text.", encoding="utf-8")
    records, _ = read_corpus_file(path, "text", "text")
    assert [r.text for r in records] == ["Some text."]


def test_markdown_front_matter_is_stripped(tmp_path):
    body = "# Title\n\nSome prose.\n"
    path = tmp_path / "post.md"
    path.write_text("---\ntitle: A post\ntags: [a, b]\n---\n" + body, encoding="utf-8")
    records, refused = read_corpus_file(path, "auto", "text")
    assert [r.text for r in records] == [body]
    assert refused == []


def test_markdown_front_matter_with_crlf_is_stripped():
    assert strip_front_matter("---\r\ntitle: x\r\n---\r\nBody\r\n") == "Body\n"


def test_markdown_without_front_matter_is_unchanged_and_only_leading_block_is_stripped():
    body = "Intro\n\n---\nnot: front matter\n---\nmore"
    assert strip_front_matter(body) == body


def test_text_file_keeps_a_leading_dashes_block(tmp_path):
    text = "---\ntitle: x\n---\nBody\n"
    path = tmp_path / "plain.txt"
    path.write_text(text, encoding="utf-8")
    assert [r.text for r in read_corpus_file(path, "auto", "text")[0]] == [text]


# --- JSONL ----------------------------------------------------------------------------------


def jsonl_bytes(lines: list[bytes]) -> bytes:
    return b"\n".join(lines) + b"\n"


def test_jsonl_bad_lines_are_refused_with_line_numbers(tmp_path):
    lines = [
        json.dumps({"text": "First good record."}).encode(),          # 1
        json.dumps({"body": "no text field"}).encode(),                # 2
        b'{"text": "unterminated',                                     # 3
        b"",                                                           # 4 blank: skipped silently
        json.dumps(["a", "list"]).encode(),                            # 5
        json.dumps({"text": 42}).encode(),                             # 6
        json.dumps({"text": "   "}).encode(),                          # 7
        b'{"text": "caf\xe9"}',                                        # 8 invalid UTF-8
        json.dumps({"text": "Last good record.", "id": 9}).encode(),   # 9
    ]
    path = tmp_path / "records.jsonl"
    data = jsonl_bytes(lines)
    path.write_bytes(data)

    records, refused = read_corpus_file(path, "auto", "text")

    assert [(r.record, r.text) for r in records] == [(1, "First good record."), (9, "Last good record.")]
    assert all(r.path == path for r in records)
    by_line = {r.location: r for r in refused}
    assert list(by_line) == ["line 2", "line 3", "line 5", "line 6", "line 7", "line 8"]
    assert all(isinstance(r, Refusal) and r.source == str(path) and r.reason for r in refused)
    assert "no field 'text'" in by_line["line 2"].reason
    assert "invalid JSON" in by_line["line 3"].reason
    assert "expected a JSON object, got array" in by_line["line 5"].reason
    assert "field 'text' is int, not a string" in by_line["line 6"].reason
    assert "field 'text' is empty" in by_line["line 7"].reason
    bad_offset = data.index(b"\xe9")
    assert f"not valid UTF-8 at byte offset {bad_offset}" in by_line["line 8"].reason
    # The refused content is kept (decoded leniently).
    assert by_line["line 2"].record == lines[1].decode()
    assert by_line["line 8"].record.startswith('{"text": "caf')


def test_jsonl_lines_nested_too_deep_or_with_a_duplicate_key_are_refused(tmp_path):
    deep = b'{"text": "x", "meta": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    twice = json.dumps({"text": "first"}).encode()[:-1] + b', "text": "second"}'
    path = tmp_path / "hostile.jsonl"
    path.write_bytes(jsonl_bytes([json.dumps({"text": "Kept."}).encode(), deep, twice]))
    records, refused = read_corpus_file(path, "auto", "text")
    assert [(r.record, r.text) for r in records] == [(1, "Kept.")]
    assert [(r.location, r.source) for r in refused] == [("line 2", str(path)), ("line 3", str(path))]
    assert "nested deeper than 100 levels" in refused[0].reason
    assert refused[1].reason == "duplicate field 'text'"


def test_jsonl_custom_text_field(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_bytes(jsonl_bytes([json.dumps({"body": "Hello"}).encode(), json.dumps({"text": "x"}).encode()]))
    records, refused = read_corpus_file(path, "auto", "body")
    assert [(r.record, r.text) for r in records] == [(1, "Hello")]
    assert [(r.location, "'body'" in r.reason) for r in refused] == [("line 2", True)]


def test_jsonl_crlf_lines_parse(tmp_path):
    path = tmp_path / "win.jsonl"
    path.write_bytes(b'{"text": "one"}\r\n{"text": "two"}\r\n')
    records, refused = read_corpus_file(path, "auto", "text")
    assert [(r.record, r.text) for r in records] == [(1, "one"), (2, "two")]
    assert refused == []


def test_jsonl_without_usable_line_is_an_error(tmp_path):
    path = tmp_path / "useless.jsonl"
    path.write_bytes(jsonl_bytes([b"[1, 2]", b"not json", json.dumps({"other": "x"}).encode()]))
    with pytest.raises(CorpusError, match=r"no usable JSONL record") as info:
        read_corpus_file(path, "auto", "text")
    message = str(info.value)
    assert str(path) in message
    for number in (1, 2, 3):
        assert f"line {number}:" in message


def test_jsonl_with_only_blank_lines_is_an_error():
    with pytest.raises(CorpusError, match=r"no usable JSONL record \(no non-blank line\)"):
        read_jsonl(b"\n  \n\n", Path("blank.jsonl"), "text")
