"""Request hygiene: body size, JSON parsing, security headers, CORS and the client's address.

Rate limits have their own module, ``booking_service.ratelimit``; the JSON reader itself is
``booking_service.safe_json``.
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

from flask import Flask, Response, current_app, request
from flask.json.provider import DefaultJSONProvider
from flask_cors import CORS
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.middleware.proxy_fix import ProxyFix

from booking_service.safe_json import loads_json

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


# --- JSON bodies -------------------------------------------------------------------------


class RequestJSONProvider(DefaultJSONProvider):
    """Flask's JSON, with request bodies parsed by ``loads_json``; keys keep their order."""

    sort_keys = False

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return loads_json(s, **kwargs)


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
    """Install proxy handling, the body limit, JSON parsing, CORS and security headers."""
    app.json = RequestJSONProvider(app)
    if app.config["TRUSTED_PROXIES"]:
        hops = app.config["TRUSTED_PROXIES"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]
    app.before_request(_reject_oversized_body)
    _init_cors(app)
    app.after_request(_add_security_headers)
