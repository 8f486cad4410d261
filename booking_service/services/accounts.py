"""Accounts, bearer tokens and login devices."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from sqlalchemy import ColumnElement, func, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from booking_service import usernames
from booking_service.database import db
from booking_service.errors import (
    InvalidCredentials,
    UsernameTaken,
    ValidationFailed,
)
from booking_service.models import ApiToken, LoginDevice, Role, User
from booking_service.services import history, sessions


@dataclass
class AccountSettings:
    password_hash_method: str = "scrypt"
    token_ttl: timedelta = timedelta(days=30)
    device_ttl: timedelta = timedelta(days=90)


settings = AccountSettings()


@lru_cache(maxsize=4)
def _dummy_hash(method: str) -> str:
    """A hash checked when the username is unknown, made with the method accounts use.

    With any cheaper method a miss answers sooner than a wrong password, and the time tells
    which usernames exist. Built once per method (a scrypt hash takes a while).
    """
    return generate_password_hash("not-a-real-password", method=method)


@dataclass(frozen=True)
class SignedIn:
    """A signed-in user, the bearer token of the sign-in and the device token to keep."""

    user: User
    token: str
    device_token: str


def _issue_token(session: Session, user: User) -> str:
    token = sessions.new_token(user.id)
    session.add(
        ApiToken(
            user_id=user.id,
            token_hash=sessions.hash_token(token),
            expires_at=datetime.now(UTC) + settings.token_ttl,
        )
    )
    return token


def _issue_device(session: Session, user: User) -> str:
    device_token = secrets.token_urlsafe(32)
    session.add(LoginDevice(user_id=user.id, token_hash=sessions.hash_token(device_token)))
    return device_token


def _live_device(device_token: str) -> tuple[ColumnElement[bool], ...]:
    """Conditions on a login device: this token, used within DEVICE_TOKEN_TTL_DAYS."""
    return (
        LoginDevice.token_hash == sessions.hash_token(device_token),
        LoginDevice.last_used_at > func.now() - settings.device_ttl,
    )


def _keep_or_issue_device(session: Session, user: User, device_token: str | None) -> str:
    """The device token the client keeps: the one it sent if live and the user's, else new."""
    if device_token is not None:
        kept = session.execute(
            update(LoginDevice)
            .where(LoginDevice.user_id == user.id, *_live_device(device_token))
            .values(last_used_at=func.now())
        )
        if kept.rowcount:
            return device_token
    return _issue_device(session, user)


def is_known_device(*, username: str, device_token: str) -> bool:
    """Whether ``device_token`` is a live device token of the account ``username`` names."""
    with db.transaction() as session:
        found = session.scalar(
            select(LoginDevice.id)
            .join(User, User.id == LoginDevice.user_id)
            .where(User.username_key == usernames.username_key(username))
            .where(*_live_device(device_token))
        )
    return found is not None


def register(
    *,
    role: Role,
    username: str,
    password: str,
    email: str,
    first_name: str = "",
    last_name: str = "",
    organization_name: str | None = None,
    business_address: str | None = None,
) -> SignedIn:
    """Create an account and sign it in; the username is kept trimmed, unique by its key and
    by its look (its skeleton: a look-alike of a taken name is taken)."""
    reason = usernames.refusal(username)
    if reason is not None:  # the API's schema refuses these already; this covers the CLI
        raise ValidationFailed(errors={"username": [reason]})
    key = usernames.username_key(username)
    user = User(
        username=usernames.display_username(username),
        username_key=key,
        username_skeleton=usernames.username_skeleton(username),
        email=email,
        password_hash=generate_password_hash(password, method=settings.password_hash_method),
        role=role.value,
        first_name=first_name,
        last_name=last_name,
        organization_name=organization_name if role is Role.ORGANIZER else None,
        business_address=business_address if role is Role.ORGANIZER else None,
    )
    try:
        with db.transaction() as session:
            taken = or_(User.username_key == key, User.username_skeleton == user.username_skeleton)
            if session.scalar(select(User.id).where(taken).limit(1)):
                raise UsernameTaken(f"The username {user.username!r} is taken.")
            session.add(user)
            session.flush()
            token = _issue_token(session, user)
            device_token = _issue_device(session, user)
            history.record(
                session,
                user_id=user.id,
                action="register",
                entity_type="user",
                entity_id=user.id,
                details={"role": user.role},
            )
    except IntegrityError as error:
        # Two registrations of one name, or of look-alikes, at once: a unique index decides.
        raise UsernameTaken(f"The username {user.username!r} is taken.") from error
    return SignedIn(user=user, token=token, device_token=device_token)


def login(*, username: str, password: str, device_token: str | None = None) -> SignedIn:
    """Check the password and issue a new token; a device keeps its device token."""
    key = usernames.username_key(username)
    with db.transaction() as session:
        user = session.scalar(select(User).where(User.username_key == key))
        if user is None:
            check_password_hash(_dummy_hash(settings.password_hash_method), password)
            raise InvalidCredentials()
        if not check_password_hash(user.password_hash, password):
            raise InvalidCredentials()
        token = _issue_token(session, user)
        device_token = _keep_or_issue_device(session, user, device_token)
        history.record(
            session, user_id=user.id, action="login", entity_type="user", entity_id=user.id
        )
    return SignedIn(user=user, token=token, device_token=device_token)


def logout(*, user: User, token: str) -> None:
    """Revoke the token the request came with, in the session cache first (sessions.py)."""
    sessions.forget_everywhere(token=token)
    with db.transaction() as session:
        session.execute(
            update(ApiToken)
            .where(ApiToken.token_hash == sessions.hash_token(token), ApiToken.revoked_at.is_(None))
            .values(revoked_at=func.now())
        )
        history.record(
            session, user_id=user.id, action="logout", entity_type="user", entity_id=user.id
        )


def authenticate(*, token: str) -> User:
    """Return the user a live token belongs to, or raise Unauthorized."""
    return sessions.authenticate(token=token)


def create_admin(*, username: str, password: str, email: str) -> User:
    """Create an admin account (CLI only; admins cannot register over HTTP)."""
    return register(role=Role.ADMIN, username=username, password=password, email=email).user


# One batch per transaction, so that a purge of a huge backlog never holds its locks long.
_PURGE_BATCH = {
    "tokens expired": text(
        "DELETE FROM api_tokens WHERE id IN (SELECT id FROM api_tokens "
        "WHERE expires_at < now() - make_interval(secs => :grace) LIMIT :batch)"
    ),
    "tokens revoked": text(
        "DELETE FROM api_tokens WHERE id IN (SELECT id FROM api_tokens "
        "WHERE revoked_at < now() - make_interval(secs => :grace) LIMIT :batch)"
    ),
    "devices unused": text(
        "DELETE FROM login_devices WHERE id IN (SELECT id FROM login_devices "
        "WHERE last_used_at < now() - make_interval(secs => :grace) LIMIT :batch)"
    ),
}


def _purge(statement: str, *, grace: timedelta, batch_size: int) -> int:
    deleted = 0
    while True:
        with db.transaction() as session:
            result = session.execute(
                _PURGE_BATCH[statement],
                {"grace": grace.total_seconds(), "batch": batch_size},
            )
            count = int(result.rowcount or 0)
        deleted += count
        if count < batch_size:
            return deleted


def purge_tokens(*, grace: timedelta, batch_size: int = 1000) -> int:
    """Delete bearer tokens expired or revoked more than ``grace`` ago; return how many."""
    return _purge("tokens expired", grace=grace, batch_size=batch_size) + _purge(
        "tokens revoked", grace=grace, batch_size=batch_size
    )


def purge_stale_devices(*, batch_size: int = 1000) -> int:
    """Delete login devices unused for longer than their lifetime; return how many."""
    return _purge("devices unused", grace=settings.device_ttl, batch_size=batch_size)
