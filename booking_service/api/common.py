"""Pieces every blueprint uses: authentication, documented problem responses, base fields."""

from __future__ import annotations

import hmac
import re
import weakref
from collections import defaultdict
from collections.abc import Callable
from functools import wraps
from typing import Any

import flask_smorest
import marshmallow as ma
from flask import current_app, g, request
from flask_smorest import Api
from flask_smorest.pagination import PaginationMetadataSchema, PaginationParameters
from webargs import missing
from webargs.flaskparser import FlaskParser, is_json_request
from werkzeug.exceptions import RequestEntityTooLarge

from booking_service import usernames
from booking_service.errors import (
    PROBLEM_CONTENT_TYPE,
    DbUnavailable,
    DomainError,
    Forbidden,
    Unauthorized,
    UnsupportedMediaType,
    ValidationFailed,
)
from booking_service.models import Role, User
from booking_service.security import loads_json
from booking_service.services import MAX_ID, Page, accounts, admission

# Path rule for ids: out-of-range ids are simply "not found", never a database error.
ID = f"int(min=1, max={MAX_ID})"

BEARER = [{"bearerAuth": []}]

RETRY_AFTER_HEADER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying.",
        "schema": {"type": "integer"},
    }
}


class ProblemSchema(ma.Schema):
    """RFC 9457 problem details, plus the stable machine-readable ``code``."""

    type = ma.fields.String(metadata={"example": "urn:booking-service:problem:event_full"})
    title = ma.fields.String()
    status = ma.fields.Integer()
    detail = ma.fields.String()
    code = ma.fields.String(metadata={"description": "Stable error code; branch on this."})
    errors = ma.fields.Dict(
        keys=ma.fields.String(),
        values=ma.fields.Raw(),
        metadata={"description": "Field name → messages, on validation errors."},
    )


def document_stock_problems(api: Api) -> None:
    """Describe flask-smorest's stock error responses as the problem+json really sent.

    Query-string arguments and pagination document their 422 by reference to its
    UNPROCESSABLE_ENTITY response, and every operation gets DEFAULT_ERROR; out of the box both
    describe flask-smorest's own JSON error body, which this service never sends.
    """
    content = {PROBLEM_CONTENT_TYPE: {"schema": ProblemSchema}}
    for name, description in (
        ("UNPROCESSABLE_ENTITY", f"`{ValidationFailed.code}`: {ValidationFailed.title}"),
        ("DEFAULT_ERROR", "Any other problem, with its stable `code`"),
    ):
        api.spec.components.response(
            name, {"description": description, "content": content}, lazy=True
        )
    # X-Pagination carries a JSON object. The stock ``schema`` form means OpenAPI's "simple"
    # header style (``k,v,k,v``), which is not what is sent; ``content`` says JSON.
    api.spec.components.header(
        "PAGINATION",
        {
            "description": "Pagination metadata, a JSON object",
            "content": {"application/json": {"schema": PaginationMetadataSchema}},
        },
        lazy=True,
    )


# A view's own decorators run top to bottom in this order: who is asking (401/403 before
# anything is counted or remembered), how often (429), whether it ran before (an
# Idempotency-Key replay), then what it sent (``blp.arguments``; an invalid body is counted
# and remembered like any other answer). tests/unit/test_view_rules.py checks every view.
VIEW_STAGES = ("auth", "rate_limit", "idempotency", "arguments")


# Kept beside the functions, not on them: functools.wraps copies a function's attributes onto
# every wrapper above it, which would blur which layer is which.
_STAGE_OF_WRAPPER: weakref.WeakKeyDictionary[Callable[..., Any], str] = weakref.WeakKeyDictionary()


def view_stage(stage: str) -> Callable[[Any], Any]:
    """Mark a view decorator's wrapper with its place in ``VIEW_STAGES``."""
    if stage not in VIEW_STAGES:
        raise ValueError(f"unknown view stage {stage!r}")

    def mark(wrapper: Any) -> Any:
        _STAGE_OF_WRAPPER[wrapper] = stage
        return wrapper

    return mark


def stage_of(wrapper: Callable[..., Any]) -> str | None:
    """The stage a view decorator marked this wrapper with, if any."""
    return _STAGE_OF_WRAPPER.get(wrapper)


# What ``problems`` documented on each function, for tests/unit/test_view_rules.py, which
# holds every view's documented problems against the errors its code can raise.
_DOCUMENTED_PROBLEMS: weakref.WeakKeyDictionary[Callable[..., Any], set[type[DomainError]]] = (
    weakref.WeakKeyDictionary()
)


def documented_problems(func: Callable[..., Any]) -> set[type[DomainError]]:
    """The problem types documented with ``problems`` on this function (one layer)."""
    return set(_DOCUMENTED_PROBLEMS.get(func, ()))


def problems(
    blp: Blueprint, *errors: type[DomainError], why: str | None = None
) -> Callable[[Any], Any]:
    """Document the problem responses an endpoint can answer with, grouped by status.

    ``why`` replaces the errors' titles in the description (for one error with a specific
    cause, such as which rate limit applies).
    """
    by_status: dict[int, list[type[DomainError]]] = defaultdict(list)
    for error in errors:
        by_status[error.status].append(error)

    def decorator(func: Any) -> Any:
        for status, classes in sorted(by_status.items()):
            description = "; ".join(f"`{cls.code}`: {why or cls.title}" for cls in classes)
            headers = RETRY_AFTER_HEADER if status in (429, 503) else None
            func = blp.alt_response(
                status,
                schema=ProblemSchema,
                content_type="application/problem+json",
                description=description,
                headers=headers,
            )(func)
        _DOCUMENTED_PROBLEMS.setdefault(func, set()).update(errors)
        return func

    return decorator


# --- request bodies ---------------------------------------------------------------------


class _BodyParser(FlaskParser):
    """webargs' parser, reading JSON bodies with ``security.loads_json``.

    webargs calls ``json.loads`` itself, so a body nested too deeply, or a number too long,
    would otherwise escape as a 500 instead of its 400 "Invalid JSON body".
    """

    def _raw_load_json(self, req: Any) -> Any:
        if not is_json_request(req):
            # webargs would read any other body as no body at all, and answer a JSON body sent
            # as text/plain with "Missing data for required field".
            if req.get_data(cache=True):
                sent = f"as {req.mimetype}" if req.mimetype else "without a Content-Type"
                raise UnsupportedMediaType(
                    f"Send the body as application/json; this one was sent {sent}."
                )
            return missing
        # Decoded as webargs does; a UnicodeDecodeError is its 400 as well.
        return loads_json(req.get_data(cache=True).decode("utf-8"))


class Blueprint(flask_smorest.Blueprint):
    """flask-smorest's Blueprint with the body parser above; every API blueprint is one."""

    ARGUMENTS_PARSER = _BodyParser()

    def arguments(self, schema: Any, *, location: str = "json", **kwargs: Any) -> Any:
        """``flask_smorest.Blueprint.arguments``; a JSON body also documents its 415.

        A schema class is instantiated here, once: webargs would build one per request.
        """
        if isinstance(schema, type):
            schema = schema()
        parse = super().arguments(schema, location=location, **kwargs)
        if location != "json":
            return parse
        return lambda func: problems(self, UnsupportedMediaType)(parse(func))

    # flask-smorest's alt_response and doc wrap the view in a function that only calls it
    # again, through ensure_sync. An endpoint collects a dozen of them (every ``problems``
    # status is one), each a few calls on every request; these put the same documentation
    # on the function itself, which costs nothing at run time.

    def alt_response(self, *args: Any, **kwargs: Any) -> Callable[[Any], Any]:
        """``flask_smorest.Blueprint.alt_response``, documenting without a wrapper."""
        return _documentation_only(super().alt_response(*args, **kwargs))

    @staticmethod
    def doc(**kwargs: Any) -> Callable[[Any], Any]:
        """``flask_smorest.Blueprint.doc``, documenting without a wrapper."""
        return _documentation_only(flask_smorest.Blueprint.doc(**kwargs))


def _documentation_only(doc_decorator: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def apply(func: Any) -> Any:
        func._apidoc = doc_decorator(func)._apidoc
        return func

    return apply


def current_user() -> User:
    """The user authenticated by ``auth_required`` for this request."""
    return g.user


def bearer_token() -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Send 'Authorization: Bearer <token>'.")
    return token.strip()


def auth_required(
    blp: Blueprint, *roles: Role, event_version_of: str | None = None
) -> Callable[[Any], Any]:
    """Require a valid bearer token and, if given, one of ``roles``; documents both.

    The token is resolved in one Redis round trip (services/admission.py) together with the
    count of a ``limit_per_user`` below this decorator and, with ``event_version_of`` (a JSON
    body field holding an event id), the event's change counter, for the view to pass on.
    """
    check_role = _role_check({role.value for role in roles}) if roles else _any_role

    def decorator(func: Any) -> Any:
        limit_below = _rate_limit_below(func)

        @wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            token = bearer_token()
            rate_limit = None
            if limit_below is not None and current_app.config["RATE_LIMIT_ENABLED"]:
                setting, scope = limit_below
                rate_limit = admission.RateLimit(current_app.config[setting], scope)
            event_id = json_id_field(event_version_of) if event_version_of else None
            admitted = admission.admit(token=token, rate_limit=rate_limit, event_id=event_id)
            g.user = check_role(admitted.user)
            g.admission = admitted
            return func(*args, **kwargs)

        documented = blp.doc(security=BEARER)(wrapper)
        # The token lookup reads the database: 503 db_unavailable when it does not answer.
        answers = (Unauthorized, *([Forbidden] if roles else []), DbUnavailable)
        documented = problems(blp, *answers)(documented)
        return view_stage("auth")(documented)

    return decorator


def _any_role(user: User) -> User:
    return user


# The rate limit each ``limit_per_user`` wrapper applies (setting, scope), so that the
# ``auth_required`` above it can count it in the same round trip as the token lookup.
_RATE_LIMIT_OF_WRAPPER: weakref.WeakKeyDictionary[Callable[..., Any], tuple[str, str]] = (
    weakref.WeakKeyDictionary()
)


def rate_limit_applied_by(wrapper: Callable[..., Any], *, setting: str, scope: str) -> None:
    """Record the rate limit a view decorator's wrapper applies (api/limits.py)."""
    _RATE_LIMIT_OF_WRAPPER[wrapper] = (setting, scope)


def _rate_limit_below(func: Callable[..., Any]) -> tuple[str, str] | None:
    layer: Any = func
    while layer is not None:
        if layer in _RATE_LIMIT_OF_WRAPPER:
            return _RATE_LIMIT_OF_WRAPPER[layer]
        layer = getattr(layer, "__wrapped__", None)
    return None


def current_admission() -> admission.Admission | None:
    """What ``auth_required`` learned when it let this request in, if it did."""
    return g.get("admission")


def json_id_field(name: str) -> int | None:
    """An id-shaped field of the JSON body, read before validation (None if absent or odd)."""
    try:
        body = request.get_json(silent=True)
    except (RequestEntityTooLarge, RecursionError, ValueError):
        return None
    value = body.get(name) if isinstance(body, dict) else None
    return value if type(value) is int and 1 <= value <= MAX_ID else None


def _role_check(allowed: set[str]) -> Callable[[User], User]:
    def check(user: User) -> User:
        if user.role not in allowed:
            raise Forbidden(f"This needs the {' or '.join(sorted(allowed))} role.")
        return user

    return check


def token_equals(token: str, expected: str | None) -> bool:
    """Constant-time check of a presented token against a configured one (unset: no match).

    Compared as bytes, so a non-ASCII header is a mismatch rather than a TypeError.
    """
    return bool(expected) and hmac.compare_digest(token.encode(), expected.encode())


def ops_access_required(blp: Blueprint) -> Callable[[Any], Any]:
    """Require an admin's bearer token or the OPS_TOKEN; documents the 401 and 403 answers."""

    def decorator(func: Any) -> Any:
        @wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            token = bearer_token()
            # Closed by default: with no OPS_TOKEN configured only admins get in.
            if token_equals(token, current_app.config.get("OPS_TOKEN")):
                g.user = None
                return func(*args, **kwargs)
            user = accounts.authenticate(token=token)
            if user.role != Role.ADMIN.value:
                raise Forbidden("This needs the admin role or the ops token.")
            g.user = user
            return func(*args, **kwargs)

        documented = blp.doc(security=BEARER)(wrapper)
        documented = problems(blp, Unauthorized, Forbidden, DbUnavailable)(documented)
        return view_stage("auth")(documented)

    return decorator


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


def page_items(page: Page[Any], pagination: PaginationParameters) -> list[Any]:
    """Hand a service page to flask-smorest, which sets the X-Pagination header."""
    pagination.item_count = page.total
    return page.items
