"""The harness tests start their own poolers and Redis nodes and use their own database
(booking_harness_test): they need neither the service's schema nor its Redis database, so
the suite-wide reset of both (tests/conftest.py's autouse ``clean_state``) is left out here.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def clean_state() -> Iterator[None]:
    yield
