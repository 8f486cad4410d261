"""Rate limits on views: who is counted, the decorators, and the documented 429.

The counting itself (Redis, with a per-process fallback) is ``booking_service.ratelimit``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import current_app, request
from flask_smorest import Blueprint
from werkzeug.exceptions import RequestEntityTooLarge

from booking_service import usernames
from booking_service.api.access import current_admission, current_user, rate_limit_applied_by
from booking_service.api.blueprint import view_stage
from booking_service.api.problems import problems
from booking_service.errors import RateLimited
from booking_service.ratelimit import limiter
from booking_service.services import accounts

# --- who is counted ----------------------------------------------------------------------


def client_address() -> str:
    """Rate-limit key: the client's address (the proxy's, unless TRUSTED_PROXIES is set)."""
    return f"address:{request.remote_addr or 'unknown'}"


def username_key() -> str:
    """Rate-limit key: the username in the JSON body, normalized like the accounts table's key.

    Hashed, so that an arbitrary string from the body does not become a long Redis key name
    and no log line or key carries a username.
    """
    try:
        body = request.get_json(silent=True)
    except RequestEntityTooLarge:
        body = None
    username = body.get("username") if isinstance(body, dict) else None
    if not isinstance(username, str) or not username.strip():
        return "username:-"
    # surrogatepass: a lone surrogate (JSON allows "\ud800") is counted like any other name;
    # the body's validation then refuses it with a 422.
    name = usernames.username_key(username).encode("utf-8", "surrogatepass")
    return f"username:{hashlib.sha256(name).hexdigest()[:32]}"


def known_device() -> str | None:
    """Rate-limit key: the body's device token, if it is live for the body's username.

    Anything else (no token, a made-up one, another account's, an expired one) is None: the
    attempt is then counted per username.
    """
    try:
        body = request.get_json(silent=True)
    except RequestEntityTooLarge:
        return None
    if not isinstance(body, dict):
        return None
    token, username = body.get("device_token"), body.get("username")
    if not isinstance(token, str) or not isinstance(username, str) or not 0 < len(token) <= 128:
        return None
    try:
        token.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: no token has one
        return None
    if not accounts.is_known_device(username=username, device_token=token):
        return None
    return f"device:{hashlib.sha256(token.encode()).hexdigest()[:32]}"


def signed_in_user() -> str:
    """Rate-limit key: the authenticated user (use below ``auth_required``)."""
    return f"user:{current_user().id}"


# --- decorators --------------------------------------------------------------------------


def _enforce(setting: str, scope: str, who: str, message: str) -> None:
    # Settings are read per request: tests (and operators reloading config) change them.
    config = current_app.config
    if not config["RATE_LIMIT_ENABLED"]:
        return
    retry_after = limiter.hit(config[setting], scope, who)
    if retry_after is not None:
        raise RateLimited(message, seconds=retry_after)


def limit_sign_in(
    blp: Blueprint, *, setting: str, scope: str, devices: bool = False
) -> Callable[[Any], Any]:
    """Limit a sign-in style endpoint per client address and, separately, per username.

    Views sharing ``scope`` share the counters (both registration endpoints, for example).
    Place it above ``blp.arguments``: an invalid body counts as an attempt too. With
    ``devices`` (login), an attempt with a live device token of the username's account is
    counted per device token instead of per username, so that attempts without one cannot
    lock the account's known devices out.
    """
    message = "Too many attempts; wait for the time given in Retry-After."

    def decorator(func: Any) -> Any:
        @wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            _enforce(setting, f"{scope}-address", client_address(), message)
            device = known_device() if devices else None
            if device is None:
                _enforce(setting, f"{scope}-username", username_key(), message)
            else:
                _enforce(setting, f"{scope}-device", device, message)
            return func(*args, **kwargs)

        why = f"more attempts than {setting} allows, per client address or per username"
        if devices:
            why += " (per device token instead, with a live `device_token` of the account)"
        documented = problems(blp, RateLimited, why=why)(wrapper)
        return view_stage("rate_limit")(documented)

    return decorator


def limit_per_user(blp: Blueprint, *, setting: str, scope: str) -> Callable[[Any], Any]:
    """Limit an endpoint per signed-in user; place it below ``auth_required``, which counts
    the request in the round trip of its token lookup."""
    message = "Too many requests; wait for the time given in Retry-After."

    def decorator(func: Any) -> Any:
        @wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            admitted = current_admission()
            if admitted is not None and admitted.counted:
                if admitted.retry_after is not None:
                    raise RateLimited(message, seconds=admitted.retry_after)
            else:
                _enforce(setting, scope, signed_in_user(), message)
            return func(*args, **kwargs)

        rate_limit_applied_by(wrapper, setting=setting, scope=scope)
        why = f"more requests than {setting} allows, per user"
        documented = problems(blp, RateLimited, why=why)(wrapper)
        return view_stage("rate_limit")(documented)

    return decorator
