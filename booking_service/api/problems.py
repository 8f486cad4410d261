"""The problem responses an endpoint documents: RFC 9457 bodies, grouped by status, and the
record of what each view documented (held against its code by tests/unit/test_view_rules.py)."""

from __future__ import annotations

import weakref
from collections import defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import marshmallow as ma
from flask_smorest import Api
from flask_smorest.pagination import PaginationMetadataSchema

from booking_service.errors import PROBLEM_CONTENT_TYPE, DomainError, ValidationFailed

if TYPE_CHECKING:
    from booking_service.api.blueprint import Blueprint

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
