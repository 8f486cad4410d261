"""Usernames: when two names are one account, which look alike, and what a new name may hold.

One normalization, used alike by registration, sign-in, the per-username rate limit and the
unique index on ``users.username_key`` (filled for older rows by migration 0003): Unicode
NFKC, then case folding, then trimmed. So "ΟΔΥΣΣΕΑΣ" and "οδυσσεας", "alice" and "alice" in
fullwidth letters, "Straße" and "STRASSE", or "alice" and "alice " are one account, and a name
signs in with exactly what was registered, whatever the database's own idea of lower case.

Names that are different accounts but look alike ("carol", and "carol" with U+0430 CYRILLIC
SMALL LETTER A for its a) share a skeleton (Unicode Technical Standard #39), kept unique by
``users.username_skeleton`` (filled for older rows by migration 0008): a new name whose
skeleton is taken is refused as taken. The skeleton is that of the key, so every spelling of
one account has the same one.
"""

from __future__ import annotations

import unicodedata
from functools import cache

import regex
from confusable_homoglyphs.confusables import confusables_data

# Refused anywhere in a new username (a 422): control characters (Cc: newline, tab, DEL, ...),
# invisible formatting characters (Cf: zero-width space and joiner, word joiner, byte order
# mark, soft hyphen, bidirectional overrides, ...) and the line and paragraph separators (Zl,
# Zp). They make names that look the same but are not, or that break a line in a listing.
REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})

# Also refused: every default-ignorable code point (Unicode's Default_Ignorable_Code_Point,
# which Python's unicodedata does not expose; the regex module's table of it): a renderer
# shows nothing for them, e.g. U+034F COMBINING GRAPHEME JOINER, the variation selectors
# U+FE00 to U+FE0F and U+E0100 to U+E01EF, U+17B4 KHMER VOWEL INHERENT AQ, the Hangul fillers.
_DEFAULT_IGNORABLE = regex.compile(r"\p{Default_Ignorable_Code_Point}")
# And characters that are visible by their properties but render blank: U+2800 BRAILLE
# PATTERN BLANK (a symbol, not ignorable) and the Hangul fillers (letters; ignorable too, but
# refused whatever a table says).
BLANK_RENDERING = frozenset("\u115f\u1160\u2800\u3164\uffa0")

# The code points up to U+FFFF that the two rules above add to the categories, as ranges for
# the OpenAPI pattern (api/fields.py); tests/unit/test_rules.py holds them to the rules.
IGNORABLE_OR_BLANK_RANGES = (
    (0x034F, 0x034F), (0x115F, 0x1160), (0x17B4, 0x17B5), (0x180B, 0x180D), (0x180F, 0x180F),
    (0x2065, 0x2065), (0x2800, 0x2800), (0x3164, 0x3164), (0xFE00, 0xFE0F), (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
)  # fmt: skip

# Longest key (and skeleton) the unique indexes take. NFKC can spell one character as up to
# 18 (U+FDFA), and so can a skeleton, so a 150-character name can have a far longer key; a
# btree entry holds about 2,700 bytes.
MAX_KEY_LENGTH = 600

# Bidirectional marks around right-to-left entries in the package's table (it was read from
# the comments of Unicode's confusables.txt); not part of any character's look.
_MARKS = str.maketrans("", "", "\u200e\u200f")


def username_key(name: str) -> str:
    """The name's account key: NFKC, case folded, trimmed."""
    folded = unicodedata.normalize("NFKC", name).casefold()
    # Case folding can undo NFKC (a folded character may compose again); normalising once
    # more makes the key a fixed point: username_key(username_key(x)) == username_key(x).
    return unicodedata.normalize("NFKC", folded).strip()


def username_skeleton(name: str) -> str:
    """What the name looks like: the UTS #39 skeleton of its key, case folded again.

    Names with one skeleton are confusable (``carol`` and the same with U+0430 for its a;
    ``paypa1`` and ``paypal``). Folding after the skeleton also joins prototypes that differ in
    case only (``0`` looks like ``O``, so ``0live`` and ``olive`` are one): it errs toward
    refusing.
    """
    prototypes = _prototypes()
    decomposed = unicodedata.normalize("NFD", username_key(name))
    skeleton = unicodedata.normalize("NFD", "".join(prototypes.get(c, c) for c in decomposed))
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", skeleton).casefold())


@cache
def _prototypes() -> dict[str, str]:
    """Each confusable character's prototype (UTS #39), from confusable-homoglyphs' table.

    The table lists each line of Unicode's confusables.txt both ways (source to prototype,
    prototype to source), so the direction is read from its shape: a source maps to exactly
    one prototype, which is never a source itself; a prototype of several characters, or
    several sources, or holding a character of a longer prototype, is the prototype. Where a
    pair is its own class, either may stand for both, but not one that NFD takes apart (the
    skeleton is taken in NFD, so it would never be seen). Checked against confusables.txt
    itself: the same classes for every code point (tests/unit/test_rules.py holds examples).
    """
    partners: dict[str, set[str]] = {}
    for key, entries in confusables_data.items():
        found = partners.setdefault(key.translate(_MARKS), set())
        found.update(entry["c"].translate(_MARKS) for entry in entries)
    in_sequences = {character for key in partners if len(key) > 1 for character in key}
    prototypes = {}
    for key, found in partners.items():
        if len(key) != 1 or len(found) != 1 or key in in_sequences:
            continue  # a prototype
        (partner,) = found
        if (
            len(partner) > 1
            or len(partners[partner]) > 1
            or partner in in_sequences
            or not unicodedata.is_normalized("NFD", partner)
            or (unicodedata.is_normalized("NFD", key) and partner < key)
        ):
            prototypes[key] = partner
    return prototypes


def display_username(name: str) -> str:
    """The name as shown: as registered, without leading or trailing white space."""
    return name.strip()


def invisible(character: str) -> bool:
    """Whether a name must not hold ``character``: it is shown as nothing, or as blank."""
    return (
        unicodedata.category(character) in REFUSED_CATEGORIES
        or character in BLANK_RENDERING
        or _DEFAULT_IGNORABLE.match(character) is not None
    )


def refusal(name: str) -> str | None:
    """Why ``name`` cannot be registered, or None if it can (blank and length aside)."""
    for character in name:
        if invisible(character):
            return (
                f"Must not contain control or invisible characters (found U+{ord(character):04X})."
            )
    if len(username_key(name)) > MAX_KEY_LENGTH or len(username_skeleton(name)) > MAX_KEY_LENGTH:
        return f"Too long once normalized (more than {MAX_KEY_LENGTH} characters)."
    return None
