"""Idempotency-Key records (IETF httpapi Idempotency-Key draft), kept in PostgreSQL.

A request with a key first *claims* it in its own short transaction, before any lock or write
of the request itself; the answer is then stored against the claim (``complete``), or the claim
is dropped (``release``) when the answer was a server failure the client should retry. A claim
carries a random token that fences ``complete`` and ``release``: once an abandoned claim was
taken over, the request that abandoned it can no longer touch the record.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import text

from booking_service.database import db
from booking_service.errors import (
    IdempotencyInProgress,
    IdempotencyKeyMismatch,
    InvalidIdempotencyKey,
)
from booking_service.safe_json import loads_json

log = logging.getLogger(__name__)

MAX_KEY_LENGTH = 255
IN_PROGRESS = "in_progress"

# Expired keys of this user go first: their rows would otherwise only be found by a purge, and
# an expired key is free to be claimed again.
_DELETE_EXPIRED_OF_USER = text(
    "DELETE FROM idempotency_keys WHERE user_id = :user_id AND expires_at <= now()"
)
_INSERT_CLAIM = text(
    """
    INSERT INTO idempotency_keys (user_id, key, fingerprint, state, claim_token, created_at,
                                  expires_at)
    VALUES (:user_id, :key, :fingerprint, 'in_progress', :token, now(),
            now() + make_interval(secs => :ttl))
    ON CONFLICT (user_id, key) DO NOTHING
    RETURNING claim_token
    """
)
# Times are compared by the database's clock, the one that wrote them.
_SELECT_EXISTING = text(
    """
    SELECT fingerprint, state, response_status, response_body, response_headers,
           expires_at <= now() AS expired,
           created_at <= now() - make_interval(secs => :lease) AS abandoned
      FROM idempotency_keys
     WHERE user_id = :user_id AND key = :key
       FOR UPDATE
    """
)
_TAKE_OVER = text(
    """
    UPDATE idempotency_keys
       SET fingerprint = :fingerprint, state = 'in_progress', claim_token = :token,
           response_status = NULL, response_body = NULL, response_headers = NULL,
           created_at = now(), expires_at = now() + make_interval(secs => :ttl)
     WHERE user_id = :user_id AND key = :key
    """
)
_COMPLETE = text(
    """
    UPDATE idempotency_keys
       SET state = 'completed', response_status = :status, response_body = :body,
           response_headers = CAST(:headers AS jsonb)
     WHERE user_id = :user_id AND key = :key AND claim_token = :token
    """
)
_RELEASE = text(
    "DELETE FROM idempotency_keys WHERE user_id = :user_id AND key = :key AND claim_token = :token"
)
_PURGE = text("DELETE FROM idempotency_keys WHERE expires_at <= now()")


@dataclass(frozen=True)
class StoredResponse:
    """The answer given to the first request with a key, replayed to its repeats."""

    status: int
    body: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Claim:
    """The right to run the request for a key; ``token`` fences completion and release."""

    user_id: int
    key: str
    token: str


def parse_key(*, raw: str) -> str:
    """Return the key from an Idempotency-Key header value, or raise InvalidIdempotencyKey.

    The draft defines the value as a Structured Field string ("..."); a bare value is accepted
    as well, since that is what most clients send.
    """
    value = raw.strip()
    if len(value) >= 2 and value.startswith('"') and value.endswith('"'):
        value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    if not value:
        raise InvalidIdempotencyKey("The Idempotency-Key header is empty.")
    if len(value) > MAX_KEY_LENGTH:
        raise InvalidIdempotencyKey(f"An Idempotency-Key has at most {MAX_KEY_LENGTH} characters.")
    if not all(" " <= char <= "~" for char in value):
        raise InvalidIdempotencyKey("An Idempotency-Key may only hold printable ASCII characters.")
    return value


def fingerprint(*, method: str, path: str, body: bytes) -> str:
    """Hash what makes two requests "the same": method, path and the JSON body's content.

    The body is canonicalised (sorted keys, no insignificant whitespace), so a client that
    re-serialises the same document on retry is not told it sent a different request.
    """
    try:
        document = loads_json(body) if body.strip() else None
        canonical = json.dumps(
            document, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()
    except (ValueError, RecursionError):  # RecursionError: too deep to serialise again
        canonical = body  # not JSON: only the exact same bytes are the same request
    digest = hashlib.sha256()
    digest.update(f"{method.upper()} {path}\n".encode())
    digest.update(canonical)
    return digest.hexdigest()


def claim(
    *,
    user_id: int,
    key: str,
    fingerprint: str,
    ttl: timedelta,
    lease: timedelta,
) -> Claim | StoredResponse:
    """Claim the user's key for this request, or return the answer stored for it.

    Raises IdempotencyKeyMismatch when the key was used for a different request and
    IdempotencyInProgress while another request with the key is still running.
    """
    token = uuid.uuid4().hex
    params = {
        "user_id": user_id,
        "key": key,
        "fingerprint": fingerprint,
        "token": token,
        "ttl": ttl.total_seconds(),
        "lease": lease.total_seconds(),
    }
    with db.transaction() as session:
        session.execute(_DELETE_EXPIRED_OF_USER, params)
        # A concurrent first claim makes this INSERT wait for it and then do nothing; the
        # row read below is then that claim, committed.
        if session.execute(_INSERT_CLAIM, params).first() is not None:
            return Claim(user_id=user_id, key=key, token=token)
        existing = session.execute(_SELECT_EXISTING, params).mappings().first()
        if existing is None:
            # Released (a 5xx) between our two statements: the key is free again, unless yet
            # another request claimed it in the meantime.
            if session.execute(_INSERT_CLAIM, params).first() is None:
                raise IdempotencyInProgress(
                    "Another request with this Idempotency-Key has just started; retry shortly."
                )
            return Claim(user_id=user_id, key=key, token=token)
        if existing["expired"]:
            session.execute(_TAKE_OVER, params)
            return Claim(user_id=user_id, key=key, token=token)
        if existing["fingerprint"] != fingerprint:
            raise IdempotencyKeyMismatch(
                "This Idempotency-Key was already used with a different method, path or body; "
                "use a new key for a new request."
            )
        if existing["state"] == IN_PROGRESS:
            if not existing["abandoned"]:
                raise IdempotencyInProgress(
                    "The first request with this Idempotency-Key has not finished; "
                    "retry shortly to get its answer."
                )
            # The worker that claimed it died (or was killed for running too long): without
            # this the key would be blocked for its whole lifetime.
            log.warning("idempotency claim abandoned, taking over: user=%s", user_id)
            session.execute(_TAKE_OVER, params)
            return Claim(user_id=user_id, key=key, token=token)
        return StoredResponse(
            status=existing["response_status"],
            body=existing["response_body"] or "",
            headers=dict(existing["response_headers"] or {}),
        )


def complete(*, claim: Claim, response: StoredResponse) -> bool:
    """Store the answer for the claimed key; False if the claim was taken over meanwhile."""
    with db.transaction() as session:
        result = session.execute(
            _COMPLETE,
            {
                "user_id": claim.user_id,
                "key": claim.key,
                "token": claim.token,
                "status": response.status,
                "body": response.body,
                "headers": json.dumps(response.headers),
            },
        )
        return bool(result.rowcount)


def release(*, claim: Claim) -> None:
    """Forget the claim, so that a retry with the same key runs the request again."""
    with db.transaction() as session:
        session.execute(
            _RELEASE, {"user_id": claim.user_id, "key": claim.key, "token": claim.token}
        )


def purge_expired() -> int:
    """Delete every expired record (of all users); return how many went."""
    with db.transaction() as session:
        return int(session.execute(_PURGE).rowcount or 0)


def stored_headers(*, headers: Any) -> dict[str, str]:
    """The response headers worth replaying: the representation's type and where it lives."""
    return {name: headers[name] for name in ("Content-Type", "Location") if name in headers}
