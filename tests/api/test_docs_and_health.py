"""The OpenAPI document, the self-hosted docs pages, health probes and the error format."""

from __future__ import annotations

import re
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient
from redis.backoff import NoBackoff
from redis.retry import Retry

from booking_service.redis_clients import redis_client
from tests import factories as f
from tests.factories import API, EVENT_FIELDS, assert_problem, auth


def unreachable_redis() -> redis.Redis:
    """A client for a port nothing listens on: refused at once, no retries."""
    return redis.Redis(
        host="127.0.0.1", port=1, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )


HTTP_METHODS = {"get", "post", "put", "patch", "delete"}
PROBLEM = "application/problem+json"
PROBLEM_FIELDS = {"type", "title", "status", "detail", "code"}

# Operations anyone may call; every other /api/v1 operation needs a bearer token.
PUBLIC = {
    ("post", "/api/v1/auth/register/organizer"),
    ("post", "/api/v1/auth/register/customer"),
    ("post", "/api/v1/auth/login"),
    ("get", "/api/v1/events"),
    ("get", "/api/v1/events/{event_id}"),
}
# Operations open to everyone but with optional authentication (GET /events?mine=true).
OPTIONAL_AUTH = {("get", "/api/v1/events")}
# Operations limited to a role: they must document 403 as well as 401.
ROLE_LIMITED = {
    ("post", "/api/v1/events"),
    ("patch", "/api/v1/events/{event_id}"),
    ("delete", "/api/v1/events/{event_id}"),
    ("get", "/api/v1/events/{event_id}/bookings"),
    ("post", "/api/v1/bookings"),
    ("delete", "/api/v1/bookings/{booking_id}"),
    ("post", "/api/v1/bookings/{booking_id}/cancel"),
    ("post", "/api/v1/bookings/{booking_id}/reactivate"),
}


@pytest.fixture
def spec(client: FlaskClient) -> dict[str, Any]:
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    assert response.content_type.startswith("application/json")
    return response.get_json()


def v1_operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    operations = [
        (method, path, operation)
        for path, item in spec["paths"].items()
        if path.startswith("/api/v1/")
        for method, operation in item.items()
        if method in HTTP_METHODS
    ]
    assert len(operations) >= 19
    return operations


def resolve_response(spec: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    ref = response.get("$ref")
    if ref is None:
        return response
    name = ref.removeprefix("#/components/responses/")
    return spec["components"]["responses"][name]


# --- OpenAPI document -------------------------------------------------------------------


def test_openapi_document_describes_the_service(spec: dict[str, Any]):
    assert spec["openapi"].startswith("3.")
    assert spec["info"]["title"] == "booking-service"
    assert spec["info"]["version"] == "v1"
    scheme = spec["components"]["securitySchemes"]["bearerAuth"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")


def test_every_contract_path_is_documented(spec: dict[str, Any]):
    expected = {
        ("post", "/api/v1/auth/register/organizer"),
        ("post", "/api/v1/auth/register/customer"),
        ("post", "/api/v1/auth/login"),
        ("post", "/api/v1/auth/logout"),
        ("get", "/api/v1/auth/me"),
        ("get", "/api/v1/events"),
        ("post", "/api/v1/events"),
        ("get", "/api/v1/events/{event_id}"),
        ("patch", "/api/v1/events/{event_id}"),
        ("delete", "/api/v1/events/{event_id}"),
        ("get", "/api/v1/events/{event_id}/bookings"),
        ("post", "/api/v1/bookings"),
        ("get", "/api/v1/bookings"),
        ("get", "/api/v1/bookings/{booking_id}"),
        ("post", "/api/v1/bookings/{booking_id}/cancel"),
        ("post", "/api/v1/bookings/{booking_id}/reactivate"),
        ("delete", "/api/v1/bookings/{booking_id}"),
        ("get", "/api/v1/history"),
        ("get", "/api/v1/history/{entry_id}"),
    }

    documented = {(method, path) for method, path, _ in v1_operations(spec)}

    assert expected <= documented


def test_every_operation_has_a_summary(spec: dict[str, Any]):
    missing = [
        f"{method.upper()} {path}"
        for method, path, operation in v1_operations(spec)
        if not operation.get("summary", "").strip()
    ]

    assert missing == []


def test_operations_needing_auth_declare_bearer_security(spec: dict[str, Any]):
    wrong = []
    for method, path, operation in v1_operations(spec):
        security = operation.get("security", [])
        if (method, path) in OPTIONAL_AUTH:
            ok = {} in security and {"bearerAuth": []} in security
        elif (method, path) in PUBLIC:
            ok = not security
        else:
            ok = security == [{"bearerAuth": []}]
        if not ok:
            wrong.append(f"{method.upper()} {path}: {security}")

    assert wrong == []


def test_operations_needing_auth_document_401(spec: dict[str, Any]):
    missing = [
        f"{method.upper()} {path}"
        for method, path, operation in v1_operations(spec)
        if operation.get("security") and "401" not in operation["responses"]
    ]

    assert missing == []


def test_role_limited_operations_document_403(spec: dict[str, Any]):
    operations = {(m, p): op for m, p, op in v1_operations(spec)}

    missing = [
        f"{m.upper()} {p}" for m, p in ROLE_LIMITED if "403" not in operations[(m, p)]["responses"]
    ]

    assert missing == []


def test_operations_on_an_id_document_404(spec: dict[str, Any]):
    missing = [
        f"{method.upper()} {path}"
        for method, path, operation in v1_operations(spec)
        if re.search(r"\{\w+_id\}", path) and "404" not in operation["responses"]
    ]

    assert missing == []


def test_operations_with_input_document_422(spec: dict[str, Any]):
    missing = [
        f"{method.upper()} {path}"
        for method, path, operation in v1_operations(spec)
        if (
            "requestBody" in operation
            or any(p.get("in") == "query" for p in operation.get("parameters", []))
        )
        and "422" not in operation["responses"]
    ]

    assert missing == []


def test_contract_error_codes_are_documented(spec: dict[str, Any]):
    def described(path: str, method: str, status: str) -> str:
        response = spec["paths"][path][method]["responses"][status]
        return resolve_response(spec, response)["description"]

    assert "username_taken" in described("/api/v1/auth/register/customer", "post", "409")
    assert "invalid_credentials" in described("/api/v1/auth/login", "post", "401")
    assert "event_not_found" in described("/api/v1/events/{event_id}", "get", "404")
    assert "capacity_below_bookings" in described("/api/v1/events/{event_id}", "patch", "409")
    booking_409 = described("/api/v1/bookings", "post", "409")
    assert "event_full" in booking_409 and "already_booked" in booking_409
    booking_422 = described("/api/v1/bookings", "post", "422")
    assert "event_started" in booking_422 and "event_ended" in booking_422
    booking_503 = described("/api/v1/bookings", "post", "503")
    for code in ("lock_timeout", "lock_unavailable", "db_unavailable"):
        assert code in booking_503
    assert "not_active" in described("/api/v1/bookings/{booking_id}/cancel", "post", "409")
    reactivate_409 = described("/api/v1/bookings/{booking_id}/reactivate", "post", "409")
    assert "already_active" in reactivate_409 and "already_booked" in reactivate_409
    assert "history_entry_not_found" in described("/api/v1/history/{entry_id}", "get", "404")


def test_error_responses_are_documented_as_problem_json(spec: dict[str, Any]):
    wrong = []
    for method, path, operation in v1_operations(spec):
        for status, response in operation["responses"].items():
            if status != "default" and int(status) < 400:
                continue
            content = resolve_response(spec, response).get("content", {})
            if set(content) != {PROBLEM}:
                wrong.append(f"{method.upper()} {path} {status}: {sorted(content)}")

    assert wrong == []


def test_503_responses_document_retry_after(spec: dict[str, Any]):
    with_503 = [
        (method, path, operation["responses"]["503"])
        for method, path, operation in v1_operations(spec)
        if "503" in operation["responses"]
    ]

    assert with_503
    for method, path, response in with_503:
        assert "Retry-After" in response.get("headers", {}), f"{method} {path}"


def test_list_operations_document_pagination(spec: dict[str, Any]):
    for path in ("/api/v1/events", "/api/v1/bookings", "/api/v1/history"):
        operation = spec["paths"][path]["get"]
        names = {p["name"] for p in operation["parameters"]}
        assert {"page", "page_size"} <= names, path
        page_size = next(p for p in operation["parameters"] if p["name"] == "page_size")
        assert page_size["schema"]["maximum"] == 100
        assert "X-Pagination" in operation["responses"]["200"]["headers"], path


def test_event_schema_lists_every_contract_field(spec: dict[str, Any]):
    properties = set(spec["components"]["schemas"]["Event"]["properties"])

    assert properties >= EVENT_FIELDS


def test_password_is_write_only_in_the_document(spec: dict[str, Any]):
    schemas = spec["components"]["schemas"]

    assert "password" not in schemas["User"]["properties"]
    assert "password" in schemas["CustomerRegistration"]["properties"]


# --- docs pages -------------------------------------------------------------------------


def asset_urls(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]+)"', html)


@pytest.mark.parametrize("page", ["/api/docs", "/api/redoc"])
def test_docs_page_loads_without_external_hosts(client: FlaskClient, page: str):
    response = client.get(page)

    assert response.status_code == 200
    assert response.content_type.startswith("text/html")
    html = response.get_data(as_text=True)
    assert re.findall(r"https?://", html) == []
    assert re.findall(r'(?:src|href)="//', html) == []
    assets = asset_urls(html)
    assert assets, "the page should load the UI from local assets"
    assert all(url.startswith("/static/vendor/") for url in assets), assets
    assert "/api/openapi.json" in html


@pytest.mark.parametrize("page", ["/api/docs", "/api/redoc"])
def test_docs_assets_are_served_locally(client: FlaskClient, page: str):
    html = client.get(page).get_data(as_text=True)

    for url in asset_urls(html):
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.get_data()) > 1000, url
        asset.close()


def test_swagger_ui_loads_script_and_stylesheet(client: FlaskClient):
    html = client.get("/api/docs").get_data(as_text=True)

    assets = asset_urls(html)
    assert any(url.endswith(".js") for url in assets)
    assert any(url.endswith(".css") for url in assets)


# --- health -----------------------------------------------------------------------------


def test_livez_answers_ok(client: FlaskClient):
    response = client.get("/livez")

    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_readyz_reports_both_dependencies(client: FlaskClient):
    response = client.get("/readyz")

    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ok"
    assert body["checks"] == {"postgresql": "ok", "redis": "ok"}


def test_readyz_names_unreachable_redis(client: FlaskClient, monkeypatch: pytest.MonkeyPatch):
    unreachable = unreachable_redis()
    monkeypatch.setattr(redis_client, "client", unreachable)

    response = client.get("/readyz")

    problem = assert_problem(response, 503, "not_ready")
    assert "redis" in problem["detail"]
    assert "postgresql" not in problem["detail"]
    assert set(problem["errors"]) == {"redis"}
    assert response.headers["Retry-After"]


def test_livez_does_not_depend_on_redis(client: FlaskClient, monkeypatch: pytest.MonkeyPatch):
    unreachable = unreachable_redis()
    monkeypatch.setattr(redis_client, "client", unreachable)

    assert client.get("/livez").status_code == 200


# --- error format -----------------------------------------------------------------------


def test_domain_errors_are_problem_json(client: FlaskClient):
    response = client.get(f"{API}/events/42")

    problem = assert_problem(response, 404, "event_not_found")
    assert "errors" not in problem


def test_validation_errors_are_problem_json_with_field_errors(client: FlaskClient):
    response = client.post(f"{API}/auth/register/customer", json={"username": "x"})

    problem = assert_problem(response, 422, "validation_error")
    assert isinstance(problem["errors"], dict)
    assert all(isinstance(messages, list) for messages in problem["errors"].values())
    assert "json" not in problem["errors"]  # flattened: field → messages, not by location


def test_query_validation_errors_are_flattened_too(client: FlaskClient):
    response = client.get(f"{API}/events", query_string={"when": "later"})

    problem = assert_problem(response, 422, "validation_error")
    assert set(problem["errors"]) == {"when"}


def test_authentication_errors_are_problem_json(client: FlaskClient):
    assert_problem(client.get(f"{API}/auth/me"), 401, "unauthorized")


def test_forbidden_errors_are_problem_json(client: FlaskClient):
    token = f.customer(client)["token"]

    assert_problem(client.post(f"{API}/events", json={}, headers=auth(token)), 403, "forbidden")


def test_unknown_route_is_problem_json(client: FlaskClient):
    assert_problem(client.get(f"{API}/no-such-thing"), 404, "not_found")
    assert_problem(client.get("/definitely/not/here"), 404, "not_found")


def test_wrong_method_is_problem_json_with_allow_header(client: FlaskClient):
    response = client.put(f"{API}/events")

    assert_problem(response, 405, "method_not_allowed")
    allowed = {m.strip() for m in response.headers["Allow"].split(",")}
    assert {"GET", "POST"} <= allowed


def test_wrong_method_on_item_is_problem_json(client: FlaskClient):
    response = client.put(f"{API}/bookings/1")

    assert_problem(response, 405, "method_not_allowed")


def test_malformed_json_is_problem_json(client: FlaskClient):
    response = client.post(f"{API}/auth/login", data="{not json", content_type="application/json")

    assert_problem(response, 400, "bad_request")


def test_oversized_body_is_problem_json(client: FlaskClient, app):
    limit = app.config["MAX_CONTENT_LENGTH"]
    body = '{"username": "' + "x" * (limit + 10) + '"}'

    response = client.post(f"{API}/auth/login", data=body, content_type="application/json")

    assert_problem(response, 413, "payload_too_large")
