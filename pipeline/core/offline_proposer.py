"""The offline proposer: generic translations from a seeded name-token map (pure, no network).

Every proper-name token of every anchor gets, in each world, one substitute token from a pool
that fits its role (first name with its gender, surname, place word, initial; see
:mod:`pipeline.core.name_pools`); an anchor's translation is the anchor with each name token
replaced by its substitute and everything else (honorifics, connectors, generic words such as
``Street`` or ``Hall``, possessives, punctuation) kept. Work titles swap their other content
words for words of a small generic lexicon. The result depends only on ``(seed, set of
requests, n)``: each choice is a hash of ``(seed, world, token, role)``, never a shared random
stream, so adding one anchor changes no other anchor's translations except to resolve a
collision.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from pipeline.core.lexicon import (
    FEMALE_HONORIFICS, FIRST_NAME_HONORIFICS, HONORIFICS, KEEP_WORDS, MALE_HONORIFICS, RANK_HONORIFICS,
)
from pipeline.core.name_pools import (
    FIRST, FIRST_FEMALE, FIRST_MALE, INITIAL, NAME_ROLES, PLACE, SURNAME, TITLE_NOUN, Pools, name_pools,
    stable_hash, substitute_candidates, title_role,
)
from pipeline.core.translation import (
    AnchorRequest, ProposerError, check_n, promoted_words, proper_name_words, title_content_words, word_keys, words_of,
)


def _cased(substitute: str, like: str) -> str:
    if len(like) > 1 and like.isupper():
        return substitute.upper()
    if like[:1].islower():
        return substitute.lower()
    return substitute


def _plural(word: str) -> str:
    return word + ("es" if word.endswith(("s", "x", "z", "ch", "sh")) else "s")



def _is_plural_noun(key: str) -> bool:
    # "Pips", "Students"; not "Glass", "Circus", "Genesis", "Famous".
    return key.endswith("s") and not key.endswith(("ss", "us", "is")) and len(key) > 3


@dataclass
class _TokenMap:
    """Roles of every token of a request set and their substitutes per world."""

    roles: dict[str, str] = field(default_factory=dict)
    plurals: dict[str, str] = field(default_factory=dict)  # "baskervilles" -> "baskerville"
    substitutes: list[dict[str, str]] = field(default_factory=list)  # [world][key] -> substitute


# Titles before a surname only ("Mr. Holmes", "Inspector Lestrade"); "Miss", "Lady" and "Lord"
# stand before either ("Miss Elizabeth", "Miss Bennet").
_SURNAME_TITLES = frozenset({"mr", "mrs", "ms", "mister", "missus"}) | RANK_HONORIFICS
# Titles that never stand before a first name, even where a full name follows ("Mr. Sherlock
# Holmes" puts "Mr." before a first name).
_SURNAME_ONLY_TITLES = frozenset({"mrs", "missus"}) | RANK_HONORIFICS
_OF = re.compile(r"\sof\s", re.IGNORECASE)


def _gender(key: str, titles: set[str], pronouns: str, pools: Pools) -> str:
    """The first-name role of ``key``: its gender from a gendered title before it, else from
    faker's name lists (when only one lists it), else from the pronouns after it in the corpus
    (the lists know the name; the pronouns, mixed with everyone near it, the character)."""
    female, male = bool(titles & FEMALE_HONORIFICS), bool(titles & MALE_HONORIFICS)
    if female != male:
        return FIRST_FEMALE if female else FIRST_MALE
    if key in pools.female_keys and key not in pools.male_keys:
        return FIRST_FEMALE
    if key in pools.male_keys and key not in pools.female_keys:
        return FIRST_MALE
    if pronouns:
        return FIRST_FEMALE if pronouns == "female" else FIRST_MALE
    return FIRST


def _single_name_role(key: str, titles: set[str], pronouns: str, pools: Pools) -> str:
    """The role of a name never part of a full name: a surname when "Mr.", "Mrs." or a rank
    stands before it ("Mr. Holmes", "Inspector Lestrade"); else a first name when its gender is
    known (a character called by a bare name, "Miss Lizzy" at most, goes by a first name:
    "Huck", "Lizzy", "Polly"), a surname when not ("Wiggins")."""
    first_title, surname_title = bool(titles & FIRST_NAME_HONORIFICS), bool(titles & _SURNAME_TITLES)
    if surname_title and not first_title:
        return SURNAME
    role = _gender(key, titles, pronouns, pools)
    # Without a gender a first name would be a coin toss between a boy's and a girl's name: a
    # surname keeps at least the gender out of it.
    return SURNAME if role == FIRST and not first_title else role


def _assign_roles(requests: Sequence[AnchorRequest], pools: Pools) -> _TokenMap:
    given: set[str] = set()
    surname: set[str] = set()
    single: set[str] = set()
    place: set[str] = set()
    other: set[str] = set()
    initials: set[str] = set()
    titled_surname: set[str] = set()
    titles_of: dict[str, set[str]] = {}
    pronouns_of: dict[str, set[str]] = {}
    promoted: dict[str, str] = {}
    title_words: set[str] = set()
    for request in requests:
        if request.kind == "person" and request.gender:
            # A person's pronouns tell the gender of its first name (or of its only name).
            full = [w for w in proper_name_words(request.anchor) if len(w.stem) > 1]
            for w in full[:-1] if len(full) > 1 else full:
                pronouns_of.setdefault(w.key, set()).add(request.gender)
        for text in (request.anchor, *request.variants):
            if request.kind == "work_title":
                title_words.update(w.key for w in title_content_words(text))
                continue
            names = proper_name_words(text)
            if not names:
                role = PLACE if request.kind == "place" else SURNAME
                for w in promoted_words(text):
                    promoted.setdefault(w.key, INITIAL if len(w.stem) == 1 else role)
                continue
            initials.update(w.key for w in names if len(w.stem) == 1)
            full = [w for w in names if len(w.stem) > 1]
            if request.kind == "person":
                # "Gregson of Scotland Yard", "McMurdo of Chicago": the person's name ends at "of".
                cut = _OF.search(text)
                person = [w for w in full if cut is None or w.start < cut.start()]
                if len(person) > 1:
                    given.update(w.key for w in person[:-1])
                    surname.add(person[-1].key)
                elif person:
                    single.add(person[0].key)
                honorifics = {w.key for w in words_of(text) if w.key in HONORIFICS}
                for w in person:
                    titles_of.setdefault(w.key, set()).update(honorifics)
                if len(person) == 1 and honorifics & _SURNAME_ONLY_TITLES:
                    # "Dr. Mortimer", "Mrs. Douglas": a surname, whatever other people call a
                    # "Mortimer Tregennis" or a "Douglas Maberley".
                    titled_surname.add(person[0].key)
            elif request.kind == "place":
                place.update(w.key for w in full)
            else:
                other.update(w.key for w in full)

    token_map = _TokenMap()
    roles = token_map.roles
    names = given | surname | single | place | other
    # "Baskervilles", "the Stapletons", "Adventures": the plural of another word, translated as
    # that word's substitute plus "s". The surname of a full name ("Birdy Edwards") stays a name,
    # and so does a surname formed from a first name ("Peters", "Walters").
    first_names = given | {k for k in single if k in pools.female_keys or k in pools.male_keys}
    stems = (names | title_words) - first_names
    for key in sorted((names | title_words) - given - surname, key=lambda k: (len(k), k)):
        # "Stapletons" of "Stapleton", "Collinses" of "Collins".
        stem = next((key[:-len(end)] for end in ("es", "s") if key.endswith(end) and key[:-len(end)] in stems), None)
        if stem is not None and stem not in token_map.plurals:
            token_map.plurals[key] = stem
    plurals = token_map.plurals.keys()
    for key in initials:
        roles[key] = INITIAL
    # A token used as a given name anywhere is a first name, so "Henry" in "Sir Henry Baskerville"
    # and in "Henry" share one substitute; person roles win over place and other roles, so
    # "Baskerville Hall" shares the surname substitute of "Henry Baskerville".

    def pronouns(key: str) -> str:
        said = pronouns_of.get(key, set())
        return next(iter(said)) if len(said) == 1 else ""

    for key in given - titled_surname:
        roles[key] = _gender(key, titles_of.get(key, set()), pronouns(key), pools)
    for key in (surname | titled_surname) - roles.keys():
        roles[key] = SURNAME
    for key in single - given - surname - plurals:
        roles[key] = _single_name_role(key, titles_of.get(key, set()), pronouns(key), pools)
    for key in place - roles.keys() - plurals:
        roles[key] = PLACE
    for key in other - roles.keys() - plurals:
        roles[key] = SURNAME
    for key in title_words - roles.keys() - plurals:
        roles[key] = title_role(key)
    for key, role in promoted.items():
        if key not in plurals:
            roles.setdefault(key, role)
    return token_map


class OfflineProposer:
    """Generic translations from a seeded name-token map; no network, no model."""

    name = "offline"

    def propose(
        self, requests: list[AnchorRequest], *, n: int, seed: int, forbidden: frozenset[str]
    ) -> dict[str, list[str]]:
        """Translate every request into ``n`` index-aligned translations.

        Args:
            requests: the anchors; all of them together decide each token's role.
            n: translations per anchor (worlds).
            seed: any integer; the same seed, requests and ``n`` give the same translations.
            forbidden: casefolded words no substitute may be (see :func:`forbidden_vocabulary`).

        Returns:
            ``{anchor: [translation of world 0, ..., world n-1]}``.

        Raises:
            ProposerError: an anchor has no word to translate, or a pool is exhausted.
        """
        check_n(n)
        for request in requests:
            if not words_of(request.anchor):
                raise ProposerError(f"anchor {request.anchor!r} has no word to translate")
        pools = name_pools()
        token_map = _assign_roles(requests, pools)
        source = {key for r in requests for text in (r.anchor, *r.variants) for key in word_keys(text)}
        self._choose_substitutes(token_map, n=n, seed=seed, forbidden=forbidden, source=source, pools=pools)
        return {
            r.anchor: [_renumber(self._translate(r, token_map, world), seed, world) for world in range(n)]
            for r in requests
        }

    @staticmethod
    def _choose_substitutes(
        token_map: _TokenMap, *, n: int, seed: int, forbidden: frozenset[str], source: set[str], pools: Pools
    ) -> None:
        never = source | KEEP_WORDS  # a substitute never equals a word of any anchor
        # Tokens also written in the plural ("Baskervilles", "Pips"): the plural must be free too.
        plural_stems = set(token_map.plurals.values()) | {
            key for key, role in token_map.roles.items() if role == TITLE_NOUN and _is_plural_noun(key)
        }
        by_token: dict[str, set[str]] = {}  # a token's substitutes differ between worlds
        for world in range(n):
            used: set[str] = set()
            chosen: dict[str, str] = {}
            for key in sorted(token_map.roles):
                role = token_map.roles[key]
                earlier = by_token.setdefault(key, set())
                # Name substitutes must avoid the corpora's vocabulary (else "Holmes" could become
                # a character of a retain book). Title words are ordinary English words that any
                # large corpus capitalises somewhere: they avoid it only while the lexicon allows.
                levels = [(never, forbidden, used, earlier)]
                if role not in NAME_ROLES:
                    levels += [(never, used, earlier), (never,)]

                def forms(candidate: str, plural: bool = key in plural_stems) -> tuple[str, ...]:
                    word = candidate.casefold()
                    return (word, _plural(word)) if plural else (word,)

                substitute = None
                for excluded in levels:
                    substitute = next(
                        (c for c in substitute_candidates(seed, world, key, role, pools)
                         if not any(form in words for form in forms(c) for words in excluded)),
                        None,
                    )
                    if substitute is not None:
                        break
                if substitute is None:
                    raise ProposerError(
                        f"no free {role} substitute for {key!r} in world {world}: every pool entry is "
                        "forbidden or taken (too many anchors or too large a forbidden vocabulary)"
                    )
                chosen[key] = substitute
                used.update(forms(substitute))
                earlier.add(substitute.casefold())
            token_map.substitutes.append(chosen)

    @staticmethod
    def _translate(request: AnchorRequest, token_map: _TokenMap, world: int) -> str:
        text = request.anchor
        chosen = token_map.substitutes[world]
        if request.kind == "work_title":
            targets = title_content_words(text)
        elif any(ch.isdigit() for ch in text):
            # "221B", "Lodge 341": the renumbered digits carry the name; the words stay.
            targets = proper_name_words(text)
        else:
            targets = proper_name_words(text) or promoted_words(text)
        out, last = "", 0
        for word in targets:
            if word.key in token_map.plurals:
                substitute = _plural(chosen[token_map.plurals[word.key]])
            else:
                substitute = chosen[word.key]
                if token_map.roles[word.key] == TITLE_NOUN and _is_plural_noun(word.key):  # "Pips"
                    substitute = _plural(substitute)
            substitute = _cased(substitute, word.stem)
            out = _agree_article(out + text[last:word.start], substitute) + substitute
            last = word.end
        return out + text[last:]


_DIGITS = re.compile(r"\d+")


def _renumber(text: str, seed: int, world: int) -> str:
    """Every number of a name becomes another of as many digits ("221B" -> "547B", "Lodge 341"
    -> "Lodge 806"): a house number or a lodge number identifies as well as a word."""

    def other(match: re.Match) -> str:
        digits = match.group(0)
        low = 10 ** (len(digits) - 1) if len(digits) > 1 else 0
        span = 10 ** len(digits) - low
        value = low + stable_hash(seed, world, digits) % span
        if str(value) == digits:
            value = low + (value - low + 1) % span
        return str(value).zfill(len(digits))

    return _DIGITS.sub(other, text)


_ARTICLE_BEFORE = re.compile(r"(?:^|(?<=\W))(an?)(\s+)$", re.IGNORECASE)


def _agree_article(prefix: str, following: str) -> str:
    """``prefix`` with a final "a"/"an" fitted to ``following`` ("A Study" -> "An Orchard")."""
    match = _ARTICLE_BEFORE.search(prefix)
    if not match:
        return prefix
    article = "an" if following[:1].lower() in "aeiou" else "a"
    old = match.group(1)
    if old.isupper() and (len(old) > 1 or (len(following) > 1 and following.isupper())):
        article = article.upper()
    elif old[0].isupper():
        article = article.capitalize()
    return prefix[:match.start(1)] + article + match.group(2)
