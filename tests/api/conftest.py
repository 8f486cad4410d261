"""Users most API tests start from, one fresh set per test."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from tests import factories as f


@pytest.fixture
def org(client: FlaskClient) -> dict[str, Any]:
    return f.organizer(client)


@pytest.fixture
def other_org(client: FlaskClient) -> dict[str, Any]:
    return f.organizer(client)


@pytest.fixture
def cust(client: FlaskClient) -> dict[str, Any]:
    return f.customer(client)


@pytest.fixture
def other_cust(client: FlaskClient) -> dict[str, Any]:
    return f.customer(client)
