"""Fault tier fixtures: gunicorn instances started per test, and a private Redis to break."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask

from harness.instances import AppInstance
from harness.redis_servers import RedisServer
from tests.support.instances import instance_env


@pytest.fixture
def start_instance(app: Flask) -> Iterator[Callable[..., AppInstance]]:
    """Start a gunicorn instance with settings overrides; all are stopped after the test.

    ``app`` first: it recreates the schema the instances use.
    """
    started: list[AppInstance] = []

    def start(name: str, *, workers: int = 1, threads: int = 4, **settings: Any) -> AppInstance:
        instance = AppInstance(
            instance_env(**settings), workers=workers, threads=threads, name=name
        )
        started.append(instance)  # before start(): a failed boot is still cleaned up
        return instance.start()

    yield start
    for instance in started:
        instance.stop()


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A Redis of the test's own, free to be stopped and restarted (same port)."""
    with RedisServer() as server:
        yield server
