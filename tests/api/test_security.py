"""Security hygiene: security headers, body size limit, CORS, closed operator routes, clean logs.

Most checks use the test client. CORS with configured origins, chunked bodies, the access log
and the docs pages in a real browser need a running gunicorn instance (one for the module).
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient

from booking_service.services import accounts
from harness.instances import AppInstance
from tests import factories as f
from tests.factories import API, PASSWORD, auth
from tests.support.instances import instance_env

ALLOWED_ORIGIN = "https://app.example.com"
OPS_TOKEN = "ops-" + secrets.token_urlsafe(16)


@pytest.fixture(scope="module")
def instance(app: Flask) -> Iterator[AppInstance]:
    # ``app`` first: it creates the schema the instance uses.
    env = instance_env(
        ACCESS_LOG="-",
        LOG_LEVEL="DEBUG",
        CORS_ORIGINS=f"{ALLOWED_ORIGIN}, https://admin.example.com",
        OPS_TOKEN=OPS_TOKEN,
    )
    with AppInstance(env, workers=1, threads=4, name="security") as running:
        yield running


# --- security headers -------------------------------------------------------------------


def assert_hardened(response: Any) -> None:
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("get", f"{API}/events", 200),
        ("get", f"{API}/events/999", 404),
        ("get", f"{API}/auth/me", 401),
        ("post", f"{API}/auth/login", 422),
        ("get", "/livez", 200),
        ("get", "/api/openapi.json", 200),
    ],
)
def test_api_answers_carry_security_headers_and_no_store(
    client: FlaskClient, method: str, path: str, status: int
) -> None:
    response = getattr(client, method)(path, json={} if method == "post" else None)
    assert response.status_code == status
    assert_hardened(response)
    assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert response.headers["Cache-Control"] == "no-store"


def test_signed_in_answers_are_not_cached(client: FlaskClient) -> None:
    user = f.customer(client)
    response = client.get(f"{API}/auth/me", headers=auth(user["token"]))
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"


def _inline_script_hashes(html: str) -> set[str]:
    import base64
    import hashlib

    return {
        "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"
        for script in re.findall(r"<script>(.*?)</script>", html, re.DOTALL)
    }


def test_swagger_ui_policy_allows_its_own_assets_and_inline_script_only(
    client: FlaskClient,
) -> None:
    page = client.get("/api/docs")
    assert page.status_code == 200
    assert_hardened(page)
    csp = page.headers["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    html = page.get_data(as_text=True)
    hashes = _inline_script_hashes(html)
    assert hashes  # Swagger UI's page configures itself in an inline script
    assert set(directives["script-src"].split()) == {"'self'", *hashes}
    assert "'unsafe-inline'" not in directives["script-src"]
    assert "'unsafe-eval'" not in csp
    assert directives["default-src"] == "'none'"

    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert len(assets) == 3
    for asset in assets:
        assert asset.startswith("/static/vendor/")  # same origin: 'self' covers them
        response = client.get(asset)
        assert response.status_code == 200, asset
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        # Public vendored files keep their caching headers.
        assert response.headers.get("Cache-Control") != "no-store"
        response.close()


def test_redoc_policy_allows_its_worker_and_styles(client: FlaskClient) -> None:
    page = client.get("/api/redoc")
    assert page.status_code == 200
    csp = page.headers["Content-Security-Policy"]
    assert "worker-src 'self' blob:" in csp
    assert "style-src 'self' 'unsafe-inline'" in csp
    [script] = re.findall(r'<script src="([^"]+)"', page.get_data(as_text=True))
    asset = client.get(script)
    assert asset.status_code == 200
    asset.close()


def test_a_view_keeps_its_own_content_security_policy(client: FlaskClient) -> None:
    from booking_service.ops.views import DASHBOARD_CSP

    page = client.get("/ops")
    assert page.status_code == 200
    assert page.headers["Content-Security-Policy"] == DASHBOARD_CSP
    assert page.headers["X-Frame-Options"] == "DENY"


@pytest.mark.slow  # a gunicorn instance (``instance``)
@pytest.mark.parametrize("page", ["docs", "redoc"])
def test_docs_render_in_a_browser_under_the_policy(instance: AppInstance, page: str) -> None:
    result = subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=20000",
            "--dump-dom",
            f"{instance.base_url}/api/{page}",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    # The operation summaries only appear once the page's scripts ran and fetched the spec.
    assert "Book seats on an event" in result.stdout, result.stderr[-3000:]
    violations = [
        line
        for line in result.stderr.splitlines()
        if "Content Security Policy" in line
        # ReDoc links its logo from its CDN; blocked, and there is no internet here anyway.
        and "cdn.redoc.ly" not in line
    ]
    assert violations == []


# --- body size --------------------------------------------------------------------------


def assert_too_large(response: Any) -> None:
    assert response.status_code == 413
    assert response.content_type == "application/problem+json"
    assert response.get_json()["code"] == "payload_too_large"


def test_an_oversized_body_is_413_before_anything_runs(app: Flask, client: FlaskClient) -> None:
    limit = app.config["MAX_CONTENT_LENGTH"]
    body = '{"username": "big", "password": "' + "x" * limit + '", "email": "a@b.cd"}'
    response = client.post(
        f"{API}/auth/register/customer", data=body, content_type="application/json"
    )
    assert_too_large(response)
    assert f.count_rows("users") == 0


def test_an_oversized_booking_body_books_nothing(app: Flask, client: FlaskClient) -> None:
    organizer, customer = f.organizer(client), f.customer(client)
    event = f.create_event(client, organizer["token"])
    body = json.dumps({"event_id": event["id"], "pad": "x" * app.config["MAX_CONTENT_LENGTH"]})
    response = client.post(
        f"{API}/bookings",
        data=body,
        content_type="application/json",
        headers=auth(customer["token"]),
    )
    assert_too_large(response)
    assert f.booked_count(event["id"]) == 0


def test_a_body_at_the_limit_is_read(app: Flask, client: FlaskClient) -> None:
    limit = app.config["MAX_CONTENT_LENGTH"]
    prefix, suffix = '{"username": "u", "password": "', '"}'
    body = prefix + "x" * (limit - len(prefix) - len(suffix)) + suffix
    assert len(body) == limit
    response = client.post(f"{API}/auth/login", data=body, content_type="application/json")
    assert response.status_code == 422  # read and validated (password too long), not 413


@pytest.mark.slow  # a gunicorn instance (``instance``)
def test_a_chunked_oversized_body_is_413(app: Flask, instance: AppInstance) -> None:
    limit = app.config["MAX_CONTENT_LENGTH"]

    def chunks() -> Iterator[bytes]:
        yield b'{"username": "chunky", "password": "'
        for _ in range(limit // 8192 + 2):
            yield b"x" * 8192
        yield b'"}'

    response = requests.post(
        f"{instance.base_url}{API}/auth/login",
        data=chunks(),  # no Content-Length: Transfer-Encoding: chunked
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"

    # A chunked body that fits is read as usual.
    small = requests.post(
        f"{instance.base_url}{API}/auth/login",
        data=iter([b'{"username": "chunky", ', b'"password": "wrong"}']),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert small.status_code == 401


# --- CORS -------------------------------------------------------------------------------


def test_cors_is_off_unless_configured(client: FlaskClient) -> None:
    preflight = client.options(
        f"{API}/bookings",
        headers={
            "Origin": ALLOWED_ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    simple = client.get(f"{API}/events", headers={"Origin": ALLOWED_ORIGIN})
    for response in (preflight, simple):
        assert not [k for k, _ in response.headers.items() if k.startswith("Access-Control-")]


@pytest.mark.slow  # a gunicorn instance (``instance``)
def test_cors_allows_only_the_configured_origins(instance: AppInstance) -> None:
    url = f"{instance.base_url}{API}/bookings"
    preflight = requests.options(
        url,
        headers={
            "Origin": ALLOWED_ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
        },
        timeout=10,
    )
    assert preflight.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
    allowed = preflight.headers["Access-Control-Allow-Headers"].lower()
    assert {"authorization", "content-type", "idempotency-key"} <= {
        h.strip() for h in allowed.split(",")
    }
    assert "Access-Control-Allow-Credentials" not in preflight.headers

    listing = requests.get(
        f"{instance.base_url}{API}/events", headers={"Origin": ALLOWED_ORIGIN}, timeout=10
    )
    assert listing.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
    exposed = {
        h.strip().lower() for h in listing.headers["Access-Control-Expose-Headers"].split(",")
    }
    assert {"location", "retry-after", "x-pagination", "idempotent-replayed"} <= exposed

    for origin in ("https://evil.example.com", "https://app.example.com.evil.net", "null"):
        other = requests.options(
            url,
            headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
            timeout=10,
        )
        assert "Access-Control-Allow-Origin" not in other.headers, origin


# --- operator routes --------------------------------------------------------------------

OPS_ROUTES = [f"{API}/ops/locks", f"{API}/ops/stats"]


def admin_token(client: FlaskClient) -> str:
    accounts.create_admin(username="root", password=PASSWORD, email="root@example.com")
    response = client.post(f"{API}/auth/login", json={"username": "root", "password": PASSWORD})
    return response.get_json()["token"]


@pytest.mark.parametrize("path", OPS_ROUTES)
def test_operator_routes_are_closed_by_default(client: FlaskClient, path: str) -> None:
    assert client.application.config["OPS_TOKEN"] is None  # nothing configured
    customer, organizer = f.customer(client), f.organizer(client)

    assert client.get(path).status_code == 401
    for token in ("", "None", "null", "undefined"):
        assert client.get(path, headers={"Authorization": f"Bearer {token}"}).status_code == 401
    for user in (customer, organizer):
        response = client.get(path, headers=auth(user["token"]))
        assert response.status_code == 403
        assert response.get_json()["code"] == "forbidden"
    assert client.get(path, headers=auth(admin_token(client))).status_code == 200


@pytest.mark.slow  # a gunicorn instance (``instance``)
@pytest.mark.parametrize("path", OPS_ROUTES)
def test_operator_routes_take_the_configured_ops_token(instance: AppInstance, path: str) -> None:
    url = f"{instance.base_url}{path}"
    assert requests.get(url, headers=auth(OPS_TOKEN), timeout=10).status_code == 200
    assert requests.get(url, headers=auth(OPS_TOKEN + "x"), timeout=10).status_code == 401
    assert requests.get(url, timeout=10).status_code == 401


# --- logs -------------------------------------------------------------------------------


@pytest.mark.slow  # a gunicorn instance (``instance``)
def test_no_secret_reaches_the_logs(instance: AppInstance) -> None:
    base = f"{instance.base_url}{API}"
    password = "pw-" + secrets.token_urlsafe(12)
    username = "logcheck"
    registered = requests.post(
        f"{base}/auth/register/customer",
        json={"username": username, "password": password, "email": "log@example.com"},
        timeout=10,
    )
    assert registered.status_code == 201
    login = requests.post(
        f"{base}/auth/login", json={"username": username, "password": password}, timeout=10
    )
    token = login.json()["token"]
    wrong = requests.post(
        f"{base}/auth/login", json={"username": username, "password": password + "!"}, timeout=10
    )
    assert wrong.status_code == 401
    assert requests.get(f"{base}/auth/me", headers=auth(token), timeout=10).status_code == 200
    # A token in the query string (clients do this by mistake) must not be logged either.
    requests.get(f"{base}/auth/me", params={"access_token": token}, timeout=10)
    assert requests.get(f"{base}/ops/locks", headers=auth(OPS_TOKEN), timeout=10).ok
    assert requests.post(f"{base}/auth/logout", headers=auth(token), timeout=10).status_code == 204
    assert requests.get(f"{base}/auth/me", headers=auth(token), timeout=10).status_code == 401
    secrets_sent = {
        "password": password,
        "token": token,
        "registration token": registered.json()["token"],
        "ops token": OPS_TOKEN,
    }

    log = instance.log()

    # The access log is on and has seen these requests: the check below is not vacuous.
    assert re.search(r'"GET /api/v1/auth/me HTTP/1.1" 200', log), log[-2000:]
    assert '"POST /api/v1/auth/login HTTP/1.1" 401' in log
    for what, value in secrets_sent.items():
        assert value not in log, f"{what} found in the log"
    assert "Bearer" not in log
    assert "access_token" not in log


def test_database_errors_carry_no_bound_values(client: FlaskClient) -> None:
    # Such messages end up in logged tracebacks; a password hash there is an offline-crackable
    # secret.
    from sqlalchemy.exc import IntegrityError

    from booking_service.database import db
    from booking_service.models import User

    user = f.customer(client)["user"]
    with pytest.raises(IntegrityError) as caught, db.engine.begin() as connection:  # type: ignore[union-attr]
        connection.execute(
            User.__table__.insert().values(
                username=user["username"].upper(),
                username_key=user["username"],  # clashes with the unique username key
                email="dup@example.com",
                password_hash="pbkdf2:secret-hash-value",
                role="customer",
            )
        )
    assert "secret-hash-value" not in str(caught.value)
    assert "dup@example.com" not in str(caught.value)
