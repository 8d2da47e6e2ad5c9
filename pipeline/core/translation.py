"""Generic translations of anchor terms (pure functions, no dataset I/O).

An anchor gets ``n`` translations, *index-aligned*: translation ``i`` of every anchor belongs to
one invented substitute world ``i``, so that a block which picks world ``i`` replaces
``Mr. Jonathan Pike``, ``Pike`` and ``Pike's`` with ``Mr. Edward Hale``, ``Hale`` and ``Hale's``.

Two proposers:

* :class:`OfflineProposer` (the default) builds a *name-token map*. Every proper-name token of
  every anchor gets, in each world, one substitute token from a pool that fits its role (first
  name, surname, place word, initial); an anchor's translation is the anchor with each name token
  replaced by its substitute and everything else (honorifics, connectors, generic words such as
  ``Street`` or ``Hall``, possessives, punctuation) kept. Work titles swap their other content
  words for words of a small generic lexicon. The result depends only on ``(seed, set of
  requests, n)``: each choice is a hash of ``(seed, world, token, role)``, never a shared random
  stream, so adding one anchor changes no other anchor's translations except to resolve a
  collision.
* :class:`OpenAICompatibleProposer` asks an OpenAI-compatible chat endpoint and falls back to the
  offline proposer for every entity whose reply is unusable.

Casefolding: vocabularies (``forbidden``, the anchors' own words) are sets of casefolded word
stems, possessive ``'s`` removed; see :func:`forbidden_vocabulary`.
"""

from __future__ import annotations

import hashlib
import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Protocol, runtime_checkable

from pipeline.env import setting
from pipeline.errors import PipelineError
from pipeline.params import OpenAIProposerParams, TranslationParams
from schemas.anchors import KINDS


class ProposerError(PipelineError):
    """A proposer cannot produce translations: endpoint unreachable, HTTP error, pools exhausted."""


# --------------------------------------------------------------------------------------------
# Requests, results and the proposer protocol
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AnchorRequest:
    """One anchor to translate.

    Attributes:
        anchor: canonical surface form, e.g. ``"Mr. Jonathan Pike"``.
        kind: one of :data:`schemas.anchors.KINDS`.
        variants: other observed surface forms; they are evidence (a ``Miss`` before a first name
            tells its gender), never translated themselves.
    """

    anchor: str
    kind: str
    variants: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"anchor {self.anchor!r}: kind {self.kind!r} is not one of {KINDS}")
        if not self.anchor.strip():
            raise ValueError("an anchor must not be empty")


@dataclass(frozen=True)
class Proposal:
    """The translations of one anchor and who actually wrote them.

    ``refused`` says why the configured proposer's own answer was not used (``None`` when it
    was), and ``reply`` keeps that refused answer, for the rejects table.
    """

    translations: tuple[str, ...]
    proposer: str
    refused: str | None = None
    reply: str = ""


@dataclass(frozen=True)
class AnchorProposal:
    """One anchor's validated translations, as :func:`collect_proposals` returns them."""

    anchor: str
    translations: tuple[str, ...]
    proposer: str
    refused: str | None = None
    reply: str = ""


class TranslationProposer(Protocol):
    """Anything that turns anchor requests into index-aligned translations."""

    name: str

    def propose(
        self, requests: list[AnchorRequest], *, n: int, seed: int, forbidden: frozenset[str]
    ) -> dict[str, list[str]]:
        """Map every requested anchor to exactly ``n`` translations; index ``i`` is world ``i``."""
        ...


@runtime_checkable
class MarkingProposer(Protocol):
    """A proposer that may hand some anchors to another proposer and says so per anchor."""

    name: str

    def propose_marked(
        self, requests: list[AnchorRequest], *, n: int, seed: int, forbidden: frozenset[str]
    ) -> dict[str, Proposal]: ...


# --------------------------------------------------------------------------------------------
# Words of an anchor
# --------------------------------------------------------------------------------------------

# A word is a run of letters with inner apostrophes ("O'Neill", "Holmes's"); digits, hyphens,
# periods and spaces separate words and are kept verbatim in a translation.
_WORD = re.compile(r"[^\W\d_]+(?:['\u2019][^\W\d_]+)*")
_POSSESSIVE = re.compile(r"['\u2019][sS]$")
_ROMAN = re.compile(r"M{0,3}(?:CM|CD|D?C{0,3})(?:XC|XL|L?X{0,3})(?:IX|IV|V?I{0,3})")

_FEMALE_TITLES = frozenset(
    "mrs miss ms lady madame mme mademoiselle mlle frau fraulein signora senora countess baroness "
    "duchess queen princess aunt dame sister mother mistress empress marchioness missus".split()
)
_MALE_TITLES = frozenset(
    "mr sir lord monsieur herr signor senor count baron duke king prince uncle father brother "
    "master mister earl viscount marquis marquess emperor".split()
)
HONORIFICS = _FEMALE_TITLES | _MALE_TITLES | frozenset(
    "dr doctor colonel col captain capt inspector professor prof sergeant sgt major general gen "
    "reverend rev saint st constable lieutenant lt admiral commander judge justice nurse governor "
    "chief bishop cardinal superintendent corporal private minister secretary chancellor ambassador "
    "consul mayor alderman sheriff magistrate coroner councillor premier president".split()
)
CONNECTORS = frozenset(
    "of the de von van du la le les and in a an at on for to del della di da der den des y by "
    "with from upon".split()
)
GENERIC_WORDS = frozenset(
    # Generic parts of place and organisation names: "Baker Street" -> "<X> Street".
    "street road lane square place terrace gardens hall house lodge manor abbey grange court park "
    "hill hills bridge station hotel inn moor moors yard club hospital college school university "
    "church chapel cathedral cottage cottages farm tower towers castle river avenue crescent row "
    "walk way gate green common heath wood woods forest valley lake bay island isle port harbour "
    "dock docks wharf pier market mill mills well wells cross end field fields mews close circus "
    "quay embankment palace museum gallery theatre library office bank company society association "
    "agency institute prison gaol asylum workhouse barracks mansions buildings villa villas rectory "
    "vicarage priory academy county shire town city village downs marsh fen head point cape mount "
    "mountain falls springs lock canal railway line junction restaurant tavern arms chambers league "
    "union guild brotherhood order party corporation limited ltd co "
    # Qualifiers that are part of many place names.
    "north south east west upper lower great little new old high central royal".split()
)
KEEP_WORDS = HONORIFICS | CONNECTORS | GENERIC_WORDS
_TITLE_FUNCTION_WORDS = CONNECTORS | HONORIFICS | frozenset(
    "or but nor as into over under without within between through after before about against "
    "his her its their my our your this that these those who what which where when how why "
    "is was be not no".split()
)


@dataclass(frozen=True)
class _Word:
    start: int
    end: int
    stem: str  # the word without a possessive 's (Holmes's -> Holmes)

    @property
    def key(self) -> str:
        return self.stem.casefold()


def _words(text: str) -> list[_Word]:
    words = []
    for match in _WORD.finditer(text):
        stem = match.group()
        if _POSSESSIVE.search(stem) and len(stem) > 2:
            stem = stem[:-2]
        words.append(_Word(match.start(), match.start() + len(stem), stem))
    return words


def word_keys(text: str) -> set[str]:
    """Casefolded stems of every word of ``text`` (``"Mr. Holmes's"`` -> ``{"mr", "holmes"}``)."""
    return {word.key for word in _words(text)}


def forbidden_vocabulary(texts: Iterable[str], anchors: Iterable[str]) -> frozenset[str]:
    """Words a substitute must never be: capitalised words of the corpora and every anchor word.

    Args:
        texts: corpus documents (forget and retain).
        anchors: anchors and their variants.

    Returns:
        Casefolded word stems (possessive ``'s`` removed). From ``texts``: every word that starts
        with a capital letter and has at least two letters (single capitals are initials, the
        pronoun I and the article A; counting them would forbid every initial). From ``anchors``:
        every word, of any case and length.
    """
    vocabulary: set[str] = set()
    for text in texts:
        vocabulary.update(w.key for w in _words(text) if len(w.stem) >= 2 and w.stem[0].isupper())
    for anchor in anchors:
        vocabulary.update(word_keys(anchor))
    return frozenset(vocabulary)


# --------------------------------------------------------------------------------------------
# Substitute pools
# --------------------------------------------------------------------------------------------

# Title lexicon: generic nouns and adjectives for the content words of work titles (a canon of
# sixty stories has about 150 distinct ones, and two words of one world must not coincide).
# Words that any anchor uses are skipped at run time, so a title never keeps a word of the source.
TITLE_NOUNS = tuple("""
    Lantern Garden Letter Mirror Harbour Window Candle Orchard Meadow Compass Ribbon Clock Feather
    Locket Lighthouse Willow Sparrow Shadow Glove Key Crown Ledger Journey Promise Riddle Voyage
    Signal Bell Archive Portrait Statue Fountain Coin Thread Needle Lamp Ember Ferry Harvest Pilgrim
    Shepherd Stranger Widow Traveller Sailor Tailor Weaver Whisper Echo Mist Tide Storm Frost Pebble
    Acorn Thimble Kettle Basket Satchel Parcel Ticket Chart Orchid Cellar Attic Staircase Balcony
    Heron Lark Otter Badger Raven Bargain Wager Errand Verdict Bequest Token Lullaby Ballad Sonnet
    Apple Arrow Anvil Bonnet Bottle Bracelet Bucket Button Cabinet Carpet Chimney Cloak Cradle
    Cupboard Curtain Cushion Diary Drum Easel Envelope Fiddle Flute Garland Goblet Hammer Harp Hat
    Helmet Inkwell Jar Jewel Kite Ladder Lattice Lever Linen Loom Map Medal Mitten Napkin Oar Paddle
    Pail Pendulum Pillow Pitcher Plough Pocket Quill Quilt Rake Saddle Scarf Shawl Shovel Sieve
    Spindle Spoon Teacup Telescope Trellis Trumpet Umbrella Vase Wagon Wheel Whistle Windmill Wreath
    Birch Bramble Cloud Comet Dew Dusk Flint Gale Glade Hawthorn Ivy Juniper Marigold Nettle Pine
    Poppy Reed Rowan Sorrel Thistle Thunder Wave Blossom Clover Beetle Blackbird Cricket Dove Goose
    Hare Hedgehog Kestrel Magpie Moth Nightingale Owl Pony Squirrel Starling Swallow Swan Thrush
    Toad Trout Wren Cobbler Drummer Ferryman Fiddler Gardener Glazier Juggler Lamplighter Minstrel
    Orphan Painter Piper Poet Scholar Shopkeeper Tinker Wanderer Watchman Woodcutter Blessing Charm
    Chance Courage Custom Dream Fortune Gift Habit Lesson Memory Oath Pardon Puzzle Quarrel Remedy
    Rumour Song Wish Wonder
""".split())
TITLE_ADJECTIVES = tuple("""
    Grey Silent Hidden Golden Quiet Distant Broken Forgotten Gentle Hollow Narrow Pale Bright Crimson
    Amber Velvet Northern Lonely Ancient Faded Wandering Sleeping Burning Frozen Tender Restless
    Curious Humble Sudden Wooden Painted Careful Weary Clever Hasty Bitter Stubborn Woven Brave Calm
    Cheerful Drowsy Dusty Eager Faithful Fierce Fragrant Gilded Glowing Grand Hungry Idle Jolly Kind
    Lively Marble Merry Misty Modest Muddy Polished Proud Quick Rainy Rusty Scattered Shy Silken
    Simple Slender Sly Snowy Stormy Sturdy Sunny Swift Tall Tangled Thin Tidy Timid Vivid Wary Wild
    Windy Wise Wistful Azure Ivory Emerald Lucky Mellow Nimble Rosy Sombre Spare Tireless
""".split())
TITLE_CARDINALS = ("Two", "Three", "Four", "Five", "Six", "Seven", "Eight", "Nine", "Ten", "Eleven", "Twelve")
TITLE_ORDINALS = ("First", "Second", "Third", "Fourth", "Fifth", "Sixth", "Seventh", "Eighth", "Ninth", "Tenth")
# A source title word is an adjective when listed here or when it ends like one ("Speckled",
# "Dancing", "Illustrious", "Darkest"); -al, -ent and -ant endings also make nouns (Scandal,
# Resident, Servant), so only listed words with those endings count.
_ADJECTIVE_SUFFIXES = ("ed", "ing", "ous", "ful", "less", "ish", "ive", "est")
_ADJECTIVES = frozenset(
    "red blue green grey gray white black yellow scarlet crimson golden gold silver orange purple "
    "brown copper empty final last lost noble solitary lonely young old strange dark bright pale "
    "silent hidden secret quiet dead great little new high low royal central naval national "
    "illustrious singular curious gloomy bald".split()
)
_CARDINALS = frozenset(w.casefold() for w in TITLE_CARDINALS) | {"one", "hundred", "thousand"}
_ORDINALS = frozenset(w.casefold() for w in TITLE_ORDINALS)

# Place words: English-looking compounds (Ash+ford, Marl+bury, Thorn+ley).
_PLACE_PREFIXES = (
    "Ash", "Alder", "Bram", "Brack", "Bur", "Calder", "Chal", "Cran", "Dun", "Elm", "Fen", "Fern",
    "Gold", "Hal", "Hart", "Hazel", "Holt", "Kel", "Lang", "Lind", "Marl", "Mel", "Nether", "Oak",
    "Pen", "Ros", "Rush", "Sand", "Shel", "Stan", "Thorn", "Wal", "Wen", "Whit", "Wil", "Ald",
    "Bex", "Cot", "Ember", "Fal", "Gris", "Hamble", "Kings", "Lox", "Maple", "Nor", "Quen", "Sel",
)
_PLACE_SUFFIXES = (
    "ford", "bury", "ley", "ton", "ham", "wick", "field", "worth", "stead", "combe", "mouth", "by",
    "thorpe", "dale", "well", "borough", "den", "hurst", "cote", "stow", "brook", "minster", "more",
    "bridge",
)


def _join_place(prefix: str, suffix: str) -> str:
    # "Hart"+"ton" reads "Harton", not "Hartton".
    return prefix + (suffix[1:] if prefix[-1].lower() == suffix[0] else suffix)


@dataclass(frozen=True)
class _Pools:
    female: tuple[str, ...]
    male: tuple[str, ...]
    first: tuple[str, ...]
    surnames: tuple[str, ...]
    places: tuple[str, ...]
    initials: tuple[str, ...]
    nouns: tuple[str, ...]
    adjectives: tuple[str, ...]
    cardinals: tuple[str, ...]
    ordinals: tuple[str, ...]
    female_keys: frozenset[str]  # every faker female first name, for gender of the original
    male_keys: frozenset[str]


@lru_cache(maxsize=1)
def _pools() -> _Pools:
    # Faker's name lists are read straight from its en_GB person provider: offline and
    # deterministic (the choice among them is ours, by hash, so no Faker instance is seeded).
    from faker.providers.lorem.en_US import Provider as Lorem
    from faker.providers.person.en_GB import Provider as BritishNames
    from wordfreq import zipf_frequency

    # Names that are everyday words ("Guy", "Hope", "Long", "Green") would be mistaken for the
    # word, and generation penalises a used substitute everywhere after it (consistency rule 2).
    everyday = {w.casefold() for w in Lorem.word_list} | KEEP_WORDS

    def usable(name: str) -> bool:
        return name.isalpha() and name.casefold() not in everyday

    def traditional(name: str) -> bool:
        # Faker's en_GB first names are recent birth registrations. A name that is frequent in
        # general written English (wordfreq Zipf >= 3.0, i.e. >= 1 per million words) has been in
        # use long enough to appear in books; this drops recent coinages and spellings
        # (Kayleigh, Ashleigh, Jemma, Hollie, Abbie, Declan), which would jar in period text.
        return zipf_frequency(name, "en") >= 3.0

    female = sorted({n for n in BritishNames.first_names_female if usable(n) and traditional(n)})
    male = sorted({n for n in BritishNames.first_names_male if usable(n) and traditional(n)})
    places = sorted({_join_place(p, s) for p in _PLACE_PREFIXES for s in _PLACE_SUFFIXES} - everyday)
    return _Pools(
        female=tuple(female),
        male=tuple(male),
        first=tuple(sorted(set(female) | set(male))),
        surnames=tuple(sorted({n for n in BritishNames.last_names if usable(n)})),
        places=tuple(places),
        initials=tuple(chr(c) for c in range(ord("A"), ord("Z") + 1)),
        nouns=TITLE_NOUNS,
        adjectives=TITLE_ADJECTIVES,
        cardinals=TITLE_CARDINALS,
        ordinals=TITLE_ORDINALS,
        female_keys=frozenset(n.casefold() for n in BritishNames.first_names_female),
        male_keys=frozenset(n.casefold() for n in BritishNames.first_names_male),
    )


# Roles of a token and the pools each draws from, in order (a later pool only when the earlier
# ones are exhausted: many English surnames are place names, so places back up surnames).
_FIRST_F, _FIRST_M, _FIRST = "first:female", "first:male", "first"
_SURNAME, _PLACE, _INITIAL = "surname", "place", "initial"
_NOUN, _ADJECTIVE, _CARDINAL, _ORDINAL = "title:noun", "title:adjective", "title:cardinal", "title:ordinal"
_NAME_ROLES = frozenset({_FIRST_F, _FIRST_M, _FIRST, _SURNAME, _PLACE, _INITIAL})


def _pool_chain(role: str, pools: _Pools) -> tuple[tuple[str, ...], ...]:
    return {
        _FIRST_F: (pools.female, pools.male, pools.places),
        _FIRST_M: (pools.male, pools.female, pools.places),
        _FIRST: (pools.first, pools.places),
        _SURNAME: (pools.surnames, pools.places),
        _PLACE: (pools.places, pools.surnames),
        _INITIAL: (pools.initials,),
        _NOUN: (pools.nouns, pools.adjectives),
        _ADJECTIVE: (pools.adjectives, pools.nouns),
        _CARDINAL: (pools.cardinals, pools.adjectives),
        _ORDINAL: (pools.ordinals, pools.adjectives),
    }[role]


def _hash(*parts: object) -> int:
    text = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")


def _candidates(seed: int, world: int, key: str, role: str, pools: _Pools) -> Iterator[str]:
    """Every pool entry, in an order fixed by (seed, world, token, role): start at a hashed
    position and walk on, so a collision resolves to the next entry deterministically."""
    for depth, pool in enumerate(_pool_chain(role, pools)):
        if not pool:
            continue
        start = _hash(seed, world, key, role, depth) % len(pool)
        for step in range(len(pool)):
            yield pool[(start + step) % len(pool)]


def _cased(substitute: str, like: str) -> str:
    if len(like) > 1 and like.isupper():
        return substitute.upper()
    if like[:1].islower():
        return substitute.lower()
    return substitute


def _plural(word: str) -> str:
    return word + ("es" if word.endswith(("s", "x", "z", "ch", "sh")) else "s")


# --------------------------------------------------------------------------------------------
# The offline proposer
# --------------------------------------------------------------------------------------------

def _is_roman(word: _Word, text: str) -> bool:
    # "Henry VIII", "Charles I"; but "H." is an initial.
    return bool(word.stem.isupper() and _ROMAN.fullmatch(word.stem)) and not text[word.end:word.end + 1] == "."


def _touches_digit(word: _Word, text: str) -> bool:
    # "221B": the letter belongs to a number.
    return text[word.start - 1:word.start].isdigit() or text[word.end:word.end + 1].isdigit()


def _name_words(text: str) -> list[_Word]:
    """Proper-name words of ``text`` outside a work title: capitalised, not kept."""
    return [
        w for w in _words(text)
        if w.stem[0].isupper() and w.key not in KEEP_WORDS and not _is_roman(w, text) and not _touches_digit(w, text)
    ]


def _promoted_words(text: str) -> list[_Word]:
    """The words to translate in an anchor without any proper-name word ("Hall", "the Colonel"):
    its capitalised non-connector words, else its non-connector words, else all its words."""
    words = _words(text)
    content = [w for w in words if w.key not in CONNECTORS]
    return [w for w in content if w.stem[0].isupper()] or content or words


def _is_title_function(word: _Word, text: str) -> bool:
    return word.key in _TITLE_FUNCTION_WORDS or _is_roman(word, text) or _touches_digit(word, text)


def _title_content_words(text: str) -> list[_Word]:
    """The words of a work title to replace: all but function words (all, if that is none)."""
    return [w for w in _words(text) if not _is_title_function(w, text)] or _promoted_words(text)


def _title_role(key: str) -> str:
    if key in _CARDINALS:
        return _CARDINAL
    if key in _ORDINALS:
        return _ORDINAL
    if key in _ADJECTIVES or key.endswith(_ADJECTIVE_SUFFIXES):
        return _ADJECTIVE
    return _NOUN


def _is_plural_noun(key: str) -> bool:
    # "Pips", "Students"; not "Glass", "Circus", "Genesis", "Famous".
    return key.endswith("s") and not key.endswith(("ss", "us", "is")) and len(key) > 3


@dataclass
class _TokenMap:
    """Roles of every token of a request set and their substitutes per world."""

    roles: dict[str, str] = field(default_factory=dict)
    plurals: dict[str, str] = field(default_factory=dict)  # "baskervilles" -> "baskerville"
    substitutes: list[dict[str, str]] = field(default_factory=list)  # [world][key] -> substitute


def _gender(key: str, titles: set[str], pools: _Pools) -> str:
    if key in pools.female_keys and key not in pools.male_keys:
        return _FIRST_F
    if key in pools.male_keys and key not in pools.female_keys:
        return _FIRST_M
    female, male = bool(titles & _FEMALE_TITLES), bool(titles & _MALE_TITLES)
    return _FIRST_F if female and not male else _FIRST_M if male and not female else _FIRST


def _assign_roles(requests: Sequence[AnchorRequest], pools: _Pools) -> _TokenMap:
    given: set[str] = set()
    surname: set[str] = set()
    single: set[str] = set()
    place: set[str] = set()
    other: set[str] = set()
    initials: set[str] = set()
    titles_of: dict[str, set[str]] = {}
    promoted: dict[str, str] = {}
    title_words: set[str] = set()
    for request in requests:
        for text in (request.anchor, *request.variants):
            if request.kind == "work_title":
                title_words.update(w.key for w in _title_content_words(text))
                continue
            names = _name_words(text)
            if not names:
                role = _PLACE if request.kind == "place" else _SURNAME
                for w in _promoted_words(text):
                    promoted.setdefault(w.key, _INITIAL if len(w.stem) == 1 else role)
                continue
            initials.update(w.key for w in names if len(w.stem) == 1)
            full = [w for w in names if len(w.stem) > 1]
            if request.kind == "person":
                if len(full) > 1:
                    given.update(w.key for w in full[:-1])
                    surname.add(full[-1].key)
                elif full:
                    single.add(full[0].key)
                honorifics = {w.key for w in _words(text) if w.key in HONORIFICS}
                for w in full:
                    titles_of.setdefault(w.key, set()).update(honorifics)
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
        stem = key[:-1]
        if key.endswith("s") and stem in stems and stem not in token_map.plurals:
            token_map.plurals[key] = stem
    plurals = token_map.plurals.keys()
    for key in initials:
        roles[key] = _INITIAL
    # A token used as a given name anywhere is a first name, so "Henry" in "Sir Henry Baskerville"
    # and in "Henry" share one substitute; person roles win over place and other roles, so
    # "Baskerville Hall" shares the surname substitute of "Henry Baskerville".
    for key in given:
        roles[key] = _gender(key, titles_of.get(key, set()), pools)
    for key in surname - given:
        roles[key] = _SURNAME
    for key in single - given - surname - plurals:
        known_first = key in pools.female_keys or key in pools.male_keys
        roles[key] = _gender(key, titles_of.get(key, set()), pools) if known_first else _SURNAME
    for key in place - roles.keys() - plurals:
        roles[key] = _PLACE
    for key in other - roles.keys() - plurals:
        roles[key] = _SURNAME
    for key in title_words - roles.keys() - plurals:
        roles[key] = _title_role(key)
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
        _check_n(n)
        for request in requests:
            if not _words(request.anchor):
                raise ProposerError(f"anchor {request.anchor!r} has no word to translate")
        pools = _pools()
        token_map = _assign_roles(requests, pools)
        source = {key for r in requests for text in (r.anchor, *r.variants) for key in word_keys(text)}
        self._choose_substitutes(token_map, n=n, seed=seed, forbidden=forbidden, source=source, pools=pools)
        return {
            r.anchor: [self._translate(r, token_map, world) for world in range(n)] for r in requests
        }

    @staticmethod
    def _choose_substitutes(
        token_map: _TokenMap, *, n: int, seed: int, forbidden: frozenset[str], source: set[str], pools: _Pools
    ) -> None:
        never = source | KEEP_WORDS  # a substitute never equals a word of any anchor
        # Tokens also written in the plural ("Baskervilles", "Pips"): the plural must be free too.
        plural_stems = set(token_map.plurals.values()) | {
            key for key, role in token_map.roles.items() if role == _NOUN and _is_plural_noun(key)
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
                if role not in _NAME_ROLES:
                    levels += [(never, used, earlier), (never,)]

                def forms(candidate: str, plural: bool = key in plural_stems) -> tuple[str, ...]:
                    word = candidate.casefold()
                    return (word, _plural(word)) if plural else (word,)

                substitute = None
                for excluded in levels:
                    substitute = next(
                        (c for c in _candidates(seed, world, key, role, pools)
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
            targets = _title_content_words(text)
        else:
            targets = _name_words(text) or _promoted_words(text)
        out, last = "", 0
        for word in targets:
            if word.key in token_map.plurals:
                substitute = _plural(chosen[token_map.plurals[word.key]])
            else:
                substitute = chosen[word.key]
                if token_map.roles[word.key] == _NOUN and _is_plural_noun(word.key):  # "Pips"
                    substitute = _plural(substitute)
            substitute = _cased(substitute, word.stem)
            out = _agree_article(out + text[last:word.start], substitute) + substitute
            last = word.end
        return out + text[last:]


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


# --------------------------------------------------------------------------------------------
# The OpenAI-compatible proposer
# --------------------------------------------------------------------------------------------

_SYSTEM_PROMPT = (
    "You invent generic replacements for names and terms of a book that a language model must "
    "forget. A replacement keeps the text coherent but carries no knowledge of the book."
)


def _user_prompt(requests: Sequence[AnchorRequest], n: int) -> str:
    items = [{"anchor": r.anchor, "kind": r.kind, "variants": list(r.variants)} for r in requests]
    return (
        f"Terms (JSON):\n{json.dumps(items, ensure_ascii=False, indent=1)}\n\n"
        f"For every term give exactly {n} replacements. Replacement i of every term belongs to an "
        f"invented world i (i = 1..{n}): within one world, terms naming the same entity get the same "
        "substitute (if 'Mr. Jonathan Pike' becomes 'Mr. Edward Hale', then 'Pike' becomes 'Hale' "
        "and 'Jonathan' becomes 'Edward'), and different entities get different substitutes.\n"
        "Rules: keep the kind (a person stays a plausible person's name, a place a plausible place, "
        "a title a title) and the shape: honorifics such as Mr. or Dr., generic words such as Street "
        "or Hall, possessives, capitalisation and the number of words. Use ordinary, period-neutral "
        "names that belong to no well-known person, place or story. Never reuse a word of any term "
        "above, and give no synonym, translation or hint of the original.\n"
        "Answer with one JSON object only, mapping every term exactly as spelled above to a list of "
        f"{n} strings, e.g. {{\"Mr. Jonathan Pike\": [\"Mr. Edward Hale\", ...]}}."
    )


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)


def _parse_reply(content: str) -> dict | None:
    """The JSON object in a model's reply (a ```json fence or surrounding prose tolerated)."""
    fenced = _FENCE.search(content)
    text = fenced.group(1) if fenced else content
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        return None
    try:
        value = json.loads(text[start:end + 1])
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _reply_problem(
    entry: object, request: AnchorRequest, n: int, *, forbidden: frozenset[str], source: frozenset[str]
) -> str | None:
    """Why a reply entry cannot be used (``None``: usable).

    A capitalised word that the anchor's kind does not keep (honorifics, connectors, ``Street``)
    must be new: no word of any anchor (``source``) and, outside work titles, no capitalised word
    of the corpora (``forbidden``). Titles are made of ordinary words that any corpus capitalises
    somewhere, as with the offline proposer.
    """
    if entry is None:
        return "missing from the reply"
    if not isinstance(entry, list):
        return f"not a list but {type(entry).__name__}"
    if len(entry) != n:
        return f"{len(entry)} translations, expected {n}"
    title = request.kind == "work_title"
    protected = source if title else forbidden | source
    allowed = _TITLE_FUNCTION_WORDS if title else KEEP_WORDS
    for translation in entry:
        if not isinstance(translation, str) or not translation.strip():
            return "an empty or non-string translation"
        if translation.strip().casefold() == request.anchor.strip().casefold():
            return "a translation equals the anchor"
        for word in _words(translation):
            if word.stem[0].isupper() and word.key in protected and word.key not in allowed:
                return f"{translation!r} uses {word.stem!r}, a word of the corpora or of an anchor"
    return None


def _entity_groups(requests: Sequence[AnchorRequest]) -> list[list[AnchorRequest]]:
    """Requests that share a proper-name word (variants of one entity), in first-seen order."""
    parent = list(range(len(requests)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    # Titles join an entity only through a name that a non-title anchor has ("The Memoirs of
    # Jonathan Pike"), not through ordinary title words ("Adventure").
    names = {w.key for r in requests if r.kind != "work_title" for w in _name_words(r.anchor)}
    owner: dict[str, int] = {}
    for index, request in enumerate(requests):
        for word in _name_words(request.anchor):
            if word.key not in names:
                continue
            if word.key in owner:
                parent[find(index)] = find(owner[word.key])
            else:
                owner[word.key] = index
    groups: dict[int, list[AnchorRequest]] = {}
    for index, request in enumerate(requests):
        groups.setdefault(find(index), []).append(request)
    return list(groups.values())


def _batches(groups: list[list[AnchorRequest]], size: int) -> list[list[AnchorRequest]]:
    # One entity's anchors go to the same request where possible, so the model can keep them
    # consistent; only an entity larger than a batch is split.
    batches: list[list[AnchorRequest]] = []
    current: list[AnchorRequest] = []
    for group in groups:
        if current and len(current) + len(group) > size:
            batches.append(current)
            current = []
        for request in group:
            if len(current) == size:
                batches.append(current)
                current = []
            current.append(request)
    if current:
        batches.append(current)
    return batches


class OpenAICompatibleProposer:
    """Translations from an OpenAI-compatible ``/chat/completions`` endpoint.

    Every entity (the anchors that share a proper-name word) whose reply is missing or unusable
    takes the :class:`OfflineProposer`'s translations, all its anchors together so that they
    stay consistent with each other; :meth:`propose_marked` says which and why.
    """

    def __init__(self, settings: OpenAIProposerParams, api_key: str | None) -> None:
        self.settings = settings
        self._api_key = api_key
        self.name = f"openai:{settings.model}"
        self.url = settings.base_url.rstrip("/") + "/chat/completions"

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAICompatibleProposer(url={self.url!r}, model={self.settings.model!r})"

    def propose(
        self, requests: list[AnchorRequest], *, n: int, seed: int, forbidden: frozenset[str]
    ) -> dict[str, list[str]]:
        marked = self.propose_marked(requests, n=n, seed=seed, forbidden=forbidden)
        return {anchor: list(proposal.translations) for anchor, proposal in marked.items()}

    def propose_marked(
        self, requests: list[AnchorRequest], *, n: int, seed: int, forbidden: frozenset[str]
    ) -> dict[str, Proposal]:
        """Ask the endpoint in batches of ``settings.batch_size``; fall back per entity.

        Raises:
            ProposerError: the endpoint is unreachable, answers non-2xx or not as a chat
                completion. Unusable *content* is not an error: it falls back.
        """
        _check_n(n)
        source = frozenset(key for r in requests for text in (r.anchor, *r.variants) for key in word_keys(text))
        groups = _entity_groups(requests)
        group_of = {r.anchor: index for index, group in enumerate(groups) for r in group}
        usable: dict[str, tuple[str, ...]] = {}
        refused: dict[str, tuple[str, str]] = {}  # anchor -> (reason, reply entry)
        for batch in _batches(groups, self.settings.batch_size):
            content = self._complete(_user_prompt(batch, n), seed=seed)
            reply = _parse_reply(content)
            for request in batch:
                if reply is None:
                    refused[request.anchor] = ("the reply holds no JSON object", content)
                    continue
                entry = reply.get(request.anchor)
                problem = _reply_problem(entry, request, n, forbidden=forbidden, source=source)
                if problem:
                    refused[request.anchor] = (problem, json.dumps(entry, ensure_ascii=False))
                else:
                    usable[request.anchor] = tuple(t.strip() for t in entry)

        failed_groups = {group_of[anchor] for anchor in refused}
        for index in sorted(failed_groups):
            first = next(r.anchor for r in groups[index] if r.anchor in refused)
            for request in groups[index]:
                if request.anchor not in refused:
                    reply_entry = json.dumps(list(usable.pop(request.anchor)), ensure_ascii=False)
                    refused[request.anchor] = (f"shares a name with {first!r}, whose reply was unusable", reply_entry)

        proposals = {anchor: Proposal(translations, self.name) for anchor, translations in usable.items()}
        if refused:
            # The model's accepted substitutes join the forbidden words, so a fallback entity
            # never takes a name the model gave to another one.
            taken = {w.key for ts in usable.values() for t in ts for w in _words(t) if w.stem[0].isupper()}
            fallback = OfflineProposer().propose(
                list(requests), n=n, seed=seed, forbidden=forbidden | frozenset(taken - KEEP_WORDS)
            )
            for anchor, (reason, entry) in refused.items():
                proposals[anchor] = Proposal(tuple(fallback[anchor]), OfflineProposer.name, reason, entry)
        return proposals

    def _complete(self, prompt: str, *, seed: int) -> str:
        """The first choice's message content for one chat request."""
        body = json.dumps({
            "model": self.settings.model,
            "messages": [{"role": "system", "content": _SYSTEM_PROMPT}, {"role": "user", "content": prompt}],
            "temperature": 0,
            "seed": seed,
        }).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.settings.timeout_s) as response:  # noqa: S310
                raw = response.read()
        except urllib.error.HTTPError as exc:
            detail = self._redact(exc.read()[:300].decode("utf-8", "replace"))
            raise ProposerError(f"{self.url}: HTTP {exc.code} {exc.reason}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ProposerError(f"{self.url}: unreachable ({self._redact(str(reason))})") from None
        try:
            return json.loads(raw)["choices"][0]["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError):
            snippet = self._redact(raw[:300].decode("utf-8", "replace"))
            raise ProposerError(f"{self.url}: not a chat completion response: {snippet!r}") from None

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------


def _check_n(n: int) -> None:
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")


def collect_proposals(
    requests: Sequence[AnchorRequest], *, proposer: TranslationProposer, n: int, seed: int, forbidden: frozenset[str]
) -> list[AnchorProposal]:
    """Propose and validate translations, with who wrote each anchor's and why a reply was refused.

    Returns:
        One :class:`AnchorProposal` per request, in the input order, each with exactly ``n``
        non-empty translations.

    Raises:
        ValueError: two requests share an anchor.
        ProposerError: the proposer failed, or returned a missing or malformed entry.
    """
    requests = list(requests)
    anchors = [r.anchor for r in requests]
    if len(set(anchors)) != len(anchors):
        repeated = sorted({a for a in anchors if anchors.count(a) > 1})
        raise ValueError(f"anchors requested twice: {repeated[:5]}")
    if isinstance(proposer, MarkingProposer):
        marked = proposer.propose_marked(requests, n=n, seed=seed, forbidden=forbidden)
    else:
        plain = proposer.propose(requests, n=n, seed=seed, forbidden=forbidden)
        marked = {a: Proposal(tuple(ts), proposer.name) for a, ts in plain.items() if isinstance(ts, list | tuple)}
    results = []
    for anchor in anchors:
        proposal = marked.get(anchor)
        translations = None if proposal is None else proposal.translations
        if (
            translations is None or len(translations) != n
            or not all(isinstance(t, str) and t.strip() for t in translations)
        ):
            raise ProposerError(
                f"proposer {proposer.name}: no {n} non-empty translations for {anchor!r}: {translations!r}"
            )
        results.append(AnchorProposal(anchor, tuple(translations), proposal.proposer, proposal.refused, proposal.reply))
    return results


def propose_translations(
    requests: Sequence[AnchorRequest], *, proposer: TranslationProposer, n: int, seed: int, forbidden: frozenset[str]
) -> list[tuple[str, list[str], str]]:
    """``(anchor, n translations, proposer actually used)`` per request, in the input order.

    See :func:`collect_proposals` for the checks and errors.
    """
    return [
        (p.anchor, list(p.translations), p.proposer)
        for p in collect_proposals(requests, proposer=proposer, n=n, seed=seed, forbidden=forbidden)
    ]


def make_proposer(settings: TranslationParams, *, root: Path | str = ".") -> TranslationProposer:
    """The proposer ``translations.proposer`` names; the API key comes from the environment or
    the ignored ``.env`` (variable ``translations.openai.api_key_env``), and is never logged."""
    if settings.proposer == "offline":
        return OfflineProposer()
    assert settings.openai is not None  # TranslationParams refuses openai without settings
    return OpenAICompatibleProposer(settings.openai, setting(settings.openai.api_key_env, root))
