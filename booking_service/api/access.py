"""Who is asking: bearer-token authentication, roles and the operator token, documented on
every view they guard (401, 403, and the 503 of a token lookup that cannot reach the database)."""

from __future__ import annotations

import hmac
import weakref
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import current_app, g, request
from werkzeug.exceptions import RequestEntityTooLarge

from booking_service.api.blueprint import Blueprint, view_stage
from booking_service.api.problems import problems
from booking_service.errors import DbUnavailable, Forbidden, Unauthorized
from booking_service.models import Role, User
from booking_service.services import MAX_ID, accounts, admission

BEARER = [{"bearerAuth": []}]


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
    blp: Blueprint,
    *roles: Role,
    event_version_of: str | None = None,
    event_in_path: str | None = None,
    queue: bool = False,
) -> Callable[[Any], Any]:
    """Require a valid bearer token and, if given, one of ``roles``; documents both.

    The token is resolved in one Redis round trip (services/admission.py) together with the
    count of a ``limit_per_user`` below this decorator and, with ``event_version_of`` (a JSON
    body field holding an event id) or ``event_in_path`` (a path parameter), the event's
    change counter, for the view to pass on; with ``queue`` too, the customer's entry in the
    event's waiting room.
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
            if event_in_path is not None:
                event_id = path_id(event_in_path)
            admitted = admission.admit(
                token=token, rate_limit=rate_limit, event_id=event_id, queue=queue
            )
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


def path_id(name: str) -> int | None:
    """An id in the request's path (the id rule has bounded it already), None if absent."""
    value = (request.view_args or {}).get(name)
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
