"""Usernames: when two names are one account, and which characters a new name may not hold.

One normalization, used alike by registration, sign-in, the per-username rate limit and the
unique index on ``users.username_key`` (filled for older rows by migration 0003): Unicode
NFKC, then case folding, then trimmed. So "ΟΔΥΣΣΕΑΣ" and "οδυσσεας", "alice" and "alice" in
fullwidth letters, "Straße" and "STRASSE", or "alice" and "alice " are one account, and a name
signs in with exactly what was registered, whatever the database's own idea of lower case.
"""

from __future__ import annotations

import unicodedata

# Refused anywhere in a new username (a 422): control characters (Cc: newline, tab, DEL, ...),
# invisible formatting characters (Cf: zero-width space and joiner, word joiner, byte order
# mark, soft hyphen, bidirectional overrides, ...) and the line and paragraph separators (Zl,
# Zp). They make names that look the same but are not, or that break a line in a listing.
REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})

# Longest key the unique index takes. NFKC can spell one character as up to 18 (U+FDFA), so
# a 150-character name can have a far longer key; a btree entry holds about 2,700 bytes.
MAX_KEY_LENGTH = 600


def username_key(name: str) -> str:
    """The name's account key: NFKC, case folded, trimmed."""
    folded = unicodedata.normalize("NFKC", name).casefold()
    # Case folding can undo NFKC (a folded character may compose again); normalising once
    # more makes the key a fixed point: username_key(username_key(x)) == username_key(x).
    return unicodedata.normalize("NFKC", folded).strip()


def display_username(name: str) -> str:
    """The name as shown: as registered, without leading or trailing white space."""
    return name.strip()


def refusal(name: str) -> str | None:
    """Why ``name`` cannot be registered, or None if it can (blank and length aside)."""
    for character in name:
        if unicodedata.category(character) in REFUSED_CATEGORIES:
            return (
                f"Must not contain control or invisible characters (found U+{ord(character):04X})."
            )
    if len(username_key(name)) > MAX_KEY_LENGTH:
        return f"Too long once normalized (more than {MAX_KEY_LENGTH} characters)."
    return None
