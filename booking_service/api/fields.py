"""Schema fields with the text rules PostgreSQL and the username rules need, each documented
as an OpenAPI pattern so clients (and fuzzers) know them."""

from __future__ import annotations

import re
from typing import Any

import marshmallow as ma

from booking_service import usernames
from booking_service.services import MAX_ID

# The text rules as OpenAPI patterns, so that clients (and fuzzers) know them. ``\s`` means
# different characters in Python's re and in ECMA-262, the dialect of OpenAPI patterns; the
# characters only one of them counts as space are listed, so both read the same class.
_SPACE = r"\s\x1c-\x1f\x85\ufeff"

# Invisible formatting characters (Unicode category Cf, Unicode 14 as in Python 3.11) up to
# U+FFFF, as ranges: neither Python's re nor every ECMA-262 engine knows ``\p{Cf}``. Those
# beyond (U+110BD, U+E0001, the tag characters, ...) cannot be listed so that every reader of
# the document takes them alike: outside the BMP, ECMA-262 needs the u flag or surrogate
# pairs, and schemathesis rewrites such a class with \U escapes, which ECMA-262 lacks.
# tests/unit/test_rules.py holds the list to unicodedata.
FORMAT_RANGES = (
    (0x00AD, 0x00AD), (0x0600, 0x0605), (0x061C, 0x061C), (0x06DD, 0x06DD), (0x070F, 0x070F),
    (0x0890, 0x0891), (0x08E2, 0x08E2), (0x180E, 0x180E), (0x200B, 0x200F), (0x202A, 0x202E),
    (0x2060, 0x2064), (0x2066, 0x206F), (0xFEFF, 0xFEFF), (0xFFF9, 0xFFFB),
)  # fmt: skip
_FORMAT = "".join(
    rf"\u{first:04x}" + ("" if last == first else rf"-\u{last:04x}")
    for first, last in FORMAT_RANGES
)
# Refused anywhere in a new username (usernames.REFUSED_CATEGORIES: Cc, Cf, Zl, Zp, and the
# default-ignorable and blank characters of usernames.IGNORABLE_OR_BLANK_RANGES); the username
# field's description names those beyond U+FFFF, refused as well.
_NOT_IN_USERNAMES = rf"\x00-\x1f\x7f-\x9f{_FORMAT}\u2028\u2029" + "".join(
    rf"\u{first:04x}" + ("" if last == first else rf"-\u{last:04x}")
    for first, last in usernames.IGNORABLE_OR_BLANK_RANGES
)

NO_NUL_PATTERN = r"^[^\x00]*$"
# Not blank: something besides white space and invisible formatting characters.
NOT_BLANK_PATTERN = rf"^[^\x00]*[^\x00{_SPACE}{_FORMAT}][^\x00]*$"
USERNAME_PATTERN = (
    rf"^[^{_NOT_IN_USERNAMES}]*[^{_NOT_IN_USERNAMES}{_SPACE}][^{_NOT_IN_USERNAMES}]*$"
)
_VISIBLE = re.compile(rf"[^{_SPACE}{_FORMAT}]")


def no_nul(value: str) -> bool:
    """PostgreSQL text cannot hold NUL characters; reject them as invalid input."""
    if "\x00" in value:
        raise ma.ValidationError("Must not contain NUL characters.")
    return True


def encodable(value: str) -> bool:
    """JSON may escape a lone surrogate (``"\\ud800"``); no database or hash can take one."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ma.ValidationError("Must be valid Unicode (no unpaired surrogates).") from None
    return True


def not_blank(value: str) -> bool:
    # The same test as NOT_BLANK_PATTERN, so the documented rule and the enforced one agree.
    if not _VISIBLE.search(value):
        raise ma.ValidationError("Must not be blank.")
    return True


def usable_username(value: str) -> bool:
    """No control or invisible characters, and a key the unique index can take."""
    # Control and invisible characters are what USERNAME_PATTERN refuses as well.
    reason = usernames.refusal(value)
    if reason is not None:
        raise ma.ValidationError(reason)
    return True


def username_field(**kwargs: Any) -> ma.fields.String:
    """A username to register: see ``booking_service.usernames``."""
    field = text_field(max_length=150, required=True, blank=False, **kwargs)
    field.validators.append(usable_username)
    field.metadata["pattern"] = USERNAME_PATTERN
    return field


def text_field(
    *, max_length: int, required: bool = False, blank: bool = True, **kwargs: Any
) -> ma.fields.String:
    """A string field that PostgreSQL can store, bounded in length."""
    validators: list[Any] = [
        ma.validate.Length(min=None if blank else 1, max=max_length),
        no_nul,
        encodable,
    ]
    if not blank:
        validators.append(not_blank)
    metadata = {"pattern": NO_NUL_PATTERN if blank else NOT_BLANK_PATTERN}
    metadata.update(kwargs.pop("metadata", {}))
    return ma.fields.String(required=required, validate=validators, metadata=metadata, **kwargs)


def id_field(*, strict: bool = True, **kwargs: Any) -> ma.fields.Integer:
    """An id in range; ``strict=False`` for query strings, where every value arrives as text."""
    return ma.fields.Integer(strict=strict, validate=ma.validate.Range(min=1, max=MAX_ID), **kwargs)
