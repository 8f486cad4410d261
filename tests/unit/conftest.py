"""Unit tests exercise pure rules: no PostgreSQL, no Redis, no server (make test-unit).

The suite-wide fixtures that reach PostgreSQL or Redis are replaced here: ``app`` by one
built without the test database (building it connects to nothing), the schema and Redis by
ones that fail, so a test that needs either goes to a tier that has them (tests/api).
"""

import pytest
from flask import Flask

from tests.conftest import build_app


@pytest.fixture(autouse=True)
def clean_state() -> None:
    """Override the suite-wide reset: nothing here touches PostgreSQL or Redis."""


@pytest.fixture(scope="session")
def app() -> Flask:
    return build_app()


@pytest.fixture(scope="session")
def test_schema() -> None:
    pytest.fail("tests/unit needs no database: put a test that does in tests/api")


@pytest.fixture(scope="session")
def redis_conn() -> None:
    pytest.fail("tests/unit needs no Redis: put a test that does in tests/api")
