"""pipeline/core/translation.py and pipeline/core/offline_proposer.py: generic translations of anchors, on tiny inline anchor sets."""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys

import pytest

from pipeline.core.offline_proposer import OfflineProposer
from pipeline.core.translation import (
    AnchorRequest, ProposerError, forbidden_vocabulary, propose_translations, word_keys,
)
from tests.conftest import REPO

N = 4
NONE: frozenset[str] = frozenset()
# First names of faker's English locales, as the pools take them (a name in both lists is neither).
_LOCALES = [importlib.import_module(f"faker.providers.person.{code}").Provider for code in ("en_GB", "en_US", "en_IE", "en_NZ")]
FEMALE = {n for p in _LOCALES for n in p.first_names_female} - {n for p in _LOCALES for n in p.first_names_male}
MALE = {n for p in _LOCALES for n in p.first_names_male} - {n for p in _LOCALES for n in p.first_names_female}
SURNAMES = {n for p in _LOCALES for n in p.last_names}  # a superset of the pool (en_GB, en_NZ)
# Endings of English place names; the place-word generator builds on them.
PLACE_ENDINGS = ("ford", "bury", "ley", "ton", "ham", "wick", "field", "worth", "stead", "combe", "mouth",
                 "by", "thorpe", "dale", "well", "borough", "den", "hurst", "cote", "stow", "brook",
                 "minster", "more", "bridge")

HOLMES = [
    AnchorRequest("Sherlock Holmes", "person", ("Mr. Sherlock Holmes",)),
    AnchorRequest("Sherlock", "person"),
    AnchorRequest("Holmes", "person"),
    AnchorRequest("Mr. Holmes", "person"),
    AnchorRequest("Holmes's", "person"),
    AnchorRequest("HOLMES", "person"),
]
BASKERVILLE = [
    AnchorRequest("Sir Henry Baskerville", "person"),
    AnchorRequest("Baskerville Hall", "place"),
    AnchorRequest("The Hound of the Baskervilles", "work_title"),
]


def offline(requests, n=N, seed=0, forbidden=NONE) -> dict[str, list[str]]:
    return OfflineProposer().propose(list(requests), n=n, seed=seed, forbidden=forbidden)


def new_words(translation: str, anchor: str) -> set[str]:
    return word_keys(translation) - word_keys(anchor)


# ---------------------------------------------------------------------------------------------
# Offline proposer
# ---------------------------------------------------------------------------------------------


def test_variants_of_one_entity_take_the_same_substitutes_in_every_world():
    out = offline(HOLMES)
    for i in range(N):
        first, last = out["Sherlock"][i], out["Holmes"][i]
        assert out["Sherlock Holmes"][i] == f"{first} {last}"
        assert out["Mr. Holmes"][i] == f"Mr. {last}"
        assert out["Holmes's"][i] == f"{last}'s"
        assert out["HOLMES"][i] == last.upper()
        assert re.fullmatch(r"[A-Z][a-z]+", first) and re.fullmatch(r"[A-Z][a-z]+", last)
    for anchor, translations in out.items():
        assert not any({"sherlock", "holmes"} & word_keys(t) for t in translations), anchor


def test_every_anchor_gets_n_distinct_index_aligned_translations():
    for n in (1, 5):
        out = offline(HOLMES + BASKERVILLE, n=n)
        assert set(out) == {r.anchor for r in HOLMES + BASKERVILLE}
        for anchor, translations in out.items():
            assert len(translations) == n and all(isinstance(t, str) and t for t in translations)
            assert len(set(translations)) == n, anchor  # a token's substitute differs between worlds
            assert anchor not in translations


def test_same_seed_same_translations_other_seed_other_translations():
    requests = HOLMES + BASKERVILLE
    assert offline(requests, seed=7) == offline(list(reversed(requests)), seed=7)  # order does not matter
    assert offline(requests, seed=7) != offline(requests, seed=8)


def test_adding_an_unrelated_anchor_leaves_the_others_unchanged():
    for seed in range(5):
        before = offline(HOLMES + BASKERVILLE, seed=seed)
        after = offline(HOLMES + BASKERVILLE + [AnchorRequest("Irene Adler", "person")], seed=seed)
        assert {a: t for a, t in after.items() if a != "Irene Adler"} == before


def test_a_token_takes_a_different_substitute_in_every_world():
    # 20 worlds drawn from 25 free initials would repeat one by chance; they must not.
    out = offline([AnchorRequest("John H. Watson", "person")], n=20)
    assert len({t.split()[1] for t in out["John H. Watson"]}) == 20


def crowded_surnames() -> tuple[list[AnchorRequest], frozenset[str]]:
    """12 surname tokens and only 8 free surnames: collisions are certain."""
    names = sorted(n for n in SURNAMES if n.isalpha())
    requests = [AnchorRequest(f"Mr. Zq{chr(97 + k)}", "person") for k in range(12)]
    return requests, frozenset(n.casefold() for n in names[8:])


def test_translations_do_not_depend_on_the_process_hash_seed():
    # Set iteration order changes with PYTHONHASHSEED; collision resolution must not follow it.
    script = (
        "import json; from tests.core.test_translation import crowded_surnames, offline; "
        "requests, forbidden = crowded_surnames(); "
        "print(json.dumps(offline(requests, n=3, seed=1, forbidden=forbidden), sort_keys=True))"
    )
    other = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": "12345"})
    requests, forbidden = crowded_surnames()
    assert json.loads(other.stdout) == offline(requests, n=3, seed=1, forbidden=forbidden)


def test_distinct_tokens_never_share_a_substitute_within_a_world():
    surnames = sorted(n for n in SURNAMES if n.isalpha())[:60]
    requests = [AnchorRequest(name, "person") for name in surnames]
    out = offline(requests)
    for i in range(N):
        substitutes = [out[name][i] for name in surnames]
        assert len(set(substitutes)) == len(substitutes)
        # The anchors are themselves pool names: no substitute may be a word of any anchor.
        assert not {s.casefold() for s in substitutes} & {n.casefold() for n in surnames}


def test_no_substitute_is_a_forbidden_word_even_when_the_pools_run_short():
    keep = sorted(n for n in SURNAMES if n.isalpha())[:5]  # all but five surnames forbidden
    forbidden = frozenset(n.casefold() for n in (SURNAMES | FEMALE | MALE) if n not in keep)
    requests = [AnchorRequest(f"Mr. Zq{chr(97 + k)}", "person") for k in range(12)]  # 12 surnames
    requests += [AnchorRequest("Ottoline Zqb", "person")]
    out = offline(requests, forbidden=forbidden)
    for i in range(N):
        seen = set()
        for request in requests:
            for key in new_words(out[request.anchor][i], request.anchor):
                assert key not in forbidden
                seen.add(key)
        # 13 tokens, 5 free surnames, no free first name: the rest come from the backup pools
        assert len(seen) == 13


def test_places_look_like_places_and_keep_their_generic_words():
    requests = [
        AnchorRequest("Baker Street", "place"), AnchorRequest("Baker", "place"),
        AnchorRequest("221B Baker Street", "place"), AnchorRequest("Upper Norwood", "place"),
    ]
    out = offline(requests)
    for i in range(N):
        baker = out["Baker"][i]
        assert out["Baker Street"][i] == f"{baker} Street"
        # the house number becomes another of three digits; its letter and "Street" stay
        assert re.fullmatch(rf"[1-9]\d\dB {baker} Street", out["221B Baker Street"][i])
        assert not out["221B Baker Street"][i].startswith("221B")
        upper, norwood = out["Upper Norwood"][i].split()
        assert upper == "Upper"
        for word in (baker, norwood):
            assert re.fullmatch(r"[A-Z][a-z]+", word) and word.lower().endswith(PLACE_ENDINGS), word
            assert word not in FEMALE | MALE


def test_a_token_shared_across_kinds_shares_its_substitute():
    families = [AnchorRequest("Baskervilles", "person"), AnchorRequest("Peter Carey", "person"),
                AnchorRequest("Peters", "person")]
    out = offline(BASKERVILLE + families)
    for i in range(N):
        sir, henry, baskerville = out["Sir Henry Baskerville"][i].split()
        assert sir == "Sir" and henry != "Henry" and henry in MALE  # Henry is a male name
        assert out["Baskerville Hall"][i] == f"{baskerville} Hall"
        assert out["The Hound of the Baskervilles"][i].endswith(f" of the {baskerville}s")
        assert out["Baskervilles"][i] == f"{baskerville}s"
        # "Peters" is a surname of its own, not the plural of the first name Peter
        assert out["Peters"][i] != out["Peter Carey"][i].split()[0] + "s"


def test_work_titles_keep_function_words_casing_and_length():
    titles = ["A Study in Scarlet", "The Sign of the Four", "THE VALLEY OF FEAR"]
    out = offline([AnchorRequest(t, "work_title") for t in titles])
    for title in titles:
        source = title.split()
        for translation in out[title]:
            words = translation.split()
            assert len(words) == len(source)
            for position, (old, new) in enumerate(zip(source, words, strict=True)):
                if old == "A":  # the article agrees with the new word: "A Study" -> "An Orchard"
                    assert new == ("An" if words[position + 1][0] in "AEIOU" else "A")
                elif old.casefold() in {"in", "the", "of"}:
                    assert new == old
                else:
                    assert new.casefold() != old.casefold()
                    assert new.isupper() if old.isupper() else new[0].isupper() and new[1:].islower()
    # two different words of one title never become the same word
    assert all(t.split()[1] != t.split()[4] for t in out["The Sign of the Four"])


def test_a_content_word_shared_by_two_titles_gets_one_substitute():
    out = offline([AnchorRequest("The Silent Heron", "work_title"), AnchorRequest("Heron Tales", "work_title")])
    for left, right in zip(out["The Silent Heron"], out["Heron Tales"], strict=True):
        assert left.split()[-1] == right.split()[0]


def test_gender_of_first_names_is_kept():
    requests = [
        AnchorRequest("Irene Adler", "person"),         # Irene: a female name in faker's lists
        AnchorRequest("Miss Violet Smyke", "person"),   # Violet: not listed, Miss says female
        AnchorRequest("Mr. Jabez Wilkes", "person"),    # Jabez: not listed, Mr. says male
    ]
    out = offline(requests)
    for i in range(N):
        assert out["Irene Adler"][i].split()[0] in FEMALE
        assert out["Miss Violet Smyke"][i].split()[1] in FEMALE
        assert out["Mr. Jabez Wilkes"][i].split()[1] in MALE


def test_pronouns_tell_the_gender_of_a_first_name_no_list_or_title_knows():
    requests = [
        AnchorRequest("Huckle Finnegan", "person", (), "male"),  # "Huckle": in no name list
        AnchorRequest("Lizzy", "person", (), "female"),          # a bare name: a first name
        AnchorRequest("Mr. Jabez Wilkes", "person", (), "female"),  # the title outweighs pronouns
    ]
    out = offline(requests)
    for i in range(N):
        assert out["Huckle Finnegan"][i].split()[0] in MALE
        assert out["Lizzy"][i] in FEMALE
        assert out["Mr. Jabez Wilkes"][i].split()[1] in MALE


def test_a_bare_name_keeps_its_role():
    requests = [
        AnchorRequest("Darcy", "person", ("Mr. Darcy",), "male"),  # after Mr.: a surname, though a US first name
        AnchorRequest("Polly", "person", ("Aunt Polly",)),         # after Aunt: a female first name
        AnchorRequest("Thornleigh", "person", ("Mrs. Thornleigh",)),  # after Mrs.: a surname
        AnchorRequest("Wimsey", "person", ("Miss Wimsey",)),          # never after Mr./Mrs.: a first name
        AnchorRequest("Wiggleby", "person", ("Wiggleby",)),           # no gender known: a surname
        AnchorRequest("Collinses", "person"), AnchorRequest("Collins", "person", ("Mr. Collins",)),
    ]
    out = offline(requests)
    for i in range(N):
        assert out["Darcy"][i] in SURNAMES
        assert out["Polly"][i] in FEMALE
        assert out["Thornleigh"][i] in SURNAMES
        assert out["Wimsey"][i] in FEMALE  # "Miss" says she is a woman
        assert out["Wiggleby"][i] in SURNAMES
        # a family plural is the plural of the surname's substitute
        assert out["Collinses"][i] in {out["Collins"][i] + "s", out["Collins"][i] + "es"}


def test_a_surname_stays_a_surname_whatever_other_names_hold_it():
    requests = [
        # "of" ends a person's name: "Gregson" is no first name of "Scotland".
        AnchorRequest("Gregson", "person", ("Inspector Gregson", "Gregson of Scotland Yard", "Tobias Gregson")),
        # After "Dr." a surname, though another man is called "Mortimer Tregennis".
        AnchorRequest("Mortimer", "person", ("Dr. Mortimer", "Mortimer Tregennis")),
        AnchorRequest("Tregennis", "person"),
    ]
    out = offline(requests)
    for i in range(N):
        assert out["Gregson"][i] in SURNAMES and out["Mortimer"][i] in SURNAMES


def test_numbers_of_a_name_become_other_numbers_of_as_many_digits():
    out = offline([AnchorRequest("221b", "place"), AnchorRequest("Lodge 341", "organisation")], n=3)
    for world, translation in enumerate(out["221b"]):
        assert re.fullmatch(r"[1-9]\d\db", translation) and translation != "221b"
    assert all(re.fullmatch(r"Lodge [1-9]\d\d", t) and t != "Lodge 341" for t in out["Lodge 341"])
    assert len(set(out["Lodge 341"])) > 1


def test_a_request_refuses_an_unknown_gender():
    with pytest.raises(ValueError, match="gender"):
        AnchorRequest("Huck", "person", (), "boy")


def test_initials_map_to_other_initials_and_roman_numerals_stay():
    out = offline([AnchorRequest("John H. Watson", "person"), AnchorRequest("Charles II", "person")])
    for translation in out["John H. Watson"]:
        first, initial, last = translation.split()
        assert re.fullmatch(r"[A-Z]\.", initial) and initial != "H."
    assert all(t.endswith(" II") and not t.startswith("Charles") for t in out["Charles II"])


def test_an_anchor_without_a_proper_name_is_still_translated():
    out = offline([AnchorRequest("Hall", "other"), AnchorRequest("Baskerville Hall", "place"),
                   AnchorRequest("the Colonel", "person"), AnchorRequest("Of The", "work_title")])
    assert all(t != "Hall" and " " not in t for t in out["Hall"])
    assert all(t.startswith("the ") and t != "the Colonel" for t in out["the Colonel"])
    assert all(len(t.split()) == 2 and t != "Of The" for t in out["Of The"])
    assert all(t.endswith(" Hall") for t in out["Baskerville Hall"])  # "Hall" stays generic there


def test_an_anchor_without_words_is_an_error():
    with pytest.raises(ProposerError, match="1887"):
        offline([AnchorRequest("1887", "other")])


def test_forbidden_vocabulary_holds_capitalised_corpus_words_and_every_anchor_word():
    vocabulary = forbidden_vocabulary(
        ["Holmes's pipe lay on the table. A cab; I saw Mrs. Hudson and Watson."], ["Baker street", "H. Watson"]
    )
    assert {"holmes", "mrs", "hudson", "watson", "baker", "street", "h"} <= vocabulary
    assert not {"pipe", "table", "a", "i", "holmes's"} & vocabulary


# ---------------------------------------------------------------------------------------------
# propose_translations and make_proposer
# ---------------------------------------------------------------------------------------------


class ShortProposer:
    name = "short"

    def propose(self, requests, *, n, seed, forbidden):
        return {r.anchor: ["Only one"] for r in requests}


def test_propose_translations_keeps_input_order_and_refuses_bad_proposer_output():
    requests = [HOLMES[2], BASKERVILLE[1], HOLMES[0]]
    result = propose_translations(requests, proposer=OfflineProposer(), n=2, seed=0, forbidden=NONE)
    assert [anchor for anchor, _, _ in result] == [r.anchor for r in requests]
    assert all(len(ts) == 2 and name == "offline" for _, ts, name in result)
    with pytest.raises(ProposerError, match="short"):
        propose_translations(requests, proposer=ShortProposer(), n=2, seed=0, forbidden=NONE)
    with pytest.raises(ValueError, match="twice"):
        propose_translations([HOLMES[2], HOLMES[2]], proposer=OfflineProposer(), n=2, seed=0, forbidden=NONE)
