"""Load from many real client processes that start together, and a database sampler process.

``run_clients(worker, params)`` starts one OS process per item of ``params``. Every process
builds its own ``requests`` session, waits on a shared barrier, then calls ``worker(client)``;
``client.request(...)`` sends a request and records its outcome (status, problem ``code``,
elapsed). Nothing is mocked: the processes talk HTTP to whatever URLs the worker uses.

``fire(specs)`` is the common case: each process sends one (or a few) fixed requests.

``SqlSampler`` runs one statement every ``interval`` seconds in its own process (its own
connection, so it sees only committed data) until the block exits, and keeps every row.

Processes are forked (Linux): workers may be any callable, and start in milliseconds. A worker
must not use database or Redis connections inherited from the parent; open its own.
"""

from __future__ import annotations

import multiprocessing
import queue
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests

NO_ANSWER = 0
"""``Outcome.status`` when no HTTP answer came back (refused, reset, timed out)."""


@dataclass(frozen=True)
class Outcome:
    """One request as a client saw it."""

    worker: int
    tag: str
    method: str
    url: str
    status: int
    code: str | None  # problem+json ``code``, or the exception name when status is NO_ANSWER
    elapsed: float
    at: float  # time.monotonic() when sent (CLOCK_MONOTONIC is shared by all processes)
    retry_after: str | None = None


@dataclass(frozen=True)
class RequestSpec:
    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    json: Any = None
    tag: str = ""


class Client:
    """What a worker gets: its index, its parameters and a recording HTTP session."""

    def __init__(self, index: int, params: Any, *, request_timeout: float) -> None:
        self.index = index
        self.params = params
        self.request_timeout = request_timeout
        self.session = requests.Session()
        self.outcomes: list[Outcome] = []
        self.started = time.monotonic()  # reset when the barrier opens

    def since_start(self) -> float:
        return time.monotonic() - self.started

    def request(
        self, method: str, url: str, *, tag: str = "", **kwargs: Any
    ) -> requests.Response | None:
        """Send one request and record it; returns the response, or None when none came."""
        kwargs.setdefault("timeout", self.request_timeout)
        sent = time.monotonic()
        try:
            response = self.session.request(method, url, **kwargs)
        except requests.RequestException as error:
            self._record(tag, method, url, NO_ANSWER, type(error).__name__, sent, None)
            return None
        code = None
        if response.headers.get("Content-Type", "").startswith("application/problem+json"):
            code = response.json().get("code")
        self._record(
            tag, method, url, response.status_code, code, sent, response.headers.get("Retry-After")
        )
        return response

    def _record(
        self,
        tag: str,
        method: str,
        url: str,
        status: int,
        code: str | None,
        sent: float,
        retry_after: str | None,
    ) -> None:
        self.outcomes.append(
            Outcome(
                worker=self.index,
                tag=tag,
                method=method,
                url=url,
                status=status,
                code=code,
                elapsed=time.monotonic() - sent,
                at=sent,
                retry_after=retry_after,
            )
        )


@dataclass
class LoadResult:
    outcomes: list[Outcome]
    returns: list[Any]  # what each worker returned, by process index
    wall: float  # barrier opening to last process done

    def count(self, **where: Any) -> int:
        return len(self.select(**where))

    def select(self, **where: Any) -> list[Outcome]:
        return [o for o in self.outcomes if all(getattr(o, k) == v for k, v in where.items())]

    def answers(self, tag: str | None = None) -> Counter[tuple[int, str | None]]:
        """(status, code) -> how many, optionally for one tag."""
        return Counter((o.status, o.code) for o in self.outcomes if tag is None or o.tag == tag)

    def summary(self) -> str:
        parts = [
            f"{status} {code or ''}".strip() + f": {n}"
            for (status, code), n in sorted(
                self.answers().items(), key=lambda item: (item[0][0], item[0][1] or "")
            )
        ]
        slowest = max((o.elapsed for o in self.outcomes), default=0.0)
        return (
            f"{len(self.outcomes)} requests from {len(self.returns)} processes in {self.wall:.2f}s "
            f"(slowest {slowest:.3f}s): " + ", ".join(parts)
        )


def _child(
    worker: Callable[[Client], Any],
    index: int,
    params: Any,
    barrier: Any,
    results: Any,
    request_timeout: float,
    barrier_timeout: float,
    warm_up: Callable[[Client], None] | None,
) -> None:
    client = Client(index, params, request_timeout=request_timeout)
    try:
        if warm_up is not None:
            warm_up(client)  # e.g. open the keep-alive connection; not recorded
        barrier.wait(barrier_timeout)
        client.started = time.monotonic()
        returned = worker(client)
        results.put((index, client.outcomes, returned, None, time.monotonic()))
    except BaseException:
        results.put((index, client.outcomes, None, traceback.format_exc(), time.monotonic()))


def run_clients(
    worker: Callable[[Client], Any],
    params: Sequence[Any],
    *,
    timeout: float = 60.0,
    request_timeout: float = 15.0,
    warm_up: Callable[[Client], None] | None = None,
) -> LoadResult:
    """Run ``worker`` in one process per item of ``params``, all released at the same moment.

    ``warm_up(client)`` runs in each process before the barrier (connect, log in, ...), so
    that what follows the barrier is only the load itself.
    """
    context = multiprocessing.get_context("fork")
    parties = len(params)
    barrier = context.Barrier(parties + 1)  # + this process, which opens it once all are ready
    results = context.Queue()
    processes = [
        context.Process(
            target=_child,
            args=(worker, index, item, barrier, results, request_timeout, timeout, warm_up),
            daemon=True,
        )
        for index, item in enumerate(params)
    ]
    for process in processes:
        process.start()
    try:
        barrier.wait(timeout)
        opened = time.monotonic()
        collected: dict[int, tuple[list[Outcome], Any, str | None, float]] = {}
        deadline = opened + timeout
        while len(collected) < parties:
            try:
                index, outcomes, returned, error, done = results.get(
                    timeout=max(0.1, deadline - time.monotonic())
                )
            except queue.Empty:
                raise TimeoutError(
                    f"{parties - len(collected)} of {parties} client processes did not finish "
                    f"within {timeout}s"
                ) from None
            collected[index] = (outcomes, returned, error, done)
    finally:
        for process in processes:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join()
    errors = [error for _, _, error, _ in collected.values() if error]
    if errors:
        raise AssertionError(f"{len(errors)} client process(es) failed; first:\n{errors[0]}")
    return LoadResult(
        outcomes=[o for index in sorted(collected) for o in collected[index][0]],
        returns=[collected[index][1] for index in sorted(collected)],
        wall=max(done for _, _, _, done in collected.values()) - opened,
    )


def _send_specs(client: Client) -> None:
    for spec in _specs(client):
        client.request(spec.method, spec.url, tag=spec.tag, headers=spec.headers, json=spec.json)


def _specs(client: Client) -> list[RequestSpec]:
    return client.params if isinstance(client.params, list) else [client.params]


class _ConnectFirst:
    """Warm-up for ``fire``: GET ``path`` on each origin the process will talk to."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __call__(self, client: Client) -> None:
        for origin in {
            urlsplit(spec.url)._replace(path="", query="").geturl() for spec in _specs(client)
        }:
            client.session.get(f"{origin}{self.path}", timeout=client.request_timeout)


def fire(
    specs: Sequence[RequestSpec | list[RequestSpec]],
    *,
    connect_path: str | None = None,
    **options: Any,
) -> LoadResult:
    """One process per item; each sends its request(s) in order once all are ready.

    ``connect_path`` (a cheap path such as ``/livez``) is fetched from each origin before the
    barrier, so the keep-alive connection exists and the real requests leave closer together.
    """
    warm_up = _ConnectFirst(connect_path) if connect_path else None
    return run_clients(_send_specs, list(specs), warm_up=warm_up, **options)


def _sample(
    url: str,
    sql: str,
    params: dict[str, Any],
    interval: float,
    stop: Any,
    ready: Any,
    results: Any,
) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    samples: list[dict[str, Any]] = []
    error = None
    engine = create_engine(url, poolclass=NullPool)
    try:
        statement = text(sql)
        with engine.connect() as connection:
            while True:
                taken = time.monotonic()
                # One statement in autocommit-like fashion: one snapshot per sample.
                row = connection.execute(statement, params).mappings().one()
                connection.commit()
                samples.append({**row, "at": taken})
                ready.set()
                if stop.wait(max(0.0, interval - (time.monotonic() - taken))):
                    break
    except BaseException:
        error = traceback.format_exc()
        ready.set()
    finally:
        engine.dispose()
    results.put((samples, error))


class SqlSampler:
    """Run one SQL statement (returning one row) periodically in a separate process.

    ``with SqlSampler(url, sql, params) as sampler: ...`` — after the block,
    ``sampler.samples`` holds every row as a dict (plus ``at``, its time.monotonic()).
    """

    def __init__(
        self, url: str, sql: str, params: dict[str, Any] | None = None, *, interval: float = 0.05
    ) -> None:
        self.url = url
        self.sql = sql
        self.params = params or {}
        self.interval = interval
        self.samples: list[dict[str, Any]] = []
        context = multiprocessing.get_context("fork")
        self._stop = context.Event()
        self._ready = context.Event()
        self._results = context.Queue()
        self._process = context.Process(
            target=_sample,
            args=(
                url,
                sql,
                self.params,
                interval,
                self._stop,
                self._ready,
                self._results,
            ),
            daemon=True,
        )

    def __enter__(self) -> SqlSampler:
        self._process.start()
        if not self._ready.wait(15):
            self._process.kill()
            raise TimeoutError("the sampler took no first sample within 15s")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        try:
            samples, error = self._results.get(timeout=15)
        finally:
            self._process.join(timeout=5)
            if self._process.is_alive():
                self._process.kill()
        if error:
            raise AssertionError(f"the sampler failed:\n{error}")
        self.samples = samples
