"""A toy workload for the cross-instance combiner (booking_service/combining.py), and a process
that runs it: ``python -m tests.support.combining_worker <settings JSON>``.

The toy is a capacity-limited counter per event and a journal of applied intents with their
outcomes, so that the tests can hold every answer against the database. The process submits
intents from several threads and writes what each one got to a JSON file; with ``kill_at``
set, the first of its holders to reach that point (across all processes: a marker file
decides) SIGKILLs its own process.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import uuid
from functools import partial
from typing import Any

import redis
from redis.cluster import ClusterNode, RedisCluster
from sqlalchemy import Engine, create_engine, text

from booking_service.combining import Combiner, Intent, Outcome
from booking_service.errors import DomainError
from booking_service.locking import EventLocks

KIND = "toy"

SCHEMA = """
CREATE TABLE IF NOT EXISTS toy_counter (
    event_id bigint PRIMARY KEY,
    taken integer NOT NULL,
    capacity integer NOT NULL
);
CREATE TABLE IF NOT EXISTS toy_intents (
    id text PRIMARY KEY,
    event_id bigint NOT NULL,
    n integer NOT NULL,
    outcome jsonb NOT NULL
);
"""


def new_intent(n: int = 1) -> Intent:
    return {"id": uuid.uuid4().hex, "n": n}


def apply_batch(engine: Engine, event_id: int, intents: list[Intent]) -> list[Outcome]:
    """The intents in order, in one transaction, against the running total: a journaled id
    answers with its stored outcome and changes nothing; ``n`` < 0 fails the transaction."""
    with engine.begin() as connection:
        taken, capacity = connection.execute(
            text("SELECT taken, capacity FROM toy_counter WHERE event_id = :e FOR UPDATE"),
            {"e": event_id},
        ).one()
        stored: dict[str, Outcome] = dict(
            connection.execute(  # type: ignore[arg-type]
                text("SELECT id, outcome FROM toy_intents WHERE id = ANY(:ids)"),
                {"ids": [intent["id"] for intent in intents]},
            ).all()
        )
        outcomes = []
        for intent in intents:
            if intent["id"] in stored:
                outcomes.append(stored[intent["id"]])
                continue
            n = int(intent["n"])
            if n < 0:
                raise ValueError(f"intent {intent['id']} is poison")
            if taken + n <= capacity:
                outcome = {"ok": True, "first": taken + 1, "batch": len(intents)}
                taken += n
            else:
                outcome = {"ok": False, "left": capacity - taken, "batch": len(intents)}
            connection.execute(
                text(
                    "INSERT INTO toy_intents (id, event_id, n, outcome) "
                    "VALUES (:id, :e, :n, CAST(:outcome AS jsonb))"
                ),
                {"id": intent["id"], "e": event_id, "n": n, "outcome": json.dumps(outcome)},
            )
            stored[intent["id"]] = outcome
            outcomes.append(outcome)
        connection.execute(
            text("UPDATE toy_counter SET taken = :t WHERE event_id = :e"),
            {"t": taken, "e": event_id},
        )
    return outcomes


def lookup(engine: Engine, intent_id: str) -> Outcome | None:
    with engine.connect() as connection:
        return connection.execute(
            text("SELECT outcome FROM toy_intents WHERE id = :id"), {"id": intent_id}
        ).scalar_one_or_none()


WITHDRAWN: Outcome = {"ok": False, "withdrawn": True}


def withdraw(engine: Engine, event_id: int, intent: Intent) -> Outcome | None:
    """Fence the intent off in the journal (None), unless it was applied first (its outcome)."""
    with engine.begin() as connection:
        fenced = connection.execute(
            text(
                "INSERT INTO toy_intents (id, event_id, n, outcome) "
                "VALUES (:id, :e, :n, CAST(:outcome AS jsonb)) ON CONFLICT (id) DO NOTHING "
                "RETURNING id"
            ),
            {"id": intent["id"], "e": event_id, "n": intent["n"], "outcome": json.dumps(WITHDRAWN)},
        ).first()
        if fenced is not None:
            return None
        stored = connection.execute(
            text("SELECT outcome FROM toy_intents WHERE id = :id"), {"id": intent["id"]}
        ).scalar_one()
    return None if stored == WITHDRAWN else stored


def submit_and_record(
    combiner: Combiner, engine: Engine, event_id: int, intent: Intent
) -> dict[str, Any]:
    """Submit one intent: what its caller got, as a JSON-ready record."""
    try:
        outcome = combiner.submit(
            event_id,
            intent,
            apply_batch=partial(apply_batch, engine, event_id),
            lookup=partial(lookup, engine),
            withdraw=partial(withdraw, engine, event_id),
        )
    except (DomainError, ValueError) as error:
        return {"id": intent["id"], "n": intent["n"], "error": type(error).__name__}
    return {"id": intent["id"], "n": intent["n"], "outcome": outcome}


def kill_hook(marker: str, at: str, point: str, intents: list[Intent]) -> None:
    """SIGKILL this process at ``point`` once across all processes (the marker file decides),
    and only where it strands others: a waiter that won the lock ("acquired" with nothing
    drained yet), or a batch of several intents ("drained", "committed")."""
    if (
        at != point
        or (point == "acquired" and intents)
        or (point != "acquired" and len(intents) < 2)
    ):
        return
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.write(fd, json.dumps([intent["id"] for intent in intents]).encode())
    os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)


def connect(settings: dict[str, Any]) -> redis.Redis | RedisCluster:
    if settings.get("cluster_nodes"):
        nodes = [ClusterNode("127.0.0.1", int(port)) for port in settings["cluster_nodes"]]
        return RedisCluster(startup_nodes=nodes, socket_timeout=10)
    return redis.Redis.from_url(settings["redis_url"], socket_timeout=10)


def main(settings: dict[str, Any]) -> None:
    engine = create_engine(settings["database_url"], pool_size=settings["threads"] + 2)
    event_locks = EventLocks(
        client=connect(settings),
        wait_seconds=settings["wait_seconds"],
        expire_seconds=settings["expire_seconds"],
        instance=settings.get("name", "worker"),
    )
    hook = None
    if settings.get("kill_at"):
        hook = partial(kill_hook, settings["marker"], settings["kill_at"])
    combiner = Combiner(KIND, locks=event_locks, hook=hook)
    results: list[dict[str, Any]] = []
    guard = threading.Lock()

    def run() -> None:
        for _ in range(settings["per_thread"]):
            record = submit_and_record(combiner, engine, settings["event_id"], new_intent())
            with guard:
                results.append(record)

    # Start together with the other processes, so that their submits overlap.
    time.sleep(max(0.0, settings.get("start_at", 0) - time.time()))
    threads = [threading.Thread(target=run) for _ in range(settings["threads"])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with open(settings["results"], "w") as out:
        json.dump(results, out)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
