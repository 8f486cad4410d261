"""Pieces every blueprint uses: authentication, documented problem responses, base fields."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from functools import wraps
from typing import Any

import marshmallow as ma
from flask import g, request
from flask_smorest import Blueprint
from flask_smorest.pagination import PaginationParameters

from booking_service.errors import DomainError, Forbidden, Unauthorized
from booking_service.models import Role, User
from booking_service.services import MAX_ID, Page, accounts

# Path rule for ids: out-of-range ids are simply "not found", never a database error.
ID = f"int(min=1, max={MAX_ID})"

BEARER = [{"bearerAuth": []}]


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


def problems(blp: Blueprint, *errors: type[DomainError]) -> Callable[[Any], Any]:
    """Document the problem responses an endpoint can answer with, grouped by status."""
    by_status: dict[int, list[type[DomainError]]] = defaultdict(list)
    for error in errors:
        by_status[error.status].append(error)

    def decorator(func: Any) -> Any:
        for status, classes in sorted(by_status.items()):
            description = "; ".join(f"`{cls.code}`: {cls.title}" for cls in classes)
            headers = None
            if status == 503:
                headers = {
                    "Retry-After": {
                        "description": "Seconds to wait before retrying.",
                        "schema": {"type": "integer"},
                    }
                }
            func = blp.alt_response(
                status,
                schema=ProblemSchema,
                content_type="application/problem+json",
                description=description,
                headers=headers,
            )(func)
        return func

    return decorator


def current_user() -> User:
    """The user authenticated by ``auth_required`` for this request."""
    return g.user


def bearer_token() -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Send 'Authorization: Bearer <token>'.")
    return token.strip()


def auth_required(blp: Blueprint, *roles: Role) -> Callable[[Any], Any]:
    """Require a valid bearer token and, if given, one of ``roles``; documents both."""
    allowed = {role.value for role in roles}

    def decorator(func: Any) -> Any:
        @wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            user = accounts.authenticate(token=bearer_token())
            if allowed and user.role not in allowed:
                raise Forbidden(f"This needs the {' or '.join(sorted(allowed))} role.")
            g.user = user
            return func(*args, **kwargs)

        documented = blp.doc(security=BEARER)(wrapper)
        return problems(blp, Unauthorized, *([Forbidden] if roles else []))(documented)

    return decorator


def no_nul(value: str) -> bool:
    """PostgreSQL text cannot hold NUL characters; reject them as invalid input."""
    if "\x00" in value:
        raise ma.ValidationError("Must not contain NUL characters.")
    return True


def not_blank(value: str) -> bool:
    if not value.strip():
        raise ma.ValidationError("Must not be blank.")
    return True


def text_field(
    *, max_length: int, required: bool = False, blank: bool = True, **kwargs: Any
) -> ma.fields.String:
    """A string field that PostgreSQL can store, bounded in length."""
    validators: list[Any] = [ma.validate.Length(max=max_length), no_nul]
    if not blank:
        validators.append(not_blank)
    return ma.fields.String(required=required, validate=validators, **kwargs)


def id_field(**kwargs: Any) -> ma.fields.Integer:
    return ma.fields.Integer(strict=True, validate=ma.validate.Range(min=1, max=MAX_ID), **kwargs)


def page_items(page: Page[Any], pagination: PaginationParameters) -> list[Any]:
    """Hand a service page to flask-smorest, which sets the X-Pagination header."""
    pagination.item_count = page.total
    return page.items
