"""docker-compose.yml, offline: the Compose Specification's schema (check-jsonschema's vendored
copy) and the wiring the stack relies on: app instances through PgBouncer, migrations straight
to PostgreSQL, transaction pooling, and nothing that needs a variable set beforehand."""

from __future__ import annotations

import configparser
import re
import subprocess
import sys
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from harness.processes import PROJECT_ROOT

COMPOSE = PROJECT_ROOT / "docker-compose.yml"
APP_IMAGE = "booking-service:latest"
PGBOUNCER_INI = "/etc/pgbouncer/pgbouncer.ini"
# deploy/prometheus.yml's credentials_file.
METRICS_TOKEN_FILE = "/run/secrets/metrics_token"
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message}, ${NAME?message}.
VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def interpolate(value: str) -> str:
    """The value with no variable set, as `docker compose up` would see it on a fresh host."""

    def replace(match: re.Match[str]) -> str:
        if match["op"] in (":?", "?"):
            pytest.fail(f"{match[0]} makes compose refuse to start without {match['name']}")
        return match["arg"] if match["op"] in (":-", "-") else ""

    return VARIABLE.sub(replace, value).replace("$$", "$")


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: interpolate(str(value)) for key, value in env.items()}


def app_instances(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run the API (the image's default command): app1, app2, ..."""
    return {
        name: service
        for name, service in compose["services"].items()
        if service.get("image") == APP_IMAGE and "command" not in service
    }


def pgbouncer_ini(service: dict[str, Any]) -> configparser.ConfigParser:
    """The pgbouncer.ini file the service mounts (a path relative to the compose file)."""
    mounts = [
        volume.split(":")[0]
        for volume in service.get("volumes", [])
        if volume.split(":")[1] == PGBOUNCER_INI
    ]
    assert len(mounts) == 1, f"nothing is mounted at {PGBOUNCER_INI}"
    ini = configparser.ConfigParser()
    ini.read_string((COMPOSE.parent / mounts[0]).read_text())
    return ini


def test_compose_file_passes_the_compose_spec_schema() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            str(COMPOSE),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_variable_must_be_set_beforehand() -> None:
    text = COMPOSE.read_text()
    required = re.findall(r"\$\{\w+:?\?[^}]*\}", text)
    assert not required, f"compose would refuse to start without: {required}"


def test_app_instances_go_through_pgbouncer(compose: dict[str, Any]) -> None:
    services = compose["services"]
    instances = app_instances(compose)
    assert len(instances) >= 2, sorted(instances)
    pgbouncer = services["pgbouncer"]
    ini = pgbouncer_ini(pgbouncer)
    for name, service in instances.items():
        url = urlsplit(environment(service)["DATABASE_URL"])
        assert url.hostname == "pgbouncer", name
        assert url.port == int(ini["pgbouncer"]["listen_port"]), name
        assert service["depends_on"]["pgbouncer"]["condition"] == "service_healthy", name


def test_migrations_go_to_postgres_directly(compose: dict[str, Any]) -> None:
    migrate = compose["services"]["migrate"]
    assert migrate["command"] == ["flask", "--app", "wsgi", "init-db"]
    url = urlsplit(environment(migrate)["DATABASE_URL"])
    assert (url.hostname, url.port) == ("postgres", 5432)
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_pgbouncer_pools_transactions_in_front_of_postgres(compose: dict[str, Any]) -> None:
    pgbouncer = compose["services"]["pgbouncer"]
    ini = pgbouncer_ini(pgbouncer)
    assert ini["pgbouncer"]["pool_mode"] == "transaction"
    database = ini["databases"]["booking_service"]
    assert "host=postgres " in database and "port=5432 " in database
    assert pgbouncer["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert pgbouncer["healthcheck"]["test"], "pgbouncer has no healthcheck"
    # The user and password PgBouncer writes to its userlist are PostgreSQL's.
    env = environment(pgbouncer)
    postgres = environment(compose["services"]["postgres"])
    assert (env["DB_USER"], env["DB_PASSWORD"]) == (
        postgres["POSTGRES_USER"],
        postgres["POSTGRES_PASSWORD"],
    )


def test_prometheus_gets_the_token_the_instances_check(compose: dict[str, Any]) -> None:
    prometheus = compose["services"]["prometheus"]
    files = [
        item
        for item in prometheus.get("configs", []) + prometheus.get("secrets", [])
        if isinstance(item, dict) and item.get("target") == METRICS_TOKEN_FILE
    ]
    assert len(files) == 1, f"Prometheus reads the token from {METRICS_TOKEN_FILE}"
    source = files[0]["source"]
    definition = compose.get("configs", {}).get(source) or compose.get("secrets", {})[source]
    assert "content" in definition, "a token that needs a variable set beforehand"
    token = interpolate(definition["content"])
    for name, service in app_instances(compose).items():
        assert environment(service)["METRICS_TOKEN"] == token, name
    assert "change" in token, "the local default must say it is to be changed"


def test_header_points_at_an_existing_readme_section() -> None:
    header = COMPOSE.read_text().split("\nname:", 1)[0]
    sections = re.findall(r'section "([^"]+)"', header)
    assert sections, "the header names no README section"
    readme = (PROJECT_ROOT / "README.md").read_text()
    for section in sections:
        assert re.search(rf"^#+ {re.escape(section)}$", readme, re.M), section
