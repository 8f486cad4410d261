"""The one place errors become HTTP answers: RFC 9457 ``application/problem+json`` with the
stable ``code`` of a ``booking_service.errors.DomainError``, or of Flask's own HTTP errors."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, current_app, json
from werkzeug.exceptions import HTTPException

from booking_service.errors import PROBLEM_CONTENT_TYPE, DomainError

log = logging.getLogger(__name__)


# Codes for errors raised by Flask/werkzeug/webargs rather than by our services.
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
}


def problem_response(
    *,
    status: int,
    code: str,
    title: str,
    detail: str,
    errors: dict[str, Any] | None = None,
    retry_after: int | None = None,
    extensions: dict[str, Any] | None = None,
) -> Response:
    """Build an RFC 9457 problem response; every 503 carries ``Retry-After``."""
    body: dict[str, Any] = {
        "type": f"urn:booking-service:problem:{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        **(extensions or {}),
    }
    if errors:
        body["errors"] = errors
    response = Response(json.dumps(body), status=status, content_type=PROBLEM_CONTENT_TYPE)
    if retry_after is None and status == 503:
        retry_after = current_app.config["RETRY_AFTER_SECONDS"]
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


def _flatten_webargs_messages(messages: dict[str, Any]) -> dict[str, Any]:
    """webargs nests messages by location ({"json": {...}}); clients want field → messages."""
    flat: dict[str, Any] = {}
    for location_messages in messages.values():
        if isinstance(location_messages, dict):
            flat.update(location_messages)
        else:
            flat.setdefault("_schema", []).extend(location_messages)
    return flat


def handle_domain_error(error: DomainError) -> Response:
    if error.status >= 500:
        log.warning("%s: %s", error.code, error.detail)
    return problem_response(
        status=error.status,
        code=error.code,
        title=error.title,
        detail=error.detail,
        errors=error.errors,
        retry_after=error.retry_after_seconds(current_app.config["RETRY_AFTER_SECONDS"]),
        extensions=error.extensions,
    )


def handle_http_exception(error: HTTPException) -> Response:
    status = error.code or 500
    data = getattr(error, "data", None) or {}
    errors = None
    if "messages" in data:
        errors = _flatten_webargs_messages(data["messages"])
    code = _HTTP_CODES.get(status, "http_error")
    detail = error.description or error.name
    if status == 422:
        detail = "Some fields are missing or invalid; see errors."
    elif status == 400 and errors:
        detail = "The request could not be parsed; see errors."
    response = problem_response(
        status=status, code=code, title=error.name, detail=detail, errors=errors
    )
    for name, value in (data.get("headers") or {}).items():
        response.headers[name] = value
    if status == 405 and error.get_response().headers.get("Allow"):
        response.headers["Allow"] = error.get_response().headers["Allow"]
    return response


def handle_unexpected(error: Exception) -> Response:
    log.exception("unhandled error")
    return problem_response(
        status=500,
        code="internal_error",
        title="Internal Server Error",
        detail="The server failed; the request was not applied.",
    )


def init_app(app: Flask) -> None:
    """Register the handlers; call after the Api so these replace its HTTP handler."""
    app.register_error_handler(DomainError, handle_domain_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(Exception, handle_unexpected)
