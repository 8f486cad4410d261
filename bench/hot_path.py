"""The seat statement as SQL PREPARE'd per connection vs as the stored function it is now.

    python -m bench.hot_path [--rounds 4] [--seconds 10] [--clients 64]

Before PgBouncer support the service prepared ``TAKE_SEATS`` once per connection; now it calls
a PL/pgSQL function whose plan PostgreSQL caches per server session. This runs both with
pgbench on one hot event, interleaved round by round (the machine is shared and noisy, so the
comparison is within each pair), and prints bookings/s and mean latency of each and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys

from bench import db
from bench.load import run_pgbench
from bench.settings import BENCH_DATABASE_URL

ROOMY = 10_000_000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--customers", type=int, default=200_000)
    args = parser.parse_args(argv)

    engine = db.recreate(BENCH_DATABASE_URL)
    db.seed_accounts(engine, args.customers)
    db.analyze(engine)
    rates: dict[str, list[float]] = {"prepared statement": [], "stored function": []}
    means: dict[str, list[float]] = {name: [] for name in rates}
    first = 1
    for round_number in range(args.rounds):
        for name in rates if round_number % 2 == 0 else reversed(list(rates)):
            [event] = db.create_events(engine, count=1, capacity=ROOMY, title=name)
            since = db.clock(engine)
            result = run_pgbench(
                database_url=BENCH_DATABASE_URL,
                clients=args.clients,
                duration=args.seconds,
                event_id=event,
                first_customer_id=db.CUSTOMER_ID_OFFSET + first,
                customers=args.customers // (2 * args.rounds),
                as_stored_function=name == "stored function",
            )
            first += args.customers // (2 * args.rounds)
            rate = db.booking_rate(engine, event, event, since=since).per_second or 0.0
            rates[name].append(rate)
            means[name].append(result.latency_ms.get("mean") or 0.0)
            print(f"round {round_number + 1} {name}: {rate:,.0f} bookings/s", file=sys.stderr)
    print("| statement | bookings/s (median of rounds) | mean latency ms |")
    print("|---|---|---|")
    for name in rates:
        print(
            f"| {name} | {statistics.median(rates[name]):,.0f} | "
            f"{statistics.median(means[name]):.2f} |"
        )
    ratios = [
        function / prepared
        for function, prepared in zip(
            rates["stored function"], rates["prepared statement"], strict=True
        )
        if prepared
    ]
    print(f"\nstored function ÷ prepared statement, per round: {[round(r, 3) for r in ratios]}")
    print(f"median: {statistics.median(ratios):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
