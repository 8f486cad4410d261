"""The deploy files are checked offline: no database, no Redis.

Overrides the suite-wide autouse ``clean_state`` fixture, which would empty the test database
and Redis before every test here for nothing.
"""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def clean_state() -> None:
    """Nothing to reset: these tests only read files and run offline tools."""
