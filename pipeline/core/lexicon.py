"""The one lexicon of the anchor stages: words that shape names but are never names themselves.

Anchor mining (:mod:`pipeline.core.anchor_mining`, :mod:`pipeline.core.anchor_selection`) and
translation (:mod:`pipeline.core.translation`, :mod:`pipeline.core.offline_proposer`) read the
same lists, so a word that mining treats as a title is the word translation keeps.

Sets of words are casefolded and without a dot (``"mr"``, ``"street"``); :data:`TITLES` holds
the surface forms mining compares with (``"Mr."``, ``"Mr"``, ``"Inspector"``). Nothing here
knows about any particular book: the lists are ordinary English (and a few continental
honorifics common in English fiction).
"""

from __future__ import annotations

import re

# --- honorifics -------------------------------------------------------------------------------

# Honorifics that tell the gender of the name they stand before ("Miss Vane" is a woman).
FEMALE_HONORIFICS = frozenset(
    "mrs miss ms lady madame mme mademoiselle mlle frau fraulein signora senora countess baroness "
    "duchess queen princess aunt dame sister mother mistress empress marchioness missus".split()
)
MALE_HONORIFICS = frozenset(
    "mr sir lord monsieur herr signor senor count baron duke king prince uncle father brother "
    "master mister earl viscount marquis marquess emperor".split()
)
# Ranks, offices and professions used as a title before a name ("Inspector Brackwell").
RANK_HONORIFICS = frozenset(
    "dr doctor colonel col captain capt inspector professor prof sergeant sgt major general gen "
    "lieutenant lieut lt admiral commander reverend rev constable superintendent judge justice "
    "senator governor president nurse chief bishop cardinal corporal private minister secretary "
    "chancellor ambassador consul mayor alderman sheriff magistrate coroner councillor premier".split()
)
HONORIFICS = FEMALE_HONORIFICS | MALE_HONORIFICS | RANK_HONORIFICS
# Forms of address behave like titles in a name's surface ("His Majesty", "Your Excellency").
FORMS_OF_ADDRESS = frozenset("majesty excellency highness lordship ladyship grace honour worship".split())
# Honorifics written abbreviated with a dot ("Mr. Holmes", "M. Dupont"); "M" is kept apart from
# HONORIFICS because a lone capital is an initial everywhere else.
DOTTED_HONORIFICS = frozenset("mr mrs ms dr col capt prof sgt lieut lt gen rev mme mlle".split())
MONSIEUR_ABBREVIATION = "M."
# Titles that stand before a first name, not a surname ("Sir Henry", "Aunt Polly", "Dame Edith").
FIRST_NAME_HONORIFICS = frozenset("sir dame aunt uncle".split())
# Surface forms of titles: part of a name's surface ("Mr. Holmes"), never an anchor alone.
TITLES = (
    frozenset(w.capitalize() for w in HONORIFICS | FORMS_OF_ADDRESS)
    | frozenset(w.capitalize() + "." for w in DOTTED_HONORIFICS)
    | {MONSIEUR_ABBREVIATION}
)
# Abbreviations whose dot ends no sentence ("Mr. Holmes", "Neville St. Clair", "Mt. Vernon").
ABBREVIATIONS = frozenset(w.capitalize() for w in DOTTED_HONORIFICS) | {MONSIEUR_ABBREVIATION[:-1]} | frozenset(
    "St Mt Ft Hon Jr Sr Messrs".split()
)
# Words of a name that a translation keeps although they are no honorific ("Neville St. Clair").
SAINT_WORDS = frozenset({"saint", "st"})

# --- connectors and function words ------------------------------------------------------------

# Lower-case words allowed inside a capitalised name ("Hound of the Baskervilles", "von Bork").
NAME_CONNECTORS = frozenset("of the de von van du la le del da di".split())
# Every lower-case word a translation keeps inside a name: the connectors, articles and
# prepositions ("Lord of the Isles and the Sea").
CONNECTORS = NAME_CONNECTORS | frozenset(
    "les and in a an at on for to della der den des y by with from upon".split()
)
# Small words a Title-Case heading writes in lower case ("A Study in Scarlet").
HEADING_SMALL_WORDS = NAME_CONNECTORS | frozenset("a an in on at to for with and or by".split())
# Words of a work title that are no content ("The Man with the Twisted Lip" keeps "The", "with").
TITLE_FUNCTION_WORDS = CONNECTORS | HONORIFICS | SAINT_WORDS | frozenset(
    "or but nor as into over under without within between through after before about against "
    "his her its their my our your this that these those who what which where when how why "
    "is was be not no".split()
)

# --- generic words of place and organisation names --------------------------------------------

# The generic part of a place name, kept by a translation ("Baker Street" -> "<X> Street").
PLACE_WORDS = frozenset(
    # Natural features name places too ("Reichenbach Fall", "Grimpen Mire", "Black Tor").
    "fall mire tor pool pond glen gorge cliff cliffs rock rocks beach sands coast creek loch lough "
    "bog peak ridge pass "
    "street road lane square place terrace gardens garden hall house lodge manor abbey grange court "
    "park hill hills bridge station hotel inn moor moors yard club hospital college school university "
    "church chapel cathedral cottage cottages farm tower towers castle river valley avenue crescent "
    "row walk way gate green common heath wood woods forest lake bay island isle port harbour dock "
    "docks wharf pier market mill mills well wells cross end field fields mews close circus quay "
    "embankment palace museum gallery theatre library office bank prison gaol asylum workhouse "
    "barracks mansions buildings villa villas rectory vicarage priory academy county shire town city "
    "village downs marsh fen head point cape mount mountain falls springs lock canal railway line "
    "junction restaurant tavern arms chambers".split()
)
# The generic part of an organisation's name ("Red-Headed League", "Diogenes Club").
ORGANISATION_WORDS = frozenset(
    "company society association agency institute league union guild brotherhood order party "
    "corporation limited ltd co".split()
)
# Qualifiers that begin many place names ("North Walsham", "Upper Swandam Lane").
PLACE_QUALIFIERS = frozenset("north south east west upper lower great little new old high central royal".split())
GENERIC_NAME_WORDS = PLACE_WORDS | ORGANISATION_WORDS | PLACE_QUALIFIERS
# Every word a translation keeps verbatim: titles, saints, connectors, generic name words
# ("Mr. Jonathan Pike of Baker Street" keeps "Mr.", "of", "Street").
KEEP_WORDS = HONORIFICS | SAINT_WORDS | CONNECTORS | GENERIC_NAME_WORDS

# --- words that are capitalised but name no character, place or work -------------------------

WEEKDAYS = frozenset("monday tuesday wednesday thursday friday saturday sunday".split())
MONTHS = frozenset(
    "january february march april may june july august september october november december".split()
)
# Feasts and seasons of the calendar ("Michaelmas", "Whitsun").
FEASTS = frozenset("christmas easter michaelmas whitsun whitsuntide lent candlemas lammas martinmas advent".split())
# Words of religion capitalised in any text ("Good Heavens", "Providence", "the Almighty").
RELIGIOUS_WORDS = frozenset(
    "god gods lord heaven heavens christ jesus providence almighty bible scripture scriptures saviour "
    "savior amen devil satan gospel gospels testament sabbath messiah creator paradise hell deity "
    "allah jove".split()
)
# Letters after a number that make an ordinal, a sum of money or a measure ("4th", "23d",
# "10s", "6d", "3l"); a number with any other letter is a name ("221b", "Lodge 126B").
NUMBER_SUFFIXES = frozenset("st nd rd th d s l p am pm lb lbs oz ft yd yds in mm cm km m h hr hrs min".split())

# --- roman numerals and possessives -----------------------------------------------------------

# A well-formed roman numeral ("IV", "XLII", "MCMXC"); the empty string is excluded by callers.
ROMAN_NUMERAL = re.compile(r"M{0,3}(?:CM|CD|D?C{0,3})(?:XC|XL|L?X{0,3})(?:IX|IV|V?I{0,3})")
# Possessive endings, longest first ("Holmes's", "Holmes’s", "Holmes'").
POSSESSIVE_SUFFIXES = ("'s", "’s", "'", "’")


def is_roman_numeral(word: str) -> bool:
    """``"IV"``, ``"XII."``: an upper-case well-formed roman numeral, with an optional dot."""
    word = word[:-1] if word.endswith(".") else word
    return bool(word) and word.isupper() and ROMAN_NUMERAL.fullmatch(word) is not None



def is_roman_like(word: str) -> bool:
    """A roman numeral as mining keys write it: upper case (``"XIV"``), or folded from an
    UPPER-CASE line (``"Iii"``, ``"Xiv"``; only I, V, X then, so that "Mil" or "Di" stay names)."""
    if is_roman_numeral(word):
        return True
    return len(word) > 1 and set(word.upper()) <= set("IVX") and is_roman_numeral(word.upper())


def is_place_word(word: str) -> bool:
    """``"Street"``, ``"HALL"``: the generic part of a place name, in any case."""
    return word.casefold() in PLACE_WORDS
