"""Accounts and bearer tokens."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from booking_service.errors import InvalidCredentials, UsernameTaken
from booking_service.extensions import db
from booking_service.models import ApiToken, Role, User
from booking_service.services import history, sessions


@dataclass
class AccountSettings:
    password_hash_method: str = "scrypt"
    token_ttl: timedelta = timedelta(days=30)


settings = AccountSettings()

# Checked when the username is unknown, so that a miss costs as much as a wrong password.
_DUMMY_HASH = generate_password_hash("not-a-real-password", method="pbkdf2:sha256:1000")


@dataclass(frozen=True)
class SignedIn:
    """A signed-in user and the bearer token that identifies the sign-in."""

    user: User
    token: str


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
    """Create an account and sign it in."""
    user = User(
        username=username,
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
            if session.scalar(select(User.id).where(func.lower(User.username) == username.lower())):
                raise UsernameTaken(f"The username {username!r} is taken.")
            session.add(user)
            session.flush()
            token = _issue_token(session, user)
            history.record(
                session,
                user_id=user.id,
                action="register",
                entity_type="user",
                entity_id=user.id,
                details={"role": user.role},
            )
    except IntegrityError as error:
        # Two registrations of one name at once: the unique index decides.
        raise UsernameTaken(f"The username {username!r} is taken.") from error
    return SignedIn(user=user, token=token)


def login(*, username: str, password: str) -> SignedIn:
    """Check the password and issue a new token."""
    with db.transaction() as session:
        user = session.scalar(select(User).where(func.lower(User.username) == username.lower()))
        if user is None:
            check_password_hash(_DUMMY_HASH, password)
            raise InvalidCredentials()
        if not check_password_hash(user.password_hash, password):
            raise InvalidCredentials()
        token = _issue_token(session, user)
        history.record(
            session, user_id=user.id, action="login", entity_type="user", entity_id=user.id
        )
    return SignedIn(user=user, token=token)


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
