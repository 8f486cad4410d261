"""The bench command: ``python -m bench <subcommand> [options]`` (``--help`` on each).

Every subcommand recreates the bench database (BENCH_DATABASE_URL), flushes the bench Redis
(BENCH_REDIS_URL), logs its progress on standard error and prints its results on standard
output.
"""

from __future__ import annotations

import argparse
import sys

from bench import metrics_overhead, redislock, run, scaleout, waiting_room, webhooks
from bench.settings import BENCH_DATABASE_URL, BENCH_REDIS_URL

# name: (module, one line for the list of subcommands)
SUBCOMMANDS = {
    "run": (run, "the scenario table: baselines, S1-S7, targets, JSON and chart"),
    "scaleout": (scaleout, "N instances booking at once, straight or via PgBouncer"),
    "metrics-overhead": (metrics_overhead, "booking throughput with metrics on against off"),
    "waiting-room": (waiting_room, "S8: a rush through the waiting room, and without it"),
    "webhooks": (webhooks, "S1 with one subscribed webhook endpoint against none; the relay"),
    "redislock": (redislock, "the event lock through python-redis-lock's calls, measured"),
}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__.split("\n\n")[1].replace("\n", " ")
        + f" Current settings: database {BENCH_DATABASE_URL}, Redis {BENCH_REDIS_URL}.",
    )
    commands = top.add_subparsers(dest="command", required=True, metavar="subcommand")
    for name, (module, summary) in SUBCOMMANDS.items():
        sub = commands.add_parser(
            name,
            help=summary,
            description=module.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(sub)
        sub.set_defaults(main=module.main, parser=sub)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return int(args.main(args))


if __name__ == "__main__":
    sys.exit(main())
