"""db.single_statement(): autocommit for one statement, and never a leak into the pool."""

from __future__ import annotations

import pytest
from flask import Flask
from sqlalchemy import text

from booking_service.database import db


def test_statement_commits_on_its_own_and_the_connection_goes_back_transactional(app: Flask):
    with db.single_statement() as connection:
        driver = connection.connection.dbapi_connection
        assert driver.autocommit is True
        # No transaction is open around the statement: the server sees none.
        assert connection.scalar(text("SELECT now() = statement_timestamp()")) is True
    assert driver.autocommit is False


def test_a_failed_statement_also_leaves_the_connection_transactional(app: Flask):
    with pytest.raises(ZeroDivisionError), db.single_statement() as connection:
        driver = connection.connection.dbapi_connection
        raise ZeroDivisionError
    assert driver.autocommit is False
