"""Pure rules, no I/O: schedules, seat arithmetic, configuration parsing, error mapping."""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, datetime, timedelta, timezone

import pytest

from booking_service import config, errors, usernames
from booking_service.models import Event
from booking_service.services.events import schedule_errors
from booking_service.web import problems as problem_responses

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def event(
    *,
    capacity: int = 10,
    booked: int = 0,
    held: int = 0,
    lapsed: int = 0,
    waiting: int = 0,
    start: datetime = NOW,
    hours: int = 2,
) -> Event:
    return Event(
        title="t",
        description="",
        start_time=start,
        end_time=start + hours * HOUR,
        capacity=capacity,
        booked_count=booked,
        held_count=held,
        lapsed_hold_seats=lapsed,
        waitlist_length=waiting,
        max_seats_per_booking=4,
        organizer_id=1,
    )


# --- schedule_errors --------------------------------------------------------------------


def test_future_event_that_ends_after_it_starts_is_valid():
    assert schedule_errors(start_time=NOW + HOUR, end_time=NOW + 2 * HOUR, now=NOW) == {}


@pytest.mark.parametrize("start", [NOW - HOUR, NOW])
def test_start_not_in_the_future_is_an_error(start: datetime):
    found = schedule_errors(start_time=start, end_time=NOW + 5 * HOUR, now=NOW)

    assert set(found) == {"start_time"}
    assert found["start_time"]


def test_start_a_microsecond_ahead_is_valid():
    start = NOW + timedelta(microseconds=1)

    assert schedule_errors(start_time=start, end_time=start + HOUR, now=NOW) == {}


@pytest.mark.parametrize("end_offset", [timedelta(0), -HOUR])
def test_end_not_after_start_is_an_error(end_offset: timedelta):
    start = NOW + HOUR

    found = schedule_errors(start_time=start, end_time=start + end_offset, now=NOW)

    assert set(found) == {"end_time"}


def test_both_schedule_errors_are_reported_at_once():
    found = schedule_errors(start_time=NOW - HOUR, end_time=NOW - 2 * HOUR, now=NOW)

    assert set(found) == {"start_time", "end_time"}


def test_unchanged_start_may_be_in_the_past():
    found = schedule_errors(
        start_time=NOW - HOUR, end_time=NOW + HOUR, now=NOW, start_changed=False
    )

    assert found == {}


def test_unchanged_start_still_needs_end_after_start():
    found = schedule_errors(
        start_time=NOW - HOUR, end_time=NOW - 2 * HOUR, now=NOW, start_changed=False
    )

    assert set(found) == {"end_time"}


def test_schedule_comparison_respects_timezones():
    # 13:30+02:00 is 11:30 UTC, before NOW (12:00 UTC) although the wall clock reads later;
    # 09:00-05:00 is 14:00 UTC, after NOW although it reads earlier.
    earlier = datetime(2030, 6, 1, 13, 30, tzinfo=timezone(timedelta(hours=2)))
    later = datetime(2030, 6, 1, 9, 0, tzinfo=timezone(timedelta(hours=-5)))

    assert set(schedule_errors(start_time=earlier, end_time=NOW + HOUR, now=NOW)) == {"start_time"}
    assert schedule_errors(start_time=later, end_time=later + HOUR, now=NOW) == {}


# --- Event properties -------------------------------------------------------------------


@pytest.mark.parametrize(("capacity", "booked", "slots"), [(10, 0, 10), (10, 3, 7), (5, 5, 0)])
def test_available_slots_is_capacity_minus_booked(capacity: int, booked: int, slots: int):
    assert event(capacity=capacity, booked=booked).available_slots == slots


@pytest.mark.parametrize(("booked", "full"), [(0, False), (9, False), (10, True)])
def test_is_full_when_every_seat_is_booked(booked: int, full: bool):
    assert event(capacity=10, booked=booked).is_full is full


@pytest.mark.parametrize(
    ("booked", "held", "lapsed", "slots"),
    [(3, 2, 0, 5), (3, 2, 2, 7), (0, 10, 0, 0), (0, 10, 4, 4)],
)
def test_held_seats_count_against_capacity_until_their_hold_lapses(
    booked: int, held: int, lapsed: int, slots: int
):
    seen = event(capacity=10, booked=booked, held=held, lapsed=lapsed)
    assert (seen.seats_held, seen.available_slots) == (held - lapsed, slots)


@pytest.mark.parametrize(
    ("seats", "held", "waiting", "takes"),
    [(2, 8, 0, True), (3, 8, 0, False), (1, 0, 1, False), (5, 0, 0, False)],
)
def test_a_newcomer_gets_seats_only_all_at_once_and_only_if_nobody_waits(
    seats: int, held: int, waiting: int, takes: bool
):
    # 5 > max_seats_per_booking (4): too many for one booking, whatever is free.
    seen = event(capacity=10, held=held, waiting=waiting, start=NOW + HOUR)
    assert seen.takes_bookings_at(NOW, seats) is takes


def test_is_past_only_once_the_end_is_reached():
    e = event(start=NOW, hours=2)

    assert e.is_past_at(NOW + HOUR) is False
    assert e.is_past_at(NOW + 2 * HOUR) is True
    assert e.is_past_at(NOW + 3 * HOUR) is True
    assert e.is_past_at(NOW - HOUR) is False


def test_is_ongoing_from_start_until_just_before_end():
    e = event(start=NOW, hours=2)

    assert e.is_ongoing_at(NOW - timedelta(seconds=1)) is False
    assert e.is_ongoing_at(NOW) is True
    assert e.is_ongoing_at(NOW + HOUR) is True
    assert e.is_ongoing_at(NOW + 2 * HOUR) is False


def test_has_started_from_the_start_onwards():
    e = event(start=NOW, hours=2)

    assert e.has_started_at(NOW - timedelta(microseconds=1)) is False
    assert e.has_started_at(NOW) is True
    assert e.has_started_at(NOW + 5 * HOUR) is True  # still "started" once it has ended


def test_ongoing_and_past_are_exclusive():
    e = event(start=NOW, hours=1)

    for moment in (NOW - HOUR, NOW, NOW + timedelta(minutes=30), NOW + HOUR, NOW + 2 * HOUR):
        assert not (e.is_ongoing_at(moment) and e.is_past_at(moment)), moment


# --- configuration ----------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No configuration variable set: every setting takes its default."""
    for name in [*config.from_environment(), "GUNICORN_THREADS"]:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_defaults_apply_without_environment(clean_env: pytest.MonkeyPatch):
    settings = config.from_environment()

    assert settings["DB_POOL_SIZE"] == 8  # gunicorn's threads per worker (gunicorn.conf.py)
    assert settings["DB_MAX_OVERFLOW"] == 2
    assert settings["LOCK_WAIT_SECONDS"] == 5.0
    assert settings["LOCK_EXPIRE_SECONDS"] == 10
    assert settings["DB_STATEMENT_TIMEOUT_MS"] == 3000
    assert settings["RETRY_AFTER_SECONDS"] == 1
    assert settings["METRICS_TOKEN"] is None
    config.validate(settings)  # the defaults are a valid combination


def test_environment_values_are_parsed_to_their_types(clean_env: pytest.MonkeyPatch):
    clean_env.setenv("DB_POOL_SIZE", "12")
    clean_env.setenv("LOCK_WAIT_SECONDS", "0.25")
    clean_env.setenv("REDIS_URL", "redis://cache:6379/3")

    settings = config.from_environment()

    assert settings["DB_POOL_SIZE"] == 12
    assert settings["LOCK_WAIT_SECONDS"] == 0.25
    assert settings["REDIS_URL"] == "redis://cache:6379/3"


def test_empty_variable_means_default(clean_env: pytest.MonkeyPatch):
    clean_env.setenv("DB_POOL_SIZE", "")
    clean_env.setenv("REDIS_URL", "")

    settings = config.from_environment()

    assert settings["DB_POOL_SIZE"] == 8
    assert settings["REDIS_URL"] == "redis://127.0.0.1:6379/0"


def test_the_pool_follows_the_thread_count_unless_set(clean_env: pytest.MonkeyPatch):
    clean_env.setenv("GUNICORN_THREADS", "16")
    assert config.from_environment()["DB_POOL_SIZE"] == 16

    clean_env.setenv("DB_POOL_SIZE", "4")
    assert config.from_environment()["DB_POOL_SIZE"] == 4


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DB_POOL_SIZE", "five"),
        ("DB_POOL_SIZE", "0"),
        ("DB_POOL_SIZE", "2.5"),
        ("DB_MAX_OVERFLOW", "-1"),
        ("DB_STATEMENT_TIMEOUT_MS", "50"),
        ("LOCK_WAIT_SECONDS", "soon"),
        ("LOCK_WAIT_SECONDS", "0.01"),
        ("LOCK_EXPIRE_SECONDS", "1.5"),
        ("LOCK_EXPIRE_SECONDS", "0"),
        ("RETRY_AFTER_SECONDS", "0"),
        ("TOKEN_TTL_HOURS", "0"),
        ("MAX_CONTENT_LENGTH", "100"),
        ("REDIS_SOCKET_TIMEOUT_SECONDS", "0"),
        ("EVENT_SNAPSHOT_MAX_AGE_SECONDS", "-1"),
    ],
)
def test_unusable_values_raise_config_error(clean_env: pytest.MonkeyPatch, name: str, value: str):
    clean_env.setenv(name, value)

    with pytest.raises(config.ConfigError, match=name):
        config.from_environment()


def test_config_error_is_a_value_error():
    assert issubclass(config.ConfigError, ValueError)


def test_sub_second_lock_wait_is_allowed(clean_env: pytest.MonkeyPatch):
    clean_env.setenv("LOCK_WAIT_SECONDS", "0.5")

    assert config.from_environment()["LOCK_WAIT_SECONDS"] == 0.5


@pytest.mark.parametrize("timeout_ms", [10_000, 20_000])
def test_statement_timeout_must_be_shorter_than_the_lock_lease(
    clean_env: pytest.MonkeyPatch, timeout_ms: int
):
    clean_env.setenv("LOCK_EXPIRE_SECONDS", "10")
    clean_env.setenv("DB_STATEMENT_TIMEOUT_MS", str(timeout_ms))
    settings = config.from_environment()

    with pytest.raises(config.ConfigError, match="DB_STATEMENT_TIMEOUT_MS"):
        config.validate(settings)


def test_statement_timeout_just_under_the_lease_is_valid(clean_env: pytest.MonkeyPatch):
    clean_env.setenv("LOCK_EXPIRE_SECONDS", "10")
    clean_env.setenv("DB_STATEMENT_TIMEOUT_MS", "9999")

    config.validate(config.from_environment())


# --- error classes ----------------------------------------------------------------------

EXPECTED = [
    (errors.ValidationFailed, 422, "validation_error"),
    (errors.UnsupportedMediaType, 415, "unsupported_media_type"),
    (errors.Unauthorized, 401, "unauthorized"),
    (errors.InvalidCredentials, 401, "invalid_credentials"),
    (errors.Forbidden, 403, "forbidden"),
    (errors.UsernameTaken, 409, "username_taken"),
    (errors.EventNotFound, 404, "event_not_found"),
    (errors.BookingNotFound, 404, "booking_not_found"),
    (errors.HistoryEntryNotFound, 404, "history_entry_not_found"),
    (errors.EventFull, 409, "event_full"),
    (errors.AlreadyBooked, 409, "already_booked"),
    (errors.EventStarted, 422, "event_started"),
    (errors.EventEnded, 422, "event_ended"),
    (errors.NotActive, 409, "not_active"),
    (errors.AlreadyActive, 409, "already_active"),
    (errors.CapacityBelowBookings, 409, "capacity_below_bookings"),
    (errors.LockTimeout, 503, "lock_timeout"),
    (errors.LockUnavailable, 503, "lock_unavailable"),
    (errors.DbUnavailable, 503, "db_unavailable"),
]


@pytest.mark.parametrize(("error_class", "status", "code"), EXPECTED)
def test_error_classes_carry_contract_status_and_code(
    error_class: type[errors.DomainError], status: int, code: str
):
    error = error_class()

    assert isinstance(error, errors.DomainError)
    assert (error.status, error.code) == (status, code)
    assert error.title
    assert error.detail == error.title  # no detail given: the title stands in


def test_error_codes_are_unique():
    codes = [cls.code for cls, _, _ in EXPECTED]

    assert len(codes) == len(set(codes))


def test_only_unavailability_errors_ask_for_retry():
    retrying = {cls for cls, _, _ in EXPECTED if cls.retry_after}

    assert retrying == {errors.LockTimeout, errors.LockUnavailable, errors.DbUnavailable}


def test_error_keeps_detail_and_field_errors():
    error = errors.ValidationFailed("Times are wrong.", errors={"end_time": ["Too early."]})

    assert error.detail == "Times are wrong."
    assert str(error) == "Times are wrong."
    assert error.errors == {"end_time": ["Too early."]}


def test_webargs_messages_are_flattened_to_fields():
    flat = problem_responses._flatten_webargs_messages(
        {"json": {"title": ["Missing."]}, "query": {"page": ["Bad."]}}
    )

    assert flat == {"title": ["Missing."], "page": ["Bad."]}


# --- text rules: usernames and not-blank ------------------------------------------------

BMP = [chr(code) for code in range(0x10000) if not 0xD800 <= code <= 0xDFFF]


def test_the_listed_format_characters_are_unicodes_up_to_ffff():
    from booking_service.api.fields import FORMAT_RANGES

    listed = {code for first, last in FORMAT_RANGES for code in range(first, last + 1)}
    # On a Python with a newer Unicode, update FORMAT_RANGES to this set.
    assert listed == {ord(c) for c in BMP if unicodedata.category(c) == "Cf"}


def test_the_username_pattern_and_the_username_rule_agree():
    from booking_service.api.fields import USERNAME_PATTERN

    disagree = [
        f"U+{ord(c):04X}"
        for c in BMP
        if (re.search(USERNAME_PATTERN, f"a{c}b") is not None)
        != (usernames.refusal(f"a{c}b") is None)
    ]
    assert disagree == []
    # Beyond U+FFFF the rule refuses the format characters the pattern cannot list.
    assert usernames.refusal("a\U000e0041b") is not None
    assert usernames.refusal("a\U0001d518b") is None


def test_the_not_blank_pattern_and_the_not_blank_rule_agree():
    import marshmallow as ma

    from booking_service.api.fields import NOT_BLANK_PATTERN, not_blank

    def enforced(value: str) -> bool:
        try:
            return not_blank(value)
        except ma.ValidationError:
            return False

    for c in BMP:
        if c == "\x00":
            continue
        for value in (c, f" {c}\u200b"):
            assert (re.search(NOT_BLANK_PATTERN, value) is not None) == enforced(value), value


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("Alice", "alice"),
        ("  alice ", "alice"),
        ("\uff41\uff4c\uff49\uff43\uff45", "alice"),  # fullwidth
        ("ΟΔΥΣΣΕΑΣ", "οδυσσεασ"),
        ("οδυσσεας", "οδυσσεασ"),
        ("Straße", "strasse"),
        ("İzmir", "i\u0307zmir"),
        ("e\u0301cole", "\u00e9cole"),
        ("\ufb01nn", "finn"),
    ],
)
def test_username_key_is_nfkc_case_folded_and_trimmed(name: str, key: str):
    assert usernames.username_key(name) == key
    assert usernames.username_key(key) == key  # a fixed point


def test_username_key_is_a_fixed_point_for_every_character():
    moved = [
        f"U+{ord(c):04X}"
        for c in BMP
        if usernames.username_key(usernames.username_key(c)) != usernames.username_key(c)
    ]
    assert moved == []


# --- the database URL -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("postgres://u:pw@db:5432/app", "postgresql+psycopg2://u:pw@db:5432/app"),
        ("postgresql://u:pw@db:5432/app", "postgresql+psycopg2://u:pw@db:5432/app"),
        ("postgresql+psycopg2://u@db/app", "postgresql+psycopg2://u@db/app"),
        ("POSTGRES://u@db/app?sslmode=require", "postgresql+psycopg2://u@db/app?sslmode=require"),
    ],
)
def test_the_usual_forms_of_database_url_mean_psycopg2(
    clean_env: pytest.MonkeyPatch, given: str, used: str
):
    clean_env.setenv("DATABASE_URL", given)

    assert config.from_environment()["DATABASE_URL"] == used
    assert config.normalize_database_url(given) == used


@pytest.mark.parametrize("url", ["mysql://u:secret@db/app", "db.example.com/app", "sqlite://"])
def test_a_database_url_that_is_not_postgresql_is_a_config_error(
    clean_env: pytest.MonkeyPatch, url: str
):
    clean_env.setenv("DATABASE_URL", url)

    with pytest.raises(config.ConfigError, match="DATABASE_URL") as raised:
        config.from_environment()
    assert "secret" not in str(raised.value)


def test_the_listed_ignorable_and_blank_characters_are_unicodes_up_to_ffff():
    import regex

    listed = {
        code
        for first, last in usernames.IGNORABLE_OR_BLANK_RANGES
        for code in range(first, last + 1)
    }
    ignorable = regex.compile(r"\p{Default_Ignorable_Code_Point}")
    beyond_categories = {
        ord(c)
        for c in BMP
        if (ignorable.match(c) or c in usernames.BLANK_RENDERING)
        and unicodedata.category(c) not in usernames.REFUSED_CATEGORIES
    }
    # On a newer regex module (a newer Unicode), update IGNORABLE_OR_BLANK_RANGES to this set.
    assert listed == beyond_categories


@pytest.mark.parametrize(
    "character",
    # Default-ignorable (U+3164, U+115F and U+17B4 among them) and blank-rendering (U+2800).
    ["\u034f", "\ufe0f", "\U000e0100", "\u3164", "\u115f", "\u17b4", "\u2800", "\uffa0"],
)
def test_invisible_and_blank_rendering_characters_are_refused(character: str):
    assert usernames.refusal(f"car{character}ol") is not None
    assert usernames.refusal(f"carol{character}") is not None


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("carol", "c\u0430rol"),  # U+0430 CYRILLIC SMALL LETTER A
        ("Carol", "C\u0430ROL"),  # and case
        ("paypal", "paypa1"),
        ("olive", "0live"),
        ("modern", "rnodern"),
        ("alice", "\u0430lice"),
        ("Straße", "STR\u0410SSE"),  # a look-alike of another spelling of the same account
    ],
)
def test_look_alikes_have_one_skeleton(first: str, second: str):
    assert usernames.username_key(first) != usernames.username_key(second)
    assert usernames.username_skeleton(first) == usernames.username_skeleton(second)


@pytest.mark.parametrize(
    ("first", "second"), [("carol", "carl"), ("alice", "alica"), ("олег", "oleg"), ("bob", "b0bby")]
)
def test_names_that_do_not_look_alike_have_different_skeletons(first: str, second: str):
    assert usernames.username_skeleton(first) != usernames.username_skeleton(second)


def test_the_skeleton_reads_the_confusables_table_in_the_right_direction():
    # A prototype of several characters (m looks like rn), a source whose NFD is not itself
    # (U+1E9A looks like U+1EA3, a with hook above), right-to-left entries (Hebrew samekh and
    # Latin o): each joins the class it belongs to in Unicode's confusables.txt.
    assert usernames.username_skeleton("m") == usernames.username_skeleton("rn")
    ẚ = usernames._prototypes().get("\u1e9a", "\u1e9a")  # NFKC takes it apart before a skeleton
    assert unicodedata.normalize("NFD", ẚ) == "a\u0309"
    assert usernames.username_skeleton("\u05e1") == usernames.username_skeleton("o")
