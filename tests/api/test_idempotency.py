"""Idempotency-Key on POST /bookings and POST /bookings/{id}/reactivate (IETF httpapi draft).

Same key and body: the first answer again, nothing done twice. Same key, other body: 422.
While the first request runs: 409. Keys are per user and expire; 5xx answers are not kept.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis
import redis_lock
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from booking_service.database import db
from booking_service.errors import IdempotencyInProgress, InvalidIdempotencyKey
from booking_service.locking import lock_name
from booking_service.services import idempotency
from tests import factories as f
from tests.factories import API, assert_problem, auth

BOOKINGS = f"{API}/bookings"


def book(client: FlaskClient, token: str, event_id: int, key: str | None, **kwargs: Any) -> Any:
    headers = auth(token)
    if key is not None:
        headers["Idempotency-Key"] = key
    return client.post(BOOKINGS, json={"event_id": event_id}, headers=headers, **kwargs)


def reactivate(client: FlaskClient, token: str, booking_id: int, key: str | None) -> Any:
    headers = auth(token)
    if key is not None:
        headers["Idempotency-Key"] = key
    return client.post(f"{BOOKINGS}/{booking_id}/reactivate", headers=headers)


def records(user_id: int | None = None) -> list[dict[str, Any]]:
    sql = "SELECT * FROM idempotency_keys"
    if user_id is not None:
        sql += " WHERE user_id = :user_id"
    with db.transaction() as session:
        return [dict(row) for row in session.execute(text(sql), {"user_id": user_id}).mappings()]


def run_sql(sql: str, **params: Any) -> None:
    with db.transaction() as session:
        session.execute(text(sql), params)


@pytest.fixture
def setup(client: FlaskClient) -> dict[str, Any]:
    organizer = f.organizer(client)
    customer = f.customer(client)
    event = f.create_event(client, organizer["token"], capacity=5)
    return {"organizer": organizer, "customer": customer, "event": event}


@pytest.fixture
def held_lock(redis_conn: redis.Redis) -> Iterator[Any]:
    """Hold an event's lock from outside, as a slow booking elsewhere would."""
    held: list[redis_lock.Lock] = []

    def hold(event_id: int) -> redis_lock.Lock:
        lock = redis_lock.Lock(redis_conn, lock_name(event_id), expire=30)
        assert lock.acquire(blocking=False)
        held.append(lock)
        return lock

    yield hold
    for lock in held:
        if lock.locked():
            lock.release()


# --- replay ---------------------------------------------------------------------------------


def test_same_key_and_body_replays_the_first_answer(
    client: FlaskClient, setup: dict[str, Any]
) -> None:
    token, event_id = setup["customer"]["token"], setup["event"]["id"]
    first = book(client, token, event_id, "key-1")
    assert first.status_code == 201
    assert "Idempotent-Replayed" not in first.headers
    history_rows = f.count_rows("history_entries")

    again = book(client, token, event_id, "key-1")

    assert again.status_code == 201
    assert again.get_json() == first.get_json()
    assert again.headers["Location"] == first.headers["Location"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.content_type == "application/json"
    # Nothing was done twice.
    assert f.count_rows("bookings", event_id=event_id) == 1
    assert f.booked_count(event_id) == 1
    assert f.count_rows("history_entries") == history_rows


def test_the_same_json_written_differently_is_the_same_request(
    client: FlaskClient, setup: dict[str, Any]
) -> None:
    token, event_id = setup["customer"]["token"], setup["event"]["id"]
    headers = {**auth(token), "Idempotency-Key": "key-format", "Content-Type": "application/json"}
    first = client.post(BOOKINGS, data=json.dumps({"event_id": event_id}), headers=headers)
    again = client.post(BOOKINGS, data=f'{{ "event_id" :  {event_id} }}\n', headers=headers)

    assert first.status_code == 201
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert f.count_rows("bookings", event_id=event_id) == 1


def test_a_quoted_key_is_the_same_key_as_the_bare_one(
    client: FlaskClient, setup: dict[str, Any]
) -> None:
    # The draft sends the key as a Structured Field string: "...".
    token, event_id = setup["customer"]["token"], setup["event"]["id"]
    assert book(client, token, event_id, '"abc-123"').status_code == 201
    again = book(client, token, event_id, "abc-123")
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"


def test_a_final_4xx_answer_is_stored_and_replayed(
    client: FlaskClient, setup: dict[str, Any]
) -> None:
    organizer, token = setup["organizer"]["token"], setup["customer"]["token"]
    event = f.create_event(client, organizer, capacity=1)
    other = f.customer(client)
    seat = f.book(client, other["token"], event["id"])
    assert seat.status_code == 201
    full = book(client, token, event["id"], "key-full")
    assert_problem(full, 409, "event_full")

    # A seat frees up, but the key's answer was given: the retry gets the same 409.
    cancel_url = f"{BOOKINGS}/{seat.get_json()['id']}/cancel"
    assert client.post(cancel_url, headers=auth(other["token"])).status_code == 200
    again = book(client, token, event["id"], "key-full")
    assert_problem(again, 409, "event_full")
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == full.get_json()
    # A new key is a new request.
    assert book(client, token, event["id"], "key-new").status_code == 201


def test_an_invalid_body_is_answered_and_replayed_too(
    client: FlaskClient, setup: dict[str, Any]
) -> None:
    token = setup["customer"]["token"]
    headers = {**auth(token), "Idempotency-Key": "key-invalid"}
    first = client.post(BOOKINGS, json={"event_id": "x"}, headers=headers)
    assert_problem(first, 422, "validation_error")
    again = client.post(BOOKINGS, json={"event_id": "x"}, headers=headers)
    assert_problem(again, 422, "validation_error")
    assert again.headers["Idempotent-Replayed"] == "true"


def test_reactivate_with_a_key_happens_once(client: FlaskClient, setup: dict[str, Any]) -> None:
    token, event_id = setup["customer"]["token"], setup["event"]["id"]
    booking = f.book(client, token, event_id).get_json()
    assert client.post(f"{BOOKINGS}/{booking['id']}/cancel", headers=auth(token)).status_code == 200
    history_rows = f.count_rows("history_entries")

    first = reactivate(client, token, booking["id"], "react-1")
    again = reactivate(client, token, booking["id"], "react-1")

    assert first.status_code == 200
    assert first.get_json()["status"] == "active"
    assert again.status_code == 200
    assert again.get_json() == first.get_json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert f.booked_count(event_id) == 1
    assert f.count_rows("history_entries") == history_rows + 1
    # Without a key the repeat is a new request, and the booking is already active.
    assert_problem(reactivate(client, token, booking["id"], None), 409, "already_active")


def test_without_a_key_nothing_is_stored_or_replayed(
    client: FlaskClient, setup: dict[str, Any]
) -> None:
    token, event_id = setup["customer"]["token"], setup["event"]["id"]
    assert book(client, token, event_id, None).status_code == 201
    assert_problem(book(client, token, event_id, None), 409, "already_booked")
    assert records() == []


# --- mismatch, scope ------------------------------------------------------------------------


def test_same_key_with_another_body_is_422_and_does_nothing(
    client: FlaskClient, setup: dict[str, Any]
) -> None:
    token = setup["customer"]["token"]
    other_event = f.create_event(client, setup["organizer"]["token"])
    assert book(client, token, setup["event"]["id"], "key-2").status_code == 201

    response = book(client, token, other_event["id"], "key-2")

    assert_problem(response, 422, "idempotency_key_mismatch")
    assert "Idempotent-Replayed" not in response.headers
    assert f.count_rows("bookings", event_id=other_event["id"]) == 0
    assert f.booked_count(other_event["id"]) == 0


def test_same_key_on_another_endpoint_is_422(client: FlaskClient, setup: dict[str, Any]) -> None:
    token, event_id = setup["customer"]["token"], setup["event"]["id"]
    booking = book(client, token, event_id, "key-3").get_json()
    client.post(f"{BOOKINGS}/{booking['id']}/cancel", headers=auth(token))

    assert_problem(
        reactivate(client, token, booking["id"], "key-3"), 422, "idempotency_key_mismatch"
    )
    assert f.booking_status(booking["id"]) == "cancelled"


def test_keys_are_scoped_to_the_user(client: FlaskClient, setup: dict[str, Any]) -> None:
    event_id = setup["event"]["id"]
    other = f.customer(client)
    first = book(client, setup["customer"]["token"], event_id, "shared-key")
    second = book(client, other["token"], event_id, "shared-key")

    assert first.status_code == 201
    assert second.status_code == 201
    assert "Idempotent-Replayed" not in second.headers
    assert second.get_json()["customer_id"] == other["user"]["id"]
    assert f.booked_count(event_id) == 2


# --- malformed keys -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    ["", "   ", '""', "x" * 256, "tab\there", "bell\x07", "caf\u00e9"],
    ids=["empty", "blank", "empty-quoted", "too-long", "tab", "control", "non-ascii"],
)
def test_a_malformed_key_is_400_and_does_nothing(
    client: FlaskClient, setup: dict[str, Any], key: str
) -> None:
    token, event_id = setup["customer"]["token"], setup["event"]["id"]
    assert_problem(book(client, token, event_id, key), 400, "invalid_idempotency_key")
    assert f.count_rows("bookings") == 0
    assert records() == []


def test_a_key_of_255_printable_characters_is_accepted(
    client: FlaskClient, setup: dict[str, Any]
) -> None:
    key = ("A-z0~ !" * 40)[:255]
    assert book(client, setup["customer"]["token"], setup["event"]["id"], key).status_code == 201
    assert records()[0]["key"] == key


# --- expiry and configuration ---------------------------------------------------------------


def test_records_expire_after_the_configured_ttl(
    app: Flask, client: FlaskClient, setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    token, event_id = setup["customer"]["token"], setup["event"]["id"]
    book(client, token, event_id, "ttl-default")
    monkeypatch.setitem(app.config, "IDEMPOTENCY_TTL_HOURS", 2)
    book(client, token, f.create_event(client, setup["organizer"]["token"])["id"], "ttl-two")

    lifetimes = {row["key"]: row["expires_at"] - row["created_at"] for row in records()}
    assert lifetimes == {"ttl-default": timedelta(hours=24), "ttl-two": timedelta(hours=2)}


def test_an_expired_key_runs_the_request_again(client: FlaskClient, setup: dict[str, Any]) -> None:
    token, event_id = setup["customer"]["token"], setup["event"]["id"]
    first = book(client, token, event_id, "key-old").get_json()
    client.post(f"{BOOKINGS}/{first['id']}/cancel", headers=auth(token))
    run_sql("UPDATE idempotency_keys SET expires_at = now() - interval '1 second'")

    again = book(client, token, event_id, "key-old")

    assert again.status_code == 201
    assert "Idempotent-Replayed" not in again.headers
    assert again.get_json()["id"] != first["id"]
    assert f.booked_count(event_id) == 1
    [row] = records()
    assert row["state"] == "completed"
    assert row["expires_at"] - row["created_at"] == timedelta(hours=24)


def test_an_expired_key_may_be_used_for_another_request(
    client: FlaskClient, setup: dict[str, Any]
) -> None:
    token = setup["customer"]["token"]
    other_event = f.create_event(client, setup["organizer"]["token"])
    book(client, token, setup["event"]["id"], "key-reuse")
    run_sql("UPDATE idempotency_keys SET expires_at = now() - interval '1 second'")

    assert book(client, token, other_event["id"], "key-reuse").status_code == 201


# --- concurrency, leases, failures ----------------------------------------------------------


def test_a_repeat_while_the_first_is_running_is_409(
    app: Flask, setup: dict[str, Any], held_lock: Any
) -> None:
    token, event_id = setup["customer"]["token"], setup["event"]["id"]
    lock = held_lock(event_id)  # the first request will wait for it (LOCK_WAIT_SECONDS = 2)
    first: dict[str, Any] = {}

    def first_request() -> None:
        first["response"] = book(app.test_client(), token, event_id, "key-slow")

    thread = threading.Thread(target=first_request)
    thread.start()
    try:
        # The claim is taken before the lock: it is visible while the request waits.
        deadline = time.monotonic() + 10
        while not records() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [row["state"] for row in records()] == ["in_progress"]

        repeat = book(app.test_client(), token, event_id, "key-slow")

        problem = assert_problem(repeat, 409, "idempotency_in_progress")
        assert int(repeat.headers["Retry-After"]) >= 1
        assert "Idempotency-Key" in problem["detail"]
    finally:
        lock.release()
        thread.join(timeout=30)

    assert first["response"].status_code == 201
    replay = book(app.test_client(), token, event_id, "key-slow")
    assert replay.status_code == 201
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert f.booked_count(event_id) == 1


def test_a_5xx_answer_is_not_kept_so_the_retry_runs(
    client: FlaskClient, setup: dict[str, Any], held_lock: Any
) -> None:
    token, event_id = setup["customer"]["token"], setup["event"]["id"]
    lock = held_lock(event_id)
    busy = book(client, token, event_id, "key-503")
    assert_problem(busy, 503, "lock_timeout")
    assert records() == []  # the claim was released
    lock.release()

    retry = book(client, token, event_id, "key-503")

    assert retry.status_code == 201
    assert "Idempotent-Replayed" not in retry.headers
    assert f.booked_count(event_id) == 1


def _claim_row(user_id: int, key: str, body: dict[str, Any], *, age_seconds: int) -> None:
    fingerprint = idempotency.fingerprint(
        method="POST", path=BOOKINGS, body=json.dumps(body).encode()
    )
    run_sql(
        "INSERT INTO idempotency_keys (user_id, key, fingerprint, state, claim_token, "
        "created_at, expires_at) VALUES (:user_id, :key, :fingerprint, 'in_progress', "
        "'dead-worker', now() - make_interval(secs => :age), now() + interval '1 day')",
        user_id=user_id,
        key=key,
        fingerprint=fingerprint,
        age=age_seconds,
    )


def test_a_claim_older_than_its_lease_is_taken_over(
    client: FlaskClient, setup: dict[str, Any]
) -> None:
    customer, event_id = setup["customer"], setup["event"]["id"]
    # A worker claimed the key 2 minutes ago and died (lease: IDEMPOTENCY_LEASE_SECONDS = 60).
    _claim_row(customer["user"]["id"], "key-dead", {"event_id": event_id}, age_seconds=120)

    response = book(client, customer["token"], event_id, "key-dead")

    assert response.status_code == 201
    [row] = records()
    assert row["state"] == "completed"
    assert row["claim_token"] != "dead-worker"


def test_a_claim_within_its_lease_still_blocks(
    app: Flask, client: FlaskClient, setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    customer, event_id = setup["customer"], setup["event"]["id"]
    _claim_row(customer["user"]["id"], "key-busy", {"event_id": event_id}, age_seconds=30)
    assert_problem(
        book(client, customer["token"], event_id, "key-busy"), 409, "idempotency_in_progress"
    )

    monkeypatch.setitem(app.config, "IDEMPOTENCY_LEASE_SECONDS", 10)  # configurable
    assert book(client, customer["token"], event_id, "key-busy").status_code == 201


def test_completing_a_claim_that_was_taken_over_changes_nothing(
    client: FlaskClient, setup: dict[str, Any]
) -> None:
    user_id = setup["customer"]["user"]["id"]
    claim = idempotency.claim(
        user_id=user_id,
        key="fenced",
        fingerprint="a" * 64,
        ttl=timedelta(hours=1),
        lease=timedelta(seconds=60),
    )
    assert isinstance(claim, idempotency.Claim)
    run_sql("UPDATE idempotency_keys SET created_at = now() - interval '2 minutes'")
    successor = idempotency.claim(
        user_id=user_id,
        key="fenced",
        fingerprint="a" * 64,
        ttl=timedelta(hours=1),
        lease=timedelta(seconds=60),
    )
    assert isinstance(successor, idempotency.Claim)

    late = idempotency.complete(claim=claim, response=idempotency.StoredResponse(201, "{}"))
    idempotency.release(claim=claim)

    assert late is False
    [row] = records()
    assert (row["state"], row["claim_token"]) == ("in_progress", successor.token)


def test_an_oversized_body_claims_nothing(client: FlaskClient, setup: dict[str, Any]) -> None:
    headers = {**auth(setup["customer"]["token"]), "Idempotency-Key": "key-big"}
    limit = client.application.config["MAX_CONTENT_LENGTH"]
    body = json.dumps({"event_id": setup["event"]["id"], "pad": "x" * limit})
    response = client.post(BOOKINGS, data=body, headers=headers, content_type="application/json")
    assert_problem(response, 413, "payload_too_large")
    assert records() == []


# --- service rules (no I/O) -----------------------------------------------------------------


def test_parse_key_rules() -> None:
    assert idempotency.parse_key(raw="abc") == "abc"
    assert idempotency.parse_key(raw='"abc"') == "abc"
    assert idempotency.parse_key(raw=' "a \\"b\\" c" ') == 'a "b" c'
    for bad in ("", '""', "x" * 256, "a\nb", "\u00e9"):
        with pytest.raises(InvalidIdempotencyKey):
            idempotency.parse_key(raw=bad)


def test_fingerprint_rules() -> None:
    fp = idempotency.fingerprint
    base = fp(method="POST", path="/a", body=b'{"x": 1, "y": [1, 2]}')
    assert fp(method="post", path="/a", body=b'{"y":[1,2],"x":1}') == base
    assert fp(method="POST", path="/b", body=b'{"x": 1, "y": [1, 2]}') != base
    assert fp(method="POST", path="/a", body=b'{"x": 2, "y": [1, 2]}') != base
    assert fp(method="POST", path="/a", body=b"") == fp(method="POST", path="/a", body=b" ")
    assert fp(method="POST", path="/a", body=b"not json") != fp(
        method="POST", path="/a", body=b"not  json"
    )


def test_in_progress_error_tells_when_to_retry() -> None:
    assert IdempotencyInProgress.status == 409
    assert IdempotencyInProgress.retry_after is True


# --- documentation --------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/v1/bookings", "/api/v1/bookings/{booking_id}/reactivate"])
def test_the_header_is_documented_in_the_openapi(client: FlaskClient, path: str) -> None:
    operation = client.get("/api/openapi.json").get_json()["paths"][path]["post"]
    [header] = [p for p in operation["parameters"] if p["in"] == "header"]
    assert header["name"] == "Idempotency-Key"
    assert header["required"] is False
    assert header["schema"]["maxLength"] == 255
    responses = operation["responses"]
    assert "invalid_idempotency_key" in responses["400"]["description"]
    assert "idempotency_key_mismatch" in responses["422"]["description"]
    assert "idempotency_in_progress" in responses["409"]["description"]
    # The view's own codes are still listed beside ours.
    assert "event_full" in responses["409"]["description"]


def test_the_documented_example_key_is_a_placeholder_not_a_key(client: FlaskClient) -> None:
    # A concrete example gets copied, and clients that share a key see each other's
    # conflicts (422 idempotency_key_mismatch) or replays.
    operation = client.get("/api/openapi.json").get_json()["paths"]["/api/v1/bookings"]["post"]
    [header] = [p for p in operation["parameters"] if p["name"] == "Idempotency-Key"]
    example = header["example"]

    assert re.fullmatch(header["schema"]["pattern"], example)
    assert len(example) <= header["schema"]["maxLength"]
    assert idempotency.parse_key(raw=example)  # a well-formed value, as documented
    assert "<" in example and ">" in example  # reads as "put yours here"
    assert not re.search(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", example)


def test_purging_removes_only_expired_records(client: FlaskClient, setup: dict[str, Any]) -> None:
    token, event_id = setup["customer"]["token"], setup["event"]["id"]
    other_event = f.create_event(client, setup["organizer"]["token"])["id"]
    book(client, token, event_id, "old")
    book(client, token, other_event, "fresh")
    run_sql(
        "UPDATE idempotency_keys SET expires_at = now() - interval '1 second' WHERE key = 'old'"
    )

    assert idempotency.purge_expired() == 1
    assert [row["key"] for row in records()] == ["fresh"]


def test_a_users_records_go_with_the_user(client: FlaskClient, setup: dict[str, Any]) -> None:
    customer = setup["customer"]
    book(client, customer["token"], setup["event"]["id"], "mine")
    run_sql("DELETE FROM bookings")
    run_sql("DELETE FROM history_entries")
    run_sql("DELETE FROM users WHERE id = :id", id=customer["user"]["id"])
    assert records() == []
