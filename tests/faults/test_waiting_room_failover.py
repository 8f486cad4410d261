"""The waiting room through a Redis primary failover (Sentinel, and Redis Cluster): what the
queue loses, and that nobody gets in without an admission nor is the rate exceeded after.

Two instances pace a queue at a fixed rate while customers try to hold seats (admitted or
not). A watcher records every admission it sees on the primary of the moment; the primary is
killed and a replica promoted. Replication is asynchronous: the promoted replica may lack the
last admissions (and joins) of the old primary. Those customers are refused (fail closed)
until admitted again; the pacer, seeing the serving counter go back, starts its bucket empty,
so counted over every admission ever seen, old primary's included, no window exceeds the
rate.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
import requests
from flask import Flask
from flask.testing import FlaskClient

from booking_service.services import waitroom
from harness.instances import AppInstance, running
from harness.redis_cluster import RedisClusterGroup
from harness.redis_servers import RedisSentinelGroup
from tests import factories
from tests.factories import auth
from tests.support.instances import API, instance_env

pytestmark = pytest.mark.slow

PER_MINUTE = 600  # 10 admissions a second
CUSTOMERS = 200
SETTINGS = {
    "LOCK_WAIT_SECONDS": 1.0,
    "REDIS_SOCKET_TIMEOUT_SECONDS": 0.5,
    "LOG_LEVEL": "WARNING",
}


@dataclass
class Run:
    """What the watcher and the customers saw."""

    admissions: set[tuple[int, float]] = field(default_factory=set)  # (customer, moment)
    attempts: list[tuple[int, float, float, int]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)


def watch(run: Run, event: dict[str, Any], reader: Callable[[], Any]) -> None:
    length = event["admission_minutes"] * 60
    while not run.stop.is_set():
        try:
            entries = reader().zrange(waitroom.admitted_key(event["id"]), 0, -1, withscores=True)
        except (redis.RedisError, Exception):  # no primary right now
            time.sleep(0.05)
            continue
        run.admissions.update((int(member), score / 1000 - length) for member, score in entries)
        time.sleep(0.05)


def attempt(run: Run, urls: list[str], event_id: int, customers: list[tuple[int, str]]) -> None:
    n = 0
    while not run.stop.is_set():
        user, token = random.choice(customers)
        started = time.time()
        try:
            answer = requests.post(
                f"{urls[n % len(urls)]}{API}/events/{event_id}/holds",
                json={"seats": 1},
                headers=auth(token),
                timeout=10,
            )
            status = answer.status_code
        except requests.RequestException:
            status = 0
        run.attempts.append((user, started, time.time(), status))
        n += 1
        time.sleep(0.02)


@contextmanager
def running_queue(
    client: FlaskClient, instances: list[AppInstance], reader: Callable[[], Any]
) -> Iterator[tuple[Run, dict[str, Any]]]:
    customers = factories.insert_customers(CUSTOMERS, prefix="fo-")
    organizer = factories.organizer(client)
    event = factories.create_event(
        client, organizer["token"], waiting_room=True, admit_per_minute=PER_MINUTE, capacity=1000
    )
    urls = [instance.base_url for instance in instances]
    for n, (_, token) in enumerate(customers):
        joined = requests.post(
            f"{urls[n % 2]}{API}/events/{event['id']}/queue", headers=auth(token), timeout=10
        )
        assert joined.status_code == 201, joined.text
    run = Run()
    threads = [
        threading.Thread(target=watch, args=(run, event, reader)),
        threading.Thread(target=attempt, args=(run, urls, event["id"], customers)),
        threading.Thread(target=attempt, args=(run, urls, event["id"], customers)),
    ]
    for thread in threads:
        thread.start()
    try:
        yield run, event
    finally:
        run.stop.set()
        for thread in threads:
            thread.join(timeout=30)


def check(run: Run, *, promoted_at: float, survivors: set[tuple[int, float]]) -> str:
    """Nobody in without an admission; no window over the rate; what was lost."""
    rate, burst = PER_MINUTE / 60, max(1.0, PER_MINUTE / 60)
    moments = sorted(moment for _, moment in run.admissions)
    for i in range(len(moments)):
        for j in range(i, len(moments)):
            allowed = rate * (moments[j] - moments[i]) + burst + 1e-6
            assert j - i + 1 <= allowed, (moments[i], moments[j], j - i + 1)
    admitted_at: dict[int, list[float]] = {}
    for user, moment in run.admissions:
        admitted_at.setdefault(user, []).append(moment)
    holds = [a for a in run.attempts if a[3] == 201]
    for user, _, finished, _ in holds:
        assert any(moment <= finished for moment in admitted_at.get(user, [])), user
    never = [a for a in run.attempts if a[0] not in admitted_at]
    assert never and all(a[3] != 201 for a in never)
    lost = run.admissions - survivors
    after = [m for m in moments if m >= promoted_at]
    assert after, "nobody was admitted after the failover"
    return (
        f"{len(run.admissions)} admissions seen, {len(lost)} lost with the old primary, "
        f"{len(after)} after the promotion; {len(holds)} holds, all by admitted customers; "
        f"{len(never)} attempts by customers never admitted, none let in"
    )


def survivors_of(reader: Callable[[], Any], event: dict[str, Any]) -> set[tuple[int, float]]:
    length = event["admission_minutes"] * 60
    entries = reader().zrange(waitroom.admitted_key(event["id"]), 0, -1, withscores=True)
    return {(int(member), score / 1000 - length) for member, score in entries}


def test_sentinel_failover(app: Flask, client: FlaskClient) -> None:
    with RedisSentinelGroup(sentinels=3, down_after_ms=1000) as group:
        env = instance_env(
            REDIS_SENTINELS=group.sentinel_addresses,
            REDIS_SENTINEL_SERVICE=group.service,
            **SETTINGS,
        )
        instances = [AppInstance(env, workers=2, threads=4, name=f"wr-s{n}") for n in range(2)]

        def reader() -> redis.Redis:
            address = group.primary_address()
            assert address is not None
            return redis.Redis(port=address[1], socket_timeout=0.5)

        with running(instances), running_queue(client, instances, reader) as (run, event):
            time.sleep(3)
            group.kill_primary()
            group.wait_for_failover(timeout=30)
            promoted_at = time.time()
            time.sleep(4)
        summary = check(run, promoted_at=promoted_at, survivors=survivors_of(reader, event))
        print(f"\nSentinel failover: {summary}")


def test_cluster_failover(app: Flask, client: FlaskClient) -> None:
    with RedisClusterGroup(node_timeout_ms=1000) as group:
        env = instance_env(REDIS_CLUSTER_NODES=group.nodes, **SETTINGS)
        instances = [AppInstance(env, workers=2, threads=4, name=f"wr-c{n}") for n in range(2)]
        cluster_client = group.client()
        with (
            running(instances),
            running_queue(client, instances, lambda: cluster_client) as (
                run,
                event,
            ),
        ):
            time.sleep(3)
            group.kill_primary(group.primary_for(waitroom.queue_key(event["id"])))
            group.wait_for_ok(timeout=30, key=waitroom.queue_key(event["id"]))
            promoted_at = time.time()
            time.sleep(4)
        summary = check(
            run, promoted_at=promoted_at, survivors=survivors_of(lambda: cluster_client, event)
        )
        print(f"\nRedis Cluster failover: {summary}")
