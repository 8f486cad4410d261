"""Load benchmark of the booking service: scenarios S1-S7 against same-run baselines, the
scale-out measurement and the cost of metrics.

One command: ``python -m bench <subcommand>`` (``run``, ``scaleout``, ``metrics-overhead``);
``make bench`` and ``make bench-smoke`` run ``run`` through scripts/bench.sh. The servers it
starts come from the harness package, which the test suite uses too.
"""
