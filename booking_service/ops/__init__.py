"""Operator code: health probes and the Prometheus scrape, the live lock view, the dashboard.

Layout, read top-down:

- ``probes.py``: ``/livez``, ``/readyz`` and ``/metrics`` (outside the versioned API);
- ``views.py``: ``/api/v1/ops/locks``, ``/api/v1/ops/stats`` and the ``/ops`` page, with their
  schemas (admin role or ``OPS_TOKEN``);
- ``lock_table.py``: the live lock table, read from the statistics ``locking`` writes;
- ``dashboard.py``: the dashboard's numbers, from the metrics of every worker;
- ``scrape_gauges.py``: gauges computed at scrape time (readiness, capacity, hot events).

The views here sit beside ``api`` and use the readers here and ``services``; the readers never
import a view (the layers contract in setup.cfg checks it).
"""

from __future__ import annotations

from flask import Flask
from flask_smorest import Api


def register(api: Api, app: Flask) -> None:
    """Register the operator blueprints (the page outside the OpenAPI document)."""
    from booking_service.ops import probes, views

    api.register_blueprint(probes.blp)
    api.register_blueprint(views.blp)
    app.register_blueprint(views.dashboard)
