"""Real-process tooling shared by the tests and the benchmark (not part of the product).

- ``processes``: free ports, waiting, stopping, process groups with their logs;
- ``instances``: gunicorn instances of the service, started and stopped in parallel;
- ``redis_servers`` and ``redis_cluster``: private Redis, Sentinel and Redis Cluster servers;
- ``pgbouncer``: a private PgBouncer and a sampler of its pools;
- ``database``: a fresh schema at the latest migration, roles with a connection limit;
- ``load``: many real client processes that start together, and a SQL sampler process;
- ``sampling``: the periodic sampling thread the samplers share.

Nothing here imports the tests; the tests and ``bench`` import it.
"""
