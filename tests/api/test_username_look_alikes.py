"""Usernames a hostile client would pick: invisible characters and look-alikes of a taken name.

Through the HTTP API on the real PostgreSQL. A name holding a character that renders as
nothing (default-ignorable) or as blank is refused (422); a name that looks like a taken one
(one UTS #39 skeleton) is taken (409 username_taken, as a duplicate is), also when both
registrations race.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import text

from booking_service.database import db
from tests import factories as f
from tests.api.test_auth import REGISTER_CUSTOMER, REGISTER_ORGANIZER, customer_body
from tests.factories import PASSWORD


def assert_refused_for_the_username(response: Any) -> None:
    assert response.status_code == 422, response.get_json()
    problem = response.get_json()
    assert problem["code"] == "validation_error"
    assert set(problem["errors"]) == {"username"}
    assert any("invisible" in message for message in problem["errors"]["username"])


INVISIBLE = [
    "\u034f",  # COMBINING GRAPHEME JOINER
    "\ufe0f",  # VARIATION SELECTOR-16
    "\U000e0100",  # VARIATION SELECTOR-17
    "\u3164",  # HANGUL FILLER
    "\u115f",  # HANGUL CHOSEONG FILLER
    "\u17b4",  # KHMER VOWEL INHERENT AQ
    "\u2800",  # BRAILLE PATTERN BLANK (not ignorable: refused as blank)
]


@pytest.mark.parametrize("character", INVISIBLE, ids=lambda c: f"U+{ord(c):04X}")
def test_a_username_with_an_invisible_or_blank_character_is_refused(
    client: Any, character: str
) -> None:
    assert client.post(REGISTER_CUSTOMER, json=customer_body(username="carol")).status_code == 201

    for name in (f"car{character}ol", f"carol{character}", character):
        response = client.post(
            REGISTER_CUSTOMER, json=customer_body(username=name, email="x@example.com")
        )
        assert_refused_for_the_username(response)
    assert f.count_rows("users") == 1


LOOK_ALIKES = [
    ("carol", "c\u0430rol"),  # U+0430 CYRILLIC SMALL LETTER A
    ("carol", "C\u0430ROL"),  # and another case
    ("paypal", "paypa1"),
    ("modern", "rnodern"),
]


@pytest.mark.parametrize(("taken", "look_alike"), LOOK_ALIKES)
def test_a_look_alike_of_a_taken_username_is_taken(
    client: Any, taken: str, look_alike: str
) -> None:
    assert client.post(REGISTER_CUSTOMER, json=customer_body(username=taken)).status_code == 201

    response = client.post(
        REGISTER_ORGANIZER,
        json={
            **customer_body(username=look_alike, email="y@example.com"),
            "organization_name": "Look-alike Ltd",
        },
    )

    assert response.status_code == 409
    assert response.content_type == "application/problem+json"
    assert response.get_json()["code"] == "username_taken"
    assert f.count_rows("users") == 1
    # The taken name signs in as before; the look-alike is no account.
    login = client.post(f"{f.API}/auth/login", json={"username": taken, "password": PASSWORD})
    assert login.status_code == 200
    assert login.get_json()["user"]["username"] == taken
    stranger = client.post(
        f"{f.API}/auth/login", json={"username": look_alike, "password": PASSWORD}
    )
    assert stranger.status_code == 401


def test_a_name_that_only_resembles_loosely_registers(client: Any) -> None:
    assert client.post(REGISTER_CUSTOMER, json=customer_body(username="carol")).status_code == 201

    response = client.post(
        REGISTER_CUSTOMER, json=customer_body(username="carl", email="c@example.com")
    )

    assert response.status_code == 201


def _waiting_inserts() -> int:
    with db.engine.connect() as connection:  # type: ignore[union-attr]
        return int(
            connection.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE 'INSERT INTO users%' AND datname = current_database()"
                )
            )
        )


def test_two_look_alikes_registering_at_once_do_not_both_succeed(app: Flask) -> None:
    # Both registrations pass the service's look-up, then queue for the table behind a lock
    # this test holds; released together, only the unique index on the skeleton decides.
    assert db.engine is not None
    blocker = db.engine.connect()
    blocker.execute(text("LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE"))
    answers: dict[str, int] = {}

    def register(name: str) -> None:
        response = app.test_client().post(
            REGISTER_CUSTOMER, json=customer_body(username=name, email=f"{len(name)}@e.com")
        )
        answers[name] = response.status_code

    threads = [threading.Thread(target=register, args=(name,)) for name in ("carol", "c\u0430rol")]
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while _waiting_inserts() < 2:
            assert time.monotonic() < deadline, "the registrations never reached the insert"
            time.sleep(0.02)
    finally:
        blocker.rollback()
        blocker.close()
    for thread in threads:
        thread.join(timeout=10)

    assert sorted(answers.values()) == [201, 409]
    assert f.count_rows("users") == 1
