"""Bearer-token sessions: PostgreSQL holds the record, Redis a cache in front of it.

Every authenticated request resolves its token to a user; during a sale that is thousands of
lookups a second, each a PostgreSQL round trip. So a resolved session is cached in Redis
(``session:<token hash>``) for ``SESSION_CACHE_SECONDS``, on these rules
(docs/architecture.md, "Retries, idempotency and rate limits"):

- A cached session never outlives its token: its time to live is at most what is left of the
  token's life, and the token's expiry is checked again on every read.
- Logout takes effect before it is answered, everywhere: it first replaces the cached session
  with a tombstone, then revokes the token in PostgreSQL, and answers only when both are done.
  A request that read the token before the revocation cannot put it back: filling the cache is
  ``SET NX``, which a tombstone (or any entry) stops.
- When Redis does not answer, lookups go to PostgreSQL (a slower sign-in is better than none);
  a logout then answers 503, because it could not make sure the cache forgot the token.

Tokens are ``<user id>.<random>``: the user id up front lets a request count itself against
its user's rate limit in the same Redis round trip as the lookup (services/admission.py).
Only the SHA-256 of a token is stored, in PostgreSQL and in the cache key alike.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.dialects import postgresql

from booking_service.database import StoredFunction, db
from booking_service.errors import SessionStoreUnavailable, Unauthorized
from booking_service.models import User
from booking_service.redis_clients import REDIS_ERRORS, redis_client

log = logging.getLogger(__name__)

SESSION_KEY_PREFIX = "session:"
TOMBSTONE = b"revoked"


@dataclass
class SessionSettings:
    # How long a resolved session is kept in Redis; 0 turns the cache off.
    cache_seconds: int = 300


settings = SessionSettings()


def new_token(user_id: int) -> str:
    return f"{user_id}.{secrets.token_urlsafe(32)}"


def user_id_of(token: str) -> int | None:
    """The user id a token names (unchecked: only a lookup proves the token)."""
    prefix, dot, _ = token.partition(".")
    return int(prefix) if dot and prefix.isdigit() and len(prefix) < 19 else None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def session_key(token_hash: str) -> str:
    return f"{SESSION_KEY_PREFIX}{token_hash}"


# The lookup behind the cache: a stored function whose plan PostgreSQL caches (a one-row
# join, most of whose cost would be planning), read through Core; the User built from the row
# is transient (no session), read-only here.
_USER_COLUMNS = User.__table__.columns
_USER_ROW = ", ".join(f"{c.name} {c.type.compile(postgresql.dialect())}" for c in _USER_COLUMNS)
USER_BY_LIVE_TOKEN = StoredFunction(
    "user_by_live_token",
    f"""
    SELECT {", ".join(f"users.{column.name}" for column in _USER_COLUMNS)},
           api_tokens.expires_at
      FROM api_tokens JOIN users ON users.id = api_tokens.user_id
     WHERE api_tokens.token_hash = :token_hash
       AND api_tokens.revoked_at IS NULL
       AND api_tokens.expires_at > now()
    """,
    returns=f"TABLE ({_USER_ROW}, token_expires_at timestamptz)",
    token_hash="text",
)


def authenticate(*, token: str) -> User:
    """Return the user a live token belongs to, or raise Unauthorized (one cache read)."""
    token_hash = hash_token(token)
    if not settings.cache_seconds:
        return resolve(token_hash, None, cache_answered=False)
    try:
        cached = redis_client.get().get(session_key(token_hash))
    except REDIS_ERRORS:
        return resolve(token_hash, None, cache_answered=False)
    return resolve(token_hash, cached, cache_answered=True)


def resolve(token_hash: str, cached: bytes | None, *, cache_answered: bool) -> User:
    """The user of a token, from what the cache answered, else from PostgreSQL.

    ``cache_answered``: the cache was read (``cached`` None is then a miss, to fill).
    """
    if cached == TOMBSTONE:
        raise Unauthorized("The token is unknown, expired or revoked.")
    decoded = _decode(cached) if cached is not None else None
    if decoded is not None:
        user, expires_at = decoded
        if expires_at > datetime.now(UTC):
            return user
        raise Unauthorized("The token is unknown, expired or revoked.")
    with db.single_statement() as connection:
        row = USER_BY_LIVE_TOKEN.execute(connection, {"token_hash": token_hash}).one_or_none()
    if row is None:
        raise Unauthorized("The token is unknown, expired or revoked.")
    values = row._asdict()
    expires_at = values.pop("token_expires_at")
    user = _user(values)
    if cache_answered and settings.cache_seconds:
        _fill(token_hash, values, expires_at)
    return user


def _fill(token_hash: str, values: dict[str, Any], expires_at: datetime) -> None:
    seconds_left = int((expires_at - datetime.now(UTC)).total_seconds())
    ttl = min(settings.cache_seconds, seconds_left)
    if ttl < 1:
        return
    try:
        redis_client.get().set(
            session_key(token_hash), _encode(values, expires_at), ex=ttl, nx=True
        )
    except REDIS_ERRORS:
        log.debug("session not cached", exc_info=True)


def forget_everywhere(*, token: str) -> None:
    """Replace the token's cached session with a tombstone; raise if Redis did not take it.

    Runs before the token is revoked in PostgreSQL, so that no instance can serve it from the
    cache once the logout is answered.
    """
    if not settings.cache_seconds:
        return
    try:
        redis_client.get().set(session_key(hash_token(token)), TOMBSTONE, ex=settings.cache_seconds)
    except REDIS_ERRORS as error:
        raise SessionStoreUnavailable(
            "The session store did not answer; you are still signed in. Retry shortly."
        ) from error


def _encode(values: dict[str, Any], expires_at: datetime) -> str:
    return json.dumps(
        {
            "user": {k: v.isoformat() if isinstance(v, datetime) else v for k, v in values.items()},
            "expires_at": expires_at.isoformat(),
        },
        separators=(",", ":"),
    )


_DATETIME_COLUMNS = {c.name for c in _USER_COLUMNS if c.type.python_type is datetime}


_new_user = User.__mapper__.class_manager.new_instance


def _user(values: dict[str, Any]) -> User:
    """A User holding ``values``, filled in as a query fills what it loads.

    The declarative constructor sets each column through its instrumented attribute: a
    twentieth of a sold-out refusal's time. This user is only read, never added to a session.
    """
    user = _new_user()
    user.__dict__.update(values)
    return user


def _decode(cached: bytes) -> tuple[User, datetime] | None:
    """The cached user and token expiry; None for an entry this release cannot read (another
    release's shape, say), which is then looked up in PostgreSQL like a miss."""
    try:
        document = json.loads(cached)
        values = {column.name: document["user"][column.name] for column in _USER_COLUMNS}
        for name in _DATETIME_COLUMNS:
            if values[name] is not None:
                values[name] = datetime.fromisoformat(values[name])
        return _user(values), datetime.fromisoformat(document["expires_at"])
    except (ValueError, KeyError, TypeError):
        return None
