"""Who may read the operator views: admins and the OPS_TOKEN, nobody else (closed by default)."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient

from booking_service.services import accounts
from tests.factories import API, PASSWORD, auth, customer, organizer

OPS_PATHS = (f"{API}/ops/locks", f"{API}/ops/stats")
OPS_TOKEN = "ops-token-for-tests-0123456789"


def admin_token(client: FlaskClient) -> str:
    accounts.create_admin(username="root", password=PASSWORD, email="root@example.com")
    response = client.post(f"{API}/auth/login", json={"username": "root", "password": PASSWORD})
    assert response.status_code == 200, response.get_json()
    return response.get_json()["token"]


@pytest.fixture
def ops_token(app: Flask, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(app.config, "OPS_TOKEN", OPS_TOKEN)
    return OPS_TOKEN


@pytest.mark.parametrize("path", OPS_PATHS)
def test_anonymous_gets_401_problem(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 401
    assert response.content_type == "application/problem+json"
    assert response.get_json()["code"] == "unauthorized"


@pytest.mark.parametrize("path", OPS_PATHS)
@pytest.mark.parametrize("role", ["customer", "organizer"])
def test_non_admin_user_gets_403(client: FlaskClient, path: str, role: str) -> None:
    token = (customer if role == "customer" else organizer)(client)["token"]
    response = client.get(path, headers=auth(token))
    assert response.status_code == 403
    assert response.get_json()["code"] == "forbidden"


@pytest.mark.parametrize("path", OPS_PATHS)
def test_admin_gets_200(client: FlaskClient, path: str) -> None:
    response = client.get(path, headers=auth(admin_token(client)))
    assert response.status_code == 200, response.get_json()


@pytest.mark.parametrize("path", OPS_PATHS)
def test_ops_token_gets_200(client: FlaskClient, ops_token: str, path: str) -> None:
    response = client.get(path, headers=auth(ops_token))
    assert response.status_code == 200, response.get_json()


@pytest.mark.parametrize("path", OPS_PATHS)
@pytest.mark.parametrize(
    "header",
    [
        f"Bearer {OPS_TOKEN}x",
        f"Bearer {OPS_TOKEN[:-1]}",
        "Bearer wrong",
        "Bearer caf\u00e9",  # non-ASCII must be a mismatch, not a server error
        f"Basic {OPS_TOKEN}",
        OPS_TOKEN,
    ],
)
def test_wrong_ops_token_gets_401(
    client: FlaskClient, ops_token: str, path: str, header: str
) -> None:
    response = client.get(path, headers={"Authorization": header})
    assert response.status_code == 401


@pytest.mark.parametrize("path", OPS_PATHS)
def test_closed_by_default_without_ops_token(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    # No OPS_TOKEN configured: an empty bearer or the literal "None" must not get in.
    monkeypatch.setitem(app.config, "OPS_TOKEN", None)
    for header in ("Bearer ", "Bearer None", "Bearer null"):
        assert client.get(path, headers={"Authorization": header}).status_code == 401


def test_revoked_admin_token_gets_401(client: FlaskClient) -> None:
    token = admin_token(client)
    assert client.post(f"{API}/auth/logout", headers=auth(token)).status_code == 204
    assert client.get(OPS_PATHS[0], headers=auth(token)).status_code == 401


def test_dashboard_page_is_a_local_shell_without_data(client: FlaskClient) -> None:
    response = client.get("/ops")
    assert response.status_code == 200
    assert response.content_type.startswith("text/html")
    html = response.get_data(as_text=True)
    # Everything it loads comes from this service: no CDN, no external fonts.
    assert "http://" not in html and "https://" not in html and "//cdn" not in html
    assert 'src="/static/ops/ops.js"' in html and 'href="/static/ops/ops.css"' in html
    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    assert response.headers["Cache-Control"] == "no-store"
    for asset in ("/static/ops/ops.js", "/static/ops/ops.css"):
        served = client.get(asset)
        assert served.status_code == 200
        text = served.get_data(as_text=True)
        served.close()
        assert "https://" not in text and "@import" not in text and "url(http" not in text


def test_openapi_documents_ops_views_with_security_and_problems(client: FlaskClient) -> None:
    spec = client.get("/api/openapi.json").get_json()
    for path in ("/api/v1/ops/locks", "/api/v1/ops/stats"):
        operation = spec["paths"][path]["get"]
        assert operation["summary"]
        assert operation["security"] == [{"bearerAuth": []}]
        assert {"200", "401", "403"} <= set(operation["responses"])
        assert "application/problem+json" in operation["responses"]["401"]["content"]
    locks_schema = spec["paths"]["/api/v1/ops/locks"]["get"]["responses"]["200"]["content"]
    assert locks_schema["application/json"]["schema"]
    assert "/ops" not in spec["paths"]
