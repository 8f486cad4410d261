"""``flask`` commands: database, demo data, admins, reconciliation, purges of expired rows."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta

import click
from flask import Flask, current_app

from booking_service import migrate, usernames
from booking_service.database import db
from booking_service.errors import UsernameTaken, ValidationFailed
from booking_service.models import Booking, BookingStatus, Event, Role, User
from booking_service.services import accounts, idempotency, invariants, ledger, webhooks

DEMO_PASSWORD = "demo-password"
DEMO_ORGANIZERS = [("alice", "Alice Events Ltd"), ("bob", "Bob's Venues")]
DEMO_CUSTOMERS = ["carol", "dave", "erin", "frank", "grace"]


@click.command("init-db")
def init_db() -> None:
    """Create the database if it is missing and apply migrations."""
    url = current_app.config["DATABASE_URL"]
    if migrate.ensure_database(url):
        click.echo("created the database")
    try:
        migrate.upgrade(url)
    except migrate.MigrationRefused as error:
        raise click.ClickException(str(error)) from None
    click.echo("schema is up to date")


@click.command("create-admin")
@click.option("--username", required=True)
@click.option("--email", default="")
@click.password_option()
def create_admin(username: str, email: str, password: str) -> None:
    """Create an admin account (may read the live lock view and the ops dashboard)."""
    try:
        user = accounts.create_admin(username=username, password=password, email=email)
    except UsernameTaken:
        raise click.ClickException(f"username {username!r} is taken") from None
    except ValidationFailed as error:
        raise click.ClickException(f"username {username!r}: {error.errors}") from None
    click.echo(f"created admin {user.username} (id {user.id})")


@click.command("check-invariants")
def check_invariants() -> None:
    """Compare every event's counters with its booking, hold and waitlist rows; exit 1 on drift."""
    drift = invariants.find_drift()
    for item in drift:
        click.echo(f"event {item.event_id}: {item.problem}")
    if drift:
        click.echo(f"{len(drift)} problem(s) found", err=True)
        sys.exit(1)
    click.echo(
        "ok: booked_count, held_count and waitlist_length match their rows on every event; "
        "no double booking; every waitlist offer has its hold"
    )


@click.command("purge-idempotency-keys")
def purge_idempotency_keys() -> None:
    """Delete expired Idempotency-Key records (run it daily, e.g. from cron)."""
    click.echo(f"deleted {idempotency.purge_expired()} expired idempotency record(s)")


# The purges delete in batches, one short transaction each.
_batch_size = click.option(
    "--batch-size",
    default=1000,
    show_default=True,
    type=click.IntRange(min=1),
    help="Rows deleted per transaction.",
)


@click.command("purge-tokens")
@_batch_size
def purge_tokens(batch_size: int) -> None:
    """Delete bearer tokens expired or revoked over TOKEN_PURGE_GRACE_HOURS ago, and login
    devices unused for DEVICE_TOKEN_TTL_DAYS (run it hourly, with purge-idempotency-keys)."""
    grace = timedelta(hours=current_app.config["TOKEN_PURGE_GRACE_HOURS"])
    tokens = accounts.purge_tokens(grace=grace, batch_size=batch_size)
    devices = accounts.purge_stale_devices(batch_size=batch_size)
    click.echo(f"deleted {tokens} expired or revoked token(s) and {devices} stale login device(s)")


@click.command("purge-seat-intents")
@_batch_size
def purge_seat_intents(batch_size: int) -> None:
    """Delete the seat ledger's journal rows older than SEAT_INTENT_RETENTION_HOURS (run it
    hourly, with purge-tokens)."""
    retention = timedelta(hours=current_app.config["SEAT_INTENT_RETENTION_HOURS"])
    deleted = ledger.purge_journal(older_than=retention, batch_size=batch_size)
    click.echo(f"deleted {deleted} seat intent journal row(s)")


@click.command("purge-webhook-deliveries")
@_batch_size
def purge_webhook_deliveries(batch_size: int) -> None:
    """Delete delivered and failed webhook messages and delivery attempts older than
    WEBHOOK_DELIVERY_RETENTION_DAYS (run it daily, with purge-idempotency-keys)."""
    retention = timedelta(days=current_app.config["WEBHOOK_DELIVERY_RETENTION_DAYS"])
    deleted = webhooks.purge_settled(older_than=retention, batch_size=batch_size)
    click.echo(f"deleted {deleted} webhook message(s) and delivery attempt(s)")


def _demo_user(username: str, role: Role, organization: str | None = None) -> User:
    try:
        return accounts.register(
            role=role,
            username=username,
            password=DEMO_PASSWORD,
            email=f"{username}@example.com",
            first_name=username.capitalize(),
            organization_name=organization,
        ).user
    except UsernameTaken:
        with db.read_transaction() as session:
            key = usernames.username_key(username)
            user = session.query(User).filter(User.username_key == key).one()
        return user


@click.command("seed-demo")
def seed_demo() -> None:
    """Add demo organizers, customers and events (upcoming, ongoing, past, almost full)."""
    organizers = [_demo_user(name, Role.ORGANIZER, org) for name, org in DEMO_ORGANIZERS]
    customers = [_demo_user(name, Role.CUSTOMER) for name in DEMO_CUSTOMERS]
    with db.transaction() as session:
        if session.query(Event).filter(Event.organizer_id == organizers[0].id).count():
            click.echo("demo data already present")
            return
        now = datetime.now(UTC).replace(microsecond=0)
        hour, day = timedelta(hours=1), timedelta(days=1)
        # Inserted directly: the API refuses events that start in the past, by design.
        plans = [
            (organizers[0], "Python meetup", now + 7 * day, 3 * hour, 50, 2),
            (organizers[0], "Jazz night", now + 14 * day, 4 * hour, 200, 3),
            (organizers[1], "Chef's table (almost full)", now + 3 * day, 2 * hour, 5, 4),
            (organizers[1], "Morning yoga (happening now)", now - hour, 2 * hour, 20, 2),
            (organizers[0], "Spring conference (past)", now - 30 * day, 8 * hour, 100, 3),
        ]
        for organizer, title, start, length, capacity, booked in plans:
            event = Event(
                organizer_id=organizer.id,
                title=title,
                description=f"Demo event: {title}.",
                start_time=start,
                end_time=start + length,
                capacity=capacity,
                booked_count=booked,
            )
            session.add(event)
            session.flush()
            for customer in customers[:booked]:
                session.add(
                    Booking(
                        event_id=event.id,
                        customer_id=customer.id,
                        status=BookingStatus.ACTIVE.value,
                    )
                )
    click.echo(
        f"seeded {len(organizers)} organizers, {len(customers)} customers and "
        f"{len(plans)} events; every demo password is {DEMO_PASSWORD!r}"
    )


def register_commands(app: Flask) -> None:
    for command in (
        init_db,
        create_admin,
        check_invariants,
        seed_demo,
        purge_idempotency_keys,
        purge_tokens,
        purge_seat_intents,
        purge_webhook_deliveries,
    ):
        app.cli.add_command(command)
