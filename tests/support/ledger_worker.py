"""A process that books seats through the real seat ledger (services/ledger.py), for the
kill-point tests: ``python -m tests.support.ledger_worker <settings JSON>``.

It builds the service's app (create_app) on the given database and lock Redis, then books
for its customers from several threads, each booking one intent through ``ledger.run``, and
writes what each intent got to a JSON file: the outcome, or the error's code. With
``kill_at`` set, the first of the ledger's holders to reach that point (across all processes:
a marker file decides) SIGKILLs its own process (tests/support/combining_worker.kill_hook).

Settings: ``database_url``; ``redis_url`` or ``cluster_nodes`` ("host:port,..."); ``event_id``;
``customers`` (a list of ``[customer_id, seats]``, one intent each); ``threads``;
``wait_seconds``; ``expire_seconds``; ``name``; ``results``; ``start_at`` (Unix time);
optionally ``kill_at`` and ``marker``.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from functools import partial
from typing import Any

from booking_service import create_app
from booking_service.errors import DomainError
from booking_service.services import ledger
from tests.conftest import TEST_SETTINGS
from tests.support.combining_worker import kill_hook


def app_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The app's configuration: the test settings on this worker's database and lock Redis."""
    config: dict[str, Any] = {
        **TEST_SETTINGS,
        "DATABASE_URL": settings["database_url"],
        "DB_POOL_SIZE": settings["threads"] + 2,
        "LOCK_WAIT_SECONDS": settings["wait_seconds"],
        "LOCK_EXPIRE_SECONDS": settings["expire_seconds"],
        # config.validate: every statement ends well inside the lock's lease.
        "DB_STATEMENT_TIMEOUT_MS": settings["expire_seconds"] * 1000 - 500,
        "INSTANCE_NAME": settings["name"],
        "REDIS_URL": settings.get("redis_url") or TEST_SETTINGS["REDIS_URL"],
        "REDIS_CLUSTER_NODES": settings.get("cluster_nodes"),
    }
    return config


def book(event_id: int, customer_id: int, seats: int) -> dict[str, Any]:
    """Book once through the ledger: what the caller got, as a JSON-ready record."""
    intent = ledger.intent("book", customer_id=customer_id, seats=seats)
    record: dict[str, Any] = {"id": intent["id"], "customer": customer_id, "seats": seats}
    try:
        record["outcome"] = ledger.run(event_id, intent)
    except DomainError as error:
        record["error"] = error.code
    except Exception as error:  # the test fails on it, with what it was
        record["unexpected"] = repr(error)
    return record


def main(settings: dict[str, Any]) -> None:
    app = create_app(app_settings(settings))
    if settings.get("kill_at"):
        ledger.combiner.hook = partial(kill_hook, settings["marker"], settings["kill_at"])
    event_id = settings["event_id"]
    customers: list[list[int]] = settings["customers"]
    threads = settings["threads"]
    results: list[dict[str, Any]] = []
    guard = threading.Lock()

    def run(share: list[list[int]]) -> None:
        with app.app_context():
            for customer_id, seats in share:
                record = book(event_id, customer_id, seats)
                with guard:
                    results.append(record)

    # Start together with the other processes, so that their intents queue together.
    time.sleep(max(0.0, settings["start_at"] - time.time()))
    workers = [threading.Thread(target=run, args=(customers[n::threads],)) for n in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    with open(settings["results"], "w") as out:
        json.dump(results, out)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
