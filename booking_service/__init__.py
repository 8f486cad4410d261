"""booking-service: event bookings that never overbook, however many instances run."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask

# Importing the package costs nothing: the application's modules are imported by create_app.
# gunicorn.conf.py checks the settings (booking_service.config) in the master process, before
# any worker boots, and must not load prometheus_client and the rest there.

__version__ = "0.1.0"

OPENAPI_SETTINGS = {
    "API_TITLE": "booking-service",
    "API_VERSION": "v1",
    "OPENAPI_VERSION": "3.0.3",
    "OPENAPI_URL_PREFIX": "/api",
    "OPENAPI_JSON_PATH": "openapi.json",
    "OPENAPI_SWAGGER_UI_PATH": "docs",
    # Served by this app (static/vendor), so the docs work without internet access.
    "OPENAPI_SWAGGER_UI_URL": "/static/vendor/",
    "OPENAPI_REDOC_PATH": "redoc",
    "OPENAPI_REDOC_URL": "/static/vendor/redoc/redoc.standalone.js",
    "API_SPEC_OPTIONS": {
        "info": {
            "description": (
                "Event bookings that never overbook. Errors are RFC 9457 problem+json with a "
                "stable `code`; every 503 carries `Retry-After`. Lists are paginated with "
                "`page`/`page_size` (max 100); totals are in the `X-Pagination` header."
            )
        },
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "Opaque token from register or login.",
                }
            }
        },
    },
}


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the application; ``config`` overrides settings read from the environment.

    Raises ``config.ConfigError`` for a setting it cannot use.
    """
    from flask import Flask

    from booking_service import config as config_module

    settings = config_module.from_environment()
    settings.update(config or {})
    settings["DATABASE_URL"] = config_module.normalize_database_url(settings["DATABASE_URL"])
    config_module.validate(settings)
    # Before prometheus_client is imported: its first metric opens a file in the directory.
    config_module.ensure_metrics_directory()

    from booking_service import metrics
    from booking_service.api import openapi
    from booking_service.database import db
    from booking_service.locking import locks
    from booking_service.ratelimit import limiter
    from booking_service.redis_clients import redis_client
    from booking_service.services import accounts, ledger, sessions
    from booking_service.services.pacer import pacer
    from booking_service.services.relay import relay
    from booking_service.services.snapshots import event_snapshots
    from booking_service.services.sweeper import sweeper

    app = Flask(__name__)
    app.config.update(settings)
    app.config.update(OPENAPI_SETTINGS)
    _configure_logging(app.config["LOG_LEVEL"])

    metrics.configure(enabled=bool(app.config["METRICS_ENABLED"]))
    db.configure(app.config)
    redis_client.configure(app.config)
    limiter.configure(redis_client.get())
    locks.configure(app.config, redis_client.get())
    ledger.configure(app.config)
    event_snapshots.configure(app.config)
    accounts.settings.password_hash_method = app.config["PASSWORD_HASH_METHOD"]
    accounts.settings.token_ttl = timedelta(hours=app.config["TOKEN_TTL_HOURS"])
    sessions.settings.cache_seconds = app.config["SESSION_CACHE_SECONDS"]
    sweeper.configure(app.config)  # started in gunicorn's workers only (gunicorn.conf.py)
    pacer.configure(app.config)  # the same
    from booking_service.api.webhook_payloads import document_payloads, render_data

    relay.configure(app.config, render=render_data)  # started like the sweeper
    accounts.settings.device_ttl = timedelta(days=app.config["DEVICE_TOKEN_TTL_DAYS"])

    openapi.init_app(app)
    from booking_service.api.problems import document_stock_problems

    document_stock_problems(openapi)
    from booking_service.api.schemas import document_schema_rules

    document_schema_rules(openapi)
    from booking_service import ops
    from booking_service.api import (
        auth,
        bookings,
        events,
        history,
        holds,
        queue,
        waitlist,
        webhooks,
    )

    for blueprint in (
        auth.blp,
        events.blp,
        bookings.blp,
        holds.blp,
        waitlist.blp,
        queue.blp,
        history.blp,
        webhooks.blp,
    ):
        openapi.register_blueprint(blueprint)
    document_payloads(openapi)
    ops.register(openapi, app)
    from booking_service.web import problems, request_metrics, security

    problems.init_app(app)  # after openapi, so our problem+json handler wins
    request_metrics.instrument(app)
    security.init_app(app)  # body size, JSON parsing, CORS, security headers

    from booking_service.cli import register_commands

    register_commands(app)
    return app


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s"
    )
    # python-redis-lock logs every acquire attempt; our own lock log lines say what matters.
    logging.getLogger("redis_lock").setLevel(logging.ERROR)
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
