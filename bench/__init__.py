"""Load benchmark of the booking service: scenarios S1-S7 against same-run baselines.

Entry point: ``python -m bench.run`` (``make bench``; ``make bench-smoke`` for the short run).
"""
