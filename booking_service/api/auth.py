"""Registration, sign-in and the current user."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from booking_service.api.access import auth_required, bearer_token, current_user
from booking_service.api.blueprint import Blueprint
from booking_service.api.limits import limit_sign_in
from booking_service.api.problems import problems
from booking_service.api.schemas import (
    CustomerRegistrationSchema,
    LoginSchema,
    OrganizerRegistrationSchema,
    SignedInSchema,
    UserSchema,
)
from booking_service.errors import (
    DbUnavailable,
    InvalidCredentials,
    OutcomeUnknown,
    SessionStoreUnavailable,
    UsernameTaken,
    ValidationFailed,
)
from booking_service.models import Role, User
from booking_service.services import accounts

blp = Blueprint("auth", __name__, url_prefix="/api/v1/auth", description="Accounts and tokens")


@blp.route("/register/organizer")
class RegisterOrganizer(MethodView):
    @limit_sign_in(blp, setting="RATE_LIMIT_REGISTER", scope="register")
    @blp.arguments(OrganizerRegistrationSchema)
    @blp.response(201, SignedInSchema)
    @problems(blp, ValidationFailed, UsernameTaken, DbUnavailable, OutcomeUnknown)
    def post(self, body: dict[str, Any]) -> accounts.SignedIn:
        """Register an organizer account and sign it in"""
        return accounts.register(role=Role.ORGANIZER, **body)


@blp.route("/register/customer")
class RegisterCustomer(MethodView):
    @limit_sign_in(blp, setting="RATE_LIMIT_REGISTER", scope="register")
    @blp.arguments(CustomerRegistrationSchema)
    @blp.response(201, SignedInSchema)
    @problems(blp, ValidationFailed, UsernameTaken, DbUnavailable, OutcomeUnknown)
    def post(self, body: dict[str, Any]) -> accounts.SignedIn:
        """Register a customer account and sign it in"""
        return accounts.register(role=Role.CUSTOMER, **body)


@blp.route("/login")
class Login(MethodView):
    @limit_sign_in(blp, setting="RATE_LIMIT_LOGIN", scope="login", devices=True)
    @blp.arguments(LoginSchema)
    @blp.response(200, SignedInSchema)
    @problems(blp, ValidationFailed, InvalidCredentials, DbUnavailable, OutcomeUnknown)
    def post(self, body: dict[str, Any]) -> accounts.SignedIn:
        """Sign in with username and password (and the device token, if any); returns a token"""
        return accounts.login(**body)


@blp.route("/logout")
class Logout(MethodView):
    @auth_required(blp)
    @blp.response(204)
    @problems(blp, SessionStoreUnavailable, OutcomeUnknown)
    def post(self) -> None:
        """Revoke the token this request is made with, on every instance before answering"""
        accounts.logout(user=current_user(), token=bearer_token())


@blp.route("/me")
class Me(MethodView):
    @auth_required(blp)
    @blp.response(200, UserSchema)
    def get(self) -> User:
        """Return the signed-in user, with role and organizer fields"""
        return current_user()
