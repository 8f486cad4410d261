"""gunicorn's gthread worker with the event lock through python-redis-lock (bench/redislock.py).

    GUNICORN_CMD_ARGS="--worker-class bench.redislock_worker.Worker"

gunicorn's master imports this module to find the worker class, before gunicorn.conf.py's
on_starting has created the metrics directory: the application (and prometheus_client) must
not be imported here, only in the worker.
"""

from __future__ import annotations

from gunicorn.workers.gthread import ThreadWorker


class Worker(ThreadWorker):
    def init_process(self) -> None:
        from bench.redislock import install

        install()
        super().init_process()
