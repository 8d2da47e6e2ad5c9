"""Substitute pools for the offline proposer, and the order in which a token walks them.

First names (female and male, traditional ones only), surnames, invented English-looking place
names, initials, and generic nouns and adjectives for the content words of work titles. Faker's
name lists are read straight from its English person providers (offline, deterministic); the choice
among them is a hash of ``(seed, world, token, role)`` (:func:`substitute_candidates`), never a
shared random stream.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

from pipeline.core.lexicon import KEEP_WORDS


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
class Pools:
    """Every substitute pool (sorted tuples) and the casefolded faker first names by gender."""

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
    female_keys: frozenset[str]  # every faker English female first name, for gender of the original
    male_keys: frozenset[str]


@lru_cache(maxsize=1)
def name_pools() -> Pools:
    # Faker's name lists are read straight from its person providers: offline and deterministic
    # (the choice among them is ours, by hash, so no Faker instance is seeded).
    from faker.providers.lorem.en_US import Provider as Lorem
    from wordfreq import zipf_frequency

    # Names that are everyday words ("Guy", "Hope", "Long", "Green") would be mistaken for the
    # word, and generation penalises a used substitute everywhere after it (consistency rule 2).
    everyday = {w.casefold() for w in Lorem.word_list} | KEEP_WORDS

    def usable(name: str) -> bool:
        return name.isalpha() and name.casefold() not in everyday

    def traditional(name: str) -> bool:
        # Faker's first names are recent birth registrations. A name that is frequent in
        # general written English (wordfreq Zipf >= 3.0, i.e. >= 1 per million words) has been in
        # use long enough to appear in books; this drops recent coinages and spellings
        # (Kayleigh, Ashleigh, Jemma, Hollie, Abbie, Declan), which would jar in period text.
        return zipf_frequency(name, "en") >= 3.0

    # First names of every English locale faker has: a long novel needs a hundred or more
    # first names of one gender in each world (en_GB alone has too few once the corpora's own
    # names are forbidden, and a pool that runs dry falls back to the other gender).
    female_names = {n for names in _english_names("first_names_female") for n in names}
    male_names = {n for names in _english_names("first_names_male") for n in names}
    # A name both lists give (Jordan, Leslie) tells no gender: neither pool takes it.
    female = sorted(n for n in female_names - male_names if usable(n) and traditional(n))
    male = sorted(n for n in male_names - female_names if usable(n) and traditional(n))
    places = sorted({_join_place(p, s) for p in _PLACE_PREFIXES for s in _PLACE_SUFFIXES} - everyday)
    return Pools(
        female=tuple(female),
        male=tuple(male),
        first=tuple(sorted(set(female) | set(male))),
        surnames=tuple(sorted({n for names in _english_names("last_names", _SURNAME_LOCALES) for n in names if usable(n)})),
        places=tuple(places),
        initials=tuple(chr(c) for c in range(ord("A"), ord("Z") + 1)),
        nouns=TITLE_NOUNS,
        adjectives=TITLE_ADJECTIVES,
        cardinals=TITLE_CARDINALS,
        ordinals=TITLE_ORDINALS,
        female_keys=frozenset(n.casefold() for names in _english_names("first_names_female") for n in names),
        male_keys=frozenset(n.casefold() for names in _english_names("first_names_male") for n in names),
    )


# Faker's English locales: their names fill the pools (a long novel needs hundreds of surnames
# and a hundred or more first names of one gender in each world, once the corpora's own names
# are forbidden) and tell whether a word of the corpus is a first name, and of which gender.
_NAME_LOCALES = ("en_GB", "en_US", "en_IE", "en_NZ")
# Surnames from the British-like lists only (en_US's are a third Spanish, en_IE's mostly Irish):
# a surname substitute should not tell more about a character than the original did.
_SURNAME_LOCALES = ("en_GB", "en_NZ")


def _english_names(attribute: str, locales: tuple[str, ...] = _NAME_LOCALES) -> list[tuple[str, ...]]:
    import importlib

    return [
        tuple(getattr(importlib.import_module(f"faker.providers.person.{locale}").Provider, attribute, ()))
        for locale in locales
    ]


# Roles of a token and the pools each draws from, in order (a later pool only when the earlier
# ones are exhausted: many English surnames are place names, so places back up surnames).
FIRST_FEMALE, FIRST_MALE, FIRST = "first:female", "first:male", "first"
SURNAME, PLACE, INITIAL = "surname", "place", "initial"
TITLE_NOUN, TITLE_ADJECTIVE, TITLE_CARDINAL, TITLE_ORDINAL = "title:noun", "title:adjective", "title:cardinal", "title:ordinal"
NAME_ROLES = frozenset({FIRST_FEMALE, FIRST_MALE, FIRST, SURNAME, PLACE, INITIAL})


def pool_chain(role: str, pools: Pools) -> tuple[tuple[str, ...], ...]:
    """The pools a token of ``role`` draws from, first choice first."""
    return {
        FIRST_FEMALE: (pools.female, pools.male, pools.places),
        FIRST_MALE: (pools.male, pools.female, pools.places),
        FIRST: (pools.first, pools.places),
        SURNAME: (pools.surnames, pools.places),
        PLACE: (pools.places, pools.surnames),
        INITIAL: (pools.initials,),
        TITLE_NOUN: (pools.nouns, pools.adjectives),
        TITLE_ADJECTIVE: (pools.adjectives, pools.nouns),
        TITLE_CARDINAL: (pools.cardinals, pools.adjectives),
        TITLE_ORDINAL: (pools.ordinals, pools.adjectives),
    }[role]


def title_role(key: str) -> str:
    """The role of a (casefolded) content word of a work title: cardinal, ordinal, adjective, noun."""
    if key in _CARDINALS:
        return TITLE_CARDINAL
    if key in _ORDINALS:
        return TITLE_ORDINAL
    if key in _ADJECTIVES or key.endswith(_ADJECTIVE_SUFFIXES):
        return TITLE_ADJECTIVE
    return TITLE_NOUN


def stable_hash(*parts: object) -> int:
    """A 64-bit hash of ``parts`` that is the same in every process (unlike ``hash``)."""
    text = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")


def substitute_candidates(seed: int, world: int, key: str, role: str, pools: Pools) -> Iterator[str]:
    """Every pool entry, in an order fixed by (seed, world, token, role): start at a hashed
    position and walk on, so a collision resolves to the next entry deterministically."""
    for depth, pool in enumerate(pool_chain(role, pools)):
        if not pool:
            continue
        start = stable_hash(seed, world, key, role, depth) % len(pool)
        for step in range(len(pool)):
            yield pool[(start + step) % len(pool)]
