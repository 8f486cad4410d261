"""Cross-instance flat combining (booking_service/combining.py) on real Redis and PostgreSQL.

The workload is a toy (tests/support/combining_worker.py): a capacity-limited counter per
event and a journal of applied intents. Every test holds each caller's answer against the
journal: an outcome must be the journaled one, a LockTimeout must have left no row, and the
counter must equal the seats of the accepted rows (nothing applied twice).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import redis
import redis_lock
from sqlalchemy import Engine, create_engine, text

from booking_service.combining import Combiner, Intent, Outcome
from booking_service.errors import LockTimeout
from booking_service.locking import (
    EventLocks,
    LockStats,
    intents_key,
    lock_key,
    lock_name,
    stats_key,
)
from harness.processes import PROJECT_ROOT, wait_until
from harness.redis_cluster import RedisClusterGroup
from harness.redis_servers import RedisServer
from tests.conftest import TEST_DATABASE_URL, TEST_REDIS_URL
from tests.support.combining_worker import (
    KIND,
    SCHEMA,
    WITHDRAWN,
    apply_batch,
    lookup,
    new_intent,
    submit_and_record,
    withdraw,
)

Record = dict[str, Any]


@pytest.fixture
def engine(app: Any) -> Iterator[Engine]:
    # ``app`` first: it creates the test database.
    engine = create_engine(TEST_DATABASE_URL, pool_size=20)
    with engine.begin() as connection:
        connection.execute(text(SCHEMA))
        connection.execute(text("TRUNCATE toy_counter, toy_intents"))
    yield engine
    engine.dispose()


@pytest.fixture
def toy_redis() -> redis.Redis:
    # The root conftest empties this database before every test.
    return redis.Redis.from_url(TEST_REDIS_URL, socket_timeout=10)


def make_locks(client: Any, *, wait: float = 5.0, expire: int = 2) -> EventLocks:
    return EventLocks(client=client, wait_seconds=wait, expire_seconds=expire, instance="test")


def new_event(engine: Engine, capacity: int) -> int:
    event_id = random.randrange(1, 2**40)
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO toy_counter (event_id, taken, capacity) VALUES (:e, 0, :c)"),
            {"e": event_id, "c": capacity},
        )
    return event_id


def submitter(combiner: Combiner, engine: Engine, event_id: int) -> Callable[[Intent], Record]:
    return partial(submit_and_record, combiner, engine, event_id)


def journal(engine: Engine, event_id: int) -> tuple[int, int, dict[str, Outcome]]:
    """(counter, capacity, outcome per journaled intent id)."""
    with engine.connect() as connection:
        taken, capacity = connection.execute(
            text("SELECT taken, capacity FROM toy_counter WHERE event_id = :e"), {"e": event_id}
        ).one()
        rows = connection.execute(
            text("SELECT id, n, outcome FROM toy_intents WHERE event_id = :e"), {"e": event_id}
        ).all()
    accepted = sum(n for _, n, outcome in rows if outcome["ok"])
    assert taken == accepted, "an intent was applied twice, or a change escaped the journal"
    assert taken <= capacity
    return taken, capacity, {intent_id: outcome for intent_id, _, outcome in rows}


def check_answers(
    engine: Engine, event_id: int, records: list[Record], *, errors: tuple[str, ...] = ()
) -> dict[str, Outcome]:
    """Every answer is the database's truth (a LockTimeout or one of ``errors``: no row);
    returns the journal."""
    _, _, rows = journal(engine, event_id)
    assert len({record["id"] for record in records}) == len(records)
    for record in records:
        if "outcome" in record:
            assert rows.get(record["id"]) == record["outcome"], record
        else:
            assert record["error"] in ("LockTimeout", *errors), record
            assert rows.get(record["id"], WITHDRAWN) == WITHDRAWN, (
                f"a failed intent was applied: {record}"
            )
    seats = [r["outcome"]["first"] for r in records if r.get("outcome", {}).get("ok")]
    assert len(seats) == len(set(seats)), "two intents got the same seat"
    return rows


def run_threads(
    submit: Callable[[Intent], Record], intents: list[Intent], threads: int
) -> list[Record]:
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(submit, intents))


Workers = list[tuple[subprocess.Popen[bytes], Path]]
# Workers start submitting together this long after they are launched: after their interpreters
# have started, so that their submits (and the test's own, started as long after) overlap.
WORKER_START_DELAY = 1.5
_started: Workers = []


@pytest.fixture(autouse=True)
def _stop_workers() -> Iterator[None]:
    """No worker outlives its test (a failed one would write into the next test's tables)."""
    yield
    while _started:
        process, _ = _started.pop()
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def start_workers(
    tmp_path: Path, count: int, *, event_id: int, redis_settings: dict[str, Any], **settings: Any
) -> Workers:
    """``count`` worker processes (tests/support/combining_worker.py) starting together."""
    start_at = time.time() + WORKER_START_DELAY
    workers = []
    for n in range(count):
        results = tmp_path / f"worker-{n}.json"
        config = {
            "database_url": TEST_DATABASE_URL,
            "event_id": event_id,
            "threads": 4,
            "per_thread": 4,
            "wait_seconds": 6.0,
            "expire_seconds": 2,
            "name": f"worker-{n}",
            "results": str(results),
            "start_at": start_at,
            **redis_settings,
            **settings,
        }
        if callable(config["wait_seconds"]):
            config["wait_seconds"] = config["wait_seconds"](n)
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.combining_worker", json.dumps(config)],
            cwd=PROJECT_ROOT,
            env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        )
        workers.append((process, results))
    _started.extend(workers)
    return workers


def collect(workers: Workers) -> tuple[list[Record], list[int]]:
    """(the records of every worker that finished, the exit codes)."""
    records: list[Record] = []
    codes = []
    for process, results in workers:
        codes.append(process.wait(timeout=90))
        if results.exists():
            records += json.loads(results.read_text())
    return records, codes


def assert_drained(client: Any, event_id: int) -> None:
    assert client.llen(intents_key(KIND, event_id)) == 0
    assert client.get(lock_key(event_id)) is None


# --- the cost of the uncontended case ------------------------------------------------------


@pytest.mark.slow  # a private redis-server, to count its commands
def test_an_uncontended_submit_costs_one_set_and_one_script_call(engine: Engine) -> None:
    with RedisServer() as server:
        client = server.client()
        combiner = Combiner(KIND, locks=make_locks(client))
        event_id = new_event(engine, capacity=100)
        submit = submitter(combiner, engine, event_id)
        submit(new_intent())  # loads the script and writes the statistics index once
        with monitored(server.client(), client) as commands:
            records = [submit(new_intent()) for _ in range(5)]
    assert [command[0] for command in commands] == ["SET", "EVALSHA"] * 5
    assert all(set(command) >= {"NX", "EX"} for command in commands[::2])
    assert [record["outcome"] for record in records] == [
        {"ok": True, "first": n, "batch": 1} for n in range(2, 7)
    ]


@contextmanager
def monitored(monitor_client: redis.Redis, client: redis.Redis) -> Iterator[list[list[str]]]:
    """The commands ``client`` (already connected) sends meanwhile, as MONITOR sees them; a
    script's own commands, which Redis counts in its command statistics too, are left out."""
    commands: list[list[str]] = []
    ready = threading.Event()

    def watch() -> None:
        with monitor_client.monitor() as monitor:
            ready.set()
            for entry in monitor.listen():
                words = entry["command"].split()
                if words[:2] == ["ECHO", "end-of-monitoring"]:
                    return
                if entry.get("client_type") != "lua":
                    commands.append([word.upper() for word in words])

    watcher = threading.Thread(target=watch)
    watcher.start()
    ready.wait(timeout=5)
    time.sleep(0.1)  # MONITOR is on before the first command
    try:
        yield commands
    finally:
        client.echo("end-of-monitoring")
        watcher.join(timeout=5)


# --- many submitters --------------------------------------------------------------------


@pytest.mark.slow
def test_threads_and_processes_share_batches_and_every_answer_is_the_database_s(
    engine: Engine, toy_redis: redis.Redis, tmp_path: Path
) -> None:
    event_id = new_event(engine, capacity=70)
    workers = start_workers(
        tmp_path, 3, event_id=event_id, redis_settings={"redis_url": TEST_REDIS_URL}
    )
    combiner = Combiner(KIND, locks=make_locks(toy_redis, wait=6.0))
    time.sleep(WORKER_START_DELAY)
    local = run_threads(submitter(combiner, engine, event_id), [new_intent() for _ in range(32)], 8)
    remote, codes = collect(workers)
    assert codes == [0, 0, 0]
    records = local + remote
    assert len(records) == 32 + 3 * 16
    rows = check_answers(engine, event_id, records)
    # Capacity 70 of 80: every intent answered from the journal, the last ones refused.
    assert all("outcome" in record for record in records)
    assert len(rows) == 80
    assert sum(1 for outcome in rows.values() if outcome["ok"]) == 70
    assert max(outcome["batch"] for outcome in rows.values()) > 1, "nothing was combined"
    stats = LockStats.from_hash(toy_redis.hgetall(stats_key(event_id)))
    assert stats.requests == 80  # each intent served once
    assert stats.waiters == 0 and stats.lost == 0
    assert_drained(toy_redis, event_id)


def test_a_failing_batch_fails_only_its_bad_intent(engine: Engine, toy_redis: redis.Redis) -> None:
    event_id = new_event(engine, capacity=10)
    combiner = Combiner(KIND, locks=make_locks(toy_redis))
    intents = [new_intent() for _ in range(3)] + [new_intent(-1)] + [new_intent() for _ in range(3)]
    blocker = redis_lock.Lock(toy_redis, lock_name(event_id), expire=10)
    assert blocker.acquire(blocking=False)
    with ThreadPoolExecutor(len(intents)) as pool:
        futures = []
        for intent in intents:
            futures.append(pool.submit(submitter(combiner, engine, event_id), intent))
            time.sleep(0.02)  # queue in this order
        wait_until(lambda: toy_redis.llen(intents_key(KIND, event_id)) == len(intents), timeout=5)
        blocker.release()
        records = [future.result() for future in futures]
    rows = check_answers(engine, event_id, records, errors=("ValueError",))
    assert records[3] == {"id": intents[3]["id"], "n": -1, "error": "ValueError"}
    # The batch's other intents ran alone afterwards, each in its own lock hold.
    assert sorted(r["outcome"]["first"] for r in records if "outcome" in r) == [1, 2, 3, 4, 5, 6]
    assert len(rows) == 6
    assert_drained(toy_redis, event_id)


# --- deadlines --------------------------------------------------------------------------


def test_a_waiter_times_out_only_while_nobody_took_its_intent(
    engine: Engine, toy_redis: redis.Redis
) -> None:
    event_id = new_event(engine, capacity=10)
    combiner = Combiner(KIND, locks=make_locks(toy_redis, wait=0.5))
    blocker = redis_lock.Lock(toy_redis, lock_name(event_id), expire=10)
    assert blocker.acquire(blocking=False)
    record = submitter(combiner, engine, event_id)(new_intent())
    blocker.release()
    assert record["error"] == "LockTimeout"
    # Fenced off in the journal: no holder can apply it from now on.
    assert check_answers(engine, event_id, [record]) == {record["id"]: WITHDRAWN}
    assert apply_batch(engine, event_id, [{"id": record["id"], "n": 1}]) == [WITHDRAWN]
    assert journal(engine, event_id)[0] == 0
    assert toy_redis.llen(intents_key(KIND, event_id)) == 0
    assert LockStats.from_hash(toy_redis.hgetall(stats_key(event_id))).timeouts == 1


def test_a_waiter_past_its_deadline_gets_the_outcome_of_its_taken_intent(
    engine: Engine, toy_redis: redis.Redis
) -> None:
    """The holder is slower than the waiters' wait: they cannot take their intents back (LREM
    finds nothing), so they wait for the holder's answers instead of a false timeout."""
    event_id = new_event(engine, capacity=10)
    taken = threading.Event()

    def slow(point: str, intents: list[Intent]) -> None:
        if point == "committed" and len(intents) == 1 and not taken.is_set():
            # Still holding after its own intent: let the waiters queue behind it.
            wait_until(lambda: toy_redis.llen(intents_key(KIND, event_id)) == 3, timeout=5)
        if point == "drained" and len(intents) > 1:
            taken.set()
            time.sleep(1.0)  # twice the waiters' wait, within the lease

    # No hand-over: this holder drains what queued behind it, however slowly.
    holder = Combiner(KIND, locks=make_locks(toy_redis, wait=0.5), hook=slow, hand_off_seconds=60)
    waiter = Combiner(KIND, locks=make_locks(toy_redis, wait=0.5))
    with ThreadPoolExecutor(4) as pool:
        holding = pool.submit(submitter(holder, engine, event_id), new_intent())
        wait_until(lambda: toy_redis.exists(lock_key(event_id)), timeout=5)
        waiting = [pool.submit(submitter(waiter, engine, event_id), new_intent()) for _ in range(3)]
        records = [future.result() for future in [*waiting, holding]]
    assert taken.is_set()
    assert all("outcome" in record for record in records), records
    assert len(check_answers(engine, event_id, records)) == 4
    assert LockStats.from_hash(toy_redis.hgetall(stats_key(event_id))).timeouts == 0


@pytest.mark.parametrize("applied", [False, True])
def test_a_waiter_whose_holder_died_asks_the_database_then_runs_its_intent(
    engine: Engine, toy_redis: redis.Redis, applied: bool
) -> None:
    event_id = new_event(engine, capacity=10)
    combiner = Combiner(KIND, locks=make_locks(toy_redis, wait=0.3))
    intent = new_intent()
    looked_up: list[str] = []

    def watched_lookup(intent_id: str) -> Outcome | None:
        looked_up.append(intent_id)
        return lookup(engine, intent_id)

    toy_redis.set(lock_key(event_id), "ghost:1:dead", ex=1)
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(
            combiner.submit,
            event_id,
            intent,
            apply_batch=partial(apply_batch, engine, event_id),
            lookup=watched_lookup,
            withdraw=partial(withdraw, engine, event_id),
        )
        wait_until(lambda: toy_redis.llen(intents_key(KIND, event_id)) == 1, timeout=5)
        assert toy_redis.lpop(intents_key(KIND, event_id))
        if applied:
            # The dead holder had committed it: the journal has the outcome.
            assert apply_batch(engine, event_id, [intent])[0]["first"] == 1
        outcome = future.result(timeout=10)
    assert looked_up == [intent["id"]]
    assert outcome == {"ok": True, "first": 1, "batch": 1}
    assert check_answers(engine, event_id, [{"id": intent["id"], "outcome": outcome}])
    assert_drained(toy_redis, event_id)


def test_a_lookup_that_cannot_reach_the_database_reaches_the_caller(
    engine: Engine, toy_redis: redis.Redis
) -> None:
    """Outcome unknown: the caller answers 503 outcome_unknown, not a guess."""
    event_id = new_event(engine, capacity=10)
    combiner = Combiner(KIND, locks=make_locks(toy_redis, wait=0.3))

    def unreachable(intent_id: str) -> Outcome | None:
        raise ConnectionError("database unreachable")

    toy_redis.set(lock_key(event_id), "ghost:1:dead", ex=1)
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(
            combiner.submit,
            event_id,
            new_intent(),
            apply_batch=partial(apply_batch, engine, event_id),
            lookup=unreachable,
            withdraw=partial(withdraw, engine, event_id),
        )
        wait_until(lambda: toy_redis.llen(intents_key(KIND, event_id)) == 1, timeout=5)
        assert toy_redis.lpop(intents_key(KIND, event_id))
        with pytest.raises(ConnectionError):
            future.result(timeout=10)


def test_a_long_drain_renews_its_lease(engine: Engine, toy_redis: redis.Redis) -> None:
    """Three batches of two, each slower than half the lease: the hold outlasts the lease, but
    each batch renews it, so nobody takes over and nothing is lost."""
    event_id = new_event(engine, capacity=10)
    queued = threading.Event()

    def slow(point: str, intents: list[Intent]) -> None:
        if point == "committed" and not queued.is_set():
            wait_until(lambda: toy_redis.llen(intents_key(KIND, event_id)) == 6, timeout=5)
            queued.set()
        if point == "drained" and queued.is_set():
            time.sleep(0.6)

    # No hand-over: the drain under test lasts longer than the lease.
    holder = Combiner(
        KIND, locks=make_locks(toy_redis, expire=1), batch_max=2, hook=slow, hand_off_seconds=60
    )
    waiter = Combiner(KIND, locks=make_locks(toy_redis, wait=8.0, expire=1))
    with ThreadPoolExecutor(7) as pool:
        holding = pool.submit(submitter(holder, engine, event_id), new_intent())
        wait_until(lambda: toy_redis.exists(lock_key(event_id)), timeout=5)
        waiting = [pool.submit(submitter(waiter, engine, event_id), new_intent()) for _ in range(6)]
        records = [future.result(timeout=15) for future in [holding, *waiting]]
    rows = check_answers(engine, event_id, records)
    assert sorted(outcome["batch"] for outcome in rows.values()) == [1, 2, 2, 2, 2, 2, 2]
    stats = LockStats.from_hash(toy_redis.hgetall(stats_key(event_id)))
    assert (stats.acquired, stats.requests, stats.lost) == (1, 7, 0)
    assert_drained(toy_redis, event_id)


# --- holders that die or linger ---------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", ["acquired", "drained", "committed"])
def test_a_killed_holder_strands_nobody(
    engine: Engine, toy_redis: redis.Redis, tmp_path: Path, kill_at: str
) -> None:
    """A holder SIGKILLed after winning the lock (a), after draining a batch (b) or after
    committing it (c): every other caller still gets its true outcome."""
    event_id = new_event(engine, capacity=40)
    marker = tmp_path / "killed"
    blocker = redis_lock.Lock(toy_redis, lock_name(event_id), expire=30)
    assert blocker.acquire(blocking=False)
    workers = start_workers(
        tmp_path,
        3,
        event_id=event_id,
        redis_settings={"redis_url": TEST_REDIS_URL},
        per_thread=3,
        # One process gives up early: its callers take the deadline path (LREM, then the
        # journal), the others outwait the dead holder's lease.
        wait_seconds=lambda n: 2.0 if n == 0 else 8.0,
        kill_at=kill_at,
        marker=str(marker),
    )
    # Everyone queues behind the plain lock, then a waiter wins and is killed at the point.
    wait_until(lambda: toy_redis.llen(intents_key(KIND, event_id)) >= 10, timeout=20)
    blocker.release()
    records, codes = collect(workers)
    assert marker.exists(), "no holder reached the kill point"
    assert sorted(codes) == [-9, 0, 0]
    rows = check_answers(engine, event_id, records)
    assert len(records) == 2 * 12
    stranded = json.loads(marker.read_text())
    if kill_at != "acquired":
        assert len(stranded) > 1
    for record in records:
        if record["id"] in stranded:
            # Drained by the dead holder: answered from the journal, or applied again.
            assert "outcome" in record, record
    if kill_at == "committed":
        assert set(stranded) <= set(rows)
    assert_drained(toy_redis, event_id)


def test_a_zombie_holder_s_late_commit_changes_nothing(
    engine: Engine, toy_redis: redis.Redis
) -> None:
    """A holder pauses with a drained batch until its lease has run out and the waiters have
    run their intents themselves; then it commits the same batch: the journal answers."""
    event_id = new_event(engine, capacity=10)
    paused, resume = threading.Event(), threading.Event()
    late: list[list[Outcome]] = []

    def pause(point: str, intents: list[Intent]) -> None:
        if point == "committed" and len(intents) == 1 and not paused.is_set():
            # Still holding after its own intent: let the waiters queue behind it.
            wait_until(lambda: toy_redis.llen(intents_key(KIND, event_id)) == 3, timeout=5)
        if point == "drained" and len(intents) > 1:
            paused.set()
            resume.wait(timeout=30)

    def zombie_apply(intents: list[Intent]) -> list[Outcome]:
        outcomes = apply_batch(engine, event_id, intents)
        if len(intents) > 1:
            late.append(outcomes)
        return outcomes

    # No hand-over: this holder goes on to drain what queued behind it.
    zombie = Combiner(KIND, locks=make_locks(toy_redis, expire=1), hook=pause, hand_off_seconds=60)
    waiter = Combiner(KIND, locks=make_locks(toy_redis, wait=5.0, expire=1))
    with ThreadPoolExecutor(4) as pool:
        held = pool.submit(
            zombie.submit,
            event_id,
            new_intent(),
            apply_batch=zombie_apply,
            lookup=partial(lookup, engine),
            withdraw=partial(withdraw, engine, event_id),
        )
        wait_until(lambda: toy_redis.exists(lock_key(event_id)), timeout=5)
        waiters = [pool.submit(submitter(waiter, engine, event_id), new_intent()) for _ in range(3)]
        assert paused.wait(timeout=10)
        records = [future.result(timeout=15) for future in waiters]  # served after the lease
        before = journal(engine, event_id)
        resume.set()
        held.result(timeout=10)
    assert all("outcome" in record for record in records)
    assert journal(engine, event_id) == before  # the late commit changed nothing
    # The zombie's batch got the outcomes the waiters got (the journal's), in queue order.
    (replayed,) = late
    by_seat = sorted((record["outcome"] for record in records), key=lambda o: o["first"])
    assert sorted(replayed, key=lambda outcome: outcome["first"]) == by_seat
    assert check_answers(engine, event_id, records)
    assert LockStats.from_hash(toy_redis.hgetall(stats_key(event_id))).lost == 1
    assert_drained(toy_redis, event_id)


# --- interoperation ---------------------------------------------------------------------


def test_a_plain_python_redis_lock_holder_interoperates(
    engine: Engine, toy_redis: redis.Redis
) -> None:
    event_id = new_event(engine, capacity=10)
    combiner = Combiner(KIND, locks=make_locks(toy_redis))
    plain = redis_lock.Lock(toy_redis, lock_name(event_id), expire=10)
    assert plain.acquire(blocking=False)
    with ThreadPoolExecutor(4) as pool:
        futures = [
            pool.submit(submitter(combiner, engine, event_id), new_intent()) for _ in range(4)
        ]
        wait_until(lambda: toy_redis.llen(intents_key(KIND, event_id)) == 4, timeout=5)
        time.sleep(0.6)  # a few wait slices: nobody gets past the plain lock
        assert not any(future.done() for future in futures)
        released = time.monotonic()
        plain.release()
        records = [future.result(timeout=5) for future in futures]
        assert time.monotonic() - released < 2
    assert len(check_answers(engine, event_id, records)) == 4
    # And a plain client waits for a combining holder like for any other.
    assert plain.acquire(timeout=5)
    plain.release()
    assert_drained(toy_redis, event_id)


@pytest.mark.slow
def test_on_a_redis_cluster(engine: Engine, tmp_path: Path) -> None:
    with RedisClusterGroup() as group:
        event_id = new_event(engine, capacity=40)
        workers = start_workers(
            tmp_path, 2, event_id=event_id, redis_settings={"cluster_nodes": group.ports}
        )
        client = group.client(decode_responses=False, socket_timeout=10)
        combiner = Combiner(KIND, locks=make_locks(client, wait=6.0))
        time.sleep(WORKER_START_DELAY)
        local = run_threads(
            submitter(combiner, engine, event_id), [new_intent() for _ in range(16)], 4
        )
        remote, codes = collect(workers)
        assert codes == [0, 0]
        records = local + remote
        rows = check_answers(engine, event_id, records)
        assert len(rows) == 48 and all("outcome" in record for record in records)
        assert max(outcome["batch"] for outcome in rows.values()) > 1, "nothing was combined"
        assert_drained(client, event_id)


def test_lock_timeout_is_the_locks_own(engine: Engine, toy_redis: redis.Redis) -> None:
    """The caller sees locking's LockTimeout (a 503 with Retry-After), not a new error."""
    event_id = new_event(engine, capacity=1)
    combiner = Combiner(KIND, locks=make_locks(toy_redis, wait=0.2))
    assert toy_redis.set(lock_key(event_id), "someone", ex=5)
    with pytest.raises(LockTimeout):
        combiner.submit(
            event_id,
            new_intent(),
            apply_batch=partial(apply_batch, engine, event_id),
            lookup=partial(lookup, engine),
            withdraw=partial(withdraw, engine, event_id),
        )
