"""Unit tests exercise pure rules: no database or Redis reset around them."""

import pytest


@pytest.fixture(autouse=True)
def clean_state() -> None:
    """Override the suite-wide reset: nothing here touches PostgreSQL or Redis."""
