"""The ``Idempotency-Key`` request header on unsafe endpoints (IETF httpapi draft).

Place ``idempotent(blp)`` below ``auth_required`` (keys are scoped to the signed-in user) and
above ``blp.arguments``, so that the answer to an invalid body is stored like any other (the
order of every view's decorators: ``api.blueprint.VIEW_STAGES``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import timedelta
from functools import wraps
from typing import Any

from flask import Response, current_app, request
from flask_smorest import Blueprint
from werkzeug.exceptions import HTTPException

from booking_service.api.access import current_user
from booking_service.api.blueprint import view_stage
from booking_service.api.problems import problems
from booking_service.errors import (
    DomainError,
    IdempotencyInProgress,
    IdempotencyKeyMismatch,
    InvalidIdempotencyKey,
)
from booking_service.services import idempotency

log = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"

HEADER_PARAMETER = {
    "in": "header",
    "name": HEADER,
    "required": False,
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": idempotency.MAX_KEY_LENGTH,
        # Printable ASCII, not only blanks.
        "pattern": "^[ -~]*[!-~][ -~]*$",
    },
    # A placeholder, not a key: a concrete example gets copied, and clients sharing a key
    # would see each other's answers and conflicts. Still a well-formed value.
    "example": '"<a new UUID per operation>"',
    "description": (
        "Makes retries safe. A unique value per operation (a UUID is a good choice; sent as a "
        "quoted string or bare, printable ASCII, at most 255 characters), scoped to the "
        "signed-in user and remembered for IDEMPOTENCY_TTL_HOURS (24 h by default). A retry "
        "with the same key and body gets the first answer again (status, body and `Location`, "
        "plus `Idempotent-Replayed: true`) without doing anything twice; the same key with a "
        "different body is 422 `idempotency_key_mismatch`; a retry while the first request is "
        "still running is 409 `idempotency_in_progress`. Server failures (5xx) are not "
        "remembered, so retrying after one runs the request again."
    ),
}

_ERRORS = (InvalidIdempotencyKey, IdempotencyKeyMismatch, IdempotencyInProgress)


def idempotent(blp: Blueprint) -> Callable[[Any], Any]:
    """Honour an ``Idempotency-Key`` header on the view; documents the header and its errors."""

    def decorator(func: Any) -> Any:
        @wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            raw_key = request.headers.get(HEADER)
            if raw_key is None:
                return func(*args, **kwargs)
            return _run_once(idempotency.parse_key(raw=raw_key), func, args, kwargs)

        documented = blp.doc(parameters=[HEADER_PARAMETER])(wrapper)
        documented = problems(blp, *_ERRORS)(documented)
        _merge_shared_status_descriptions(documented, {error.status for error in _ERRORS})
        return view_stage("idempotency")(documented)

    return decorator


def _run_once(key: str, func: Any, args: Any, kwargs: Any) -> Response:
    config = current_app.config
    # Read before claiming: a body over MAX_CONTENT_LENGTH fails here (413), claiming nothing.
    body = request.get_data(cache=True)
    outcome = idempotency.claim(
        user_id=current_user().id,
        key=key,
        fingerprint=idempotency.fingerprint(method=request.method, path=request.path, body=body),
        ttl=timedelta(hours=config["IDEMPOTENCY_TTL_HOURS"]),
        lease=timedelta(seconds=config["IDEMPOTENCY_LEASE_SECONDS"]),
    )
    if isinstance(outcome, idempotency.StoredResponse):
        return _replay(outcome)
    try:
        response = current_app.make_response(func(*args, **kwargs))
    except Exception as error:
        if _status_of(error) >= 500:
            # Not an answer the client may rely on: let its retry run the request again.
            _release_quietly(outcome)
            raise
        response = current_app.make_response(current_app.handle_user_exception(error))
    if response.status_code >= 500:
        _release_quietly(outcome)
        return response
    stored = idempotency.StoredResponse(
        status=response.status_code,
        body=response.get_data(as_text=True),
        headers=idempotency.stored_headers(headers=response.headers),
    )
    try:
        idempotency.complete(claim=outcome, response=stored)
    except DomainError:
        # The work is done and committed; the client gets its answer. Until the lease runs
        # out, a retry with this key is told the first request is still in progress.
        log.warning("idempotency answer not stored: user=%s", outcome.user_id)
    return response


def _replay(stored: idempotency.StoredResponse) -> Response:
    response = Response(stored.body, status=stored.status)
    for name, value in stored.headers.items():
        response.headers[name] = value
    response.headers[REPLAYED_HEADER] = "true"
    return response


def _status_of(error: Exception) -> int:
    if isinstance(error, DomainError):
        return error.status
    if isinstance(error, HTTPException):
        return error.code or 500
    return 500


def _release_quietly(claim: idempotency.Claim) -> None:
    try:
        idempotency.release(claim=claim)
    except DomainError:
        # The database is gone; the claim's lease frees the key later.
        log.warning("idempotency claim not released: user=%s", claim.user_id)


def _merge_shared_status_descriptions(func: Any, statuses: set[int]) -> None:
    """Keep every error code in the docs when a status (409, 422) is documented twice.

    flask-smorest merges several responses of one status into one, keeping one description;
    give them all the combined description instead.
    """
    responses = func._apidoc.get("response", {}).get("responses", {})
    for status in statuses:
        entries = [entry for entry in responses.get(status, []) if isinstance(entry, Mapping)]
        descriptions = list(
            dict.fromkeys(e["description"] for e in entries if e.get("description"))
        )
        for entry in entries:
            entry["description"] = "; ".join(descriptions)
