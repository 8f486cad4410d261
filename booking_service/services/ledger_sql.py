"""The seat ledger's statement: every seat change of one event, a batch at a time, in SQL.

One PL/pgSQL function applies a batch of *intents* (book, hold, confirm, ...) to one event in
arrival order, on the event row locked ``FOR UPDATE``, in the caller's transaction. It is the
only place where free seats are computed, where the per-customer rules are checked and where
seats are offered to the waitlist (docs/architecture.md, "The seat ledger"). A refusal is
decided per intent against the running counters, so one refused intent never sinks the batch.

Every intent carries an id, journaled in ``seat_intents`` with its outcome in the same
transaction: an intent applied twice (a holder that lost its lease replaying a batch) answers
its first outcome and changes nothing, and anyone can read an intent's outcome after a crash.
"""

from __future__ import annotations

from booking_service.database import StoredFunction
from booking_service.services import history, outbox
from booking_service.services.outbox import emit_sql

# The waitlist's starvation bound: an entry passed over this many times by later, smaller ones
# stops later entries from being offered anything until it is served.
MAX_PASSES = 3

_CLOSED = """
        IF ev.end_time <= at THEN
            res := jsonb_build_object('error', 'event_ended');
        ELSIF ev.start_time <= at THEN
            res := jsonb_build_object('error', 'event_started');
        END IF;"""

_TOO_MANY = "jsonb_build_object('error', 'too_many_seats', 'max', ev.max_seats_per_booking)"

_NO_SEATS = """
            IF ev.waitlist_length > 0 THEN
                res := jsonb_build_object('error', 'event_full', 'available', 0,
                                              'waitlist_length', ev.waitlist_length);
            ELSIF ev.capacity - ev.booked_count - ev.held_count < {need} THEN
                res := jsonb_build_object('error', 'event_full', 'available',
                    greatest(ev.capacity - ev.booked_count - ev.held_count, 0));
            END IF;"""


def _history(
    user: str, action: str, entity_type: str, entity_id: str, seats: str, **more: str
) -> str:
    """One history entry written from PL/pgSQL (values are SQL expressions)."""
    details = history.seat_details(event_id="ev.id", seats=seats, **more)
    return history.entry_sql(
        user_id=user, action=action, entity_type=entity_type, entity_id=entity_id, details=details
    )


# A waitlist entry as the API shows it once offered: its place in the queue and its offer.
_OFFERED_JSON = """to_jsonb(w) || jsonb_build_object('status', 'offered', 'updated_at', now(),
                    'position', (SELECT count(*) + 1 FROM waitlist_entries x
                                  WHERE x.event_id = ev.id AND x.id < w.id
                                    AND x.status IN ('waiting', 'offered')),
                    'offer_hold_id', h.id, 'offer_expires_at', h.expires_at)"""
_OFFER_HISTORY = _history(
    "w.customer_id", "offer", "waitlist_entry", "w.id", "w.seats", hold_id="h.id"
)
# Offer free seats to the waitlist, first fit in order of joining, with the starvation bound.
_OFFER = f"""
        IF ev.waitlist_length > 0 AND ev.capacity - ev.booked_count - ev.held_count > 0 THEN
            passed := '{{}}';
            FOR w IN SELECT * FROM waitlist_entries
                      WHERE event_id = ev.id AND status = 'waiting' ORDER BY id FOR UPDATE LOOP
                EXIT WHEN ev.capacity - ev.booked_count - ev.held_count <= 0;
                CONTINUE WHEN w.seats > ev.capacity;  -- served only if capacity grows
                IF w.seats > ev.capacity - ev.booked_count - ev.held_count THEN
                    passed := passed || w.id;
                    CONTINUE;
                END IF;
                EXIT WHEN EXISTS (SELECT 1 FROM waitlist_entries
                                   WHERE id = ANY(passed) AND passed_over >= {MAX_PASSES});
                UPDATE waitlist_entries SET passed_over = passed_over + 1, updated_at = now()
                 WHERE id = ANY(passed);
                INSERT INTO holds (event_id, customer_id, seats, status, expires_at,
                                   waitlist_entry_id, created_at, updated_at)
                VALUES (ev.id, w.customer_id, w.seats, 'held', at + p_offer_ttl, w.id, now(), now())
                RETURNING * INTO h;
                UPDATE waitlist_entries SET status = 'offered', updated_at = now() WHERE id = w.id;
                {emit_sql("hold.created", "to_jsonb(h)")}
                {emit_sql("waitlist.offered", _OFFERED_JSON)}
                ev.held_count := ev.held_count + w.seats;
                ev.waitlist_length := ev.waitlist_length - 1;
                offers := offers + 1;
                {_OFFER_HISTORY}
            END LOOP;
        END IF;"""

_BOOKING_JSON = "to_jsonb(b)"
_EXPIRED_HOLD_JSON = "to_jsonb(h) || jsonb_build_object('status', 'expired', 'updated_at', now())"
_LAPSED_ENTRY_JSON = "(SELECT to_jsonb(x) FROM waitlist_entries x WHERE x.id = h.waitlist_entry_id)"
# A deleted active booking is reported as cancelled: its seats came free, the row is gone.
_DELETED_BOOKING_JSON = (
    "to_jsonb(b) || jsonb_build_object('status', 'cancelled', 'updated_at', now())"
)
# The event as the API shows it after the batch (the counters are written at the end).
_EVENT_JSON = "to_jsonb(ev) || jsonb_build_object('updated_at', now(), 'lapsed_hold_seats', 0)"
_HOLD_JSON = "to_jsonb(h)"

APPLY_INTENTS = StoredFunction(
    "apply_seat_intents",
    body=f"""
DECLARE
    ev events%ROWTYPE;
    b bookings%ROWTYPE;
    h holds%ROWTYPE;
    w waitlist_entries%ROWTYPE;
    it jsonb;
    kind text;
    journaled boolean;
    cust bigint;
    n integer;
    res jsonb;
    ev0 events%ROWTYPE;
    at timestamptz := now();
    held integer;
    booked integer;
    before integer;
    passed bigint[];
    offers integer := 0;
    expired integer := 0;
    freed boolean := false;
    conversions integer := 0;
    lapsed_since timestamptz;
    hooks jsonb;
    fresh boolean;
    free_before integer;
BEGIN
    SELECT * INTO ev FROM events WHERE id = p_event_id FOR UPDATE;
    IF NOT FOUND THEN
        FOR it IN SELECT value FROM jsonb_array_elements(p_intents) LOOP
            RETURN QUERY SELECT it->>'id', jsonb_build_object('error', 'event_not_found');
        END LOOP;
        RETURN;
    END IF;
    ev0 := ev;
    -- Who wants webhooks about this event, and which (services/outbox.py).
    {outbox.HOOKS_SQL}
    free_before := ev.capacity - ev.booked_count - ev.held_count;
    -- The cap on held seats across events reads the customer's other events: their user rows
    -- are locked, always in id order after one event row, so no two batches can deadlock.
    PERFORM 1 FROM users
      WHERE id IN (SELECT (value->>'customer')::bigint FROM jsonb_array_elements(p_intents)
                    WHERE value->>'kind' = 'hold')
      ORDER BY id FOR NO KEY UPDATE;

    -- Holds past their expiry give their seats back first (an offer's entry lapses with it).
    FOR h IN SELECT * FROM holds WHERE event_id = ev.id AND status = 'held' AND expires_at <= at
              ORDER BY id FOR UPDATE LOOP
        UPDATE holds SET status = 'expired', updated_at = now() WHERE id = h.id;
        {emit_sql("hold.expired", _EXPIRED_HOLD_JSON)}
        UPDATE waitlist_entries SET status = 'expired', updated_at = now()
         WHERE id = h.waitlist_entry_id AND status = 'offered';
        IF FOUND THEN
            {emit_sql("waitlist.offer_lapsed", _LAPSED_ENTRY_JSON)}
        END IF;
        ev.held_count := ev.held_count - h.seats;
        free_before := free_before + h.seats;  -- lapsed seats already showed as free
        expired := expired + 1;
        lapsed_since := least(lapsed_since, h.expires_at);
        {_history("h.customer_id", "expire", "hold", "h.id", "h.seats")}
    END LOOP;
    IF expired > 0 THEN
        freed := true;
        {_OFFER}
    END IF;

    FOR it IN SELECT value FROM jsonb_array_elements(p_intents) LOOP
        -- Journaled unless its own submitter applies it unqueued (combining.py): nobody
        -- else can apply that one, or ask what became of it.
        journaled := (it->>'unqueued') IS NULL;
        res := NULL;
        IF journaled THEN
            SELECT outcome INTO res FROM seat_intents WHERE id = it->>'id';
        END IF;
        IF res IS NOT NULL THEN  -- applied before (a replayed batch): its first answer
            RETURN QUERY SELECT it->>'id', res;
            CONTINUE;
        END IF;
        kind := it->>'kind';
        cust := (it->>'customer')::bigint;
        n := (it->>'seats')::integer;
        -- The customer's seats on the event: an active booking and a live hold (or offer).
        SELECT coalesce((SELECT seats FROM bookings WHERE event_id = ev.id
                          AND customer_id = cust AND status = 'active'), 0),
               coalesce((SELECT seats FROM holds WHERE event_id = ev.id
                          AND customer_id = cust AND status = 'held'), 0)
          INTO booked, held;

        IF kind = 'book' THEN
            {_CLOSED}
            IF res IS NULL AND n > ev.max_seats_per_booking THEN
                res := {_TOO_MANY};
            END IF;
            IF res IS NULL AND booked > 0 THEN
                res := jsonb_build_object('error', 'already_booked');
            END IF;
            IF res IS NULL AND held + n > ev.max_seats_per_booking THEN
                res := {_TOO_MANY};
            END IF;
            IF res IS NULL THEN {_NO_SEATS.format(need="n")}
            END IF;
            IF res IS NULL THEN
                -- ON CONFLICT: a writer that skipped the event row lock booked them meanwhile.
                INSERT INTO bookings (event_id, customer_id, status, seats, created_at, updated_at)
                VALUES (ev.id, cust, 'active', n, now(), now())
                ON CONFLICT (event_id, customer_id) WHERE status = 'active' DO NOTHING
                RETURNING * INTO b;
                IF NOT FOUND THEN
                    res := jsonb_build_object('error', 'already_booked');
                END IF;
            END IF;
            IF res IS NULL THEN
                ev.booked_count := ev.booked_count + n;
                {_history("cust", "create", "booking", "b.id", "n")}
                {emit_sql("booking.created", _BOOKING_JSON)}
                res := jsonb_build_object('booking', {_BOOKING_JSON});
            END IF;

        ELSIF kind IN ('reactivate', 'change', 'cancel', 'delete') THEN
            SELECT * INTO b FROM bookings
             WHERE id = (it->>'booking')::bigint AND customer_id = cust AND event_id = ev.id
               FOR UPDATE;
            IF NOT FOUND THEN
                res := jsonb_build_object('error', 'booking_not_found');
            ELSIF kind = 'reactivate' THEN
                IF b.status = 'active' THEN
                    res := jsonb_build_object('error', 'already_active');
                END IF;
                IF res IS NULL THEN {_CLOSED}
                END IF;
                IF res IS NULL AND held + b.seats > ev.max_seats_per_booking THEN
                    res := {_TOO_MANY};
                END IF;
                IF res IS NULL AND booked > 0 THEN
                    res := jsonb_build_object('error', 'already_booked');
                END IF;
                IF res IS NULL THEN {_NO_SEATS.format(need="b.seats")}
                END IF;
                IF res IS NULL THEN
                    UPDATE bookings SET status = 'active', updated_at = now() WHERE id = b.id
                    RETURNING * INTO b;
                    ev.booked_count := ev.booked_count + b.seats;
                    {_history("cust", "reactivate", "booking", "b.id", "b.seats")}
                    {emit_sql("booking.reactivated", _BOOKING_JSON)}
                END IF;
            ELSIF kind = 'change' THEN
                before := b.seats;
                IF b.status <> 'active' THEN
                    res := jsonb_build_object('error', 'not_active');
                END IF;
                IF res IS NULL THEN {_CLOSED}
                END IF;
                IF res IS NULL AND held + n > ev.max_seats_per_booking THEN
                    res := {_TOO_MANY};
                END IF;
                IF res IS NULL AND n > before THEN {_NO_SEATS.format(need="n - before")}
                END IF;
                IF res IS NULL AND n <> before THEN
                    UPDATE bookings SET seats = n, updated_at = now() WHERE id = b.id
                    RETURNING * INTO b;
                    ev.booked_count := ev.booked_count + n - before;
                    freed := freed OR n < before;
                    {_history("cust", "seats", "booking", "b.id", "n", seats_before="before")}
                    {emit_sql("booking.seats_changed", _BOOKING_JSON)}
                END IF;
            ELSIF kind = 'cancel' THEN
                IF b.status <> 'active' THEN
                    res := jsonb_build_object('error', 'not_active');
                END IF;
                IF res IS NULL THEN {_CLOSED}
                END IF;
                IF res IS NULL THEN
                    UPDATE bookings SET status = 'cancelled', updated_at = now() WHERE id = b.id
                    RETURNING * INTO b;
                    ev.booked_count := ev.booked_count - b.seats;
                    freed := true;
                    {_history("cust", "cancel", "booking", "b.id", "b.seats")}
                    {emit_sql("booking.cancelled", _BOOKING_JSON)}
                END IF;
            ELSE  -- delete: an active booking follows the cancel rule; a cancelled one holds none
                IF b.status = 'active' THEN {_CLOSED}
                END IF;
                IF res IS NULL THEN
                    {_history("cust", "delete", "booking", "b.id", "b.seats")}
                    IF b.status = 'active' THEN
                        ev.booked_count := ev.booked_count - b.seats;
                        freed := true;
                        {emit_sql("booking.cancelled", _DELETED_BOOKING_JSON)}
                    END IF;
                    DELETE FROM bookings WHERE id = b.id;
                END IF;
            END IF;
            IF res IS NULL THEN
                res := jsonb_build_object('booking', {_BOOKING_JSON});
            END IF;

        ELSIF kind = 'hold' THEN
            {_CLOSED}
            IF res IS NULL AND booked + n > ev.max_seats_per_booking THEN
                res := {_TOO_MANY};
            END IF;
            IF res IS NULL THEN {_NO_SEATS.format(need="n")}
            END IF;
            IF res IS NULL AND held > 0 THEN
                res := jsonb_build_object('error', 'hold_exists');
            END IF;
            IF res IS NULL THEN
                held := coalesce((SELECT sum(seats) FROM holds WHERE customer_id = cust
                                   AND status = 'held' AND expires_at > at), 0);
                IF held + n > p_max_held THEN
                    res := jsonb_build_object('error', 'hold_limit_reached',
                                                  'limit', p_max_held, 'held', held);
                END IF;
            END IF;
            IF res IS NULL THEN
                INSERT INTO holds (event_id, customer_id, seats, status, expires_at,
                                   created_at, updated_at)
                VALUES (ev.id, cust, n, 'held',
                        at + coalesce(make_interval(secs => ev.hold_ttl_seconds), p_hold_ttl),
                        now(), now())
                RETURNING * INTO h;
                ev.held_count := ev.held_count + n;
                {_history("cust", "hold", "hold", "h.id", "n")}
                {emit_sql("hold.created", _HOLD_JSON)}
                res := jsonb_build_object('hold', {_HOLD_JSON});
            END IF;

        ELSIF kind IN ('confirm', 'release') THEN
            SELECT * INTO h FROM holds
             WHERE id = (it->>'hold')::bigint AND customer_id = cust AND event_id = ev.id
               FOR UPDATE;
            IF NOT FOUND THEN
                res := jsonb_build_object('error', 'hold_not_found');
            ELSIF h.status = 'expired' AND kind = 'confirm' THEN
                res := jsonb_build_object('error', 'hold_expired', 'expires_at', h.expires_at);
            ELSIF h.status <> 'held' THEN
                res := jsonb_build_object('error', 'hold_not_held', 'status', h.status);
            ELSIF kind = 'confirm' THEN
                {_CLOSED}
                IF res IS NULL THEN
                    SELECT * INTO b FROM bookings WHERE event_id = ev.id AND customer_id = cust
                       AND status = 'active' FOR UPDATE;
                    fresh := NOT FOUND;
                    IF fresh THEN
                        INSERT INTO bookings (event_id, customer_id, status, seats,
                                              created_at, updated_at)
                        VALUES (ev.id, cust, 'active', h.seats, now(), now()) RETURNING * INTO b;
                    ELSIF b.seats + h.seats > ev.max_seats_per_booking THEN
                        res := {_TOO_MANY};
                    ELSE
                        UPDATE bookings SET seats = seats + h.seats, updated_at = now()
                         WHERE id = b.id RETURNING * INTO b;
                    END IF;
                END IF;
                IF res IS NULL THEN
                    UPDATE holds SET status = 'confirmed', booking_id = b.id, updated_at = now()
                     WHERE id = h.id RETURNING * INTO h;
                    ev.held_count := ev.held_count - h.seats;
                    ev.booked_count := ev.booked_count + h.seats;
                    IF h.waitlist_entry_id IS NOT NULL THEN
                        UPDATE waitlist_entries SET status = 'converted', updated_at = now()
                         WHERE id = h.waitlist_entry_id;
                        conversions := conversions + 1;
                    END IF;
                    {_history("cust", "confirm", "hold", "h.id", "h.seats", booking_id="b.id")}
                    {emit_sql("hold.confirmed", _HOLD_JSON)}
                    IF fresh THEN
                        {emit_sql("booking.created", _BOOKING_JSON)}
                    ELSE
                        {emit_sql("booking.seats_changed", _BOOKING_JSON)}
                    END IF;
                    res := jsonb_build_object('booking', {_BOOKING_JSON}, 'hold', {_HOLD_JSON});
                END IF;
            ELSE  -- release; a declined waitlist offer takes its entry off the waitlist
                UPDATE holds SET status = 'released', updated_at = now() WHERE id = h.id
                RETURNING * INTO h;
                UPDATE waitlist_entries SET status = 'left', updated_at = now()
                 WHERE id = h.waitlist_entry_id AND status = 'offered';
                ev.held_count := ev.held_count - h.seats;
                freed := true;
                {_history("cust", "release", "hold", "h.id", "h.seats")}
                {emit_sql("hold.released", _HOLD_JSON)}
                res := jsonb_build_object('hold', {_HOLD_JSON});
            END IF;

        ELSIF kind = 'join' THEN
            {_CLOSED}
            IF res IS NULL AND n > ev.max_seats_per_booking THEN
                res := {_TOO_MANY};
            END IF;
            IF res IS NULL THEN
                SELECT * INTO w FROM waitlist_entries WHERE event_id = ev.id
                   AND customer_id = cust AND status IN ('waiting', 'offered');
                IF FOUND THEN
                    res := jsonb_build_object('error', 'already_waiting', 'entry', w.id);
                END IF;
            END IF;
            IF res IS NULL AND held > 0 THEN
                res := jsonb_build_object('error', 'hold_exists');
            END IF;
            IF res IS NULL AND booked + n > ev.max_seats_per_booking THEN
                res := {_TOO_MANY};
            END IF;
            IF res IS NULL AND ev.waitlist_length = 0
               AND ev.capacity - ev.booked_count - ev.held_count >= n THEN
                res := jsonb_build_object('error', 'seats_available',
                    'available', ev.capacity - ev.booked_count - ev.held_count);
            END IF;
            IF res IS NULL THEN
                INSERT INTO waitlist_entries (event_id, customer_id, seats, status,
                                              created_at, updated_at)
                VALUES (ev.id, cust, n, 'waiting', now(), now()) RETURNING * INTO w;
                ev.waitlist_length := ev.waitlist_length + 1;
                {_history("cust", "join", "waitlist_entry", "w.id", "n")}
                res := jsonb_build_object('entry', w.id);
                -- Seats left over for nobody so far (too few for those ahead) may fit this one.
                {_OFFER}
            END IF;

        ELSIF kind = 'leave' THEN
            SELECT * INTO w FROM waitlist_entries
             WHERE id = (it->>'entry')::bigint AND customer_id = cust AND event_id = ev.id
               FOR UPDATE;
            IF FOUND AND w.status IN ('waiting', 'offered') THEN
                IF w.status = 'offered' THEN  -- the offer not yet confirmed is given up
                    FOR h IN UPDATE holds SET status = 'released', updated_at = now()
                              WHERE waitlist_entry_id = w.id AND status = 'held'
                             RETURNING * LOOP
                        ev.held_count := ev.held_count - h.seats;
                        freed := true;
                        {_history("cust", "release", "hold", "h.id", "h.seats")}
                        {emit_sql("hold.released", _HOLD_JSON)}
                    END LOOP;
                ELSE
                    ev.waitlist_length := ev.waitlist_length - 1;
                END IF;
                UPDATE waitlist_entries SET status = 'left', updated_at = now() WHERE id = w.id;
                {_history("cust", "leave", "waitlist_entry", "w.id", "w.seats")}
            END IF;
            res := jsonb_build_object('entry', (it->>'entry')::bigint);

        ELSIF kind = 'capacity' THEN
            n := (it->>'capacity')::integer;
            IF n < ev.booked_count + ev.held_count THEN
                res := jsonb_build_object('error', 'capacity_below_bookings',
                    'booked', ev.booked_count, 'held', ev.held_count);
            ELSE
                freed := freed OR n > ev.capacity;
                ev.capacity := n;
                res := jsonb_build_object('capacity', n);
            END IF;

        ELSIF kind = 'expire' THEN  -- the sweeper: the lapsed holds went back above
            res := jsonb_build_object('expired', expired);

        ELSE
            RAISE EXCEPTION 'unknown seat intent %', kind;
        END IF;

        -- Seats that came free go to the waitlist first, before the next intent.
        IF (res ? 'error') IS NOT TRUE AND kind IN ('change', 'cancel', 'delete', 'release',
                                                     'leave', 'capacity') THEN
            {_OFFER}
        END IF;
        IF journaled THEN
            INSERT INTO seat_intents (id, event_id, kind, outcome, created_at)
            VALUES (it->>'id', ev.id, kind, res, now());
        END IF;
        RETURN QUERY SELECT it->>'id', res;
    END LOOP;

    IF (ev.booked_count, ev.held_count, ev.waitlist_length, ev.capacity)
       IS DISTINCT FROM (ev0.booked_count, ev0.held_count, ev0.waitlist_length, ev0.capacity)
    THEN
    UPDATE events
       SET booked_count = ev.booked_count, held_count = ev.held_count,
           waitlist_length = ev.waitlist_length, capacity = ev.capacity, updated_at = now()
     WHERE id = ev.id;
    END IF;
    IF free_before > 0 AND ev.capacity - ev.booked_count - ev.held_count <= 0 THEN
        {emit_sql("event.sold_out", _EVENT_JSON)}
    END IF;
    -- The batch's summary, under no intent id: what the caller announces and counts.
    RETURN QUERY SELECT NULL::text, jsonb_build_object(
        'free', ev.capacity - ev.booked_count - ev.held_count,
        'freed', freed, 'expired', expired, 'offers', offers, 'conversions', conversions,
        'lapsed_since', lapsed_since);
END""",
    returns="TABLE (intent_id text, outcome jsonb)",
    event_id="bigint",
    intents="jsonb",
    hold_ttl="interval",
    offer_ttl="interval",
    max_held="integer",
)
