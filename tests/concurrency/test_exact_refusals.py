"""Refusals are exact across instances: no "sold out" while a seat is free, no "started" after
the start moved later, whichever worker of whichever instance answers.

Every worker first refuses the event from its snapshot (so each holds a fresh "full" or
"started" snapshot), then the change happens through one instance and bookings follow at once
through the other. Each request opens its own connection, so the kernel spreads them over the
workers.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests
from flask.testing import FlaskClient

from tests import factories
from tests.factories import auth, in_hours, iso
from tests.support.instances import API, Cluster, event_snapshot

pytestmark = pytest.mark.slow

WARM_REQUESTS = 16  # per instance: enough for both workers to hold a refusing snapshot
LATE_BOOKINGS = 6


def _book(base_url: str, token: str, event_id: int) -> requests.Response:
    return requests.post(
        f"{base_url}{API}/bookings",
        json={"event_id": event_id},
        headers={**auth(token), "Connection": "close"},
        timeout=15,
    )


def _warm_every_worker(cluster: Cluster, client: FlaskClient, event_id: int, code: str) -> None:
    for n in range(2 * WARM_REQUESTS):
        answer = _book(cluster.url(n), factories.customer(client)["token"], event_id)
        assert answer.status_code in (409, 422) and answer.json()["code"] == code, answer.text


def test_a_seat_freed_on_one_instance_is_bookable_at_once_on_the_other(
    cluster: Cluster, lock_redis: Any, client: FlaskClient
) -> None:
    organizer = factories.organizer(client)
    event = factories.create_event(client, organizer["token"], capacity=1)
    holder = factories.customer(client)
    booked = _book(cluster.url(0), holder["token"], event["id"])
    assert booked.status_code == 201
    late = [factories.customer(client)["token"] for _ in range(LATE_BOOKINGS)]
    _warm_every_worker(cluster, client, event["id"], "event_full")

    cancelled = requests.post(
        f"{cluster.url(0)}{API}/bookings/{booked.json()['id']}/cancel",
        headers=auth(holder["token"]),
        timeout=15,
    )
    assert cancelled.status_code == 200
    answers = [_book(cluster.url(1), token, event["id"]) for token in late]

    assert [a.status_code for a in answers] == [201] + [409] * (LATE_BOOKINGS - 1), [
        a.json() for a in answers
    ]
    snapshot = event_snapshot(event["id"])
    assert snapshot["booked_count"] == snapshot["active_rows"] == 1


def test_a_start_moved_later_on_one_instance_is_bookable_at_once_on_the_other(
    cluster: Cluster, lock_redis: Any, client: FlaskClient
) -> None:
    organizer = factories.organizer(client)
    event_id = factories.insert_event(
        organizer_id=organizer["user"]["id"], start=in_hours(-1), end=in_hours(2), capacity=5
    )
    late = [factories.customer(client)["token"] for _ in range(LATE_BOOKINGS)]
    _warm_every_worker(cluster, client, event_id, "event_started")

    moved = requests.patch(
        f"{cluster.url(0)}{API}/events/{event_id}",
        json={"start_time": iso(in_hours(1))},
        headers=auth(organizer["token"]),
        timeout=15,
    )
    assert moved.status_code == 200, moved.text
    answers = [_book(cluster.url(1), token, event_id) for token in late[:3]]

    assert [a.status_code for a in answers] == [201, 201, 201], [a.json() for a in answers]
