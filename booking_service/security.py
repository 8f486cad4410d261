"""Request hygiene: rate limits, body size, security headers, CORS and the client's address.

Rate limits are counted in the service's Redis (Flask-Limiter), so every instance shares them.
When that Redis is unreachable the limiter falls back to per-process counters and re-checks
Redis with backoff: sign-in and registration stay available (fail open), while the booking path
still fails closed on its own, through the event lock.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, current_app, request
from flask_cors import CORS
from flask_limiter import Limiter
from flask_limiter.errors import RateLimitExceeded
from flask_smorest import Blueprint
from redis.backoff import NoBackoff
from redis.retry import Retry
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.middleware.proxy_fix import ProxyFix

from booking_service import config as config_module
from booking_service.api.common import ProblemSchema, current_user
from booking_service.errors import handle_http_exception

# --- rate limits -------------------------------------------------------------------------


def client_address() -> str:
    """Rate-limit key: the client's address (the proxy's, unless TRUSTED_PROXIES is set)."""
    return f"address:{request.remote_addr or 'unknown'}"


def username_key() -> str:
    """Rate-limit key: the username in the JSON body, case-folded like the accounts table.

    Hashed, so that an arbitrary string from the body does not become a long Redis key name
    and the limiter's own log lines carry no usernames.
    """
    try:
        body = request.get_json(silent=True)
    except RequestEntityTooLarge:
        body = None
    username = body.get("username") if isinstance(body, dict) else None
    if not isinstance(username, str) or not username.strip():
        return "username:-"
    digest = hashlib.sha256(username.strip().lower().encode()).hexdigest()[:32]
    return f"username:{digest}"


def signed_in_user() -> str:
    """Rate-limit key: the authenticated user (use below ``auth_required``)."""
    return f"user:{current_user().id}"


limiter = Limiter(key_func=client_address, key_prefix="rate-limit", strategy="fixed-window")


@limiter.request_filter
def _rate_limits_disabled() -> bool:
    # Read per request, so that RATE_LIMIT_ENABLED can be flipped without a new Limiter.
    return not current_app.config["RATE_LIMIT_ENABLED"]


def _setting(name: str) -> Callable[[], str]:
    # Per request as well: tests (and operators reloading config) change limits in place.
    return lambda: current_app.config[name]


RETRY_AFTER_HEADER = {
    "Retry-After": {
        "description": "Seconds until the limit resets.",
        "schema": {"type": "integer"},
    }
}


def _document_429(blp: Blueprint, description: str) -> Callable[[Any], Any]:
    return blp.alt_response(
        429,
        schema=ProblemSchema,
        content_type="application/problem+json",
        description=f"`rate_limited`: {description}",
        headers=RETRY_AFTER_HEADER,
    )


def limit_sign_in(blp: Blueprint, *, setting: str, scope: str) -> Callable[[Any], Any]:
    """Limit a sign-in style endpoint per client address and, separately, per username.

    Views sharing ``scope`` share the counters (both registration endpoints, for example).
    """
    message = "Too many attempts; wait for the time given in Retry-After."
    by_address = limiter.shared_limit(
        _setting(setting),
        scope=f"{scope}-address",
        key_func=client_address,
        error_message=message,
    )
    by_username = limiter.shared_limit(
        _setting(setting),
        scope=f"{scope}-username",
        key_func=username_key,
        error_message=message,
    )

    def decorator(func: Any) -> Any:
        limited = by_address(by_username(func))
        return _document_429(
            blp, f"more attempts than {setting} allows, per client address or per username"
        )(limited)

    return decorator


def limit_per_user(blp: Blueprint, *, setting: str, scope: str) -> Callable[[Any], Any]:
    """Limit an endpoint per signed-in user; place it below ``auth_required``."""
    by_user = limiter.shared_limit(
        _setting(setting),
        scope=scope,
        key_func=signed_in_user,
        error_message="Too many requests; wait for the time given in Retry-After.",
    )

    def decorator(func: Any) -> Any:
        return _document_429(blp, f"more requests than {setting} allows, per user")(by_user(func))

    return decorator


def handle_rate_limited(error: RateLimitExceeded) -> Response:
    """429 as problem+json (code ``rate_limited``) with the seconds until the limit resets."""
    response = handle_http_exception(error)
    response.headers["Retry-After"] = str(_seconds_until_reset(error))
    return response


def _seconds_until_reset(error: RateLimitExceeded) -> int:
    current = limiter.current_limit
    try:
        if current is not None:
            reset_at = current.window[0]  # (RequestLimit.reset_at adds a second of slack)
            return max(1, math.ceil(reset_at - time.time()))
    except Exception:  # storage gone between the check and now: fall back to the window
        pass
    return max(1, int(error.limit.limit.get_expiry()))


def _storage_settings(config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The limits library's storage URI and options for the configured Redis."""
    timeout = config["REDIS_SOCKET_TIMEOUT_SECONDS"]
    options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        # No retries: a Redis that does not answer costs one timeout, then the in-memory
        # fallback takes over (the limiter re-checks Redis with backoff).
        "retry": Retry(NoBackoff(), 0),
    }
    if config.get("REDIS_PASSWORD"):
        options["password"] = config["REDIS_PASSWORD"]
    if not config.get("REDIS_SENTINELS"):
        return config["REDIS_URL"], options
    locations = ",".join(
        f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        for host, port in config_module.parse_sentinels(config["REDIS_SENTINELS"])
    )
    sentinel_kwargs: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    if config.get("REDIS_SENTINEL_PASSWORD"):
        sentinel_kwargs["password"] = config["REDIS_SENTINEL_PASSWORD"]
    options.update(
        db=config["REDIS_DB"],
        sentinel_kwargs=sentinel_kwargs,
        # Counters are read from the primary as well: replicas lag behind it (replication is
        # asynchronous), and a limit must see the hits just counted.
        use_replicas=False,
    )
    return f"redis+sentinel://{locations}/{config['REDIS_SENTINEL_SERVICE']}", options


def _init_limiter(app: Flask) -> None:
    storage_uri, storage_options = _storage_settings(app.config)
    app.config.update(
        RATELIMIT_STORAGE_URI=storage_uri,
        RATELIMIT_STORAGE_OPTIONS=storage_options,
        # Redis down: per-process counters (fail open), and never a 500 from the limiter.
        RATELIMIT_IN_MEMORY_FALLBACK_ENABLED=True,
        RATELIMIT_SWALLOW_ERRORS=True,
        # Retry-After is set by handle_rate_limited; X-RateLimit-* on every answer would cost
        # a Redis round trip per request.
        RATELIMIT_HEADERS_ENABLED=False,
    )
    limiter.init_app(app)
    app.register_error_handler(RateLimitExceeded, handle_rate_limited)


# --- body size ---------------------------------------------------------------------------


def _reject_oversized_body() -> None:
    # Before anything reads the body (the rate limiter's username key does): a declared length
    # over the limit is refused at once.
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if limit is None:
        return
    too_large = RequestEntityTooLarge(f"The request body is larger than {limit} bytes.")
    if (request.content_length or 0) > limit:
        raise too_large
    chunked = "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    # werkzeug silently cuts a chunked body off at the limit, which would then fail as invalid
    # JSON (400). Read it now (cached for the view): reaching the limit means it did not fit.
    if request.content_length is None and chunked and len(request.get_data(cache=True)) >= limit:
        raise too_large


# --- security headers --------------------------------------------------------------------

API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
# Swagger UI and ReDoc are served from /static/vendor. Both style elements at run time, and
# ReDoc runs its search index in a Worker created from a blob: URL.
DOCS_CSP = (
    "default-src 'none'; script-src 'self'{script_hashes}; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
DOCS_ENDPOINTS = ("api-docs.openapi_swagger_ui", "api-docs.openapi_redoc")
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)

HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def _docs_csp(response: Response) -> str:
    # The docs pages are rendered from fixed templates and app settings only (nothing from
    # the request), so allowing exactly their inline scripts by hash lets nothing else in.
    hashes = "".join(
        f" 'sha256-{base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()}'"
        for script in _INLINE_SCRIPT.findall(response.get_data(as_text=True))
    )
    return DOCS_CSP.format(script_hashes=hashes)


def _add_security_headers(response: Response) -> Response:
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    if "Content-Security-Policy" not in response.headers:  # a view may set its own
        if request.endpoint in DOCS_ENDPOINTS and not response.direct_passthrough:
            response.headers["Content-Security-Policy"] = _docs_csp(response)
        else:
            response.headers["Content-Security-Policy"] = API_CSP
    # Answers carry personal data and tokens; no cache on the way may keep them. The vendored
    # docs assets under /static are public and keep werkzeug's caching headers.
    if not request.path.startswith("/static/"):
        response.headers.setdefault("Cache-Control", "no-store")
    return response


# --- CORS --------------------------------------------------------------------------------

CORS_ALLOW_HEADERS = ["Authorization", "Content-Type", "Idempotency-Key"]
CORS_EXPOSE_HEADERS = ["Location", "Retry-After", "X-Pagination", "Idempotent-Replayed"]


def cors_origins(config: dict[str, Any]) -> list[str]:
    """The origins in CORS_ORIGINS (comma-separated); empty means CORS is off."""
    raw = config.get("CORS_ORIGINS") or ""
    return [origin.strip().rstrip("/") for origin in raw.split(",") if origin.strip()]


def _init_cors(app: Flask) -> None:
    origins = cors_origins(app.config)
    if not origins:
        return  # off: browsers on other origins cannot read any answer
    CORS(
        app,
        resources={r"/api/v1/*": {}},
        origins=origins,
        allow_headers=CORS_ALLOW_HEADERS,
        expose_headers=CORS_EXPOSE_HEADERS,
        # Bearer tokens, not cookies: browsers need not send credentials.
        supports_credentials=False,
        max_age=600,
    )


# --- wiring ------------------------------------------------------------------------------


def init_app(app: Flask) -> None:
    """Install proxy handling, the body limit, rate limits, CORS and security headers."""
    if app.config["TRUSTED_PROXIES"]:
        hops = app.config["TRUSTED_PROXIES"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]
    app.before_request(_reject_oversized_body)  # registered before the limiter's own hook
    _init_limiter(app)
    _init_cors(app)
    app.after_request(_add_security_headers)
